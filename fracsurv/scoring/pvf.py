"""``PVFScorer``: a CNN probability that a radiograph shows a prevalent vertebral fracture."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.utils.validation import check_is_fitted
from torch import nn

from fracsurv._base import row_label
from fracsurv.io.refs import iter_cell
from fracsurv.nn.backbones import default_cam_layer, make_backbone
from fracsurv.nn.base import TorchEstimatorMixin
from fracsurv.nn.data import ImageDataset, to_chw

__all__ = ["PVFScorer", "aggregate_cell_scores", "cell_groups"]


class _Classifier(nn.Module):
    """Backbone + linear head.

    ``shared_crops=True`` treats the channels as separate vertebra crops: one
    single-channel encoder scores every non-empty crop and the image logit is the
    maximum (any fractured vertebra makes a fractured spine). Weight sharing gives
    13x more training examples per encoder weight than stacking the crops as
    channels, which overfits on small cohorts (measured in docs/pvf_scorer.md).
    """

    def __init__(self, backbone: str, in_channels: int, shape: tuple[int, int],
                 shared_crops: bool = False) -> None:
        super().__init__()
        self.shared_crops = shared_crops
        self.backbone, n = make_backbone(backbone, 1 if shared_crops else in_channels, shape)
        self.head = nn.Linear(n, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.shared_crops:
            return self.head(self.backbone(x))
        b, c, h, w = x.shape
        logits = self.head(self.backbone(x.reshape(b * c, 1, h, w))).reshape(b, c)
        present = x.reshape(b, c, -1).abs().amax(-1) > 0
        logits = logits.masked_fill(~present, -30.0)
        return logits.amax(dim=1, keepdim=True)


class _BCE(nn.Module):
    """BCE-with-logits on (B, 1) logits and (B,) labels, with a positive-class weight."""

    def __init__(self, pos_weight: float = 1.0) -> None:
        super().__init__()
        self.register_buffer("pos_weight", torch.tensor([float(pos_weight)]))

    def forward(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return nn.functional.binary_cross_entropy_with_logits(
            logits.reshape(-1), y.reshape(-1).to(logits.dtype), pos_weight=self.pos_weight)


def cell_groups(cell: Any, n_seeds: int | None = None) -> list[list[Any]]:
    """Images of a cell grouped into seed groups.

    * a single image -> ``[[img]]``;
    * a nested list ``[[h1 seeds...], [h2 seeds...]]`` -> as given;
    * a flat list with ``n_seeds`` -> consecutive groups of ``n_seeds`` (the
      ``DiffXGenerator`` layout: horizon-major, seeds within a horizon);
    * a flat list without ``n_seeds`` -> one group per image (several views).
    """
    if isinstance(cell, list | tuple) and cell and all(isinstance(c, list | tuple) for c in cell):
        return [list(iter_cell(list(g))) for g in cell if len(g)]
    items = iter_cell(cell)
    if n_seeds and len(items) > 1:
        if len(items) % n_seeds:
            raise ValueError(f"a cell holds {len(items)} images, not a multiple of n_seeds={n_seeds}")
        return [items[i:i + n_seeds] for i in range(0, len(items), n_seeds)]
    return [[it] for it in items]


def aggregate_cell_scores(group_scores: list[np.ndarray]) -> tuple[float, float]:
    """The study's rule: mean over seeds within a group, then max over groups.

    Returns ``(score, sd)`` where ``sd`` is the standard deviation across the seeds
    of the group that gives the maximum (0 for a single image).
    """
    if not group_scores:
        return float("nan"), float("nan")
    means = [float(np.mean(g)) for g in group_scores]
    best = int(np.argmax(means))
    return means[best], float(np.std(group_scores[best]))


class PVFScorer(TorchEstimatorMixin, TransformerMixin, BaseEstimator):
    """Prevalent-vertebral-fracture score (0..1) of each row's radiograph(s).

    Parameters
    ----------
    backbone : str, default="efficientnet-b4"
        A MONAI network (:data:`fracsurv.nn.backbones.BACKBONES`), from scratch.
    image_column : str, default="image"
        Images, references, or lists of them (seeds/horizons/views, see
        :func:`cell_groups`). With ``input="crops"`` use the crop-stack column.
    input : {"image", "crops"}
        Single-channel radiographs or N-channel vertebra crop stacks.
    label_column : str, default="prevalent_vf"
        0/1 supervision read from X (so the scorer can sit in a survival
        Pipeline); a 0/1 ``y`` passed to ``fit`` takes precedence.
    output_column : str, default="pvf"
        Score column added by ``transform`` (and ``<output>_sd``).
    input_shape : (int, int), default=(1024, 512)
        Network input size; images are resized to it.
    n_seeds : int, optional
        Group size of flat lists (generated seeds per horizon).
    class_weight : "balanced" or None
        Positive-class weight ``n_neg / n_pos`` in the loss.
    augment : bool, default=True
        Random affine, contrast and noise (MONAI) during training.
    calibration : {None, "temperature", "isotonic"}
        Fit on a held-out ``calibration_fraction`` of the rows.
    calibration_fraction : float, default=0.2
    crop_encoder : {"shared", "channels"}, default="channels"
        For ``input="crops"``: one encoder shared by all crops with a max over
        crops, or the crops stacked as the channels of one CNN input.
    optimizer, lr, weight_decay, batch_size, max_epochs, validation_fraction,
    patience, device, precision, random_state, verbose
        As in :class:`fracsurv.nn.TorchEstimatorMixin`.
    """

    def __init__(self, backbone: str = "efficientnet-b4", image_column: str = "image",
                 input: str = "image", label_column: str = "prevalent_vf",
                 output_column: str = "pvf", input_shape: tuple[int, int] = (1024, 512),
                 n_seeds: int | None = None, class_weight: str | None = "balanced",
                 augment: bool = True, calibration: str | None = None,
                 calibration_fraction: float = 0.2, crop_encoder: str = "channels",
                 optimizer: str = "adam", lr: float = 1e-3,
                 weight_decay: float = 1e-4, batch_size: int = 16, max_epochs: int = 30,
                 validation_fraction: float = 0.15, patience: int = 6, device: str = "auto",
                 precision: str = "auto", random_state: int | None = None,
                 verbose: int = 0) -> None:
        self.backbone = backbone
        self.image_column = image_column
        self.input = input
        self.label_column = label_column
        self.output_column = output_column
        self.input_shape = input_shape
        self.n_seeds = n_seeds
        self.class_weight = class_weight
        self.augment = augment
        self.calibration = calibration
        self.calibration_fraction = calibration_fraction
        self.crop_encoder = crop_encoder
        self.optimizer = optimizer
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.device = device
        self.precision = precision
        self.random_state = random_state
        self.verbose = verbose

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.target_tags.required = False
        tags.non_deterministic = self.random_state is None
        return tags

    # -- data ------------------------------------------------------------
    def _labels(self, X: pd.DataFrame, y: Any) -> np.ndarray:
        if y is not None and isinstance(y, np.ndarray | pd.Series | list) and \
                getattr(np.asarray(y).dtype, "names", None) is None:
            lab = np.asarray(y, dtype=float).ravel()
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
            raise TypeError(f"PVFScorer expects a pandas DataFrame, got {type(X).__name__}")
        if self.image_column not in X.columns:
            raise ValueError(f"X has no column {self.image_column!r}")
        missing = [i for i, c in enumerate(X[self.image_column]) if not iter_cell(c)]
        if missing:
            raise ValueError(f"no image in {row_label(X, missing[0])} (column {self.image_column!r})")

    def _augmenter(self):
        if not self.augment:
            return None
        from monai.transforms import Compose, RandAdjustContrast, RandAffine, RandGaussianNoise

        return Compose([
            RandAffine(prob=0.7, rotate_range=0.12, scale_range=0.08, translate_range=(8, 4),
                       padding_mode="zeros"),
            RandAdjustContrast(prob=0.3, gamma=(0.8, 1.25)),
            RandGaussianNoise(prob=0.3, std=0.02),
        ])

    def _items(self, X: pd.DataFrame) -> tuple[list[Any], list[tuple[int, int]]]:
        """Flattened images and, per image, (row position, group index)."""
        items, where = [], []
        for pos, cell in enumerate(X[self.image_column]):
            for g, group in enumerate(cell_groups(cell, self.n_seeds)):
                for it in group:
                    items.append(it)
                    where.append((pos, g))
        return items, where

    # -- fitting ---------------------------------------------------------
    def fit(self, X: pd.DataFrame, y: Any = None) -> PVFScorer:
        """Train on every image of every row, each with its row's 0/1 label."""
        self._check_frame(X)
        labels = self._labels(X, y)
        self.feature_names_in_ = np.asarray(X.columns, dtype=object)
        self.n_features_in_ = X.shape[1]
        rows = np.arange(len(X))
        cal_rows = np.array([], int)
        if self.calibration:
            if self.calibration not in ("temperature", "isotonic"):
                raise ValueError(f"calibration must be None, 'temperature' or 'isotonic', "
                                 f"got {self.calibration!r}")
            rows, cal_rows = train_test_split(rows, test_size=self.calibration_fraction,
                                              stratify=labels, random_state=self.random_state)
        items, where = self._items(X.iloc[rows])
        y_img = np.array([labels[rows[p]] for p, _ in where], dtype=np.float32)
        first = to_chw(np.asarray(_first_array(items[0])))
        self.n_channels_ = int(first.shape[0])
        pos = y_img.sum()
        pos_weight = (len(y_img) - pos) / max(pos, 1.0) if self.class_weight == "balanced" else 1.0
        self._seed()
        module = self._module()
        net = self._make_net(module, _BCE(pos_weight), n_train=len(items))
        ds = ImageDataset(items, y_img, transform=self._augmenter(), shape=tuple(self.input_shape))
        self._fit_net(net, ds)
        self.temperature_ = 1.0
        self.isotonic_ = None
        if len(cal_rows):
            logits, _ = self._row_logits(X.iloc[cal_rows])
            self._calibrate(logits, labels[cal_rows])
        return self

    def _calibrate(self, logits: np.ndarray, labels: np.ndarray) -> None:
        if self.calibration == "temperature":
            t = torch.zeros(1, requires_grad=True)  # log-temperature
            z = torch.as_tensor(logits, dtype=torch.float32)
            yy = torch.as_tensor(labels, dtype=torch.float32)
            opt = torch.optim.LBFGS([t], lr=0.5, max_iter=100, line_search_fn="strong_wolfe")

            def closure():
                opt.zero_grad()
                loss = nn.functional.binary_cross_entropy_with_logits(z / t.exp(), yy)
                loss.backward()
                return loss

            opt.step(closure)
            self.temperature_ = float(t.exp())
        else:
            from sklearn.isotonic import IsotonicRegression

            iso = IsotonicRegression(out_of_bounds="clip", y_min=0, y_max=1)
            iso.fit(1 / (1 + np.exp(-logits)), labels)
            self.isotonic_ = (np.asarray(iso.X_thresholds_, float), np.asarray(iso.y_thresholds_, float))

    # -- inference -------------------------------------------------------
    def _image_logits(self, items: list[Any]) -> np.ndarray:
        ds = ImageDataset(items, shape=tuple(self.input_shape))
        bs = max(1, int(self.batch_size)) * 2

        def batches():
            for i in range(0, len(ds), bs):
                yield torch.stack([ds.load(j) for j in range(i, min(i + bs, len(ds)))])

        return self._infer(batches).reshape(-1).astype(np.float64)

    def _row_logits(self, X: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        items, where = self._items(X)
        logits = self._image_logits(items)
        # per row: the logit of the first image (for calibration only)
        first = {}
        for (p, _), z in zip(where, logits):
            first.setdefault(p, z)
        return np.array([first[p] for p in sorted(first)]), np.array(sorted(first))

    def _prob(self, logits: np.ndarray) -> np.ndarray:
        p = 1 / (1 + np.exp(-logits / self.temperature_))
        if self.isotonic_ is not None:
            p = np.interp(p, *self.isotonic_)
        return p

    def score_cells(self, X: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """Aggregated score and its seed spread for every row."""
        check_is_fitted(self, "module_")
        self._check_frame(X)
        items, where = self._items(X)
        probs = self._prob(self._image_logits(items))
        groups: dict[int, dict[int, list[float]]] = {}
        for (p, g), pr in zip(where, probs):
            groups.setdefault(p, {}).setdefault(g, []).append(float(pr))
        out = [aggregate_cell_scores([np.asarray(v) for v in groups[p].values()])
               for p in range(len(X))]
        return np.array([o[0] for o in out]), np.array([o[1] for o in out])

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        """Add ``output_column`` and ``<output_column>_sd``."""
        score, sd = self.score_cells(X)
        out = X.copy()
        out[self.output_column] = score
        out[f"{self.output_column}_sd"] = sd
        return out

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        """(n, 2) probabilities of no fracture / fracture."""
        p = self.score_cells(X)[0]
        return np.column_stack([1 - p, p])

    def decision_function(self, X: pd.DataFrame) -> np.ndarray:
        """The aggregated score."""
        return self.score_cells(X)[0]

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        """1 when the score is at least 0.5."""
        return (self.score_cells(X)[0] >= 0.5).astype(int)

    def score(self, X: pd.DataFrame, y: Any = None) -> float:
        """AUROC against ``label_column`` (or a 0/1 ``y``)."""
        return float(roc_auc_score(self._labels(X, y), self.score_cells(X)[0]))

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        """Input columns plus the score and its spread."""
        check_is_fitted(self, "module_")
        extra = [self.output_column, f"{self.output_column}_sd"]
        return np.asarray([*[c for c in self.feature_names_in_ if c not in extra], *extra], dtype=object)

    # -- explanation -----------------------------------------------------
    def grad_cam(self, images: list[Any], layer: str | None = None) -> np.ndarray:
        """Grad-CAM maps (MONAI), one ``input_shape`` map in [0, 1] per image."""
        from monai.visualize import GradCAM

        check_is_fitted(self, "module_")
        layer = layer or f"backbone.{default_cam_layer(self.backbone)}"
        module = self.module_.to(self._device()).eval()
        cam = GradCAM(nn_module=module, target_layers=layer)
        maps = []
        for img in images:
            x = to_chw(_first_array(img), tuple(self.input_shape))[None].to(self._device())
            maps.append(cam(x=x, class_idx=0).detach().cpu().numpy()[0, 0])
        return np.stack(maps)

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
        self.isotonic_ = (arrays["iso_x"], arrays["iso_y"]) if "iso_x" in arrays else None
        self.module_ = self._module()

    def _module(self) -> _Classifier:
        if self.input not in ("image", "crops"):
            raise ValueError(f"input must be 'image' or 'crops', got {self.input!r}")
        if self.crop_encoder not in ("shared", "channels"):
            raise ValueError(f"crop_encoder must be 'shared' or 'channels', got {self.crop_encoder!r}")
        shared = self.input == "crops" and self.crop_encoder == "shared"
        return _Classifier(self.backbone, self.n_channels_, tuple(self.input_shape), shared)


def _first_array(item: Any) -> np.ndarray:
    from fracsurv.io.refs import load_image

    return load_image(item)
