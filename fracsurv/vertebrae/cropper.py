"""``VertebraCropper``: learned vertebra keypoints -> Genant grades and the study's crop stack.

``fit`` trains three networks on the annotated keypoints held in X:

1. the CenterNet-style detector of :mod:`fracsurv.vertebrae.detector`, on the
   downsampled radiograph (finds every vertebra, its rough points and facing);
2. the keypoint refiner of :mod:`fracsurv.vertebrae.refiner`, on canonical
   patches of the full-resolution image (sub-pixel points and their expected
   errors);
3. the column model of :mod:`fracsurv.vertebrae.levels` (levels from anatomy,
   with anchors and confidences).

``transform`` runs them in that order, grades each vertebra with Genant's rule
(:func:`fracsurv.vertebrae.genant.grade_vertebrae`, and a soft grade that
carries the point errors) and cuts the fixed stack of crops with the
multimodal study's rules (:class:`fracsurv.vertebrae.crops.CropStacker`, the one
home of those rules). See ``docs/vertebra_cropper.md``.
"""

from __future__ import annotations

from collections.abc import Callable
from numbers import Integral, Real
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted
from torch import nn

from fracsurv._base import (
    FrameTransformerMixin,
    append_columns,
    appended_feature_names,
    derive_seed,
    row_label,
)
from fracsurv.io.refs import ImageCache, hash_parts
from fracsurv.nn.base import TorchEstimatorMixin
from fracsurv.vertebrae._inference import (
    SUMMARY_COLUMNS,
    SUMMARY_TYPES,
    CropperInferenceMixin,
    CropperInputError,
    CropperModules,
)
from fracsurv.vertebrae._keypoint_data import (
    KeypointImages,
    load_one_image,
    one_image,
    parse_annotation,
)
from fracsurv.vertebrae.crops import CROP_CONSTRAINTS, CropStacker
from fracsurv.vertebrae.detector import LEVELS, STRIDE, KeypointLoss, VertebraNet
from fracsurv.vertebrae.levels import ColumnLoss, ColumnNet, ColumnSamples
from fracsurv.vertebrae.refiner import RefinerLoss, RefinerNet, RefinerPatches, refiner_samples

__all__ = ["CropperInputError", "CropperModules", "VertebraCropper"]


