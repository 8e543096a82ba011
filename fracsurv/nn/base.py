"""The one skorch base every torch estimator in fracsurv stands on.

:class:`TorchEstimatorMixin` turns an estimator's own hyper-parameters into a
configured :class:`skorch.NeuralNet` (device, optimiser, epochs, internal
validation split, early stopping, mixed precision, seeding,
progress output), runs batched inference, and saves/loads fitted models as
safetensors + JSON (never pickle).

Subclasses provide ``__init__`` (parameters only, as scikit-learn requires),
declare their parameters as ``{**TorchEstimatorMixin._parameter_constraints,
...}``, call ``self._validate_params()`` at the top of ``fit`` and then
:meth:`_make_net`, :meth:`_fit_net` and :meth:`_infer`.

Shared training parameters
--------------------------
optimizer : {"adam", "sgd", "lbfgs"}
    Adam (AdamW when ``weight_decay > 0``), SGD with momentum 0.9, or full-batch
    L-BFGS with a strong-Wolfe line search.
lr : float
    Learning rate (> 0).
weight_decay : float
    L2 penalty (>= 0).
batch_size : int
    Mini-batch size (>= 1).
max_epochs : int
    Maximum training epochs (>= 1).
validation_fraction : float in [0, 1)
    Internal validation split; ``0`` trains on every row without one.
patience : int
    Epochs without a better validation loss before stopping, best weights
    restored; ``0`` disables early stopping.
device : str or torch.device
    ``"auto"`` uses a GPU when present (CUDA, then MPS), else the CPU.
precision : {"auto", "32", "64", "bf16", "fp16", ...}
    ``"auto"``: bf16 autocast on GPUs that support it, else full precision.
random_state : int, RandomState or None
    Seed of initialisation, shuffling and the validation split.
verbose : int
    ``1`` prints skorch's epoch table, ``2`` adds a progress bar.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Sequence
from numbers import Integral, Real
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import skorch
import torch
from sklearn.utils._param_validation import Interval, StrOptions
from skorch.callbacks import EarlyStopping, ProgressBar
from skorch.dataset import ValidSplit

import fracsurv
from fracsurv._atomic import atomic_write_text
from fracsurv._base import derive_seed
from fracsurv._serial import (
    MACHINE_PARAMS,
    ModelFormatError,
    checked_params,
    import_allowed_class,
    params_json,
    read_arrays,
    read_json,
    require,
    to_json,
    versions,
    write_arrays,
)
from fracsurv.nn.callbacks import LossConvergence
from fracsurv.nn.resume import fit_resumable

__all__ = ["IMAGE_INFERENCE_SCALE", "PRECISIONS", "TABULAR_INFERENCE_SCALE", "TorchEstimatorMixin", "load_model", "resolve_device"]

#: Inference batches are this many training batches: no gradients or optimiser state
#: are kept, so a batch of cheap tabular rows can be much larger ...
TABULAR_INFERENCE_SCALE = 16
#: ... than a batch of images, whose activations dominate memory.
IMAGE_INFERENCE_SCALE = 2

PRECISIONS = ("auto", "32", "64", "float32", "float64", "bf16", "bfloat16", "16", "fp16",
              "float16")



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


class TorchEstimatorMixin:
    """Shared machinery for fracsurv's torch estimators (see module docstring).

    ``_parameter_constraints`` declares the shared training parameters once;
    each estimator extends it with ``{**TorchEstimatorMixin._parameter_constraints,
    ...}`` (keeping only the keys it has, when it lacks some).
    """

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "optimizer": [StrOptions({"adam", "sgd", "lbfgs"})],
        "lr": [Interval(Real, 0, None, closed="neither")],
        "weight_decay": [Interval(Real, 0, None, closed="left")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "max_epochs": [Interval(Integral, 1, None, closed="left")],
        "validation_fraction": [Interval(Real, 0, 1, closed="left")],
        "patience": [Interval(Integral, 0, None, closed="left")],
        "device": [str, torch.device],
        "precision": [StrOptions(set(PRECISIONS))],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()  # type: ignore[misc]
        tags.non_deterministic = getattr(self, "random_state", None) is None
        return tags

    def _set_shared_params(self, values: dict[str, Any]) -> None:
        """Store the shared training parameters an ``__init__`` received.

        ``values`` is the ``__init__``'s ``locals()``; every name declared in
        :attr:`TorchEstimatorMixin._parameter_constraints` that it holds becomes an
        attribute of the same name, unchanged (scikit-learn's ``get_params`` rule).
        """
        for name in TorchEstimatorMixin._parameter_constraints:
            if name in values:
                setattr(self, name, values[name])

    # -- configuration -------------------------------------------------
    def _training_settings(self) -> dict[str, Any]:
        """The shared training settings :meth:`_make_net` reads, from the parameters.

        An estimator that fixes some of them instead of exposing them as
        parameters overrides this method (as :class:`DiffXGenerator` does).
        """
        names = ("optimizer", "lr", "weight_decay", "batch_size", "max_epochs",
                 "validation_fraction", "patience")
        return {name: getattr(self, name) for name in names}

    def _device(self) -> torch.device:
        return resolve_device(self.device)

    def _amp_dtype(self) -> torch.dtype | None:
        return _autocast_dtype(str(self.precision), self._device())

    def _seed(self) -> None:
        """Seed torch's global RNG (module init, dropout, shuffling) from random_state."""
        rs = self.random_state
        if rs is not None:
            torch.manual_seed(rs if isinstance(rs, int) else derive_seed(rs))

    def _optimizer_spec(self, settings: dict[str, Any]
                        ) -> tuple[type[torch.optim.Optimizer], dict[str, Any]]:
        name = str(settings["optimizer"]).lower()
        wd = float(settings["weight_decay"])
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
        early_stopping: bool = True,
        batch_size: int | None = None,
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
        dataset_kwargs, iterator_kwargs : dict, optional
            Passed to skorch's dataset and to both data loaders.
        early_stopping : bool, default=True
            Stop on the validation loss after ``patience`` epochs; ``False`` for an
            estimator that stops on another metric through its own callback.
        batch_size : int, optional
            Overrides the ``batch_size`` parameter (a second network of the same
            estimator that trains on smaller samples).
        """
        hp = self._training_settings()
        opt_cls, opt_kwargs = self._optimizer_spec(hp)
        full_batch = full_batch or opt_cls is torch.optim.LBFGS
        frac = hp["validation_fraction"]
        use_valid = bool(frac) and not full_batch
        check_training_size(type(self).__name__, n_train, float(frac) if use_valid else 0.0)
        verbose = int(self.verbose)
        cbs: list[tuple[str, Any]] = []
        if use_valid and early_stopping and hp["patience"]:
            cbs.append(("early_stopping", EarlyStopping(
                monitor="valid_loss", patience=int(hp["patience"]), load_best=True)))
        if opt_cls is torch.optim.LBFGS and full_batch:
            cbs.append(("loss_convergence", LossConvergence()))
        if verbose >= 2:
            cbs.append(("progress_bar", ProgressBar()))
        cbs.extend((f"extra_{i}", cb) for i, cb in enumerate(callbacks))
        batch_size = -1 if full_batch else int(batch_size or hp["batch_size"])
        rs = self.random_state
        kwargs: dict[str, Any] = {
            "module": module,
            "criterion": criterion,
            "optimizer": opt_cls,
            "lr": float(hp["lr"]),
            "max_epochs": int(hp["max_epochs"]),
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
            "verbose": verbose,
            "amp_dtype": self._amp_dtype(),
            **{f"optimizer__{k}": v for k, v in opt_kwargs.items()},
            **{f"dataset__{k}": v for k, v in (dataset_kwargs or {}).items()},
            **{f"iterator_train__{k}": v for k, v in (iterator_kwargs or {}).items()},
            **{f"iterator_valid__{k}": v for k, v in (iterator_kwargs or {}).items()},
        }
        return _Net(**kwargs)

    def _fit_net(self, net: _Net, X: Any, y: Any = None) -> _Net:
        """Seed, then fit ``net``; keeps ``net_`` and ``module_`` (the history is ``net_.history``)."""
        self._seed()
        if not fit_resumable(self, net, X, y):  # per-epoch checkpoints inside resumable()
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
                if isinstance(batch, torch.Tensor):
                    batch = batch.to(device)
                elif isinstance(batch, dict):
                    batch = {k: v.to(device) for k, v in batch.items()}
                out = forward(module, batch) if forward is not None else module(batch)
                outs.append(out.float().cpu())
        return torch.cat(outs).numpy() if outs else np.empty((0,), dtype=np.float32)

    def _predict_batches(self, n: int, make_batch: Callable[[range], Any], *, scale: int,
                         forward: Callable[[torch.nn.Module, Any], torch.Tensor] | None = None
                         ) -> np.ndarray:
        """:meth:`_infer` over rows ``0..n-1`` in batches of ``scale * batch_size``.

        ``make_batch(rows)`` builds the input of one batch (a tensor, or a dict of
        tensors moved to the device together); ``scale`` is
        :data:`TABULAR_INFERENCE_SCALE` or :data:`IMAGE_INFERENCE_SCALE`.
        """
        bs = max(1, int(self.batch_size)) * scale

        def batches() -> Any:
            for i in range(0, n, bs):
                yield make_batch(range(i, min(i + bs, n)))

        return self._infer(batches, forward=forward)

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
        if not hasattr(self, "module_"):
            raise ValueError(f"{type(self).__name__} is not fitted; nothing to save")
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        meta, arrays = self._extra_state()
        tensors = {f"module.{k}": v.detach().cpu().numpy()
                   for k, v in self.module_.state_dict().items()}
        tensors.update({f"extra.{k}": np.ascontiguousarray(v) for k, v in arrays.items()})
        write_arrays(tensors, path / "weights.safetensors")
        config = {
            "class": f"{type(self).__module__}.{type(self).__qualname__}",
            "fracsurv_version": fracsurv.__version__,
            "versions": versions(),
            "params": params_json(self.get_params(deep=False)),  # type: ignore[attr-defined]
            "meta": to_json(meta),
        }
        atomic_write_text(path / "config.json", json.dumps(config, indent=2))
        return path

    @classmethod
    def load(cls, path: str | Path) -> Any:
        """Load a model saved with :meth:`save`."""
        est = load_model(path)
        if not isinstance(est, cls):
            raise TypeError(f"{path} holds a {type(est).__name__}, not a {cls.__name__}")
        return est


def load_model(path: str | Path, *, check_version: bool = True) -> Any:
    """Load any fracsurv torch estimator saved with ``save`` (safetensors + JSON).

    Only fracsurv's public torch estimators are instantiated, with parameters
    checked as :func:`fracsurv._serial.checked_params` does; machine-specific
    paths (``cache_dir``, ``checkpoint_dir``) are not taken from the folder.

    Parameters
    ----------
    path : str or Path
        Folder with ``config.json`` and ``weights.safetensors``.
    check_version : bool, default=True
        Warn when the model was saved by another fracsurv version.

    Raises
    ------
    ModelFormatError
        Naming the file and problem (broken JSON, missing key, truncated or
        mismatched weights, a refused class or parameter).
    """
    import warnings

    path = Path(path)
    where = path / "config.json"
    config = read_json(where)
    cls = import_allowed_class(require(config, "class", where), ("fracsurv",), str(where),
                               base=TorchEstimatorMixin)
    params = checked_params(require(config, "params", where), cls, str(where))
    for key in MACHINE_PARAMS:
        params.pop(key, None)
    if check_version and config.get("fracsurv_version") != fracsurv.__version__:
        warnings.warn(f"{where}: saved by fracsurv {config.get('fracsurv_version')}, this is "
                      f"{fracsurv.__version__}", UserWarning, stacklevel=2)
    weights = path / "weights.safetensors"
    tensors = read_arrays(weights)
    arrays = {k[len("extra."):]: v for k, v in tensors.items() if k.startswith("extra.")}
    est = cls(**params)
    try:
        est._restore(require(config, "meta", where), arrays)
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFormatError(f"{path}: saved state does not match {cls.__name__} "
                               f"({type(exc).__name__}: {exc})") from None
    state = {k[len("module."):]: torch.from_numpy(v.copy())
             for k, v in tensors.items() if k.startswith("module.")}
    try:
        est.module_.load_state_dict(state)
    except RuntimeError as exc:
        raise ModelFormatError(f"{weights}: weights do not match the network "
                               f"({str(exc).splitlines()[0]})") from None
    est.module_.eval()
    return est


def check_training_size(owner: str, n: int, validation_fraction: float = 0.0) -> None:
    """A clear error when ``n`` rows cannot be trained on.

    Batch normalisation needs at least 2 training rows, and a validation split
    needs at least 2 rows for its loss and C-index.

    Raises
    ------
    ValueError
        Naming the estimator, the rows given and the rows needed.
    """
    import math

    def ok(k: int) -> bool:
        v = math.ceil(validation_fraction * k) if validation_fraction else 0
        return k - v >= 2 and (not validation_fraction or v >= 2)

    if not ok(n):
        need = next(k for k in range(2, 10**6) if ok(k))
        hint = (f" with validation_fraction={validation_fraction:g} (set validation_fraction=0 "
                "to train on every row)" if validation_fraction else "")
        raise ValueError(f"{owner}: fit needs at least {need} rows{hint}, got {n}")


def check_input_shape(shape: Any, name: str = "input_shape", minimum: int = 8) -> tuple[int, int]:
    """``(H, W)`` as ints, both at least ``minimum``; a ``ValueError`` naming ``name`` otherwise.

    The length and size of a shape tuple are beyond what a parameter constraint
    can declare, so the estimators that take one share this check.
    """
    try:
        out = tuple(int(s) for s in shape)
    except (TypeError, ValueError):
        out = ()
    if len(out) != 2 or min(out) < minimum:
        raise ValueError(f"{name} must be (H, W) with both >= {minimum}, got {shape!r}")
    return out  # type: ignore[return-value]
