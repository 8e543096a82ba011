"""``run_demo``: every stage in order, timed, ending in the HTML report."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from fracsurv.demo.context import DemoContext
from fracsurv.demo.data import stage_cohort, stage_crops, stage_future, stage_images, stage_pvf
from fracsurv.demo.explain import stage_explain
from fracsurv.demo.models import stage_comparison, stage_models
from fracsurv.demo.sections import stage_analysis, stage_examples
from fracsurv.report.html import Report

__all__ = ["BANNER", "STAGES", "run_demo"]

BANNER = ("SIMULATED DATA. Every image, clinical value and outcome in this report comes from "
          "fracsurv's synthetic cohort generator (docs/synthetic_cohort.md). The numbers show "
          "what the software does; they support no clinical conclusion.")

STAGES: list[tuple[str, Callable[[DemoContext], None]]] = [
    ("cohort", stage_cohort),
    ("load images (DicomLoader)", stage_images),
    ("vertebra crops", stage_crops),
    ("pVF score (PVFScorer)", stage_pvf),
    ("future images (DiffXGenerator)", stage_future),
    ("survival models", stage_models),
    ("model comparison", stage_comparison),
    ("survival analysis", stage_analysis),
    ("examples", stage_examples),
    ("Grad-CAM and generated futures", stage_explain),
]


def _stage(ctx: DemoContext, title: str, fn: Callable[[DemoContext], None], i: int,
           n: int) -> None:
    ctx.say(f"[{i}/{n}] {title} ...")
    t0 = time.perf_counter()
    fn(ctx)
    ctx.timings[title] = time.perf_counter() - t0
    ctx.say(f"[{i}/{n}] {title}: {ctx.timings[title]:.1f} s")


def run_demo(out: str | Path = "fracsurv-demo", *, n_patients: int | None = None,
             image_shape: tuple[int, int] | None = None, seed: int = 0,
             tiny: bool = False, retrain: bool = False, quiet: bool = False) -> Path:
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
    retrain : bool
        Train the image models that ship pretrained (``fracsurv.pretrained``) from
        scratch with the demo's CPU presets instead of loading them.
    quiet : bool
        No progress lines (stage names and times, headline numbers) on stdout.

    Returns
    -------
    Path
        ``out / "report.html"``.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ctx = DemoContext(out=out, seed=seed, tiny=tiny, n_patients=n_patients,
                      image_shape=image_shape, retrain=retrain, quiet=quiet,
                      report=Report("fracsurv demo report", banner=BANNER))
    t0 = time.perf_counter()
    for i, (title, fn) in enumerate(STAGES, 1):
        _stage(ctx, title, fn, i, len(STAGES))
    total = time.perf_counter() - t0
    ctx.report.section("Run", "run")
    timing = pd.DataFrame({"seconds": pd.Series(ctx.timings)})
    timing.loc["total"] = total
    ctx.report.add_table(timing, caption="Wall time per stage", floatfmt="{:.1f}")
    if ctx.model_sources:
        ctx.report.add_table(pd.DataFrame({"source": pd.Series(ctx.model_sources)}),
                             caption="Image models: shipped pretrained (fracsurv.pretrained; "
                                     "trained on the simulated cohort) or trained in this run")
    path = ctx.report.write(out / "report.html")
    ctx.say(f"demo finished in {total:.0f} s")
    return path
