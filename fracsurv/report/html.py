"""A self-contained HTML report, with every table, figure and number also as files.

:class:`Report` collects sections of text, tables and matplotlib figures.
:meth:`Report.write` writes one HTML page with the figures embedded (no external
assets) and, beside it, the same content machine-readable: ``results.json``
(every table as records, every named value), ``tables/<key>.csv`` and
``figures/<key>.png`` / ``.svg``. Hand-written because the page must be one file
with no template-engine dependency; it is a few dozen lines of string assembly.
"""

from __future__ import annotations

import base64
import html
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fracsurv._atomic import atomic_write_bytes, atomic_write_text
from fracsurv.metrics.pvalues import format_p

__all__ = ["Report", "figure_to_png", "is_p_column"]

_CSS = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222;line-height:1.45}
h1{margin-bottom:.2em} h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
.banner{background:#fff3cd;border:1px solid #e0c36a;padding:.8em 1em;border-radius:6px}
.notice{color:#666;font-style:italic}
.warning{background:#fdecea;border:1px solid #e6a39b;padding:.5em .8em;border-radius:6px}
table{border-collapse:collapse;font-size:.88em;margin:.6em 0}
th,td{border:1px solid #ddd;padding:.25em .55em;text-align:right}
th{background:#f3f3f3} td:first-child,th:first-child{text-align:left}
img{max-width:100%;border:1px solid #eee;margin:.4em 0}
nav a{margin-right:1em} .files{font-size:.8em;color:#666}
"""


def figure_to_png(fig: Any, dpi: int = 110) -> bytes:
    """Render a matplotlib figure to PNG bytes and close it."""
    return _render(fig, "png", dpi, close=True)


def _render(fig: Any, fmt: str, dpi: int = 110, close: bool = False) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, dpi=dpi, bbox_inches="tight")
    if close:
        import matplotlib.pyplot as plt

        plt.close(fig)
    return buf.getvalue()


def is_p_column(label: Any) -> bool:
    """Whether a table column holds p-values (``p``, ``P value``, ``p (Holm)``, ...)."""
    last = label[-1] if isinstance(label, tuple) else label
    text = str(last).strip().lower()
    return text in ("p", "p value", "p-value") or text.startswith(("p (", "p value (")) \
        or text.endswith(" p")


def _slug(text: str) -> str:
    s = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return s[:60].rstrip("-") or "item"


def _flat(df: pd.DataFrame, index: bool) -> pd.DataFrame:
    """One header row and, when shown, the index as leading columns."""
    out = df.copy()
    if isinstance(out.columns, pd.MultiIndex):
        out.columns = [" | ".join(str(p) for p in col if str(p)) for col in out.columns]
    else:
        out.columns = [str(c) for c in out.columns]
    if index:
        names = [n if n is not None else ("" if k else "row")
                 for k, n in enumerate(out.index.names)]
        if out.index.nlevels == 1 and names == ["row"]:
            out.index.name = ""
        out = out.reset_index(names=[n or f"level {k}" for k, n in enumerate(names)])
    return out


@dataclass
class _Section:
    title: str
    anchor: str
    parts: list[str] = field(default_factory=list)
    tables: list[str] = field(default_factory=list)
    figures: list[str] = field(default_factory=list)


@dataclass
class _Table:
    frame: pd.DataFrame  # as shown
    caption: str
    index: bool


@dataclass
class _Figure:
    png: bytes
    svg: bytes
    caption: str


class Report:
    """Collects sections and writes one self-contained HTML file plus its data files.

    Parameters
    ----------
    title : str
        Page title.
    banner : str, optional
        A highlighted statement shown at the top (e.g. that data are simulated).
    """

    def __init__(self, title: str, banner: str | None = None) -> None:
        self.title = title
        self.banner = banner
        self.sections: list[_Section] = []
        self.tables: dict[str, _Table] = {}
        self.figures: dict[str, _Figure] = {}
        self.values: dict[str, Any] = {}

    def section(self, title: str, anchor: str) -> Report:
        """Start a new section; following ``add_*`` calls go into it."""
        self.sections.append(_Section(title, anchor))
        return self

    def _current(self) -> _Section:
        if not self.sections:
            raise ValueError("call section() before adding content")
        return self.sections[-1]

    def _key(self, key: str | None, caption: str | None, taken: dict) -> str:
        base = _slug(key or caption or f"{self._current().anchor}")
        k, n = base, 2
        while k in taken:
            k, n = f"{base}-{n}", n + 1
        return k

    def add_text(self, text: str) -> Report:
        """A paragraph of plain text (escaped)."""
        self._current().parts.append(f"<p>{html.escape(text)}</p>")
        return self

    def add_notice(self, text: str) -> Report:
        """A one-line notice, e.g. a skipped component."""
        self._current().parts.append(f'<p class="notice">{html.escape(text)}</p>')
        return self

    def add_warning(self, text: str) -> Report:
        """A highlighted warning (e.g. a failed model assumption); also in ``results.json``."""
        self._current().parts.append(f'<p class="warning">{html.escape(text)}</p>')
        self.values.setdefault("warnings", []).append(text)
        return self

    def add_value(self, key: str, value: Any) -> Report:
        """A named number (or short list/dict of numbers) for ``results.json``."""
        self.values[key] = value
        return self

    def add_table(self, df: pd.DataFrame, caption: str | None = None, floatfmt: str = "{:.3f}",
                  index: bool = True, key: str | None = None) -> Report:
        """A DataFrame as an HTML table, and as ``tables/<key>.csv`` and JSON records.

        Columns that hold p-values (:func:`is_p_column`) print with
        :func:`~fracsurv.metrics.format_p` (``<0.001``); the files keep the
        full-precision numbers.
        """
        k = self._key(key, caption, self.tables)
        self.tables[k] = _Table(df.copy(), caption or "", index)
        shown = df.copy()
        for c in shown.columns:
            if is_p_column(c) and pd.api.types.is_numeric_dtype(shown[c]):
                shown[c] = [format_p(v) for v in shown[c]]
        table = shown.to_html(index=index, float_format=floatfmt.format, border=0, escape=True,
                              na_rep="")
        cap = f"<p><b>{html.escape(caption)}</b></p>" if caption else ""
        self._current().parts.append(
            f'{cap}{table}<p class="files">tables/{html.escape(k)}.csv</p>')
        self._current().tables.append(k)
        return self

    def add_figure(self, fig: Any, caption: str | None = None, key: str | None = None) -> Report:
        """A matplotlib figure, embedded as a base64 PNG; also ``figures/<key>.png|svg``."""
        k = self._key(key, caption, self.figures)
        svg = _render(fig, "svg")
        png = figure_to_png(fig)
        self.figures[k] = _Figure(png, svg, caption or "")
        data = base64.b64encode(png).decode("ascii")
        cap = f"<p>{html.escape(caption)}</p>" if caption else ""
        self._current().parts.append(
            f'<img alt="{html.escape(caption or "")}" src="data:image/png;base64,{data}">{cap}'
            f'<p class="files">figures/{html.escape(k)}.png, .svg</p>')
        self._current().figures.append(k)
        return self

    def to_html(self) -> str:
        """The whole page."""
        nav = " ".join(f'<a href="#{s.anchor}">{html.escape(s.title)}</a>' for s in self.sections)
        body = [f"<h1>{html.escape(self.title)}</h1>"]
        if self.banner:
            body.append(f'<div class="banner">{html.escape(self.banner)}</div>')
        body.append(f"<nav>{nav}</nav>")
        for s in self.sections:
            body.append(f'<h2 id="{s.anchor}">{html.escape(s.title)}</h2>')
            body.extend(s.parts)
        return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(self.title)}"
                f"</title><style>{_CSS}</style></head><body>{''.join(body)}</body></html>")

    def results(self) -> dict[str, Any]:
        """Everything of the report as JSON-ready data (what ``results.json`` holds)."""
        tables = {}
        for k, t in self.tables.items():
            flat = _flat(t.frame, t.index)
            tables[k] = {"caption": t.caption, "csv": f"tables/{k}.csv",
                         "columns": list(flat.columns),
                         "records": json.loads(flat.to_json(orient="records"))}
        return {"title": self.title, "banner": self.banner,
                "sections": [{"title": s.title, "anchor": s.anchor, "tables": s.tables,
                              "figures": s.figures} for s in self.sections],
                "tables": tables,
                "figures": {k: {"caption": f.caption, "png": f"figures/{k}.png",
                                "svg": f"figures/{k}.svg"} for k, f in self.figures.items()},
                "values": _jsonable(self.values)}

    def write(self, path: str | Path) -> Path:
        """Write the page to ``path`` and, beside it, ``results.json``, ``tables/``, ``figures/``.

        Every file is written atomically (a reader never sees half a file).
        """
        path = Path(path)
        folder = path.parent
        for k, t in self.tables.items():
            atomic_write_text(folder / "tables" / f"{k}.csv", _flat(t.frame, t.index)
                              .to_csv(index=False))
        for k, f in self.figures.items():
            atomic_write_bytes(folder / "figures" / f"{k}.png", f.png)
            atomic_write_bytes(folder / "figures" / f"{k}.svg", f.svg)
        atomic_write_text(folder / "results.json", json.dumps(self.results(), indent=1,
                                                              allow_nan=False))
        atomic_write_text(path, self.to_html())
        return path


def _jsonable(value: Any) -> Any:
    """numpy scalars/arrays to Python, NaN/inf to None (JSON has no NaN)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | np.ndarray | pd.Series):
        return [_jsonable(v) for v in list(value)]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value
