"""``PVFScorer``: a CNN probability that a radiograph shows a prevalent vertebral fracture.

The Diff-X study scores every baseline radiograph (BpVF) and every generated
future radiograph (GpVF) with one classifier (EfficientNet-B4, 1024 x 512). This
module trains such a classifier on the shared skorch base
(:class:`fracsurv.nn.base.TorchEstimatorMixin`) and applies the study's
aggregation rules (:mod:`fracsurv.scoring.aggregate`) to cells holding several
images.
"""

from __future__ import annotations

from numbers import Integral, Real
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, TransformerMixin
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.utils._param_validation import Hidden, Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from fracsurv._base import (
    FrameTransformerMixin,
    append_columns,
    appended_feature_names,
    derive_seed,
    renamed_param,
    row_label,
)
from fracsurv.contract import DEFAULT_IMAGE_SHAPE
from fracsurv.io.refs import iter_cell, load_image
from fracsurv.nn.backbones import BACKBONES, default_cam_layer
from fracsurv.nn.base import IMAGE_INFERENCE_SCALE, TorchEstimatorMixin, check_input_shape
from fracsurv.nn.data import ImageDataset, to_chw
from fracsurv.nn.pooling import crops_present
from fracsurv.scoring._nets import PVFClassifier, WeightedBCE
from fracsurv.scoring.aggregate import aggregate_cell_scores, cell_groups
from fracsurv.scoring.calibration import fit_isotonic, fit_temperature, sigmoid
from fracsurv.scoring.gradcam import grad_cam_maps

__all__ = ["PVFScorer"]


