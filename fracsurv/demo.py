"""``fracsurv demo``: the whole pipeline on the built-in synthetic cohort, ending in a report.

Each stage runs only if its component exists in this installation; a missing
component is skipped with a one-line notice (in the console and the report),
never faked. Stages are sized for 2 CPU cores.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fracsurv.report.html import Report

__all__ = ["run_demo"]

BANNER = ("SIMULATED DATA. Every image, clinical value and outcome in this report comes from "
          "fracsurv's synthetic cohort generator (docs/synthetic_cohort.md). The numbers show "
          "what the software does; they support no clinical conclusion.")


@dataclass
class DemoContext:
    """State passed from stage to stage."""

    out: Path
    seed: int
    tiny: bool
    report: Report
    train: pd.DataFrame | None = None
    test: pd.DataFrame | None = None
    y_train: np.ndarray | None = None
    y_test: np.ndarray | None = None
    truth: Any = None
    cohort: Any = None
    risks: dict[str, np.ndarray] = field(default_factory=dict)  # model name -> test risk
    fitted: dict[str, Any] = field(default_factory=dict)  # pipeline components
    models: dict[str, Any] = field(default_factory=dict)  # name -> (survival model, columns)
    skipped: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)


def _available(module: str, name: str) -> Any | None:
    """The attribute ``module.name`` if that component is built, else None."""
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return None


def _stage(ctx: DemoContext, title: str, fn: Callable[[DemoContext], None], i: int,
           n: int) -> None:
    print(f"[{i}/{n}] {title} ...", flush=True)
    t0 = time.perf_counter()
    fn(ctx)
    ctx.timings[title] = time.perf_counter() - t0
    print(f"[{i}/{n}] {title}: {ctx.timings[title]:.1f} s", flush=True)


def run_demo(out: str | Path = "fracsurv-demo", n_patients: int | None = None,
             image_shape: tuple[int, int] | None = None, seed: int = 0,
             tiny: bool = False) -> Path:
    """Run the demo and return the path of the HTML report.

    Parameters
    ----------
    out : path
        Output folder (report, caches, saved pipeline).
    n_patients : int, optional
        Cohort size; default: the cached demo cohort's.
    image_shape : (int, int), optional
        Image size of the cohort.
    seed : int
        Seed for splits and models.
    tiny : bool
        Smallest configuration (used by the test suite).
    """
    from fracsurv.demo_stages import STAGES

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ctx = DemoContext(out=out, seed=seed, tiny=tiny,
                      report=Report("fracsurv demo report", banner=BANNER))
    ctx.n_patients = n_patients  # type: ignore[attr-defined]
    ctx.image_shape = image_shape  # type: ignore[attr-defined]
    t0 = time.perf_counter()
    for i, (title, fn) in enumerate(STAGES, 1):
        _stage(ctx, title, fn, i, len(STAGES))
    total = time.perf_counter() - t0
    ctx.report.section("Run", "run")
    timing = pd.DataFrame({"seconds": pd.Series(ctx.timings)})
    timing.loc["total"] = total
    ctx.report.add_table(timing, caption="Wall time per stage", floatfmt="{:.1f}")
    for line in ctx.skipped:
        ctx.report.add_notice(line)
    path = ctx.report.write(out / "report.html")
    print(f"demo finished in {total:.0f} s", flush=True)
    return path