class VertebraCropper(CropperInferenceMixin, TorchEstimatorMixin, FrameTransformerMixin, TransformerMixin,
                      BaseEstimator):
    """Find, label and grade every vertebra of a lateral spine radiograph; stack its crops.

    ``fit`` learns from annotated keypoints (``keypoints_column``: per row a list
    of ``{"level": "T6", "points": [[x, y]] * 6}`` in that image's pixels, points
    ordered superior endplate posterior / middle / anterior, then inferior
    endplate posterior / middle / anterior). ``transform`` adds

    * ``vertebrae_column``: per row a top-to-bottom list of dicts ``level``,
      ``points`` (6 x 2, native pixels), ``point_error`` (6 expected Euclidean
      point errors, native pixels), ``box`` ``[x0, y0, x1, y1]``, ``grade``
      (Genant 0-3), ``soft_grade`` (the grade's mean when the points vary by
      their errors), ``p_fracture`` (the share of such draws graded >= 1),
      ``morphology``, ``reduction`` (height reduction), ``gradable`` (the
      points are precise enough to grade: see ``gradable_error``), ``graded``
      (gradable and in the graded range),
      ``level_confidence`` (the column model's probability of this level) and
      ``confidence`` (centre-heatmap probability);
    * ``n_vertebrae``, ``n_fractures`` (grade >= 1), ``max_grade``, ``sdi`` (sum of
      grades), ``max_reduction`` (a continuous fracture score), ``max_soft_grade``
      — summaries over the graded vertebrae (gradable, ``first_graded_level``
      down to L5) — and ``n_ungradable``;
    * ``level_confidence``: the posterior of the column's placement (how sure the
      level names are) and ``level_anchor``: the anatomical anchors seen
      (``"C7"``, ``"last rib"``, ``"sacrum"``, joined by ``"+"``), ``"none"``
      when the field of view shows none — the levels are then a guess from
      counting and size alone, and should be read as such;
    * ``no_vertebra_found`` (bool): nothing was detected; the row then gets an
      all-zero crop stack and zero summaries instead of an error;
    * ``output_column``: the ``(n_crops, h, w)`` crop stack (a cache reference when
      ``cache_dir`` is set), cut with :class:`~fracsurv.vertebrae.crops.CropStacker`'s
      rules;
    * with ``on_error="skip"``, ``load_error``: why a row's image could not be
      read (``None`` when it could); such a row is kept, with no vertebrae.

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
    patch_size : int, default=64
        Side of the refiner's canonical patch (the body's larger extent spans
        1/1.7 of it); cut from the image ``transform`` is given, at its resolution.
    refiner_channels : tuple of int, default=(16, 32, 64, 128)
        Widths of the refiner's U-Net.
    refine_passes : int, default=3
        Refinement passes (each re-centres the patch on the previous points).
    stage2_epochs : int, optional
        Epochs of the refiner and the column model (default ``max_epochs``).
    grade_samples : int, default=32
        Draws of the points per vertebra for ``soft_grade`` and ``p_fracture``.
    fracture_oversample : int, default=24
        The refiner sees each annotated vertebra of Genant grade >= 1 this many
        times per epoch (they are a few per cent of all vertebrae).
    gradable_error : float, default=0.12
        A vertebra whose largest expected point error exceeds this fraction of its
        height is reported ``gradable=False`` (morphology ``"ungradable"``), as a
        reader marks a vertebra not evaluable, and left out of the summaries
        (selected on a validation cohort, see ``docs/vertebra_cropper.md``).
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
        Random mirror, shift, gamma, contrast and noise while training (and, for
        the refiner, jittered centre, angle and scale, and blur).
    on_error : {"raise", "skip"}, default="raise"
        A row whose image is unreadable, not 2-D, smaller than 32 pixels or not
        finite raises a :class:`CropperInputError` naming the row, or, with
        ``"skip"``, is kept with no vertebrae and the reason in ``load_error``.
    optimizer, lr, weight_decay, batch_size, max_epochs, validation_fraction, \
patience, device, precision, random_state, verbose
        The shared training parameters, documented once in :mod:`fracsurv.nn.base`;
        the learning rate follows a cosine schedule over ``max_epochs``.

    Attributes
    ----------
    module_ : :class:`CropperModules`
        ``detector`` (:class:`~fracsurv.vertebrae.detector.VertebraNet`), ``refiner``
        (:class:`~fracsurv.vertebrae.refiner.RefinerNet`) and ``column``
        (:class:`~fracsurv.vertebrae.levels.ColumnNet`).
    net_ : the last skorch net trained (the column model's).
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
        "patch_size": [Interval(Integral, 32, None, closed="left")],
        "refiner_channels": ["array-like"],
        "refine_passes": [Interval(Integral, 0, None, closed="left")],
        "stage2_epochs": [Interval(Integral, 1, None, closed="left"), None],
        "grade_samples": [Interval(Integral, 1, None, closed="left")],
        "fracture_oversample": [Interval(Integral, 1, None, closed="left")],
        "gradable_error": [Interval(Real, 0, None, closed="neither")],
        "on_error": [StrOptions({"raise", "skip"})],
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
                 sigma: float = 1.0, detection_threshold: float = 0.3, patch_size: int = 64,
                 refiner_channels: tuple[int, ...] = (16, 32, 64, 128), refine_passes: int = 3,
                 stage2_epochs: int | None = None, grade_samples: int = 32,
                 fracture_oversample: int = 24, gradable_error: float = 0.12,
                 first_graded_level: str = "T4", use_neighbours: bool = True,
                 n_crops: int = 13, crop_size: Any = "auto", max_box_height: Any = "auto",
                 gap_factor: float = 1.5, margin: float = 0.15, crop_resize: str = "shrink",
                 cache_dir: str | None = None, augment: bool = True, on_error: str = "raise",
                 optimizer: str = "adam", lr: float = 2e-3,
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
        self.patch_size = patch_size
        self.refiner_channels = refiner_channels
        self.refine_passes = refine_passes
        self.stage2_epochs = stage2_epochs
        self.grade_samples = grade_samples
        self.fracture_oversample = fracture_oversample
        self.gradable_error = gradable_error
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
        self.on_error = on_error
        self._set_shared_params(locals())

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

    # -- fitting ---------------------------------------------------------
    def fit(self, X: pd.DataFrame, y: Any = None) -> VertebraCropper:
        """Train the detector, the refiner and the column model on the annotated rows.

        Parameters
        ----------
        X : DataFrame
            With ``image_column`` and ``keypoints_column`` (``[]`` for an image
            without vertebrae, a useful negative for the detector). The images
            are held in memory (float32) while the stage-2 networks train.
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
        ann = [parse_annotation(c, X, p, self.keypoints_column)
               for p, c in enumerate(X[self.keypoints_column])]
        if sum(len(a[0]) for a in ann) == 0:
            raise ValueError(f"no vertebra is annotated in {self.keypoints_column!r}; nothing to learn")
        self.feature_names_in_ = np.asarray(X.columns, dtype=object)
        self.n_features_in_ = X.shape[1]
        rows = [row_label(X, p) for p in range(len(X))]
        images = [load_one_image(it, r).astype(np.float32, copy=False) for it, r in zip(items, rows)]
        seeds = self._stage_seeds()
        # 1. the detector, on whole downsampled images (or windows of them)
        ds = KeypointImages(images, ann, rows, self._shape(), float(self.sigma), self._offset_scale(),
                            bool(self.augment), seeds[0], None if self.train_window is None
                            else tuple(int(s) for s in self.train_window))
        detector = self._train(self._detector, KeypointLoss(), ds, int(self.max_epochs))
        # 2. the refiner, on canonical native-resolution patches of every annotated vertebra
        epochs = int(self.stage2_epochs or self.max_epochs)
        verts = refiner_samples(ann, int(self.fracture_oversample), bool(self.use_neighbours))
        ds = RefinerPatches(images, verts, int(self.patch_size), bool(self.augment), seeds[1])
        refiner = self._train(self._refiner, RefinerLoss(), ds, epochs, batch_size=32)
        # 3. the column model, on every annotated column
        ds = ColumnSamples(images, ann, bool(self.augment), seeds[2])
        column = self._train(ColumnNet, ColumnLoss(), ds, epochs)
        self.module_ = CropperModules(detector, refiner, column)
        return self

    def _stage_seeds(self) -> list[int | None]:
        rs = self.random_state
        if rs is None:
            return [None, None, None]
        seed = derive_seed(rs)
        return [seed, (seed + 1) % 2**31, (seed + 2) % 2**31]

    def _train(self, make_module: Callable[[], nn.Module], loss: nn.Module, ds: Any, epochs: int,
               batch_size: int | None = None) -> nn.Module:
        """One network through the shared skorch machinery, on a cosine schedule.

        The module is built after seeding, so its initial weights follow ``random_state``.
        """
        from skorch.callbacks import LRScheduler

        self._seed()
        sched = LRScheduler(policy=torch.optim.lr_scheduler.CosineAnnealingLR,
                            T_max=max(epochs, 1), eta_min=float(self.lr) * 0.02)
        net = self._make_net(make_module(), loss, n_train=len(ds), callbacks=[sched],
                             batch_size=batch_size)
        net.set_params(max_epochs=epochs)
        self._fit_net(net, ds)
        return net.module_

    def _detector(self) -> VertebraNet:
        return VertebraNet(tuple(int(c) for c in self.channels), int(self.num_res_units))

    def _refiner(self) -> RefinerNet:
        return RefinerNet(tuple(int(c) for c in self.refiner_channels))

    def _module(self) -> CropperModules:
        return CropperModules(self._detector(), self._refiner(), ColumnNet())

    # -- inference -------------------------------------------------------
    def _stacker(self) -> CropStacker:
        return CropStacker(n_crops=self.n_crops, crop_size=self.crop_size,
                           max_box_height=self.max_box_height, gap_factor=self.gap_factor,
                           margin=self.margin, resize=self.crop_resize)

    def crops_at(self, image: np.ndarray, vertebrae: list[dict[str, Any]]) -> np.ndarray:
        """The crop stack of ``vertebrae`` cut from ``image``, as :meth:`transform` cuts it.

        For another image of the same patient in the same frame -- a generated
        future radiograph resized to the baseline's shape -- with the vertebrae
        found on the baseline, so both stacks show the same vertebrae in the same
        slots.
        """
        return self.stacker().stack_one(np.asarray(image, np.float32), list(vertebrae))

    def stacker(self) -> CropStacker:
        """The fitted :class:`CropStacker` that cuts this cropper's stacks (slot geometry)."""
        return self._stacker().fit(pd.DataFrame({"image": [], "keypoints": []}))

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
        stacker = self.stacker()
        verts: list[list[dict[str, Any]]] = []
        stacks: list[Any] = []
        errors: list[str | None] = []
        shape: tuple[int, ...] | None = None
        step = max(1, int(self.batch_size)) * 2
        cells = list(X[self.image_column])
        for start in range(0, len(X), step):
            imgs: list[np.ndarray | None] = []
            for p in range(start, min(start + step, len(X))):
                try:
                    imgs.append(self._checked_image(one_image(cells[p], X, p, self.image_column),
                                                    row_label(X, p)))
                    errors.append(None)
                except (CropperInputError, ValueError) as exc:
                    if self.on_error == "raise":
                        raise CropperInputError(str(exc)) from None
                    imgs.append(None)
                    errors.append(str(exc))
            good = [im for im in imgs if im is not None]
            results = iter(self._process(good))
            for img in imgs:
                v = next(results) if img is not None else []
                if img is not None:
                    shape = shape or img.shape
                    stack = stacker.stack_one(img, v)
                    if cache is not None:
                        stack = cache.put(stack, hash_parts(stack, "vertebra-crops"))
                else:  # filled once a readable image gives the stack's size
                    stack = None
                verts.append(v)
                stacks.append(stack)
        blank = stacker.stack_one(np.zeros(shape or self._shape(), np.float32), [])
        stacks = [s if s is not None else (cache.put(blank, hash_parts(blank, "vertebra-crops"))
                                           if cache is not None else blank.copy()) for s in stacks]
        summary = pd.DataFrame([self._summary(v) for v in verts], index=X.index,
                               columns=list(SUMMARY_COLUMNS))
        added: dict[str, Any] = {self.vertebrae_column: verts}
        added.update({c: summary[c].astype(SUMMARY_TYPES.get(c, int)) for c in SUMMARY_COLUMNS})
        added[self.output_column] = stacks
        if self.on_error == "skip":
            added["load_error"] = errors
        return append_columns(X, added)

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        """Input columns plus the added ones."""
        check_is_fitted(self, "module_")
        names = self.feature_names_in_ if input_features is None else input_features
        extra = ["load_error"] if self.on_error == "skip" else []
        return appended_feature_names(
            names, [self.vertebrae_column, *SUMMARY_COLUMNS, self.output_column, *extra])

    # -- persistence -----------------------------------------------------
    def _extra_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return {"feature_names_in": [str(c) for c in self.feature_names_in_]}, {}

    def _restore(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.feature_names_in_ = np.asarray(meta["feature_names_in"], dtype=object)
        self.n_features_in_ = len(self.feature_names_in_)
        self.module_ = self._module()
