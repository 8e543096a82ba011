"""Figures and the self-contained HTML report."""

from fracsurv.report.html import Report, figure_to_png

__all__ = ["Report", "figure_to_png"]
