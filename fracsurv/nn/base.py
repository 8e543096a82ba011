"""The one skorch base every torch estimator in fracsurv stands on.

:class:`TorchEstimatorMixin` turns an estimator's own hyper-parameters into a
configured :class:`skorch.NeuralNet` (device, optimiser, epochs, internal
validation split, early stopping, checkpoints, mixed precision, seeding,
progress output), runs batched inference, and saves/loads fitted models as
safetensors + JSON (never pickle).

Subclasses provide ``__init__`` (parameters only, as scikit-learn requires) and
call :meth:`_make_net`, :meth:`_fit_net` and :meth:`_infer`. They read the
common hyper-parameters by name; any they do not declare fall back to
``_NET_DEFAULTS``.
"""

from __future__ import annotations

import contextlib
import importlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import skorch
import torch
from skorch.callbacks import Checkpoint, EarlyStopping, ProgressBar
from skorch.dataset import ValidSplit

import fracsurv

__all__ = ["TorchEstimatorMixin", "load_model", "resolve_device"]

_NET_DEFAULTS: dict[str, Any] = {
    "optimizer": "adam",
    "lr": 1e-3,
    "weight_decay": 0.0,
    "batch_size": 64,
    "max_epochs": 50,
    "validation_fraction": 0.15,
    "patience": 10,
    "device": "auto",
    "precision": "auto",
    "random_state": None,
    "verbose": 0,
    "checkpoint_dir": None,
}

