"""Exact Cox partial likelihood in torch: vectorised, tie-exact, numerically stable.

Why hand-written: pycox's ``cox_ph_loss`` ignores ties and torchsurv's Efron loss
loops over tie groups; neither is both exact and O(n log n). This module sorts
once, takes a cumulative log-sum-exp for the risk sets and handles ties with
scatter operations, so the cost is one sort plus O(n) vector work.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

__all__ = ["CoxLoss", "cox_nll"]


def _group_logsumexp(values: Tensor, mask: Tensor, group: Tensor, n_groups: int) -> Tensor:
    """log(sum_{i in g, mask_i} exp(values_i)) per group; -inf where a group is empty."""
    neg_inf = torch.full_like(values, float("-inf"))
    masked = torch.where(mask, values, neg_inf)
    gmax = torch.full((n_groups,), float("-inf"), dtype=values.dtype, device=values.device)
    gmax = gmax.scatter_reduce(0, group, masked.detach(), reduce="amax", include_self=True)
    safe_max = torch.where(torch.isfinite(gmax), gmax, torch.zeros_like(gmax))
    summed = torch.zeros_like(gmax).index_add(0, group, torch.exp(masked - safe_max[group]))
    has = summed > 0
    return torch.where(has, torch.log(torch.where(has, summed, torch.ones_like(summed))) + safe_max,
                       torch.full_like(summed, float("-inf")))


def cox_nll(
    log_hazard: Tensor,
    time: Tensor,
    event: Tensor,
    ties: Literal["efron", "breslow"] = "efron",
    reduction: Literal["mean", "sum"] = "mean",
) -> Tensor:
    r"""Negative Cox partial log-likelihood.

    Parameters
    ----------
    log_hazard : Tensor, shape (n,) or (n, 1)
        Predicted log-hazard (linear predictor) :math:`\eta_i`; float32 or float64.
    time : Tensor, shape (n,)
        Event or censoring times.
    event : Tensor, shape (n,)
        Event indicator (bool or 0/1).
    ties : {"efron", "breslow"}
        Exact tie handling. Efron:
        :math:`\sum_g \sum_{l=0}^{d_g-1} \log(R_g - \tfrac{l}{d_g} S_g) - \sum_{i \in D}\eta_i`
        with :math:`R_g` the risk-set sum of :math:`e^{\eta}` at the g-th distinct event
        time, :math:`S_g` the sum over its :math:`d_g` events. Breslow drops the
        :math:`l/d_g` correction.
    reduction : {"mean", "sum"}
        ``"mean"`` divides by the number of events.

    Returns
    -------
    Tensor
        Scalar loss in the dtype of ``log_hazard``. A batch with **no events**
        returns exactly ``0`` (connected to the graph, zero gradient): the partial
        likelihood of such a batch is empty. ``n = 1`` with an event also gives 0.

    Notes
    -----
    Invariant to adding a constant to all log-hazards; finite for
    :math:`|\eta|` up to at least 1e4 in float32 (all exponentials are taken
    after subtracting a running or per-group maximum). Cost: one sort plus
    O(n) work.
    """
    if ties not in ("efron", "breslow"):
        raise ValueError(f"ties must be 'efron' or 'breslow', got {ties!r}")
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    eta = log_hazard.reshape(-1)
    time = torch.as_tensor(time, device=eta.device).reshape(-1)
    event = torch.as_tensor(event, device=eta.device).reshape(-1).bool()
    if not (eta.shape[0] == time.shape[0] == event.shape[0]):
        raise ValueError(
            f"log_hazard, time and event must have the same length, got "
            f"{eta.shape[0]}, {time.shape[0]}, {event.shape[0]}"
        )
    n_events = event.sum()
    if eta.shape[0] == 0 or n_events == 0:
        return eta.sum() * 0.0

    # Descending time: the risk set of a subject is a prefix ending at its tie group.
    order = torch.argsort(time, descending=True, stable=True)
    t, e, x = time[order], event[order], eta[order]
    _, group, counts = torch.unique_consecutive(t, return_inverse=True, return_counts=True)
    n_groups = counts.shape[0]
    last = torch.cumsum(counts, 0) - 1
    log_risk = torch.logcumsumexp(x, 0)[last][group]  # log R_g for every subject

    if ties == "breslow":
        per_event = log_risk
    else:
        log_s = _group_logsumexp(x, e, group, n_groups)[group]  # log S_g
        ef = e.to(x.dtype)
        d = torch.zeros(n_groups, dtype=x.dtype, device=x.device).index_add(0, group, ef)[group]
        cum = torch.cumsum(ef, 0)
        before = (cum - ef)[last - counts + 1][group]  # events before this tie group
        frac = torch.where(e, (cum - before - 1) / d, torch.zeros_like(cum))  # l / d_g
        ratio = torch.exp(torch.where(e, log_s - log_risk, torch.zeros_like(log_risk))).clamp(max=1.0)
        per_event = log_risk + torch.log1p(-frac * ratio)

    total = torch.where(e, per_event - x, torch.zeros_like(x)).sum()
    return total / n_events.to(x.dtype) if reduction == "mean" else total


class CoxLoss(torch.nn.Module):
    """``cox_nll`` as a criterion taking ``y_true`` of shape (n, 2) = (time, event).

    This is the form skorch passes to a criterion.
    """

    def __init__(self, ties: Literal["efron", "breslow"] = "efron", reduction: str = "mean") -> None:
        super().__init__()
        self.ties = ties
        self.reduction = reduction

    def forward(self, log_hazard: Tensor, y_true: Tensor) -> Tensor:
        return cox_nll(log_hazard, y_true[:, 0], y_true[:, 1], ties=self.ties,
                       reduction=self.reduction)  # type: ignore[arg-type]
