"""Matplotlib figure of a radiograph with its vertebrae: keypoints, boxes, levels and grades."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["GRADE_COLOURS", "draw_vertebrae"]

# Genant grade -> colour (normal, mild, moderate, severe)
GRADE_COLOURS = ("#2ca02c", "#ffbf00", "#ff7f0e", "#d62728")


def draw_vertebrae(image: Any, vertebrae: Sequence[dict[str, Any]], ax: Any = None, *,
                   show_boxes: bool = True, show_labels: bool = True,
                   title: str | None = None) -> Any:
    """Draw keypoints, boxes, levels and Genant grades over a radiograph.

    Parameters
    ----------
    image : ndarray (H, W), cache reference or path
        The radiograph the coordinates refer to.
    vertebrae : sequence of dict
        As in ``VertebraCropper``'s ``vertebrae`` column (``points`` required;
        ``box``, ``level``, ``grade``, ``morphology`` and ``confidence`` used when
        present), or annotations ``{"level", "points"}``.
    ax : matplotlib Axes, optional
        Draw into it; a new figure is made otherwise.
    show_boxes, show_labels : bool
        Draw the crop boxes / the ``level grade`` labels.
    title : str, optional

    Returns
    -------
    matplotlib.figure.Figure
        The figure holding ``ax``.
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import Polygon, Rectangle

    from fracsurv.io.refs import load_image

    img = load_image(image)
    if img.ndim == 3:
        img = img[0]
    if ax is None:
        h, w = img.shape
        fig, ax = plt.subplots(figsize=(4.0 * w / max(h, w) + 1.0, 4.0 * h / max(h, w) + 0.4))
    else:
        fig = ax.figure
    ax.imshow(img, cmap="gray", interpolation="nearest")
    for v in vertebrae:
        p = np.asarray(v["points"], float).reshape(6, 2)
        grade = int(v.get("grade", 0) or 0)
        colour = GRADE_COLOURS[min(max(grade, 0), 3)]
        outline = p[[0, 1, 2, 5, 4, 3]]  # superior posterior -> anterior, inferior back
        ax.add_patch(Polygon(outline, closed=True, fill=False, edgecolor=colour, linewidth=1.0))
        ax.scatter(p[:, 0], p[:, 1], s=6, c=colour, zorder=3)
        if show_boxes and v.get("box") is not None:
            x0, y0, x1, y1 = v["box"]
            ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor="#1f77b4",
                                   linewidth=0.6, linestyle="--"))
        if show_labels:
            label = str(v.get("level", "") or "")
            if "grade" in v:
                label += f" G{grade}"
                if grade and v.get("morphology"):
                    label += f" {str(v['morphology'])[:4]}"
            x_text = p[:, 0].max() + 2
            ax.text(x_text, p[:, 1].mean(), label, color=colour, fontsize=6, va="center",
                    bbox={"facecolor": "black", "alpha": 0.4, "pad": 0.5, "linewidth": 0})
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=8)
    return fig
