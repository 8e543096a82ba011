"""Multi-layer perceptrons used by the tabular and fusion survival models."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

__all__ = ["ACTIVATIONS", "make_mlp"]

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "selu": nn.SELU,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "leaky_relu": nn.LeakyReLU,
}


def make_mlp(
    n_in: int,
    hidden_units: Sequence[int],
    n_out: int | None = 1,
    *,
    activation: str = "relu",
    dropout: float = 0.0,
    batch_norm: bool = False,
    out_bias: bool = False,
) -> nn.Sequential:
    """Linear -> [BatchNorm] -> activation -> [Dropout] blocks, then a linear head.

    Parameters
    ----------
    n_in : int
        Input features.
    hidden_units : sequence of int
        Width of each hidden layer; ``()`` gives a single linear layer.
    n_out : int or None
        Output width; ``None`` ends after the last hidden block (a feature extractor).
    activation : str
        One of :data:`ACTIVATIONS`.
    dropout : float
        Dropout probability after each hidden block.
    batch_norm : bool
        Batch normalisation after each hidden linear layer.
    out_bias : bool
        Bias of the output layer (a Cox model's log-hazard needs none: the
        partial likelihood is invariant to it).
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
    layers: list[nn.Module] = []
    width = n_in
    for units in hidden_units:
        layers.append(nn.Linear(width, int(units)))
        if batch_norm:
            layers.append(nn.BatchNorm1d(int(units)))
        layers.append(ACTIVATIONS[activation]())
        if dropout:
            layers.append(nn.Dropout(float(dropout)))
        width = int(units)
    if n_out is not None:
        layers.append(nn.Linear(width, n_out, bias=out_bias))
    return nn.Sequential(*layers)
