"""``FusionSurvival``: multimodal DeepSurv on a radiograph (or vertebra crops) + clinical data.

Implements the ConvDeepSurv / ViTDeepSurv models of the multimodal study (see
``docs/fusion_survival.md``): a MONAI image backbone and the DeepSurv clinical
branch (n_tab -> 64 -> 128), joined by intermediate fusion (concatenated
features -> FC 128 -> BatchNorm -> ReLU -> FC 1), late fusion (one FC on the
two frozen sub-models' risk scores) or the alpha-model
(``w * r_clinical + (1 - w) * r_image``, w the ``clinical_weight``), trained
on the exact Cox partial likelihood through the shared skorch base
(:class:`fracsurv.nn.base.TorchEstimatorMixin`). Images are streamed by
reference in batches; survival functions come from a Breslow baseline.
"""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Integral, Real
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.utils._param_validation import Hidden, Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from fracsurv._base import (
    DEPRECATED,
    check_survival_y,
    derive_seed,
    renamed_attribute,
    renamed_param,
)
from fracsurv.nn.backbones import BACKBONES
from fracsurv.nn.base import TorchEstimatorMixin, check_input_shape
from fracsurv.nn.pooling import CROP_POOLS
from fracsurv.survival._fusion_nets import AUX_RISKS, FUSIONS
from fracsurv.survival._mixin import BreslowSurvivalMixin
from fracsurv.survival.deepsurv import survival_target_tensor
from fracsurv.survival.fusion.data import FusionDataMixin
from fracsurv.survival.fusion.persistence import FusionPersistenceMixin
from fracsurv.survival.fusion.training import FitData, FusionTrainingMixin

__all__ = ["DEFAULT_ALPHA_GRID", "FusionSurvival"]

DEFAULT_ALPHA_GRID = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)  # the study's sweep
_PRETRAIN = ("auto", "none", "tabular", "image", "both")


