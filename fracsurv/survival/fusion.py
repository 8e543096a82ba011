"""``FusionSurvival``: multimodal DeepSurv on a radiograph (or vertebra crops) + clinical data.

Implements the ConvDeepSurv / ViTDeepSurv models of the multimodal study (see
``docs/fusion_survival.md``): a MONAI image backbone and the DeepSurv clinical
branch (n_tab -> 64 -> 128), joined by intermediate fusion (concatenated
features -> FC 128 -> BatchNorm -> ReLU -> FC 1), late fusion (one FC on the
two frozen sub-models' risk scores) or the alpha-model
(``alpha * r_clinical + (1 - alpha) * r_image``), trained on the exact Cox
partial likelihood through the shared skorch base
(:class:`fracsurv.nn.base.TorchEstimatorMixin`). Images are streamed by
reference in batches; survival functions come from a Breslow baseline.
"""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Integral, Real
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch
from sklearn.base import BaseEstimator
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted
from skorch.callbacks import Callback, EarlyStopping, LRScheduler
from skorch.dataset import ValidSplit

from fracsurv._base import check_features, check_survival_y, derive_seed, row_label, survival_arrays
from fracsurv.contract import CLINICAL_COLUMNS, DEFAULT_IMAGE_SHAPE
from fracsurv.io.refs import is_missing, iter_cell, load_image
from fracsurv.nn.augment import make_augmenter, rotation_padded_shape
from fracsurv.nn.backbones import BACKBONES
from fracsurv.nn.base import IMAGE_INFERENCE_SCALE, TorchEstimatorMixin, check_input_shape
from fracsurv.nn.data import ImageDataset, to_chw
from fracsurv.nn.pooling import CROP_POOLS
from fracsurv.survival._fusion_nets import AUX_RISKS, FUSIONS, FusionCoxLoss, FusionNet
from fracsurv.survival._mixin import BreslowSurvivalMixin
from fracsurv.survival.deepsurv import survival_target_tensor
from fracsurv.survival.loss import fit_ridge_cox

__all__ = ["DEFAULT_ALPHA_GRID", "FusionSurvival"]

DEFAULT_ALPHA_GRID = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)  # the study's sweep
_PRETRAIN = ("auto", "none", "tabular", "image", "both")
_MIN_HEAD_EVENTS = 20  # held-out events needed to fit the late-fusion FC on them alone


class _FusionImages(ImageDataset):
    """Images (or crop stacks) + clinical rows; preprocessing and row-naming errors.

    Every item is resized to ``shape``, min-max scaled to [0, 1] per image,
    checked for its channel count and zero-padded to ``padded`` (room for
    rotations); ``transform`` (augmentation) follows.
    """

    def __init__(self, items: list[Any], rows: list[str], *, channels: int | None,
                 padded: tuple[int, int] | None, **kwargs: Any) -> None:
        super().__init__(items, rows=rows, **kwargs)
        self.channels = channels
        self.padded = padded
        self.skip_images = False  # clinical pre-training reads no image

    def __getitem__(self, idx: int) -> tuple[Any, Any]:
        if not self.skip_images:
            return super().__getitem__(idx)
        x = {"image": torch.zeros(self.channels or 1, 1, 1),
             "tabular": torch.from_numpy(self.tabular[idx])}
        return x, torch.as_tensor(self.y[idx])

    def load(self, idx: int) -> torch.Tensor:
        x = super().load(idx)  # load errors name the row
        assert self.rows is not None
        if self.channels is not None and x.shape[0] != self.channels:
            raise ValueError(f"the image of {self.rows[idx]} has {x.shape[0]} channels; the "
                             f"model was built for {self.channels}")
        if not torch.isfinite(x).all():
            raise ValueError(f"the image of {self.rows[idx]} contains NaN or infinite pixels")
        lo, hi = x.amin(), x.amax()
        x = (x - lo) / (hi - lo) if hi > lo else torch.zeros_like(x)
        if self.padded is not None and tuple(x.shape[-2:]) != self.padded:
            ph, pw = self.padded[0] - x.shape[-2], self.padded[1] - x.shape[-1]
            x = torch.nn.functional.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))
        return x


