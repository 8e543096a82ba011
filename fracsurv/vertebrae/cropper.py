"""``VertebraCropper``: learned vertebra keypoints -> Genant grades and the study's crop stack.

``fit`` trains the CenterNet-style keypoint network of
:mod:`fracsurv.vertebrae.detector` on annotated keypoints held in X;
``transform`` finds every vertebra of each radiograph, labels its level, grades
it with Genant's rule (:func:`fracsurv.vertebrae.genant.grade_vertebrae`) and
cuts the fixed stack of crops with the multimodal study's rules
(:class:`fracsurv.vertebrae.crops.CropStacker`, the one home of those rules).
See ``docs/vertebra_cropper.md``.
"""

from __future__ import annotations

from numbers import Integral, Real
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from fracsurv._base import FrameTransformerMixin, appended_feature_names, derive_seed, row_label
from fracsurv.io.refs import ImageCache, hash_parts
from fracsurv.nn.base import TorchEstimatorMixin
from fracsurv.nn.data import to_chw
from fracsurv.vertebrae._keypoint_data import (
    KeypointImages,
    load_one_image,
    normalise_intensity,
    one_image,
)
from fracsurv.vertebrae.crops import CROP_CONSTRAINTS, CropStacker, box_from_points
from fracsurv.vertebrae.detector import (
    LEVEL_INDEX,
    LEVELS,
    STRIDE,
    KeypointLoss,
    VertebraNet,
    assign_levels,
    decode_maps,
    from_grid,
)
from fracsurv.vertebrae.genant import grade_vertebrae, heights

__all__ = ["VertebraCropper"]

SUMMARY_COLUMNS = ("n_vertebrae", "n_fractures", "max_grade", "sdi", "max_reduction",
                   "no_vertebra_found")