_SAFE_MODULE_PREFIX = "fracsurv."


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> ``cuda`` when available (then ``mps``), else ``cpu``."""
    if str(device) != "auto":
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def _autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """Mixed-precision dtype for ``precision`` on ``device`` (None = full precision)."""
    if precision in ("32", "64", "float32", "float64"):
        return None
    if precision == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return None
    if precision in ("bf16", "bfloat16"):
        return torch.bfloat16
    if precision in ("16", "fp16", "float16"):
        return torch.float16
    raise ValueError(f"precision must be 'auto', '32', '64', 'bf16' or 'fp16', got {precision!r}")


class _Net(skorch.NeuralNet):
    """skorch net with autocast inference and a float32 loss."""

    def __init__(self, *args: Any, amp_dtype: torch.dtype | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.amp_dtype = amp_dtype

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=torch.device(self.device).type, dtype=self.amp_dtype)

    def infer(self, x: Any, **fit_params: Any) -> torch.Tensor:
        with self._autocast():
            return super().infer(x, **fit_params)

    def get_loss(self, y_pred: Any, y_true: Any, X: Any = None, training: bool = False) -> Any:
        if isinstance(y_pred, torch.Tensor) and y_pred.dtype in (torch.float16, torch.bfloat16):
            y_pred = y_pred.float()
        return super().get_loss(y_pred, y_true, X=X, training=training)


def _jsonable(value: Any) -> Any:
    """JSON-able copy of fitted metadata (tuples become lists)."""
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise TypeError(f"parameter value of type {type(value).__name__} cannot be saved as JSON")


def _params_json(params: dict[str, Any]) -> dict[str, Any]:
    """Constructor parameters in the tuple-tagged JSON form of :mod:`fracsurv.persist`,
    so that loading gives back exactly the parameters that were saved."""
    from fracsurv.persist import _json_value

    encoded = {}
    for name, value in params.items():
        ok, encoded[name] = _json_value(value)
        if not ok:
            raise TypeError(f"parameter {name!r} of type {type(value).__name__} cannot be "
                            "saved as JSON")
    return encoded


class TorchEstimatorMixin:
    """Shared machinery for fracsurv's torch estimators (see module docstring)."""

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()  # type: ignore[misc]
        tags.non_deterministic = getattr(self, "random_state", None) is None
        return tags

    # -- configuration -------------------------------------------------
    def _hp(self, name: str) -> Any:
        return getattr(self, name, _NET_DEFAULTS[name])

    def _device(self) -> torch.device:
        return resolve_device(self._hp("device"))

    def _amp_dtype(self) -> torch.dtype | None:
        return _autocast_dtype(str(self._hp("precision")), self._device())

    def _seed(self) -> None:
        """Seed torch's global RNG (module init, dropout, shuffling) from random_state."""
        rs = self._hp("random_state")
        if rs is not None:
            torch.manual_seed(int(np.random.RandomState(rs).randint(0, 2**31 - 1))
                              if not isinstance(rs, int) else rs)

    def _optimizer_spec(self) -> tuple[type[torch.optim.Optimizer], dict[str, Any]]:
        name = str(self._hp("optimizer")).lower()
        wd = float(self._hp("weight_decay"))
        if name == "adam":
            return torch.optim.AdamW if wd else torch.optim.Adam, {"weight_decay": wd}
        if name == "sgd":
            return torch.optim.SGD, {"weight_decay": wd, "momentum": 0.9}
        if name == "lbfgs":
            return torch.optim.LBFGS, {
                "line_search_fn": "strong_wolfe", "max_iter": 200, "history_size": 50,
                "tolerance_grad": 1e-10, "tolerance_change": 1e-14,
            }
        raise ValueError(f"optimizer must be 'adam', 'sgd' or 'lbfgs', got {name!r}")

    def _make_net(
        self,
        module: torch.nn.Module,
        criterion: torch.nn.Module,
        *,
        n_train: int,
        full_batch: bool = False,
        valid_batch_size: int | None = None,
        callbacks: Sequence[Any] = (),
        dataset_kwargs: dict[str, Any] | None = None,
        iterator_kwargs: dict[str, Any] | None = None,
    ) -> _Net:
        """Build the skorch net from the estimator's hyper-parameters.

        Parameters
        ----------
        module, criterion : torch modules
            Instantiated network and loss (``criterion(y_pred, y_true)``).
        n_train : int
            Number of training rows (decides ``drop_last`` and full-batch size).
        full_batch : bool
            Train on all rows at once (forced for L-BFGS).
        valid_batch_size : int, optional
            Batch size for the validation pass (``-1`` = all rows: the Cox loss
            of the whole validation split, not a mean of mini-batch losses).
        callbacks : sequence
            Extra skorch callbacks.
        """
        opt_cls, opt_kwargs = self._optimizer_spec()
        full_batch = full_batch or opt_cls is torch.optim.LBFGS
        frac = self._hp("validation_fraction")
        use_valid = bool(frac) and not full_batch
        cbs: list[tuple[str, Any]] = []
        if use_valid and self._hp("patience"):
            cbs.append(("early_stopping", EarlyStopping(
                monitor="valid_loss", patience=int(self._hp("patience")), load_best=True)))
        if self._hp("checkpoint_dir"):
            cbs.append(("checkpoint", Checkpoint(
                dirname=str(self._hp("checkpoint_dir")),
                monitor="valid_loss_best" if use_valid else "train_loss_best")))
        if int(self._hp("verbose")) >= 2:
            cbs.append(("progress_bar", ProgressBar()))
        cbs.extend((f"extra_{i}", cb) for i, cb in enumerate(callbacks))
        batch_size = -1 if full_batch else int(self._hp("batch_size"))
        rs = self._hp("random_state")
        kwargs: dict[str, Any] = {
            "module": module,
            "criterion": criterion,
            "optimizer": opt_cls,
            "lr": float(self._hp("lr")),
            "max_epochs": int(self._hp("max_epochs")),
            "batch_size": batch_size,
            "train_split": ValidSplit(float(frac), stratified=False,
                                      random_state=rs if isinstance(rs, int) else None)
            if use_valid else None,
            "iterator_train__shuffle": not full_batch,
            # BatchNorm cannot train on a batch of one: drop a ragged last batch.
            "iterator_train__drop_last": (not full_batch) and n_train > batch_size > 0,
            "iterator_valid__batch_size": valid_batch_size or batch_size,
            "callbacks": cbs,
            "device": str(self._device()),
            "verbose": int(self._hp("verbose")),
            "amp_dtype": self._amp_dtype(),
            **{f"optimizer__{k}": v for k, v in opt_kwargs.items()},
            **{f"dataset__{k}": v for k, v in (dataset_kwargs or {}).items()},
            **{f"iterator_train__{k}": v for k, v in (iterator_kwargs or {}).items()},
            **{f"iterator_valid__{k}": v for k, v in (iterator_kwargs or {}).items()},
        }
        return _Net(**kwargs)

    def _fit_net(self, net: _Net, X: Any, y: Any = None) -> _Net:
        """Seed, then fit ``net``; keeps ``net_``, ``module_`` and ``history_``."""
        self._seed()
        net.fit(X, y)
        self.net_ = net
        self.module_ = net.module_
        return net

    def _infer(
        self,
        batches: Callable[[], Any] | Any,
        *,
        forward: Callable[[torch.nn.Module, Any], torch.Tensor] | None = None,
    ) -> np.ndarray:
        """Run ``module_`` over an iterable of input batches; float32 numpy output.

        ``batches`` is an iterable of tensors (or a callable returning one);
        ``forward(module, batch)`` overrides the plain ``module(batch)`` call.
        """
        module = self.module_
        device = self._device()
        module.to(device).eval()
        amp = self._amp_dtype()
        outs = []
        ctx = torch.autocast(device.type, dtype=amp) if amp is not None else contextlib.nullcontext()
        with torch.inference_mode(), ctx:
            for batch in batches() if callable(batches) else batches:
                batch = batch.to(device) if isinstance(batch, torch.Tensor) else batch
                out = forward(module, batch) if forward is not None else module(batch)
                outs.append(out.float().cpu())
        return torch.cat(outs).numpy() if outs else np.empty((0,), dtype=np.float32)

    # -- safe persistence ----------------------------------------------
    def _extra_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """(JSON-able metadata, named arrays) a subclass needs besides the weights."""
        return {}, {}

    def _restore(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        """Rebuild fitted state (``module_`` included) from :meth:`_extra_state` output."""
        raise TypeError(f"{type(self).__name__} does not support loading")

    def save(self, path: str | Path) -> Path:
        """Save a fitted model as ``path/config.json`` + ``path/weights.safetensors``.

        No pickle is involved, so a saved model is safe to share; load it with
        :func:`fracsurv.nn.base.load_model` or ``type(self).load(path)``.
        """
        from safetensors.numpy import save_file

        if not hasattr(self, "module_"):
            raise ValueError(f"{type(self).__name__} is not fitted; nothing to save")
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        meta, arrays = self._extra_state()
        tensors = {f"module.{k}": v.detach().cpu().numpy()
                   for k, v in self.module_.state_dict().items()}
        tensors.update({f"extra.{k}": np.ascontiguousarray(v) for k, v in arrays.items()})
        save_file(tensors, str(path / "weights.safetensors"))
        config = {
            "class": f"{type(self).__module__}.{type(self).__qualname__}",
            "fracsurv_version": fracsurv.__version__,
            "params": _params_json(self.get_params(deep=False)),  # type: ignore[attr-defined]
            "meta": _jsonable(meta),
        }
        (path / "config.json").write_text(json.dumps(config, indent=2))
        return path

    @classmethod
    def load(cls, path: str | Path) -> Any:
        """Load a model saved with :meth:`save`."""
        est = load_model(path)
        if not isinstance(est, cls):
            raise TypeError(f"{path} holds a {type(est).__name__}, not a {cls.__name__}")
        return est


def load_model(path: str | Path) -> Any:
    """Load any fracsurv torch estimator saved with ``save`` (safetensors + JSON).

    Only classes defined inside the ``fracsurv`` package are instantiated.
    """
    from safetensors.numpy import load_file

    path = Path(path)
    config = json.loads((path / "config.json").read_text())
    qualname: str = config["class"]
    mod_name, _, cls_name = qualname.rpartition(".")
    if not mod_name.startswith(_SAFE_MODULE_PREFIX):
        raise ValueError(f"refusing to load class {qualname!r}: not a fracsurv estimator")
    cls = getattr(importlib.import_module(mod_name), cls_name)
    from fracsurv.persist import _from_json

    params = _from_json(config["params"])
    est = cls(**params)
    tensors = load_file(str(path / "weights.safetensors"))
    arrays = {k[len("extra."):]: v for k, v in tensors.items() if k.startswith("extra.")}
    est._restore(config["meta"], arrays)
    state = {k[len("module."):]: torch.from_numpy(v.copy())
             for k, v in tensors.items() if k.startswith("module.")}
    est.module_.load_state_dict(state)
    est.module_.eval()
    return est