class _ValidCIndex(Callback):
    """Harrell's C of the whole validation split, from the predictions of its batches.

    Recorded as ``valid_cindex`` every epoch (the study's model-selection metric),
    without a second pass over the images.
    """

    def on_epoch_begin(self, net: Any, **kwargs: Any) -> None:
        self._risk: list[np.ndarray] = []
        self._y: list[np.ndarray] = []

    def on_batch_end(self, net: Any, batch: Any = None, training: bool = False,
                     y_pred: Any = None, **kwargs: Any) -> None:
        if training or y_pred is None:
            return
        risk = y_pred[0] if isinstance(y_pred, tuple) else y_pred
        self._risk.append(risk.detach().float().cpu().numpy().reshape(-1))
        self._y.append(np.asarray(batch[1].detach().cpu().numpy() if isinstance(
            batch[1], torch.Tensor) else batch[1], dtype=float)[:, :2])

    def on_epoch_end(self, net: Any, **kwargs: Any) -> None:
        if not self._risk:
            return
        risk = np.concatenate(self._risk)
        y = np.concatenate(self._y)
        event = y[:, 1] > 0.5
        c = 0.5
        if event.any() and np.isfinite(risk).all():
            from sksurv.metrics import concordance_index_censored

            c = float(concordance_index_censored(event, y[:, 0], risk)[0])
        net.history.record("valid_cindex", c)


