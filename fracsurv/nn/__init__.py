"""Neural-network building blocks and the shared skorch base."""

from fracsurv.nn.base import TorchEstimatorMixin, load_model, resolve_device
from fracsurv.nn.mlp import make_mlp

__all__ = ["TorchEstimatorMixin", "load_model", "make_mlp", "resolve_device"]
