"""A self-contained HTML report: sections of text, tables and embedded PNG figures.

Hand-written because the report must be one file with no external assets or
template engine dependency; it is a few dozen lines of string assembly.
"""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = ["Report", "figure_to_png"]

_CSS = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222;line-height:1.45}
h1{margin-bottom:.2em} h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
.banner{background:#fff3cd;border:1px solid #e0c36a;padding:.8em 1em;border-radius:6px}
.notice{color:#666;font-style:italic}
table{border-collapse:collapse;font-size:.88em;margin:.6em 0}
th,td{border:1px solid #ddd;padding:.25em .55em;text-align:right}
th{background:#f3f3f3} td:first-child,th:first-child{text-align:left}
img{max-width:100%;border:1px solid #eee;margin:.4em 0}
nav a{margin-right:1em}
"""


def figure_to_png(fig: Any, dpi: int = 110) -> bytes:
    """Render a matplotlib figure to PNG bytes and close it."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


@dataclass
class _Section:
    title: str
    anchor: str
    parts: list[str] = field(default_factory=list)


class Report:
    """Collects sections and writes one self-contained HTML file.

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

    def section(self, title: str, anchor: str) -> Report:
        """Start a new section; following ``add_*`` calls go into it."""
        self.sections.append(_Section(title, anchor))
        return self

    def _current(self) -> _Section:
        if not self.sections:
            raise ValueError("call section() before adding content")
        return self.sections[-1]

    def add_text(self, text: str) -> Report:
        """A paragraph of plain text (escaped)."""
        self._current().parts.append(f"<p>{html.escape(text)}</p>")
        return self

    def add_notice(self, text: str) -> Report:
        """A one-line notice, e.g. a skipped component."""
        self._current().parts.append(f'<p class="notice">{html.escape(text)}</p>')
        return self

    def add_table(self, df: pd.DataFrame, caption: str | None = None, floatfmt: str = "{:.3f}",
                  index: bool = True) -> Report:
        """A DataFrame as an HTML table."""
        table = df.to_html(index=index, float_format=floatfmt.format, border=0, escape=True)
        cap = f"<p><b>{html.escape(caption)}</b></p>" if caption else ""
        self._current().parts.append(cap + table)
        return self

    def add_figure(self, fig: Any, caption: str | None = None) -> Report:
        """A matplotlib figure, embedded as a base64 PNG."""
        data = base64.b64encode(figure_to_png(fig)).decode("ascii")
        cap = f"<p>{html.escape(caption)}</p>" if caption else ""
        self._current().parts.append(f'<img alt="{html.escape(caption or "")}" '
                                     f'src="data:image/png;base64,{data}">{cap}')
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

    def write(self, path: str | Path) -> Path:
        """Write the page to ``path``."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_html(), encoding="utf-8")
        return path
