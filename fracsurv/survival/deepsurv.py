"""DeepSurv: a Cox-partial-likelihood neural network with scikit-learn ergonomics."""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Real
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from sklearn.base import BaseEstimator
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data

from fracsurv._base import check_features, check_survival_y, survival_arrays
from fracsurv.nn.base import TABULAR_INFERENCE_SCALE, TorchEstimatorMixin
from fracsurv.nn.mlp import ACTIVATIONS, make_mlp
from fracsurv.nn.splits import EventStratifiedSplit
from fracsurv.survival._mixin import BreslowSurvivalMixin
from fracsurv.survival.callbacks import ValidCIndex
from fracsurv.survival.loss import CoxLoss, ridge_penalty

__all__ = ["DeepSurvRegressor", "survival_target_tensor"]


def survival_target_tensor(y: np.ndarray, dtype: Any = np.float32) -> np.ndarray:
    """(n, 2) float array ``[time, event]``: the form the Cox criterion receives."""
    event, time = survival_arrays(y)
    return np.column_stack([time, event]).astype(dtype)


class DeepSurvRegressor(BreslowSurvivalMixin, TorchEstimatorMixin, BaseEstimator):
    """Cox proportional-hazards neural network (DeepSurv, Katzman et al. 2018).

    An MLP maps (standardised) features to a log-hazard and is trained on the
    exact Cox partial likelihood (:func:`fracsurv.survival.cox_nll`). Survival
    functions come from a Breslow baseline hazard, with scikit-survival's
    return types.

    Parameters
    ----------
    hidden_units : tuple of int, default=(64, 128)
        Hidden layer widths. ``()`` with ``optimizer="lbfgs"`` is exactly the
        linear Cox model (fitted in float64 to convergence).
    dropout : float, default=0.1
        Dropout after each hidden layer.
    batch_norm : bool, default=True
        Batch normalisation after each hidden linear layer.
    activation : str, default="relu"
        ``relu``, ``selu``, ``elu``, ``gelu``, ``tanh`` or ``leaky_relu``.
    ties : {"efron", "breslow"}, default="efron"
        Tie handling of the partial likelihood.
    optimizer, lr, weight_decay, batch_size, max_epochs, validation_fraction, patience
        Shared training parameters (:mod:`fracsurv.nn.base`); defaults ``"adam"``,
        ``1e-3``, ``1e-4``, ``256``, ``200``, ``0.15``, ``15``. Here the Cox loss of
        each mini-batch uses the batch's risk sets; with ``optimizer="lbfgs"`` the
        learning rate is the step scale (1.0 is usual), ``max_epochs`` counts outer
        steps of up to 200 iterations each, and ``weight_decay`` is added to the
        loss as ``weight_decay / 2 * ||w||^2`` (a ridge Cox model).
    standardize : bool, default=True
        Centre and scale features with training statistics (coefficients are
        reported on the original scale by :attr:`coef_`).
    linear_skip : bool, default=True
        Add a linear Cox term to the network's output (log-hazard = x·β + MLP(x)).
        On small tabular cohorts this keeps DeepSurv at least as good as the
        linear model it generalises (see ``benchmarks/survival_real.py``).
    device, precision, random_state, verbose
        As in :mod:`fracsurv.nn.base` (defaults ``"auto"``, ``"auto"``, None, 0).

    Attributes
    ----------
    net_ : skorch.NeuralNet
        The fitted net (``net_.history`` holds the training curve).
    module_ : torch.nn.Module
        The fitted network.
    baseline_model_ : sksurv.linear_model.coxph.BreslowEstimator
        Breslow baseline hazard.
    unique_times_ : ndarray
        Times at which ``return_array=True`` survival functions are evaluated.
    """

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        **TorchEstimatorMixin._parameter_constraints,
        "hidden_units": ["array-like"],
        "dropout": [Interval(Real, 0, 1, closed="left")],
        "batch_norm": ["boolean"],
        "activation": [StrOptions(set(ACTIVATIONS))],
        "ties": [StrOptions({"efron", "breslow"})],
        "standardize": ["boolean"],
        "linear_skip": ["boolean"],
    }

    def __init__(
        self,
        hidden_units: Sequence[int] = (64, 128),
        *,
        dropout: float = 0.1,
        batch_norm: bool = True,
        activation: str = "relu",
        ties: Literal["efron", "breslow"] = "efron",
        optimizer: Literal["adam", "sgd", "lbfgs"] = "adam",
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        batch_size: int = 256,
        max_epochs: int = 200,
        validation_fraction: float = 0.15,
        patience: int = 15,
        standardize: bool = True,
        linear_skip: bool = True,
        device: str = "auto",
        precision: str = "auto",
        random_state: int | None = None,
        verbose: int = 0,
    ) -> None:
        self.hidden_units = hidden_units
        self.dropout = dropout
        self.batch_norm = batch_norm
        self.activation = activation
        self.ties = ties
        self._set_shared_params(locals())
        self.standardize = standardize
        self.linear_skip = linear_skip

    # ------------------------------------------------------------------
    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.required = True
        tags.input_tags.allow_nan = False
        return tags

    def _is_lbfgs(self) -> bool:
        return str(self.optimizer).lower() == "lbfgs"

    def _np_dtype(self) -> Any:
        return np.float64 if self._is_lbfgs() else np.float32

    def _build_module(self, n_features: int) -> torch.nn.Module:
        linear = len(tuple(self.hidden_units)) == 0
        module: torch.nn.Module = make_mlp(
            n_features, tuple(self.hidden_units), 1, activation=self.activation,
            dropout=0.0 if linear else self.dropout, batch_norm=self.batch_norm and not linear,
        )
        if self.linear_skip and not linear:
            module = _LinearSkip(n_features, module)
        return module.double() if self._is_lbfgs() else module

    def _scale(self, X: np.ndarray) -> np.ndarray:
        return ((X - self.x_mean_) / self.x_scale_).astype(self._np_dtype())

    def fit(self, X: Any, y: np.ndarray) -> DeepSurvRegressor:
        """Fit the network on features ``X`` and survival target ``y``.

        Parameters
        ----------
        X : array-like or DataFrame of shape (n_samples, n_features)
            Numeric features without missing values.
        y : structured ndarray
            ``sksurv.util.Surv.from_arrays(event, time)``.

        Returns
        -------
        self
        """
        self._validate_params()
        check_features(X)
        X = validate_data(self, X, dtype=np.float64, reset=True, ensure_min_samples=2)
        y = check_survival_y(y, X.shape[0])
        if self.standardize:
            self.x_mean_ = X.mean(axis=0)
            scale = X.std(axis=0)
            self.x_scale_ = np.where(scale > 0, scale, 1.0)
        else:
            self.x_mean_ = np.zeros(X.shape[1])
            self.x_scale_ = np.ones(X.shape[1])
        Xs = self._scale(X)
        target = survival_target_tensor(y, self._np_dtype())
        self._seed()
        module = self._build_module(X.shape[1])
        criterion = CoxLoss(ties=self.ties)
        if self._is_lbfgs() and self.weight_decay:
            criterion = _RidgeCox(criterion, module, float(self.weight_decay))
        # the validation split's Harrell C is recorded beside its Cox loss (net_.history),
        # by the callback FusionSurvival selects its epochs with
        net = self._make_net(module, criterion, n_train=len(Xs), valid_batch_size=-1,
                             callbacks=[ValidCIndex()])
        if net.train_split is not None:
            net.train_split = EventStratifiedSplit(
                self._training_settings()["validation_fraction"], target[:, 1] > 0,
                self.random_state if isinstance(self.random_state, int) else None,
                owner=type(self).__name__)
        self._fit_net(net, Xs, target)
        self._fit_baseline(self._raw_predict(Xs), y)
        return self

    def _raw_predict(self, Xs: np.ndarray) -> np.ndarray:
        risk = self._predict_batches(len(Xs), lambda rows: torch.from_numpy(Xs[rows.start:rows.stop]),
                                     scale=TABULAR_INFERENCE_SCALE)
        return risk.reshape(-1).astype(np.float64)

    def predict(self, X: Any) -> np.ndarray:
        """Predicted risk (log-hazard); higher means earlier events.

        Parameters
        ----------
        X : array-like or DataFrame of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples,)
        """
        check_is_fitted(self, "module_")
        check_features(X)
        X = validate_data(self, X, dtype=np.float64, reset=False)
        return self._raw_predict(self._scale(X))

    @property
    def coef_(self) -> np.ndarray:
        """Coefficients on the original feature scale (linear model only)."""
        check_is_fitted(self, "module_")
        if len(tuple(self.hidden_units)):
            raise AttributeError("coef_ exists only for the linear model (hidden_units=())")
        w = self.module_[-1].weight.detach().cpu().double().numpy().reshape(-1)
        return w / self.x_scale_

    # -- persistence ---------------------------------------------------
    def _extra_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        arrays = {"x_mean": self.x_mean_, "x_scale": self.x_scale_, **self._baseline_arrays()}
        meta = {"n_features_in": int(self.n_features_in_)}
        if hasattr(self, "feature_names_in_"):
            meta["feature_names_in"] = [str(c) for c in self.feature_names_in_]
        return meta, arrays

    def _restore(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.n_features_in_ = int(meta["n_features_in"])
        if "feature_names_in" in meta:
            self.feature_names_in_ = np.asarray(meta["feature_names_in"], dtype=object)
        self.x_mean_, self.x_scale_ = arrays["x_mean"], arrays["x_scale"]
        self._restore_baseline(arrays)
        self.module_ = self._build_module(self.n_features_in_)


class _LinearSkip(torch.nn.Module):
    """log-hazard = linear Cox term + MLP term.

    The linear path lets the network start from (and never fall below) what a
    linear Cox model captures; the MLP adds interactions and non-linearity.
    """

    def __init__(self, n_features: int, mlp: torch.nn.Module) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(n_features, 1, bias=False)
        self.mlp = mlp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x) + self.mlp(x)


class _RidgeCox(torch.nn.Module):
    """Cox loss plus an L2 penalty on the weights (for full-batch L-BFGS)."""

    def __init__(self, base: torch.nn.Module, module: torch.nn.Module, strength: float) -> None:
        super().__init__()
        self.base = base
        self.strength = strength
        self._weights = [p for n, p in module.named_parameters() if n.endswith("weight")]

    def forward(self, y_pred: torch.Tensor, y_true: torch.Tensor) -> torch.Tensor:
        return self.base(y_pred, y_true) + ridge_penalty(self._weights, self.strength)
