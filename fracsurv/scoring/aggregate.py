"""Row-level aggregation of per-image scores (the Diff-X study's rule).

A frame cell may hold one image or several. The study scores every generated
image and summarises a patient by *the mean over seeds, then the maximum over
horizons* (and, for several views of one visit, the maximum over views: any view
that shows a fracture counts). The spread across seeds is the study's
uncertainty score.

Cell layouts (:func:`cell_groups`):

* one image or reference -> one group of one image;
* a nested list ``[[seeds of horizon 1], [seeds of horizon 2], ...]`` -> the
  groups as given;
* a flat list with ``n_seeds=k`` -> consecutive groups of ``k`` images (the
  ``DiffXGenerator`` layout of ``future_images``: horizon-major, ``k`` seeds per
  horizon);
* a flat list without ``n_seeds`` -> one group per image (several views of one
  visit: max over views, spread 0).

These rules are a few lines of bookkeeping that no library provides.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from fracsurv.io.refs import iter_cell

__all__ = ["aggregate_cell_scores", "cell_groups"]


def _as_list(cell: Any) -> Any:
    if isinstance(cell, np.ndarray) and cell.dtype == object:
        return list(cell)
    return cell


def _is_group(obj: Any) -> bool:
    obj = _as_list(obj)
    return isinstance(obj, list | tuple)


def cell_groups(cell: Any, n_seeds: int | None = None) -> list[list[Any]]:
    """Images of a frame cell, grouped into seed groups.

    Parameters
    ----------
    cell : image, reference, list or nested list
        See the module docstring for the layouts.
    n_seeds : int, optional
        Group size for flat lists (seeds per horizon).

    Returns
    -------
    list of lists
        One inner list (the seeds) per group (horizon or view).

    Raises
    ------
    ValueError
        When a flat list's length is not a multiple of ``n_seeds``.
    """
    cell = _as_list(cell)
    if isinstance(cell, list | tuple) and cell and all(_is_group(c) for c in cell):
        groups = [iter_cell(_as_list(g)) for g in cell]
        return [g for g in groups if g]
    items = iter_cell(cell)
    if n_seeds is not None and int(n_seeds) < 1:
        raise ValueError(f"n_seeds must be a positive integer, got {n_seeds!r}")
    if n_seeds and len(items) > 1:
        k = int(n_seeds)
        if len(items) % k:
            raise ValueError(f"a cell holds {len(items)} images, not a multiple of n_seeds={k}")
        return [items[i:i + k] for i in range(0, len(items), k)]
    return [[it] for it in items]


def aggregate_cell_scores(group_scores: Sequence[Sequence[float] | np.ndarray]
                          ) -> tuple[float, float]:
    """Mean over seeds within each group, then the maximum over groups.

    Parameters
    ----------
    group_scores : sequence of 1-D arrays
        Per-image scores, one array per group (as from :func:`cell_groups`).

    Returns
    -------
    score : float
        ``max_g mean(group_g)``; NaN for an empty cell.
    sd : float
        Population standard deviation (``ddof=0``) across the seeds of the group
        that gives the maximum (ties: the first such group); 0 for a group of
        one image, NaN for an empty cell.
    """
    groups = [np.asarray(g, dtype=float).ravel() for g in group_scores]
    groups = [g for g in groups if g.size]
    if not groups:
        return float("nan"), float("nan")
    means = np.array([g.mean() for g in groups])
    best = int(np.argmax(means))
    return float(means[best]), float(groups[best].std())