class VertebraCropper(TorchEstimatorMixin, FrameTransformerMixin, TransformerMixin, BaseEstimator):
    """Find, label and grade every vertebra of a lateral spine radiograph; stack its crops.

    ``fit`` learns from annotated keypoints (``keypoints_column``: per row a list
    of ``{"level": "T6", "points": [[x, y]] * 6}`` in that image's pixels, points
    ordered superior endplate posterior / middle / anterior, then inferior
    endplate posterior / middle / anterior). ``transform`` adds

    * ``vertebrae_column``: per row a top-to-bottom list of dicts ``level``,
      ``points`` (6 x 2, native pixels), ``box`` ``[x0, y0, x1, y1]``, ``grade``
      (Genant 0-3), ``morphology``, ``reduction`` (height reduction) and
      ``confidence`` (centre-heatmap probability);
    * ``n_vertebrae``, ``n_fractures`` (grade >= 1), ``max_grade``, ``sdi`` (sum of
      grades), ``max_reduction`` (a continuous fracture score) — summaries over
      the graded levels (``first_graded_level`` down to L5);
    * ``no_vertebra_found`` (bool): nothing was detected; the row then gets an
      all-zero crop stack and zero summaries instead of an error;
    * ``output_column``: the ``(n_crops, h, w)`` crop stack (a cache reference when
      ``cache_dir`` is set), cut with :class:`~fracsurv.vertebrae.crops.CropStacker`'s
      rules.

    Parameters
    ----------
    image_column, keypoints_column : str
        One radiograph per row (array, cache reference or file path) and its
        annotations (read by ``fit`` only).
    vertebrae_column, output_column : str
        Names of the vertebra-list and crop-stack columns added by ``transform``.
    input_shape : (int, int), default=(512, 256)
        Network input (H, W); images are resized to it and the results mapped back
        to native pixels. The maps come out at half this size.
    channels : tuple of int, default=(16, 32, 64, 128, 128)
        Widths of the MONAI U-Net.
    num_res_units : int, default=1
        Residual units per U-Net block (0 is about twice as fast on a CPU).
    train_window : (int, int), optional
        Train on random windows of this size (input pixels, divisible like
        ``input_shape``), three in four centred near an annotated vertebra: several
        times cheaper per step on a CPU. The network is fully convolutional and
        ``transform`` still reads whole images; the level head, which needs the
        whole column to count vertebrae, learns less well from windows.
    sigma : float, default=1.0
        Gaussian width of the point heatmaps, in output-grid pixels.
    detection_threshold : float, default=0.3
        Minimum centre probability of a vertebra.
    first_graded_level : str, default="T4"
        Vertebrae above it are not graded (grade 0, ``"normal"``), as in Genant's
        T4-L4/L5 protocol and the synthetic cohort's truth.
    use_neighbours : bool, default=True
        Genant reference height from the neighbouring vertebrae (see
        :func:`~fracsurv.vertebrae.genant.grade_vertebrae`).
    n_crops, crop_size, max_box_height, gap_factor, margin, cache_dir
        The crop stack, exactly as :class:`~fracsurv.vertebrae.crops.CropStacker`.
    crop_resize : {"shrink", "fill"}, default="shrink"
        ``CropStacker``'s ``resize``: keep each vertebra's pixel size (the study) or
        scale every crop to fill ``crop_size`` (for a shared per-crop encoder).
    augment : bool, default=True
        Random mirror, shift, gamma, contrast and noise while training.
    optimizer, lr, weight_decay, batch_size, max_epochs, validation_fraction, \
patience, device, precision, random_state, verbose
        The shared training parameters, documented once in :mod:`fracsurv.nn.base`;
        the learning rate follows a cosine schedule over ``max_epochs``.

    Attributes
    ----------
    module_, net_ : the trained :class:`~fracsurv.vertebrae.detector.VertebraNet` and skorch net.
    feature_names_in_, n_features_in_ : as in scikit-learn.
    """

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        **TorchEstimatorMixin._parameter_constraints,
        **CROP_CONSTRAINTS,
        "image_column": [str],
        "keypoints_column": [str],
        "vertebrae_column": [str],
        "output_column": [str],
        "input_shape": [tuple, list],
        "channels": ["array-like"],
        "num_res_units": [Interval(Integral, 0, None, closed="left")],
        "train_window": [tuple, list, None],
        "sigma": [Interval(Real, 0, None, closed="neither")],
        "detection_threshold": [Interval(Real, 0, 1, closed="neither")],
        "first_graded_level": [StrOptions(set(LEVELS))],
        "use_neighbours": ["boolean"],
        "crop_resize": [StrOptions({"shrink", "fill"})],
        "augment": ["boolean"],
    }

    def __init__(self, image_column: str = "image", *, keypoints_column: str = "keypoints",
                 vertebrae_column: str = "vertebrae", output_column: str = "crops",
                 input_shape: tuple[int, int] = (512, 256),
                 channels: tuple[int, ...] = (16, 32, 64, 128, 128), num_res_units: int = 1,
                 train_window: tuple[int, int] | None = None,
                 sigma: float = 1.0, detection_threshold: float = 0.3,
                 first_graded_level: str = "T4", use_neighbours: bool = True,
                 n_crops: int = 13, crop_size: Any = "auto", max_box_height: Any = "auto",
                 gap_factor: float = 1.5, margin: float = 0.15, crop_resize: str = "shrink",
                 cache_dir: str | None = None, augment: bool = True, optimizer: str = "adam", lr: float = 2e-3,
                 weight_decay: float = 1e-4, batch_size: int = 8, max_epochs: int = 60,
                 validation_fraction: float = 0.1, patience: int = 12, device: str = "auto",
                 precision: str = "auto", random_state: int | None = None,
                 verbose: int = 0) -> None:
        self.image_column = image_column
        self.keypoints_column = keypoints_column
        self.vertebrae_column = vertebrae_column
        self.output_column = output_column
        self.input_shape = input_shape
        self.channels = channels
        self.num_res_units = num_res_units
        self.train_window = train_window
        self.sigma = sigma
        self.detection_threshold = detection_threshold
        self.first_graded_level = first_graded_level
        self.use_neighbours = use_neighbours
        self.n_crops = n_crops
        self.crop_size = crop_size
        self.max_box_height = max_box_height
        self.gap_factor = gap_factor
        self.margin = margin
        self.crop_resize = crop_resize
        self.cache_dir = cache_dir
        self.augment = augment
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

    # -- validation ------------------------------------------------------
    def _shape(self) -> tuple[int, int]:
        shape = tuple(int(s) for s in self.input_shape)
        if len(shape) != 2 or min(shape) < 32 or any(s % 2**len(self.channels) for s in shape):
            raise ValueError(f"input_shape must be (H, W), both >= 32 and divisible by "
                             f"{2**len(self.channels)} (2 ** len(channels)), got {self.input_shape!r}")
        return shape  # type: ignore[return-value]

    def _check_geometry(self) -> None:
        """Rules across parameters: both shapes must suit the U-Net's ``channels``."""
        self._shape()
        if self.train_window is not None:
            win = tuple(int(s) for s in self.train_window)
            k = 2 ** len(self.channels)
            if len(win) != 2 or min(win) < k or any(s % k for s in win):
                raise ValueError(f"train_window must be (h, w), both positive multiples of {k}, "
                                 f"got {self.train_window!r}")

    def _offset_scale(self) -> float:
        return self._shape()[0] / STRIDE / 32.0

    @staticmethod
    def _annotation(cell: Any, X: pd.DataFrame, pos: int, column: str
                    ) -> tuple[np.ndarray, np.ndarray]:
        """(points (n, 6, 2), level indices (n,)) of one row, validated."""
        if cell is None or (isinstance(cell, float) and np.isnan(cell)):
            raise ValueError(f"{row_label(X, pos)} has no annotation in {column!r} "
                             "(use [] for an image without vertebrae)")
        if not isinstance(cell, list | tuple):
            raise ValueError(f"{row_label(X, pos)}: {column!r} must hold a list of vertebrae, "
                             f"got {type(cell).__name__}")
        pts, lv = [], []
        for k, v in enumerate(cell):
            try:
                p = np.asarray(v["points"], float)
            except (KeyError, TypeError, ValueError) as exc:
                raise ValueError(f"{row_label(X, pos)}: vertebra {k} in {column!r} has no "
                                 f"usable 'points' ({exc})") from None
            if p.shape != (6, 2) or not np.isfinite(p).all():
                raise ValueError(f"{row_label(X, pos)}: vertebra {k} in {column!r} needs 6 finite "
                                 f"(x, y) points, got shape {p.shape}")
            level = v.get("level") if isinstance(v, dict) else None
            if level is not None and level not in LEVEL_INDEX:
                raise ValueError(f"{row_label(X, pos)}: vertebra {k} has unknown level {level!r}; "
                                 f"expected one of {LEVELS} or None")
            pts.append(p)
            lv.append(-1 if level is None else LEVEL_INDEX[level])
        return np.asarray(pts, float).reshape(-1, 6, 2), np.asarray(lv, int)

    # -- fitting ---------------------------------------------------------
    def fit(self, X: pd.DataFrame, y: Any = None) -> VertebraCropper:
        """Train the keypoint network on every row's image and annotated vertebrae.

        Parameters
        ----------
        X : DataFrame
            With ``image_column`` and ``keypoints_column`` (``[]`` for an image
            without vertebrae, a useful negative).
        y : ignored
            Accepted (and ignored) so the cropper can sit in a survival Pipeline.

        Returns
        -------
        self
        """
        self._validate_params()
        self._check_geometry()
        self._require_columns(X, [self.image_column, self.keypoints_column], type(self).__name__)
        if len(X) < 2:
            raise ValueError(f"VertebraCropper needs at least 2 annotated rows, got {len(X)}")
        items = [one_image(c, X, p, self.image_column) for p, c in enumerate(X[self.image_column])]
        ann = [self._annotation(c, X, p, self.keypoints_column)
               for p, c in enumerate(X[self.keypoints_column])]
        if sum(len(a[0]) for a in ann) == 0:
            raise ValueError(f"no vertebra is annotated in {self.keypoints_column!r}; nothing to learn")
        self.feature_names_in_ = np.asarray(X.columns, dtype=object)
        self.n_features_in_ = X.shape[1]
        rs = self.random_state
        seed = None if rs is None else derive_seed(rs)
        ds = KeypointImages(items, ann, [row_label(X, p) for p in range(len(X))], self._shape(),
                             float(self.sigma), self._offset_scale(), bool(self.augment), seed,
                             None if self.train_window is None
                             else tuple(int(s) for s in self.train_window))
        from skorch.callbacks import LRScheduler

        self._seed()
        sched = LRScheduler(policy=torch.optim.lr_scheduler.CosineAnnealingLR,
                            T_max=max(int(self.max_epochs), 1), eta_min=float(self.lr) * 0.02)
        net = self._make_net(self._module(), KeypointLoss(), n_train=len(ds), callbacks=[sched])
        self._fit_net(net, ds)
        return self

    def _module(self) -> VertebraNet:
        return VertebraNet(tuple(int(c) for c in self.channels), int(self.num_res_units))

    # -- inference -------------------------------------------------------
    def _stacker(self) -> CropStacker:
        return CropStacker(n_crops=self.n_crops, crop_size=self.crop_size,
                           max_box_height=self.max_box_height, gap_factor=self.gap_factor,
                           margin=self.margin, resize=self.crop_resize)

    def _network_input(self, img: np.ndarray) -> torch.Tensor:
        return normalise_intensity(to_chw(img, self._shape()))

    def detect(self, image: Any) -> list[dict[str, Any]]:
        """The graded, top-to-bottom vertebra list of one image (array, reference or path)."""
        check_is_fitted(self, "module_")
        img = load_one_image(image, "the given image")
        maps = self._infer([self._network_input(img)[None]])
        return self._vertebrae(maps[0], img.shape)

    def _vertebrae(self, maps: np.ndarray, native: tuple[int, int]) -> list[dict[str, Any]]:
        """Decode one image's maps, map to native pixels, label levels and grade."""
        h, w = self._shape()
        scale = (w / STRIDE / native[1], h / STRIDE / native[0])
        found = decode_maps(maps, float(self.detection_threshold), self._offset_scale())
        found = [d for d in found if self._inside(from_grid(d["points"], scale), native)]
        if not found:
            return []
        pts = np.stack([from_grid(d["points"], scale) for d in found])
        order = np.argsort(pts.mean(axis=1)[:, 1], kind="stable")
        pts = pts[order]
        found = [found[i] for i in order]
        hts = heights(pts)
        levels = assign_levels(pts.mean(axis=1)[:, 1], hts.mean(axis=1),
                               np.stack([d["level_logp"] for d in found]), float(self.gap_factor))
        grades, morph, red = grade_vertebrae(pts, use_neighbours=bool(self.use_neighbours))
        first = LEVEL_INDEX[self.first_graded_level]
        out = []
        for k, d in enumerate(found):
            graded = levels[k] >= first
            out.append({"level": LEVELS[int(levels[k])],
                        "points": np.round(pts[k], 3).tolist(),
                        "box": [round(float(v), 3) for v in box_from_points(pts[k], float(self.margin))],
                        "grade": int(grades[k]) if graded else 0,
                        "morphology": str(morph[k]) if graded else "normal",
                        "reduction": round(float(red[k]), 4),
                        "graded": bool(graded),
                        "confidence": round(d["score"], 4)})
        return out

    @staticmethod
    def _inside(points: np.ndarray, native: tuple[int, int]) -> bool:
        """Only whole vertebrae count: every point inside the image."""
        x, y = points[:, 0], points[:, 1]
        return bool((x >= 0).all() and (y >= 0).all() and (x <= native[1] - 1).all()
                    and (y <= native[0] - 1).all())

    @staticmethod
    def _summary(vertebrae: list[dict[str, Any]]) -> dict[str, Any]:
        graded = [v for v in vertebrae if v["graded"]]
        grades = [v["grade"] for v in graded]
        return {"n_vertebrae": len(vertebrae), "n_fractures": sum(g >= 1 for g in grades),
                "max_grade": max(grades, default=0), "sdi": sum(grades),
                "max_reduction": max((v["reduction"] for v in graded), default=0.0),
                "no_vertebra_found": not vertebrae}

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        """Add the vertebra list, patient summaries, the flag and the crop stack.

        Images are read, scored and cropped in batches of ``2 x batch_size`` rows,
        so memory does not grow with the cohort.

        Returns
        -------
        DataFrame
            X's other columns unchanged, then the new columns (see the class docstring).
        """
        check_is_fitted(self, "module_")
        self._require_columns(X, [self.image_column], type(self).__name__)
        cache = ImageCache(self.cache_dir) if self.cache_dir else None
        stacker = self._stacker().fit(pd.DataFrame({"image": [], "keypoints": []}))
        verts: list[list[dict[str, Any]]] = []
        stacks: list[Any] = []
        step = max(1, int(self.batch_size)) * 2
        cells = list(X[self.image_column])
        for start in range(0, len(X), step):
            imgs = [load_one_image(one_image(cells[p], X, p, self.image_column), row_label(X, p))
                    for p in range(start, min(start + step, len(X)))]
            maps = self._infer([torch.stack([self._network_input(im) for im in imgs])])
            for img, m in zip(imgs, maps):
                v = self._vertebrae(m, img.shape)
                stack = stacker.stack_one(img, v)
                if cache is not None:
                    stack = cache.put(stack, hash_parts(stack, "vertebra-crops"))
                verts.append(v)
                stacks.append(stack)
        new = [self.vertebrae_column, *SUMMARY_COLUMNS, self.output_column]
        out = X.drop(columns=[c for c in new if c in X.columns])
        out[self.vertebrae_column] = pd.Series(verts, index=X.index, dtype=object)
        summary = pd.DataFrame([self._summary(v) for v in verts], index=X.index,
                               columns=list(SUMMARY_COLUMNS))
        for c in SUMMARY_COLUMNS:
            out[c] = summary[c].astype(bool if c == "no_vertebra_found" else
                                       float if c == "max_reduction" else int)
        out[self.output_column] = pd.Series(stacks, index=X.index, dtype=object)
        return out

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        """Input columns plus the added ones."""
        check_is_fitted(self, "module_")
        names = self.feature_names_in_ if input_features is None else input_features
        return appended_feature_names(
            names, [self.vertebrae_column, *SUMMARY_COLUMNS, self.output_column])

    # -- persistence -----------------------------------------------------
    def _extra_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return {"feature_names_in": [str(c) for c in self.feature_names_in_]}, {}

    def _restore(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.feature_names_in_ = np.asarray(meta["feature_names_in"], dtype=object)
        self.n_features_in_ = len(self.feature_names_in_)
        self.module_ = self._module()