class PVFScorer(TorchEstimatorMixin, FrameTransformerMixin, ClassifierMixin, TransformerMixin, BaseEstimator):
    """Prevalent-vertebral-fracture score (0..1) of each row's radiograph(s).

    ``transform`` adds ``output_column`` (the score) and ``<output_column>_sd``
    (the spread across seeds); see :mod:`fracsurv.scoring.aggregate` for how a
    cell with several images (views, or generated seeds x horizons) is reduced to
    one score: mean over seeds, then max over groups, and the ``sd`` of the
    winning group's seeds.

    Parameters
    ----------
    backbone : str, default="efficientnet-b4"
        A MONAI network from :data:`fracsurv.nn.backbones.BACKBONES`, trained from
        scratch (``"resnet10-tiny"`` or ``"resnet10"`` for CPUs).
    image_column : str, default="image"
        Images, references, or lists of them. With ``image_input="crops"`` use
        the crop-stack column (``(N, h, w)`` arrays).
    image_input : {"image", "crops"}, default="image"
        Single-channel radiographs or N-channel vertebra crop stacks (the name
        :class:`~fracsurv.survival.FusionSurvival` uses).
    label_column : str, default="prevalent_vf"
        0/1 supervision read from X, so the scorer can be fitted inside a survival
        Pipeline (a structured survival ``y`` is ignored); a 0/1 ``y`` passed to
        ``fit`` takes precedence.
    output_column : str, default="pvf"
        Score column added by ``transform`` (and ``<output_column>_sd``).
    input_shape : (int, int), default=(1024, 512)
        Network input size (H, W), the study's; every image is resized to it.
    n_seeds : int, optional
        Group size of flat lists (generated seeds per horizon); ``None`` treats a
        flat list as several views (max over them).
    class_weight : {"balanced", None}, default="balanced"
        ``"balanced"`` weights positives by ``n_neg / n_pos`` in the loss.
    augment : bool, default=True
        Random affine, contrast and noise (MONAI, training only), seeded from
        ``random_state``.
    calibration : {None, "temperature", "isotonic"}
        Post-hoc calibration fitted on ``calibration_fraction`` of the rows, held
        out (stratified) from training: temperature scaling of the logits (L-BFGS)
        or scikit-learn's isotonic regression of the probabilities.
    calibration_fraction : float, default=0.2
    crop_encoder : {"channels", "shared"}, default="channels"
        For ``image_input="crops"``: the crops stacked as the channels of one CNN input
        (the multimodal study), or one encoder shared by all crops with a max over
        crops.
    crop_label_column : str, optional
        With ``crop_encoder="shared"``: a column of per-crop labels, one array as
        long as each stack (Genant grade or 0/1 of the vertebra in each slot, NaN =
        empty or unknown; e.g. :func:`fracsurv.vertebrae.evaluation.annotated_crop_grades`
        of detected crops). Training then adds a per-vertebra BCE on ``label >= 1``
        (balanced positive weight) to the stack's loss; prediction is unchanged
        (the maximum over crops). ``None`` (default): the stack's label only.
    cam_layer : str, optional
        Default Grad-CAM layer (dotted module name); ``None`` = the backbone's
        deepest block whose map is at least 8 pixels a side (:meth:`default_cam_layer`).
    optimizer, lr, weight_decay, batch_size, max_epochs, validation_fraction, \
patience, device, precision, random_state, verbose
        The shared training parameters, documented once in :mod:`fracsurv.nn.base`
        (early stopping on the internal validation split when ``validation_fraction > 0``).

    Attributes
    ----------
    classes_ : ndarray ``[0, 1]``
    n_channels_ : int
        Channels of the training images (1, or N crops).
    temperature_ : float
        Temperature dividing the logits (1 without temperature calibration).
    isotonic_ : (ndarray, ndarray) or None
        Isotonic map as (thresholds in, thresholds out).
    module_, net_ : the trained torch module and skorch net.

    Notes
    -----
    ``input`` (which shadowed a builtin) is the deprecated name of
    ``image_input``: passing it warns with a ``FutureWarning`` and takes
    precedence, until it is removed.
    """

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        **TorchEstimatorMixin._parameter_constraints,
        "backbone": [StrOptions(set(BACKBONES))],
        "image_column": [str],
        "image_input": [StrOptions({"image", "crops"})],
        "input": [StrOptions({"image", "crops"}), Hidden(StrOptions({"deprecated"}))],
        "label_column": [str],
        "output_column": [str],
        "input_shape": [tuple, list],
        "n_seeds": [Interval(Integral, 1, None, closed="left"), None],
        "class_weight": [StrOptions({"balanced"}), None],
        "augment": ["boolean"],
        "calibration": [StrOptions({"temperature", "isotonic"}), None],
        "calibration_fraction": [Interval(Real, 0, 1, closed="neither")],
        "crop_encoder": [StrOptions({"channels", "shared"})],
        "crop_label_column": [str, None],
        "cam_layer": [str, None],
    }

    def __init__(self, backbone: str = "efficientnet-b4", *, image_column: str = "image",
                 image_input: str = "image", label_column: str = "prevalent_vf",
                 output_column: str = "pvf", input_shape: tuple[int, int] = DEFAULT_IMAGE_SHAPE,
                 n_seeds: int | None = None, class_weight: str | None = "balanced",
                 augment: bool = True, calibration: str | None = None,
                 calibration_fraction: float = 0.2, crop_encoder: str = "channels",
                 crop_label_column: str | None = None, cam_layer: str | None = None, optimizer: str = "adam", lr: float = 1e-3,
                 weight_decay: float = 1e-4, batch_size: int = 16, max_epochs: int = 30,
                 validation_fraction: float = 0.15, patience: int = 6, device: str = "auto",
                 precision: str = "auto", random_state: int | None = None,
                 verbose: int = 0, input: str = "deprecated") -> None:
        self.backbone = backbone
        self.image_column = image_column
        self.image_input = image_input
        self.label_column = label_column
        self.output_column = output_column
        self.input_shape = input_shape
        self.n_seeds = n_seeds
        self.class_weight = class_weight
        self.augment = augment
        self.calibration = calibration
        self.calibration_fraction = calibration_fraction
        self.crop_encoder = crop_encoder
        self.crop_label_column = crop_label_column
        self.cam_layer = cam_layer
        self._set_shared_params(locals())
        self.input = input

    # -- validation ------------------------------------------------------
    def _image_input(self, warn: bool = False) -> str:
        """``image_input``, or the deprecated ``input`` when that was given."""
        return renamed_param(self, "image_input", "input", warn=warn)

    def _labels(self, X: pd.DataFrame, y: Any) -> np.ndarray:
        """0/1 labels from a plain ``y`` or, otherwise (None or structured y), ``label_column``."""
        y_arr = None if y is None else np.asarray(y)
        if y_arr is not None and y_arr.dtype.names is None:
            try:
                lab = y_arr.astype(float).ravel()
            except (TypeError, ValueError) as exc:
                raise ValueError("y must be a 0/1 vector (or None / a survival array, to "
                                 f"use X[{self.label_column!r}])") from exc
            if len(lab) != len(X):
                raise ValueError(f"y has {len(lab)} entries but X has {len(X)} rows")
        else:
            if self.label_column not in X.columns:
                raise ValueError(f"X has no label column {self.label_column!r} and y is not a "
                                 "0/1 vector")
            lab = pd.to_numeric(X[self.label_column], errors="coerce").to_numpy(float)
        bad = np.flatnonzero(~np.isin(lab, (0.0, 1.0)))
        if bad.size:
            raise ValueError(f"labels must be 0/1: {row_label(X, int(bad[0]))} has {lab[bad[0]]!r}")
        if len(np.unique(lab)) < 2:
            raise ValueError("labels contain a single class; PVFScorer needs both")
        return lab

    def _check_frame(self, X: Any) -> None:
        if not isinstance(X, pd.DataFrame):
            raise TypeError(f"PVFScorer expects a pandas DataFrame with an {self.image_column!r} "
                            f"column, got {type(X).__name__}")
        if self.image_column not in X.columns:
            raise ValueError(f"X has no column {self.image_column!r}")
        for pos, cell in enumerate(X[self.image_column]):
            try:
                groups = cell_groups(cell, self.n_seeds)
            except ValueError as exc:
                raise ValueError(f"{row_label(X, pos)}: {exc}") from exc
            if not groups:
                raise ValueError(f"no image in {row_label(X, pos)} (column {self.image_column!r})")

    # -- data ------------------------------------------------------------
    def _items(self, X: pd.DataFrame) -> tuple[list[Any], list[tuple[int, int]]]:
        """Flattened images and, per image, (row position, group index)."""
        items, where = [], []
        for pos, cell in enumerate(X[self.image_column]):
            for g, group in enumerate(cell_groups(cell, self.n_seeds)):
                for it in group:
                    items.append(it)
                    where.append((pos, g))
        return items, where

    def _dataset(self, X: pd.DataFrame, items: list[Any], where: list[tuple[int, int]],
                 **kwargs: Any) -> ImageDataset:
        rows = [row_label(X, p) for p, _ in where]
        return ImageDataset(items, rows=rows, shape=tuple(int(s) for s in self.input_shape), **kwargs)

    def _augmenter(self) -> Any:
        if not self.augment:
            return None
        from fracsurv.nn.augment import make_augmenter

        rs = self.random_state
        return make_augmenter("affine", derive_seed(rs) if rs is not None else None,
                              shape=tuple(int(s) for s in self.input_shape))

    # -- fitting ---------------------------------------------------------
    def fit(self, X: pd.DataFrame, y: Any = None) -> PVFScorer:
        """Train on every image of every row, each with its row's 0/1 label.

        Parameters
        ----------
        X : DataFrame
            With ``image_column`` and (unless ``y`` is a 0/1 vector) ``label_column``.
        y : array-like of 0/1, structured survival array, or None
            A structured (survival) ``y`` is ignored, so the scorer can sit in a
            survival Pipeline.

        Returns
        -------
        self
        """
        self._validate_params()
        self._image_input(warn=True)
        check_input_shape(self.input_shape)
        self._check_frame(X)
        labels = self._labels(X, y)
        self.feature_names_in_ = np.asarray(X.columns, dtype=object)
        self.n_features_in_ = X.shape[1]
        self.classes_ = np.array([0, 1])
        rows = np.arange(len(X))
        cal_rows = np.array([], dtype=int)
        if self.calibration:
            rows, cal_rows = train_test_split(rows, test_size=self.calibration_fraction,
                                              stratify=labels, random_state=self.random_state)
        X_train = X.iloc[rows]
        items, where = self._items(X_train)
        y_img = np.array([labels[rows[p]] for p, _ in where], dtype=np.float32)
        self.n_channels_ = int(to_chw(load_image(items[0])).shape[0])
        n_pos = float(y_img.sum())
        pos_weight = (len(y_img) - n_pos) / max(n_pos, 1.0) if self.class_weight else 1.0
        crop_pos_weight = 1.0
        if self.crop_label_column is not None:
            crop_y = self._crop_labels(X_train)[[p for p, _ in where]]
            known = crop_y[~np.isnan(crop_y)]
            crop_pos_weight = ((len(known) - known.sum()) / max(known.sum(), 1.0)
                               if self.class_weight else 1.0)
            y_img = np.column_stack([y_img, crop_y]).astype(np.float32)
        self._seed()
        net = self._make_net(self._module(), WeightedBCE(pos_weight, crop_pos_weight),
                             n_train=len(items))
        ds = self._dataset(X_train, items, where, y=y_img, transform=self._augmenter())
        self._fit_net(net, ds)
        self.temperature_ = 1.0
        self.isotonic_ = None
        if len(cal_rows):
            X_cal = X.iloc[cal_rows]
            c_items, c_where = self._items(X_cal)
            logits = self._image_logits(X_cal, c_items, c_where)
            self._calibrate(logits, np.array([labels[cal_rows[p]] for p, _ in c_where]))
        return self

    def _crop_labels(self, X: pd.DataFrame) -> np.ndarray:
        """``(n_rows, n_crops)`` per-crop 0/1 labels (``grade >= 1``), NaN = unknown."""
        col = self.crop_label_column
        if self._image_input() != "crops" or self.crop_encoder != "shared":
            raise ValueError("crop_label_column needs image_input='crops' and "
                             "crop_encoder='shared'")
        if col not in X.columns:
            raise ValueError(f"X has no per-crop label column {col!r}")
        out = np.full((len(X), self.n_channels_), np.nan)
        for pos, cell in enumerate(X[col]):
            v = np.asarray(cell, float).ravel() if cell is not None else np.zeros(0)
            if v.size != self.n_channels_:
                raise ValueError(f"{row_label(X, pos)}: {col!r} holds {v.size} labels for "
                                 f"a stack of {self.n_channels_} crops")
            out[pos] = np.where(np.isnan(v), np.nan, (v >= 1).astype(float))
        return out

    def _calibrate(self, logits: np.ndarray, labels: np.ndarray) -> None:
        """Fit the temperature or the isotonic map (:mod:`fracsurv.scoring.calibration`)."""
        if self.calibration == "temperature":
            self.temperature_ = fit_temperature(logits, labels)
        else:
            self.isotonic_ = fit_isotonic(logits, labels)

    # -- inference -------------------------------------------------------
    def _image_logits(self, X: pd.DataFrame, items: list[Any],
                      where: list[tuple[int, int]]) -> np.ndarray:
        ds = self._dataset(X, items, where)
        logits = self._predict_batches(len(ds), lambda rows: torch.stack([ds.load(j) for j in rows]),
                                       scale=IMAGE_INFERENCE_SCALE)
        return logits.reshape(-1).astype(np.float64)

    def _prob(self, logits: np.ndarray) -> np.ndarray:
        p = sigmoid(logits / self.temperature_)
        if self.isotonic_ is not None:
            p = np.interp(p, *self.isotonic_)
        return p

    def image_scores(self, images: Any) -> np.ndarray:
        """Calibrated probability of every single image (no aggregation).

        Parameters
        ----------
        images : sequence of arrays / references, or one image
        """
        check_is_fitted(self, "module_")
        items = iter_cell(images)
        frame = pd.DataFrame({"image": [0] * len(items)})
        return self._prob(self._image_logits(frame, items, [(i, 0) for i in range(len(items))]))

    def score_cells(self, X: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """Aggregated score and its seed spread for every row.

        Returns
        -------
        score, sd : ndarray of shape (n_rows,)
        """
        check_is_fitted(self, "module_")
        self._check_frame(X)
        items, where = self._items(X)
        probs = self._prob(self._image_logits(X, items, where))
        groups: list[dict[int, list[float]]] = [{} for _ in range(len(X))]
        for (p, g), pr in zip(where, probs):
            groups[p].setdefault(g, []).append(float(pr))
        out = np.array([aggregate_cell_scores(list(gr.values())) for gr in groups], dtype=float)
        return out[:, 0], out[:, 1]

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        """Add ``output_column`` and ``<output_column>_sd`` (replacing existing ones).

        Returns
        -------
        DataFrame
            X's other columns unchanged, then the two new columns.
        """
        score, sd = self.score_cells(X)
        return append_columns(X, {self.output_column: score, f"{self.output_column}_sd": sd})

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        """(n, 2) probabilities of no fracture / fracture (aggregated per row)."""
        p = self.score_cells(X)[0]
        return np.column_stack([1 - p, p])

    def decision_function(self, X: pd.DataFrame) -> np.ndarray:
        """Log-odds of the aggregated score (> 0 exactly when ``predict`` is 1)."""
        p = np.clip(self.score_cells(X)[0], 1e-12, 1 - 1e-12)
        return np.log(p) - np.log1p(-p)

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        """1 when the aggregated score is at least 0.5."""
        return (self.score_cells(X)[0] >= 0.5).astype(int)

    def score(self, X: pd.DataFrame, y: Any = None, sample_weight: Any = None) -> float:
        """AUROC of the aggregated score against ``label_column`` (or a 0/1 ``y``)."""
        return float(roc_auc_score(self._labels(X, y), self.score_cells(X)[0],
                                   sample_weight=sample_weight))

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        """Input columns plus the score and its spread."""
        check_is_fitted(self, "module_")
        names = self.feature_names_in_ if input_features is None else input_features
        return appended_feature_names(names, [self.output_column, f"{self.output_column}_sd"])

    # -- explanation -----------------------------------------------------
    def default_cam_layer(self) -> str:
        """The Grad-CAM layer used when none is given.

        ``cam_layer``, else the backbone's deepest block whose map is at least
        ``MIN_CAM_SIDE`` (8) pixels a side at ``input_shape``
        (:func:`fracsurv.nn.backbones.default_cam_layer`): layer3 of a ResNet-10 on
        64 x 64 crops, where layer4 is 4 x 4.
        """
        if self.cam_layer:
            return self.cam_layer
        net = getattr(getattr(self, "module_", None), "backbone", None)
        shape = tuple(self.input_shape) if net is not None else None
        return f"backbone.{default_cam_layer(self.backbone, net, shape)}"

    def grad_cam(self, images: Any, layer: str | None = None) -> np.ndarray:
        """Grad-CAM maps (MONAI) of the fracture logit for any image(s).

        Parameters
        ----------
        images : image, reference, or a sequence of them
        layer : str, optional
            Dotted module name inside the classifier (default
            :meth:`default_cam_layer`).

        Returns
        -------
        ndarray of shape (n, H, W)
            One map in ``[0, 1]`` per image, at ``input_shape``. For crop stacks
            with ``crop_encoder="shared"``: one map per crop (``n * N``), each
            explaining that crop's own logit -- the crop scored alone, since the
            stack's maximum passes gradients to its winning crop only; empty
            crops get zero maps.
        """
        check_is_fitted(self, "module_")
        items = iter_cell(images)
        device = self._device()
        module = self.module_.to(device)
        ds = self._dataset(pd.DataFrame({"image": [0] * len(items)}), items,
                           [(i, 0) for i in range(len(items))])
        layer = layer or self.default_cam_layer()
        maps = []
        for i in range(len(ds)):
            x = ds.load(i)[None].to(device)
            if not getattr(module, "shared_crops", False):
                maps.append(grad_cam_maps(module, x, layer))
                continue
            n = x.shape[1]
            alone = torch.diag_embed(torch.ones(n, device=device))[:, :, None, None] * x
            present = crops_present(x)[0]
            cams = grad_cam_maps(module, alone, layer).reshape(n, n, *x.shape[-2:])
            maps.append(np.stack([cams[k, k] if present[k] else np.zeros(x.shape[-2:])
                                  for k in range(n)]))
        return np.concatenate(maps) if maps else np.empty((0, *self.input_shape))

    # -- persistence -----------------------------------------------------
    def _extra_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        meta = {"n_channels": self.n_channels_, "temperature": self.temperature_,
                "feature_names_in": [str(c) for c in self.feature_names_in_]}
        arrays = {}
        if self.isotonic_ is not None:
            arrays = {"iso_x": self.isotonic_[0], "iso_y": self.isotonic_[1]}
        return meta, arrays

    def _restore(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.n_channels_ = int(meta["n_channels"])
        self.temperature_ = float(meta["temperature"])
        self.feature_names_in_ = np.asarray(meta["feature_names_in"], dtype=object)
        self.n_features_in_ = len(self.feature_names_in_)
        self.classes_ = np.array([0, 1])
        self.isotonic_ = (arrays["iso_x"], arrays["iso_y"]) if "iso_x" in arrays else None
        self.module_ = self._module()

    def _module(self) -> PVFClassifier:
        shared = self._image_input() == "crops" and self.crop_encoder == "shared"
        return PVFClassifier(self.backbone, self.n_channels_,
                             tuple(int(s) for s in self.input_shape), shared,
                             per_crop=self.crop_label_column is not None)