class FusionSurvival(FusionDataMixin, FusionTrainingMixin, FusionPersistenceMixin,
                     BreslowSurvivalMixin, TorchEstimatorMixin, BaseEstimator):
    """Multimodal DeepSurv: radiograph or vertebra-crop stack + clinical variables.

    ``predict`` gives a risk (log-hazard, higher = earlier fracture);
    ``predict_survival_function`` and ``predict_cumulative_hazard_function`` use
    a Breslow baseline hazard and return scikit-survival's types; ``score`` is
    Harrell's C.

    Parameters
    ----------
    image_input : {"crops", "image"}, default="crops"
        ``"image"``: one single-channel radiograph per row (a cell with several
        images uses the first). ``"crops"``: an ``(N, h, w)`` vertebra crop stack
        per row (N = 13 from :class:`fracsurv.vertebrae.crops.CropStacker`), fed
        as N channels: the backbone's first convolution is built for N.
    backbone : str, default="resnet50"
        ``"resnet50"`` (ConvDeepSurv), ``"vit"`` (ViTDeepSurv),
        ``"efficientnet-b4"``, or any of :data:`fracsurv.nn.backbones.BACKBONES`
        (``"resnet10-tiny"`` / ``"resnet10"`` for CPUs). Trained from scratch.
    fusion : {"intermediate", "late", "alpha", "image_only"}, default="intermediate"
        How image and clinical information meet (see the module docstring).
    clinical_weight : float or "search", default=0.8
        Clinical weight w of the alpha-model (``fusion="alpha"``:
        ``w * r_clinical + (1 - w) * r_image``); ``"search"`` trains one model
        per value of ``clinical_weight_grid`` and keeps the one with the best
        C-index on the inner validation split (``clinical_weight_`` and
        ``clinical_weight_scores_`` record it).
    clinical_weight_grid : sequence of float, default=(0.3, ..., 0.9)
        The weights searched (:data:`DEFAULT_ALPHA_GRID`, the study's sweep).
    clinical_columns : sequence of str, optional
        Clinical columns of X (numeric, no missing values). ``None`` uses the
        data contract's 11 clinical columns
        (:data:`fracsurv.contract.CLINICAL_COLUMNS`).
    image_column : str, optional
        Column holding images / crop stacks; default ``"image"`` or ``"crops"``
        after ``image_input``.
    crop_encoder : {"channels", "shared"}, default="channels"
        For crops: the N crops as the channels of one backbone input (the
        study), or one single-channel backbone shared by every crop with its
        features pooled over the non-empty crops (N times the compute).
    crop_pool : {"max", "sum", "mean"}, default="max"
        Pooling of the shared encoder's per-crop features: ``"max"`` (the worst
        vertebra), ``"sum"`` (the image risk becomes a sum of per-vertebra risks,
        like the spinal deformity index sums Genant grades) or ``"mean"``.
    input_shape : (int, int), optional
        Network input (H, W) before rotation padding. Default: (1024, 512) for
        full images, the stacks' own size for crops.
    pretrain : {"auto", "none", "tabular", "image", "both"}, default="auto"
        Sub-models trained on their own (Cox loss) before the fusion stage.
        ``"auto"``: ``"both"`` for late fusion (the study's LF-FC), else
        ``"none"`` (end to end).
    freeze_pretrained : bool, default=True
        Keep pre-trained sub-models frozen in the fusion stage (late fusion then
        fits only its FC). ``False`` fine-tunes everything end to end.
    head_rows : {"validation", "all"}, default="validation"
        Rows on which frozen sub-models are combined -- the late-fusion FC is
        fitted, and a search over frozen sub-models (``clinical_weight="search"``
        with ``pretrain="both"``) scores each weight: the inner validation rows, which
        the sub-models did not train on (for the FC: every row when they hold
        fewer than 20 events), or every row. ``"all"`` suits sub-models of few
        effective parameters (a linear clinical branch, an image risk read off
        an auxiliary head), whose training-row risks are barely optimistic: the
        combination then sees every event instead of a noisy 15 %.
    clinical_hidden_units : tuple of int, default=(64, 128)
        Clinical branch widths (the study's DeepSurv; ``hidden_units`` of
        :class:`DeepSurvRegressor`).
    dropout : float, default=0.1
        Dropout in the clinical branch.
    linear_skip : bool, default=True
        Add a linear Cox term on the clinical inputs to the clinical (and the
        intermediate-fusion) risk, as :class:`DeepSurvRegressor` does.
    linear_init : {"cox", "random"}, default="cox"
        ``"cox"``: the clinical linear term (the skip term, or the whole branch
        when ``clinical_hidden_units=()``) starts at the ridge Cox fit on the inner
        training rows (:func:`fracsurv.survival.fit_ridge_cox`) and the MLP's
        risk head at zero, so the clinical risk starts as the linear Cox model;
        a linear branch is then fitted, not trained, and its pre-training stage
        is skipped. ``"random"``: the usual random start (see Notes). Nothing
        to start without a linear term (``linear_skip=False`` with hidden
        layers).
    aux_column : str, optional
        A column of X supervising an auxiliary head on the image branch
        (``aux_weight`` x its loss added to the Cox loss; training only, never
        used at prediction). ``None`` (default) is the study's setup. Either one
        label per row -- 0/1 (e.g. ``"prevalent_vf"``) or an ordinal grade
        0..K (e.g. the maximum Genant grade) -- or, with
        ``crop_encoder="shared"``, one label per crop: an array as long as the
        stack (e.g. ``CropStacker(grades_column="crop_grades")``, the Genant
        grade of each slot). NaN = unknown (empty slots). Grades are scored by a
        cumulative-link head: K binary cross-entropies on ``grade >= k``; a
        per-row label with a shared encoder uses the maximum over crops.
    aux_weight : float, default=0.5
    aux_risk : {"only", "add", "none"}, default="only"
        With ``aux_column``, what the image risk is made of: a Cox term on the
        auxiliary head's summary -- the expected number of vertebrae at or
        above each grade for per-crop labels, the label's probabilities for a
        per-row one -- alone (``"only"``, see Notes), that term plus the backbone's risk head
        (``"add"``), or the backbone risk head alone (``"none"``: the label only
        shapes the image features).
    augment : bool, default=True
        MONAI augmentation in training (:func:`fracsurv.nn.augment.make_augmenter`);
        full images are zero-padded for +-``max_rotation`` degrees in training
        and prediction alike.
    max_rotation : float, default=15.0
    ties : {"efron", "breslow"}, default="efron"
    scheduler : {"cosine", None}, default="cosine"
        Cosine annealing of the learning rate to ``0.1 * lr`` over ``max_epochs``
        (the study's schedule).
    optimizer : {"adam", "sgd"}, default="adam"
    lr : float, default=1e-4
    weight_decay : float, default=1e-4
    batch_size : int, default=32
    max_epochs : int, default=100
        Epochs of each training stage.
    validation_fraction : float, default=0.15
        Inner validation split (early stopping on its C-index, the clinical
        weight search, and the late-fusion FC; one split for every stage).
    patience : int, default=20
        Epochs without a better validation C-index before stopping (best weights
        are restored); ``0`` disables early stopping.
    num_workers : int, default=0
        DataLoader workers for training.
    device : str, default="auto"
        ``"auto"`` uses a GPU when present.
    precision : str, default="auto"
        ``"auto"``: bf16 autocast on GPUs that support it; ``"fp16"``,
        ``"bf16"`` or ``"32"``.
    random_state : int or None
    verbose : int, default=0

    Attributes
    ----------
    module_ : FusionNet
    net_ : skorch.NeuralNet
        Net of the last training stage (``net_.history``); ``histories_`` holds
        every stage's history.
    clinical_weight_ : float or None
        Clinical weight used (alpha-model only).
    clinical_weight_scores_ : dict or None
        Validation C-index per clinical weight when ``clinical_weight="search"``.
    late_weights_ : ndarray of shape (2,) or None
        FC weights ``[clinical, image]`` of late fusion.
    aux_levels_ : int
        Ordinal levels K of the auxiliary label (0 without ``aux_column``).
    aux_per_crop_ : bool
        Whether the auxiliary label is given per crop.
    n_channels_ : int
    input_shape_ : (int, int)
        Network input size (after rotation padding).
    tabular_columns_ : list of str
    baseline_model_, unique_times_ : Breslow baseline hazard.

    Notes
    -----
    ``tabular_columns``, ``tab_hidden``, ``alpha`` and ``alpha_grid`` are the
    deprecated former names of ``clinical_columns``, ``clinical_hidden_units``,
    ``clinical_weight`` and ``clinical_weight_grid``: given, they warn with a
    ``FutureWarning`` and take precedence. The fitted ``tabular_columns_`` keeps
    its name; ``alpha_`` and ``alpha_scores_`` are deprecated read-only aliases
    of ``clinical_weight_`` and ``clinical_weight_scores_``.

    A subclass can watch (or adjust) the network as each training stage
    begins by overriding :meth:`on_stage_begin`.

    The defaults ``linear_init="cox"`` and ``aux_risk="only"`` are the measured
    choices of ``benchmarks/fusion.py`` (numbers in ``docs/fusion_survival.md``):
    mini-batch Adam had not converged a linear clinical branch in 20 epochs at
    lr 1e-3 (test C 0.718 against Cox PH's 0.764 on a ``cpu-graded`` fold), and
    the auxiliary summary alone was the best image risk.
    """

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        **TorchEstimatorMixin._parameter_constraints,
        "image_input": [StrOptions({"image", "crops"})],
        "backbone": [StrOptions(set(BACKBONES))],
        "fusion": [StrOptions(set(FUSIONS))],
        "clinical_weight": [Interval(Real, 0, 1, closed="both"), StrOptions({"search"})],
        "clinical_weight_grid": ["array-like"],
        "alpha": [Interval(Real, 0, 1, closed="both"), StrOptions({"search"}),
                  Hidden(StrOptions({DEPRECATED}))],
        "alpha_grid": ["array-like", Hidden(StrOptions({DEPRECATED}))],
        "clinical_columns": ["array-like", None],
        "tabular_columns": ["array-like", None, Hidden(StrOptions({DEPRECATED}))],
        "image_column": [str, None],
        "crop_encoder": [StrOptions({"channels", "shared"})],
        "crop_pool": [StrOptions(set(CROP_POOLS))],
        "input_shape": [tuple, list, None],
        "pretrain": [StrOptions(set(_PRETRAIN))],
        "freeze_pretrained": ["boolean"],
        "head_rows": [StrOptions({"validation", "all"})],
        "clinical_hidden_units": ["array-like"],
        "tab_hidden": ["array-like", Hidden(StrOptions({DEPRECATED}))],
        "dropout": [Interval(Real, 0, 1, closed="left")],
        "linear_skip": ["boolean"],
        "linear_init": [StrOptions({"cox", "random"})],
        "aux_column": [str, None],
        "aux_weight": [Interval(Real, 0, None, closed="left")],
        "aux_risk": [StrOptions(set(AUX_RISKS))],
        "augment": ["boolean"],
        "max_rotation": [Interval(Real, 0, None, closed="left")],
        "ties": [StrOptions({"efron", "breslow"})],
        "scheduler": [StrOptions({"cosine"}), None],
        # trains on mini-batches: no L-BFGS
        "optimizer": [StrOptions({"adam", "sgd"})],
        "num_workers": [Interval(Integral, 0, None, closed="left")],
    }

    def __init__(self, image_input: str = "crops", *, backbone: str = "resnet50",
                 fusion: str = "intermediate", clinical_weight: float | str = 0.8,
                 clinical_weight_grid: Sequence[float] = DEFAULT_ALPHA_GRID,
                 clinical_columns: Sequence[str] | None = None, image_column: str | None = None,
                 crop_encoder: str = "channels", crop_pool: str = "max",
                 input_shape: tuple[int, int] | None = None, pretrain: str = "auto",
                 freeze_pretrained: bool = True, head_rows: str = "validation",
                 clinical_hidden_units: tuple[int, ...] = (64, 128),
                 dropout: float = 0.1, linear_skip: bool = True, linear_init: str = "cox",
                 aux_column: str | None = None,
                 aux_weight: float = 0.5, aux_risk: str = "only", augment: bool = True,
                 max_rotation: float = 15.0,
                 ties: str = "efron", scheduler: str | None = "cosine", optimizer: str = "adam",
                 lr: float = 1e-4, weight_decay: float = 1e-4, batch_size: int = 32,
                 max_epochs: int = 100, validation_fraction: float = 0.15, patience: int = 20,
                 num_workers: int = 0, device: str = "auto", precision: str = "auto",
                 random_state: int | None = None, verbose: int = 0,
                 tabular_columns: Any = DEPRECATED, tab_hidden: Any = DEPRECATED,
                 alpha: Any = DEPRECATED, alpha_grid: Any = DEPRECATED) -> None:
        self.image_input = image_input
        self.backbone = backbone
        self.fusion = fusion
        self.clinical_weight = clinical_weight
        self.clinical_weight_grid = clinical_weight_grid
        self.clinical_columns = clinical_columns
        self.image_column = image_column
        self.crop_encoder = crop_encoder
        self.crop_pool = crop_pool
        self.input_shape = input_shape
        self.pretrain = pretrain
        self.freeze_pretrained = freeze_pretrained
        self.head_rows = head_rows
        self.clinical_hidden_units = clinical_hidden_units
        self.dropout = dropout
        self.linear_skip = linear_skip
        self.linear_init = linear_init
        self.aux_column = aux_column
        self.aux_weight = aux_weight
        self.aux_risk = aux_risk
        self.augment = augment
        self.max_rotation = max_rotation
        self.ties = ties
        self.scheduler = scheduler
        self._set_shared_params(locals())
        self.num_workers = num_workers
        self.tabular_columns = tabular_columns
        self.tab_hidden = tab_hidden
        self.alpha = alpha
        self.alpha_grid = alpha_grid

    # deprecated former names of the fitted clinical weight and its search scores
    alpha_ = renamed_attribute("clinical_weight_")
    alpha_scores_ = renamed_attribute("clinical_weight_scores_")

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.target_tags.required = True
        return tags

    # -- parameters and input checks --------------------------------------------
    def _clinical_columns_param(self, warn: bool = False) -> Any:
        return renamed_param(self, "clinical_columns", "tabular_columns", warn=warn)

    def _hidden_units(self, warn: bool = False) -> tuple[int, ...]:
        return tuple(renamed_param(self, "clinical_hidden_units", "tab_hidden", warn=warn))

    def _clinical_weight(self, warn: bool = False) -> float | str:
        """``clinical_weight``, or the deprecated ``alpha`` when that was given."""
        return renamed_param(self, "clinical_weight", "alpha", warn=warn)

    def _clinical_weight_grid(self, warn: bool = False) -> list[float]:
        """``clinical_weight_grid`` (or the deprecated ``alpha_grid``) as floats."""
        return [float(w) for w in renamed_param(self, "clinical_weight_grid", "alpha_grid",
                                                warn=warn)]

    def _check_rules(self) -> None:
        """Rules beyond the declared constraints: the weight grid searched and the shape."""
        if self._clinical_weight() == "search":
            grid = self._clinical_weight_grid()
            if not grid or any(not 0.0 <= w <= 1.0 for w in grid):
                raw = renamed_param(self, "clinical_weight_grid", "alpha_grid")
                raise ValueError(f"clinical_weight_grid must hold values in [0, 1], got {raw!r}")
        if self.input_shape is not None:
            check_input_shape(self.input_shape)

    def _pretrain_parts(self) -> tuple[str, ...]:
        mode = self.pretrain
        if mode == "auto":
            mode = "both" if self.fusion == "late" else "none"
        if self.fusion == "image_only":
            return ()
        return {"none": (), "tabular": ("tabular",), "image": ("image",),
                "both": ("tabular", "image")}[mode]

    def fit(self, X: pd.DataFrame, y: np.ndarray) -> FusionSurvival:
        """Train on the rows of ``X`` and the survival target ``y``.

        Parameters
        ----------
        X : DataFrame
            One row per patient with the image column and the clinical columns
            (and ``aux_column`` when set).
        y : structured ndarray
            ``sksurv.util.Surv.from_arrays(event, time)``.

        Returns
        -------
        self
        """
        # 1. check the parameters and the data
        self._validate_params()
        self._clinical_columns_param(warn=True)
        self._hidden_units(warn=True)
        self._clinical_weight(warn=True)
        self._clinical_weight_grid(warn=True)
        self._check_rules()
        tab_cols = self._tab_cols()
        tab = self._check_frame(X, tab_cols)
        y = check_survival_y(y, len(X))
        # 2. the input geometry, the auxiliary labels and the clinical scaling
        self._geometry(X)
        aux = self._aux_labels(X)
        self.feature_names_in_ = np.asarray(X.columns, dtype=object)
        self.n_features_in_ = X.shape[1]
        self.tabular_columns_ = tab_cols
        self.x_mean_ = tab.mean(axis=0) if tab.shape[1] else np.zeros(0)
        scale = tab.std(axis=0) if tab.shape[1] else np.ones(0)
        self.x_scale_ = np.where(scale > 0, scale, 1.0)
        # 3. the streaming dataset and the seed of the one inner split every stage uses
        target = np.column_stack([survival_target_tensor(y), aux]).astype(np.float32)
        ds = self._dataset(X, tab, y=target, train=True)
        split_seed = derive_seed(self.random_state)
        self.histories_: list[dict[str, Any]] = []
        self.clinical_weight_scores_: dict[float, float] | None = None
        data = FitData(ds=ds, X=X, tab=tab, y=y, split_seed=split_seed)
        # 4. train: one network, or one per clinical weight of the search
        weight = self._clinical_weight()
        if self.fusion == "alpha" and weight == "search":
            weight = self._search_clinical_weight(data)
        else:
            weight = float(weight) if self.fusion == "alpha" else 0.0
            self._fit_stages(self._seeded_module(weight), data)
        # 5. the fitted state and the Breslow baseline
        self.clinical_weight_ = weight if self.fusion == "alpha" else None
        self.late_weights_ = (self.module_.late_weights().numpy()
                              if self.fusion == "late" else None)
        self.module_.stage = "fusion"
        self._fit_baseline(self._raw_predict(X, tab), y)
        self.image_branch_alive_ = self._image_branch_alive(X, tab)
        return self

    def _image_branch_alive(self, X: pd.DataFrame, tab: np.ndarray, n: int = 64) -> bool:
        """Whether the image features vary over (up to ``n``) training rows; warn if not.

        A dead image branch (constant output, e.g. after a collapse or on blank
        images) leaves a model that only uses the clinical variables while it
        is reported as multimodal; a grid search would not notice.
        """
        import warnings

        rows = np.arange(min(len(X), n))
        if len(rows) < 2:
            return True

        import torch

        def features(m: Any, b: dict[str, Any]) -> Any:
            feats, risk, _, _ = m.image_risk(b["image"])
            return torch.cat([feats.float().flatten(1), risk.float().reshape(len(risk), -1)], 1)

        f = self._batched(self._dataset(X.iloc[rows], tab[rows]), features).reshape(len(rows), -1)
        spread = float(np.max(np.std(f, axis=0) / (1.0 + np.abs(np.mean(f, axis=0)))))
        if spread < 1e-6:
            warnings.warn(f"{type(self).__name__}: the image branch gives the same output for "
                          f"every training row checked ({len(rows)}): a dead image branch. This "
                          "model uses the clinical variables only; do not report it as "
                          "multimodal.", UserWarning, stacklevel=3)
            return False
        return True

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        """Predicted risk (log-hazard); higher means an earlier fracture.

        Parameters
        ----------
        X : DataFrame
            With the image column and the clinical columns used in ``fit``.

        Returns
        -------
        ndarray of shape (n_samples,)
        """
        check_is_fitted(self, "module_")
        tab = self._check_frame(X, self.tabular_columns_)
        return self._raw_predict(X, tab)

    def sub_model_risks(self, X: pd.DataFrame) -> pd.DataFrame:
        """Clinical and image sub-model risks (late and alpha fusion).

        Returns
        -------
        DataFrame with columns ``risk_clinical`` and ``risk_image``, X's index.
        """
        check_is_fitted(self, "module_")
        if self.fusion not in ("late", "alpha"):
            raise ValueError(f"sub-model risks exist for late and alpha fusion, not {self.fusion!r}")
        tab = self._check_frame(X, self.tabular_columns_)
        r = self._sub_risks(X, tab)
        return pd.DataFrame({"risk_clinical": r[:, 0], "risk_image": r[:, 1]}, index=X.index)
