"""Post-hoc calibration of the pVF scorer's logits: temperature scaling or isotonic."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

__all__ = ["fit_isotonic", "fit_temperature", "sigmoid"]


def sigmoid(z: np.ndarray) -> np.ndarray:
    """The logistic function, clipped to stay finite."""
    return 1.0 / (1.0 + np.exp(-np.clip(z, -60, 60)))


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """Temperature ``T`` minimising the BCE of ``logits / T`` (L-BFGS on ``log T``)."""
    log_t = torch.zeros(1, requires_grad=True)
    z = torch.as_tensor(logits, dtype=torch.float64)
    yy = torch.as_tensor(labels, dtype=torch.float64)
    opt = torch.optim.LBFGS([log_t], lr=0.5, max_iter=100, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = nn.functional.binary_cross_entropy_with_logits(z / log_t.exp(), yy)
        loss.backward()
        return loss

    opt.step(closure)
    return float(log_t.detach().exp())


def fit_isotonic(logits: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's isotonic map of the probabilities, as (thresholds in, thresholds out)."""
    from sklearn.isotonic import IsotonicRegression

    iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0)
    iso.fit(sigmoid(logits), labels)
    return np.asarray(iso.X_thresholds_, float), np.asarray(iso.y_thresholds_, float)