class FusionSurvival(BreslowSurvivalMixin, TorchEstimatorMixin, BaseEstimator):
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
    alpha : float or "search", default=0.8
        Clinical weight of the alpha-model; ``"search"`` trains one model per
        value of ``alpha_grid`` and keeps the one with the best C-index on the
        inner validation split (``alpha_`` and ``alpha_scores_`` record it).
    alpha_grid : sequence of float, default=(0.3, ..., 0.9)
    tabular_columns : sequence of str, optional
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
        fitted, and a search over frozen sub-models (``alpha="search"`` with
        ``pretrain="both"``) scores each alpha: the inner validation rows, which
        the sub-models did not train on (for the FC: every row when they hold
        fewer than 20 events), or every row. ``"all"`` suits sub-models of few
        effective parameters (a linear clinical branch, an image risk read off
        an auxiliary head), whose training-row risks are barely optimistic: the
        combination then sees every event instead of a noisy 15 %.
    tab_hidden : tuple of int, default=(64, 128)
        Clinical branch widths (the study's DeepSurv).
    dropout : float, default=0.1
        Dropout in the clinical branch.
    linear_skip : bool, default=True
        Add a linear Cox term on the clinical inputs to the clinical (and the
        intermediate-fusion) risk, as :class:`DeepSurvRegressor` does.
    linear_init : {"cox", "random"}, default="cox"
        ``"cox"``: the clinical linear term (the skip term, or the whole branch
        when ``tab_hidden=()``) starts at the ridge Cox fit on the inner
        training rows (:func:`fracsurv.survival.fit_ridge_cox`) and the MLP's
        risk head at zero, so the clinical risk starts as the linear Cox model;
        a linear branch is then fitted, not trained, and its pre-training stage
        is skipped. ``"random"``: the usual random start. Mini-batch Adam had
        not converged a linear branch in 20 epochs at lr 1e-3 (test C 0.718
        against Cox PH's 0.764 on a ``cpu-graded`` fold, see
        ``docs/fusion_survival.md``). Nothing to start without a linear term
        (``linear_skip=False`` with hidden layers).
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
        per-row one -- alone (``"only"``, which measured best, see
        ``docs/fusion_survival.md``), that term plus the backbone's risk head
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
        Inner validation split (early stopping on its C-index, the alpha search,
        and the late-fusion FC; one split for every stage).
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
    alpha_ : float or None
        Alpha used (alpha-model only).
    alpha_scores_ : dict or None
        Validation C-index per alpha when ``alpha="search"``.
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
    """

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        **TorchEstimatorMixin._parameter_constraints,
        "image_input": [StrOptions({"image", "crops"})],
        "backbone": [StrOptions(set(BACKBONES))],
        "fusion": [StrOptions(set(FUSIONS))],
        "alpha": [Interval(Real, 0, 1, closed="both"), StrOptions({"search"})],
        "alpha_grid": ["array-like"],
        "tabular_columns": ["array-like", None],
        "image_column": [str, None],
        "crop_encoder": [StrOptions({"channels", "shared"})],
        "crop_pool": [StrOptions(set(CROP_POOLS))],
        "input_shape": [tuple, list, None],
        "pretrain": [StrOptions(set(_PRETRAIN))],
        "freeze_pretrained": ["boolean"],
        "head_rows": [StrOptions({"validation", "all"})],
        "tab_hidden": ["array-like"],
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
                 fusion: str = "intermediate", alpha: float | str = 0.8,
                 alpha_grid: Sequence[float] = DEFAULT_ALPHA_GRID,
                 tabular_columns: Sequence[str] | None = None, image_column: str | None = None,
                 crop_encoder: str = "channels", crop_pool: str = "max",
                 input_shape: tuple[int, int] | None = None, pretrain: str = "auto",
                 freeze_pretrained: bool = True, head_rows: str = "validation",
                 tab_hidden: tuple[int, ...] = (64, 128),
                 dropout: float = 0.1, linear_skip: bool = True, linear_init: str = "cox",
                 aux_column: str | None = None,
                 aux_weight: float = 0.5, aux_risk: str = "only", augment: bool = True,
                 max_rotation: float = 15.0,
                 ties: str = "efron", scheduler: str | None = "cosine", optimizer: str = "adam",
                 lr: float = 1e-4, weight_decay: float = 1e-4, batch_size: int = 32,
                 max_epochs: int = 100, validation_fraction: float = 0.15, patience: int = 20,
                 num_workers: int = 0, device: str = "auto", precision: str = "auto",
                 random_state: int | None = None, verbose: int = 0) -> None:
        self.image_input = image_input
        self.backbone = backbone
        self.fusion = fusion
        self.alpha = alpha
        self.alpha_grid = alpha_grid
        self.tabular_columns = tabular_columns
        self.image_column = image_column
        self.crop_encoder = crop_encoder
        self.crop_pool = crop_pool
        self.input_shape = input_shape
        self.pretrain = pretrain
        self.freeze_pretrained = freeze_pretrained
        self.head_rows = head_rows
        self.tab_hidden = tab_hidden
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
        self.optimizer = optimizer
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.num_workers = num_workers
        self.device = device
        self.precision = precision
        self.random_state = random_state
        self.verbose = verbose

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.target_tags.required = True
        return tags

    # -- parameters and input checks --------------------------------------------
    def _check_rules(self) -> None:
        """Rules beyond the declared constraints: the alpha grid searched and the shape."""
        if self.alpha == "search":
            grid = [float(a) for a in self.alpha_grid]
            if not grid or any(not 0.0 <= a <= 1.0 for a in grid):
                raise ValueError(f"alpha_grid must hold values in [0, 1], got {self.alpha_grid!r}")
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

    def _image_col(self) -> str:
        return self.image_column or self.image_input

    def _tab_cols(self) -> list[str]:
        if self.fusion == "image_only":
            return []
        cols = (list(CLINICAL_COLUMNS) if self.tabular_columns is None
                else [str(c) for c in self.tabular_columns])
        if not cols:
            raise ValueError("tabular_columns is empty; use fusion='image_only' for images alone")
        return cols

    def _check_frame(self, X: Any, tab_cols: list[str]) -> np.ndarray:
        """Validate X; return the clinical matrix (float64)."""
        if not isinstance(X, pd.DataFrame):
            raise TypeError(f"FusionSurvival expects a pandas DataFrame with a "
                            f"{self._image_col()!r} column, got {type(X).__name__}")
        col = self._image_col()
        if col not in X.columns:
            hint = (" (make it with fracsurv.vertebrae.crops.CropStacker in the Pipeline)"
                    if self.image_input == "crops" else "")
            raise ValueError(f"X has no image column {col!r}{hint}")
        missing = [c for c in tab_cols if c not in X.columns]
        if missing:
            raise ValueError(f"X has no clinical column {missing[0]!r} (tabular_columns "
                             f"{'default' if self.tabular_columns is None else 'given'}: "
                             f"{tab_cols})")
        for pos, cell in enumerate(X[col]):
            if is_missing(cell) or not iter_cell(cell):
                raise ValueError(f"no image in {row_label(X, pos)} (column {col!r})")
        if not tab_cols:
            return np.zeros((len(X), 0))
        frame = X[tab_cols]
        check_features(frame)
        return frame.to_numpy(dtype=np.float64)

    def _aux_labels(self, X: pd.DataFrame) -> np.ndarray:
        """``(n, L)`` auxiliary labels (L = 1 per row, or the stack length per crop).

        Sets ``aux_levels_`` (the largest grade, at least 1) and ``aux_per_crop_``.
        """
        self.aux_levels_, self.aux_per_crop_ = 0, False
        if self.aux_column is None:
            return np.full((len(X), 1), np.nan)
        if self.aux_column not in X.columns:
            raise ValueError(f"X has no auxiliary label column {self.aux_column!r}")
        cells = list(X[self.aux_column])
        per_crop = any(isinstance(c, (list, tuple, np.ndarray)) for c in cells)
        if per_crop:
            lab = self._per_crop_labels(X, cells)
        else:
            lab = pd.to_numeric(X[self.aux_column], errors="coerce").to_numpy(float)[:, None]
        bad = np.argwhere(np.isfinite(lab) & ((lab < 0) | (lab != np.round(lab))))
        if bad.size:
            r, k = (int(v) for v in bad[0])
            where = f", crop {k}" if per_crop else ""
            raise ValueError(f"aux_column {self.aux_column!r} must hold 0/1 labels or grades "
                             f"0, 1, 2, ... (NaN = unknown): {row_label(X, r)}{where} has "
                             f"{float(lab[r, k])!r}")
        self.aux_levels_ = max(1, int(np.nanmax(lab, initial=0.0)))
        self.aux_per_crop_ = per_crop
        return lab

    def _per_crop_labels(self, X: pd.DataFrame, cells: list[Any]) -> np.ndarray:
        if self.image_input != "crops" or self.crop_encoder != "shared":
            raise ValueError(f"aux_column {self.aux_column!r} holds one label per crop; that "
                             "needs image_input='crops' and crop_encoder='shared'")
        out = np.full((len(X), self.n_channels_), np.nan)
        for pos, cell in enumerate(cells):
            if is_missing(cell):
                continue
            try:
                v = np.asarray(cell, float).reshape(-1)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"aux_column {self.aux_column!r} of {row_label(X, pos)} is "
                                 f"not numeric: {exc}") from exc
            if len(v) != self.n_channels_:
                raise ValueError(f"aux_column {self.aux_column!r} of {row_label(X, pos)} has "
                                 f"{len(v)} labels for a stack of {self.n_channels_} crops")
            out[pos] = v
        return out

    # -- data --------------------------------------------------------------------
    @staticmethod
    def _first(cell: Any) -> Any:
        return iter_cell(cell)[0]

    def _dataset(self, X: pd.DataFrame, tab: np.ndarray, *, y: np.ndarray | None = None,
                 train: bool = False) -> _FusionImages:
        items = [self._first(c) for c in X[self._image_col()]]
        rows = [row_label(X, p) for p in range(len(X))]
        tabs = ((tab - self.x_mean_) / self.x_scale_).astype(np.float32)
        transform = None
        if train and self.augment:
            transform = make_augmenter(self.image_input, self.random_state,
                                       max_degrees=float(self.max_rotation))
        return _FusionImages(items, rows, channels=self.n_channels_, padded=self.input_shape_,
                             y=y, tabular=tabs, transform=transform, shape=self.base_shape_)

    def _geometry(self, X: pd.DataFrame) -> None:
        first = to_chw(load_image(self._first(X[self._image_col()].iloc[0])))
        self.n_channels_ = int(first.shape[0])
        if self.image_input == "image" and self.n_channels_ != 1:
            raise ValueError(f"image_input='image' expects single-channel radiographs; the image "
                             f"of {row_label(X, 0)} has {self.n_channels_} channels (use "
                             "image_input='crops' for crop stacks)")
        if self.input_shape is not None:
            base = tuple(int(s) for s in self.input_shape)
        elif self.image_input == "image":
            base = DEFAULT_IMAGE_SHAPE
        else:
            base = (int(first.shape[1]), int(first.shape[2]))
        self.base_shape_ = base
        self.input_shape_ = (rotation_padded_shape(base, float(self.max_rotation))
                             if self.image_input == "image" and self.max_rotation else base)

    # -- training ----------------------------------------------------------------
    def _build_module(self, alpha: float) -> FusionNet:
        return FusionNet(self.fusion, self.backbone, self.n_channels_, self.input_shape_,
                         len(self.tabular_columns_), tuple(self.tab_hidden), float(self.dropout),
                         alpha, bool(self.linear_skip), aux_levels=int(self.aux_levels_),
                         aux_per_crop=bool(self.aux_per_crop_),
                         shared_crops=self.image_input == "crops" and self.crop_encoder == "shared",
                         crop_pool=str(self.crop_pool), aux_risk=str(self.aux_risk))

    def _callbacks(self, epochs: int) -> list[Any]:
        cbs: list[Any] = []
        if self.validation_fraction:
            cbs.append(_ValidCIndex())
            if int(self.patience):
                cbs.append(EarlyStopping(monitor="valid_cindex", lower_is_better=False,
                                         patience=int(self.patience), load_best=True,
                                         threshold=0.0, threshold_mode="abs"))
        if self.scheduler == "cosine" and epochs > 1:
            cbs.append(LRScheduler("CosineAnnealingLR", T_max=epochs,
                                   eta_min=0.1 * float(self.lr)))
        return cbs

    def _train_stage(self, module: FusionNet, stage: str, frozen: tuple[str, ...],
                     ds: _FusionImages, split_seed: int) -> Any:
        module.stage = stage
        module.freeze(frozen)
        epochs = int(self.max_epochs)
        aux_w = float(self.aux_weight) if self.aux_column is not None else 0.0
        net = self._make_net(module, FusionCoxLoss(self.ties, aux_w), n_train=len(ds),
                             # early stopping on the validation C-index, in _callbacks
                             callbacks=self._callbacks(epochs), early_stopping=False,
                             iterator_kwargs={"num_workers": int(self.num_workers)})
        if self.validation_fraction:
            net.train_split = ValidSplit(float(self.validation_fraction), stratified=False,
                                         random_state=split_seed)
        ds.skip_images = stage == "tabular"
        try:
            self._fit_net(net, ds)
        finally:
            ds.skip_images = False
        self.histories_.append({"stage": stage, "frozen": list(frozen),
                                "history": net.history.to_list()})
        return net

    def _valid_rows(self, n: int, split_seed: int) -> np.ndarray:
        """Row positions of the inner validation split (the same one skorch uses)."""
        return self._split_rows(n, split_seed)[1]

    def _split_rows(self, n: int, split_seed: int) -> tuple[np.ndarray, np.ndarray]:
        """(training, validation) row positions of the inner split; all rows both
        ways without one."""
        if not self.validation_fraction:
            return np.arange(n), np.arange(n)
        train, valid = ValidSplit(float(self.validation_fraction), stratified=False,
                                  random_state=split_seed)(np.arange(n))
        return np.asarray(train.indices), np.asarray(valid.indices)

    def _clinical_linear(self, module: FusionNet) -> torch.nn.Linear | None:
        """The clinical branch's linear term: the skip term, or the branch itself
        when it has no hidden layers."""
        branch = module.tabular
        if branch is None or not len(self.tabular_columns_):
            return None
        if branch.skip is not None:
            return branch.skip
        return None if tuple(self.tab_hidden) else branch.head

    def _exact_clinical(self) -> bool:
        """A linear clinical branch started at its exact fit needs no training stage."""
        return self.linear_init == "cox" and not tuple(self.tab_hidden)

    def _init_clinical_linear(self, module: FusionNet, ds: _FusionImages, y: np.ndarray,
                              split_seed: int) -> None:
        """``linear_init="cox"``: start the clinical linear term at the ridge Cox fit.

        Fitted on the training rows of the inner split (never the validation
        rows), on the standardised inputs the branch sees; the branch's other
        risk head is zeroed, so the clinical risk starts as exactly that
        linear Cox model and an MLP only learns what it misses.
        """
        linear = self._clinical_linear(module)
        if self.linear_init != "cox" or linear is None:
            return
        rows = self._split_rows(len(ds), split_seed)[0]
        t = torch.as_tensor(survival_target_tensor(y, np.float64)[rows])
        w = fit_ridge_cox(torch.as_tensor(ds.tabular[rows]), t[:, 0], t[:, 1], ties=self.ties)
        assert module.tabular is not None
        with torch.no_grad():
            linear.weight.copy_(w.reshape(1, -1).to(linear.weight))
            if linear is not module.tabular.head:
                module.tabular.head.weight.zero_()

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
        self._validate_params()
        self._check_rules()
        tab_cols = self._tab_cols()
        tab = self._check_frame(X, tab_cols)
        y = check_survival_y(y, len(X))
        self._geometry(X)
        aux = self._aux_labels(X)
        self.feature_names_in_ = np.asarray(X.columns, dtype=object)
        self.n_features_in_ = X.shape[1]
        self.tabular_columns_ = tab_cols
        self.x_mean_ = tab.mean(axis=0) if tab.shape[1] else np.zeros(0)
        scale = tab.std(axis=0) if tab.shape[1] else np.ones(0)
        self.x_scale_ = np.where(scale > 0, scale, 1.0)
        target = np.column_stack([survival_target_tensor(y), aux]).astype(np.float32)
        ds = self._dataset(X, tab, y=target, train=True)
        split_seed = derive_seed(self.random_state)
        self.histories_: list[dict[str, Any]] = []
        self.alpha_scores_: dict[float, float] | None = None
        fit_data = (ds, X, tab, y, split_seed)
        if self.fusion == "alpha" and self.alpha == "search":
            alpha = self._search_alpha(*fit_data)
        else:
            alpha = float(self.alpha) if self.fusion == "alpha" else 0.0
            self._fit_stages(self._seeded_module(alpha), *fit_data)
        self.alpha_ = alpha if self.fusion == "alpha" else None
        self.late_weights_ = (self.module_.fuse.weight.detach().cpu().double().numpy().reshape(-1)
                              if self.fusion == "late" else None)
        self.module_.stage = "fusion"
        self._fit_baseline(self._raw_predict(X, tab), y)
        return self

    def _seeded_module(self, alpha: float) -> FusionNet:
        self._seed()
        return self._build_module(alpha)

    def _fit_stages(self, module: FusionNet, ds: _FusionImages, X: pd.DataFrame,
                    tab: np.ndarray, y: np.ndarray, split_seed: int) -> None:
        self._init_clinical_linear(module, ds, y, split_seed)
        parts = self._pretrain_parts()
        for part in parts:  # each sub-model alone, on its own risk head
            if part == "tabular" and self._exact_clinical():
                self.histories_.append({"stage": "tabular", "frozen": [], "history": [],
                                        "solver": "ridge Cox, full batch (linear_init='cox')"})
                continue
            others = tuple(p for p in ("image", "tabular", "fuse", "aux_head")
                           if p != part and not (part == "image" and p == "aux_head"))
            self._train_stage(module, part, others, ds, split_seed)
        frozen = parts if self.freeze_pretrained else ()
        if self.fusion == "late" and set(parts) == {"image", "tabular"}:
            self.module_ = module
            self._fit_late_head(module, X, tab, y, split_seed)
            if self.freeze_pretrained:
                module.stage = "fusion"
                module.freeze(())
                return
        if set(frozen) >= {"image", "tabular"} and self.fusion == "alpha":
            module.stage = "fusion"
            module.freeze(())
            self.module_ = module
            return  # nothing left to train
        self._train_stage(module, "fusion", tuple(frozen), ds, split_seed)
        module.freeze(())

    def _fit_late_head(self, module: FusionNet, X: pd.DataFrame, tab: np.ndarray,
                       y: np.ndarray, split_seed: int) -> None:
        """Fit the late-fusion FC as a 2-covariate Cox model on the frozen sub-models' risks.

        ``head_rows="validation"``: the risks are those of the inner
        validation rows, which neither sub-model trained on (fitted on training
        rows, the FC favours whichever sub-model overfits more), when they hold at
        least 20 events; otherwise every row. ``"all"``: every row.
        """
        target = survival_target_tensor(y, np.float64)
        rows = self._valid_rows(len(X), split_seed)
        if self.head_rows == "all" or target[rows, 1].sum() < _MIN_HEAD_EVENTS:
            rows = np.arange(len(X))
        risks = torch.as_tensor(self._sub_risks(X.iloc[rows], tab[rows]), dtype=torch.float64)
        scale = risks.std(0).clamp_min(1e-6)
        t = torch.as_tensor(target[rows])
        w = fit_ridge_cox((risks - risks.mean(0)) / scale, t[:, 0], t[:, 1], ties=self.ties)
        with torch.no_grad():
            module.fuse.weight.copy_((w / scale).reshape(1, 2).float())

    def _sub_risks(self, X: pd.DataFrame, tab: np.ndarray) -> np.ndarray:
        ds = self._dataset(X, tab)
        return self._batched(ds, lambda m, b: m.risks(**b)).reshape(-1, 2).astype(np.float64)

    def _search_alpha(self, ds: _FusionImages, X: pd.DataFrame, tab: np.ndarray,
                      y: np.ndarray, split_seed: int) -> float:
        """One model per alpha on the same inner split; keep the best validation C-index.

        Returns the chosen alpha.
        """
        best: tuple[float, FusionNet, list[dict[str, Any]], float] | None = None
        scores: dict[float, float] = {}
        if not self.validation_fraction:
            raise ValueError("alpha='search' needs an inner validation split "
                             "(validation_fraction > 0)")
        if set(self._pretrain_parts()) == {"image", "tabular"} and self.freeze_pretrained:
            return self._search_alpha_frozen(ds, X, tab, y, split_seed)
        for a in [float(v) for v in self.alpha_grid]:
            self.histories_ = []
            module = self._seeded_module(a)
            self._fit_stages(module, ds, X, tab, y, split_seed)
            hist = self.histories_[-1]["history"] if self.histories_ else []
            vals = [h.get("valid_cindex") for h in hist if h.get("valid_cindex") is not None]
            score = float(max(vals)) if vals else float("nan")
            scores[a] = score
            if best is None or (np.isfinite(score) and score > best[0]):
                best = (score, module, self.histories_, a)
        assert best is not None
        self.module_ = best[1]
        self.histories_ = best[2]
        self.alpha_scores_ = scores
        return best[3]

    def _search_alpha_frozen(self, ds: _FusionImages, X: pd.DataFrame, tab: np.ndarray,
                             y: np.ndarray, split_seed: int) -> float:
        """Alpha search over frozen pre-trained sub-models: they do not depend on alpha,
        so they are trained once and every alpha is scored by the C-index of the same
        risks (of the validation rows, or of every row with ``head_rows="all"``): one
        training instead of one per grid value."""
        from fracsurv.metrics import concordance_index

        grid = [float(v) for v in self.alpha_grid]
        self.histories_ = []
        module = self._seeded_module(grid[0])
        self._fit_stages(module, ds, X, tab, y, split_seed)
        rows = (np.arange(len(X)) if self.head_rows == "all"
                else self._valid_rows(len(X), split_seed))
        risks = self._sub_risks(X.iloc[rows], tab[rows])
        has_events = bool(survival_arrays(y[rows])[0].any())
        scores = {a: concordance_index(y[rows], a * risks[:, 0] + (1 - a) * risks[:, 1])
                  if has_events else float("nan") for a in grid}
        finite = {a: v for a, v in scores.items() if np.isfinite(v)}
        best = max(finite, key=finite.get) if finite else grid[0]
        module.alpha.fill_(best)
        self.module_ = module
        self.alpha_scores_ = scores
        return best

    # -- inference -------------------------------------------------------------
    def _batched(self, ds: _FusionImages, forward: Any) -> np.ndarray:
        def batch(rows: range) -> dict[str, torch.Tensor]:
            return {"image": torch.stack([ds.load(j) for j in rows]),
                    "tabular": torch.from_numpy(ds.tabular[list(rows)])}

        return self._predict_batches(len(ds), batch, scale=IMAGE_INFERENCE_SCALE, forward=forward)

    def _raw_predict(self, X: pd.DataFrame, tab: np.ndarray) -> np.ndarray:
        ds = self._dataset(X, tab)
        return self._batched(ds, lambda m, b: m(**b)).reshape(-1).astype(np.float64)

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

    # -- persistence -----------------------------------------------------------
    def _extra_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        meta = {
            "n_channels": self.n_channels_, "input_shape": list(self.input_shape_),
            "base_shape": list(self.base_shape_), "tabular_columns": list(self.tabular_columns_),
            "alpha": self.alpha_, "aux_levels": int(self.aux_levels_),
            "aux_per_crop": bool(self.aux_per_crop_), "feature_names_in": [str(c) for c in self.feature_names_in_],
            "alpha_scores": None if self.alpha_scores_ is None
            else [[k, v] for k, v in self.alpha_scores_.items()],
            "late_weights": None if self.late_weights_ is None
            else [float(w) for w in self.late_weights_],
        }
        arrays = {"x_mean": np.asarray(self.x_mean_, float), "x_scale": np.asarray(self.x_scale_, float),
                  **self._baseline_arrays()}
        return meta, arrays

    def _restore(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.n_channels_ = int(meta["n_channels"])
        self.input_shape_ = tuple(int(s) for s in meta["input_shape"])
        self.base_shape_ = tuple(int(s) for s in meta["base_shape"])
        self.tabular_columns_ = list(meta["tabular_columns"])
        self.alpha_ = meta["alpha"]
        self.aux_levels_ = int(meta.get("aux_levels", 0))
        self.aux_per_crop_ = bool(meta.get("aux_per_crop", False))
        self.alpha_scores_ = (None if meta["alpha_scores"] is None
                              else {float(k): float(v) for k, v in meta["alpha_scores"]})
        self.feature_names_in_ = np.asarray(meta["feature_names_in"], dtype=object)
        self.n_features_in_ = len(self.feature_names_in_)
        self.x_mean_, self.x_scale_ = arrays["x_mean"], arrays["x_scale"]
        self._restore_baseline(arrays)
        self.histories_ = []
        self.module_ = self._build_module(float(self.alpha_) if self.alpha_ is not None else 0.0)
        weights = meta.get("late_weights")
        self.late_weights_ = None if weights is None else np.asarray(weights, dtype=np.float64)
