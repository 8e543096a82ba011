"""``DiffXGenerator``: a patient's future radiographs from a baseline image and a prompt.

The Diff-X study's generator, on the shared skorch base:

1. a 1-channel KL autoencoder compresses radiographs to latents;
2. **LDM-1** learns to denoise latents given a low-resolution copy of the image
   (concatenated at every step) and the image's own prompt — it reconstructs
   the baseline from its DDIM inversion;
3. **LDM-2** learns prompt-conditioned generation ("An image of 75 years old
   female") with classifier-free guidance;
4. sampling runs both from the baseline's inverted noise: LDM-1 retraces the
   baseline while its decoder features and self-attention queries/keys are
   injected into LDM-2 (:mod:`fracsurv.generative.injection`) for the first
   ``tau_f`` / ``tau_attn`` of the steps, so the anatomy stays the patient's
   and the prompt changes what ageing changes.

Every horizon x seed of one patient is one batch; the inversion of a baseline
is cached. Training uses every image of the frame (baseline and follow-up, each
with the age at which it was taken), so the pairs teach LDM-2 what the same
anatomy looks like years later.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from numbers import Integral, Real
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils._param_validation import Hidden, Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from fracsurv._base import (
    FrameTransformerMixin,
    append_columns,
    appended_feature_names,
    renamed_param,
    row_label,
)
from fracsurv._progress import progress
from fracsurv.generative.nets import DiffXModule
from fracsurv.generative.prompts import format_prompt
from fracsurv.generative.sampling import DiffXSamplingMixin
from fracsurv.generative.training import DiffXTrainingMixin
from fracsurv.io.refs import ImageCache, iter_cell
from fracsurv.nn.base import TorchEstimatorMixin
from fracsurv.nn.data import antialiased_resize, load_row_image

__all__ = ["DIFFX_PRESETS", "DiffXGenerator"]

#: Ready-made sizes. ``"full"`` is the study's scale (needs a GPU); ``"cpu"``
#: trains in 3 to 4 hours on 2 cores at 256 x 128 (the shipped
#: ``fracsurv.pretrained.load("diffx")``; its sampling settings were chosen on a
#: validation cohort, benchmarks/results/diffx_cpu_tuning.json); ``"demo"`` is what
#: ``fracsurv demo --retrain`` trains (64 x 32,
#: 10-year horizon, 2 seeds); ``"tiny"`` is for tests.
DIFFX_PRESETS: dict[str, dict[str, Any]] = {
    "full": {"input_shape": (512, 512), "ae_channels": (64, 128, 256, 256),
             "unet_channels": (128, 256, 512, 512), "layers_per_block": 2,
             "cross_attention_dim": 256, "n_inference_steps": 50, "ae_epochs": 100,
             "ldm_epochs": 300, "batch_size": 16},
    "cpu": {"input_shape": (256, 128), "ae_channels": (32, 64, 64), "ae_patch": 2,
            "latent_channels": 8, "unet_channels": (32, 64, 64), "layers_per_block": 1,
            "cross_attention_dim": 64, "attention_head_dim": 2, "n_inference_steps": 12,
            "ae_epochs": 6, "ldm_epochs": 40, "ldm1_epochs": 15, "ldm1_init": "ldm2",
            "batch_size": 32, "lr": 5e-4, "strength": 0.5, "guidance_scale": 3.0,
            "detail_transfer": True},
    "demo": {"input_shape": (64, 32), "ae_channels": (16, 32, 32), "unet_channels": (32, 64),
             "layers_per_block": 1, "cross_attention_dim": 32, "attention_head_dim": 8,
             "n_inference_steps": 10, "ae_epochs": 6, "ldm_epochs": 12, "batch_size": 32,
             "lr": 1e-3, "horizons": (10,), "n_seeds": 2},
    "tiny": {"input_shape": (32, 16), "ae_channels": (8, 16), "latent_channels": 2,
             "unet_channels": (16, 16), "layers_per_block": 1, "cross_attention_dim": 16,
             "attention_head_dim": 8, "n_inference_steps": 6, "ae_epochs": 2, "ldm_epochs": 2,
             "batch_size": 4, "n_seeds": 2, "horizons": (1, 5)},
}


class DiffXGenerator(DiffXSamplingMixin, DiffXTrainingMixin, FrameTransformerMixin, TorchEstimatorMixin,
                     TransformerMixin, BaseEstimator):
    """Language-guided generation of future radiographs (the Diff-X study's model).

    Parameters
    ----------
    image_column : str, default="image"
        Baseline radiographs (arrays or references); the first image of a cell.
    followup_column, followup_age_column : str
        Follow-up radiographs and the age at which they were taken; used by
        ``fit`` as extra training images and by the ``"last"`` horizon.
    age_column, sex_column : str
        Baseline age (years) and sex (female/male, F/M or 1/0).
    horizons : tuple, default=(1, 5, 10, "last")
        Years after baseline; ``"last"`` = the row's follow-up age (skipped for a
        row without one).
    n_seeds : int, default=10
        Generated images per horizon (the study's 10 random seeds).
    prompt_template : str
        With ``{age}`` and ``{sex}``.
    input_shape : (int, int), default=(512, 512)
        Working resolution (outputs are resized back to each baseline's shape
        unless ``output_shape`` is set). ``image_size``, its former name, is
        deprecated: passing it warns with a ``FutureWarning`` and takes precedence.
    ae_channels, latent_channels : autoencoder widths per level and latent depth.
    ae_patch : int, default=1
        Space-to-depth factor in front of the autoencoder (2: the image's 2 x 2 pixel
        blocks become 4 channels at half the size; see
        :class:`~fracsurv.generative.nets.PatchedAutoencoder`). The latent is
        ``ae_patch * 2 ** (len(ae_channels) - 1)`` times smaller than the image.
    unet_channels, layers_per_block, cross_attention_dim, attention_head_dim : the
        UNets (both LDMs share the architecture).
    n_train_timesteps, n_inference_steps : int
        Diffusion steps in training and DDIM steps in sampling/inversion.
    beta_schedule : {"scaled_linear", "squaredcos_cap_v2"}, default="scaled_linear"
        Noise schedule (Stable Diffusion's, or the cosine one).
    prediction_type : {"epsilon", "v_prediction"}, default="v_prediction"
        What both LDMs predict: the noise or the velocity.
    snr_gamma : float or None, default=5.0
        Min-SNR-gamma loss weighting of the denoisers (None: unweighted).
    ema_decay : float, default=0.999
        EMA of the LDMs' weights during training (diffusers ``EMAModel``); the
        fitted LDMs are the averages. 0 turns it off.
    strength : float, default=1.0
        Fraction of the DDIM schedule the baseline is inverted through before
        generation (1.0 = the study's full inversion to noise; less keeps more of
        the baseline, as diffusers' image-to-image ``strength``).
    guidance_scale : float, default=4.0
        Classifier-free guidance of LDM-2.
    guidance_reference : {"null", "baseline"}, default="null"
        What guidance pushes away from: the empty prompt (classifier-free guidance as
        in the study) or the baseline's own prompt, so that guidance amplifies only
        what the change of age (and nothing else) changes, and a horizon of 0 years
        gets no push at all (the "negative prompt" of image editing).
    detail_transfer : bool, default=False
        Add the baseline's own detail back to every generated image: output =
        baseline + (generated - the autoencoder's reconstruction of the baseline),
        at the generator's resolution. The images keep what the autoencoder
        smooths away (endplates, trabecular texture) and carry only the change the
        diffusion models make; a future identical to the baseline's reconstruction
        is the baseline itself.
    eta : float, default=0.5
        DDIM stochasticity of LDM-2: the per-seed noise that makes seeds differ.
    inject : bool, default=True
        Plug-and-Play injection on (False = the study's "single LDM" ablation).
    tau_f, tau_attn : float, default 0.8 and 0.5
        Fractions of the sampling steps with feature / attention injection.
    injection_block, injection_layer : int, default 1 and 1
        Decoder position ``up_blocks[block].resnets[layer]`` — the fifth decoder
        layer of Stable Diffusion's layout, which the study found best.
    ae_epochs, ldm_epochs : int
        Training epochs of the autoencoder and of LDM-2 (and LDM-1 unless
        ``ldm1_epochs`` is set).
    ldm1_epochs : int, optional
        Training epochs of LDM-1 (default: ``ldm_epochs``).
    ldm1_init : {"ldm2", "scratch"}, default="ldm2"
        ``"ldm2"``: train LDM-2 first and start LDM-1 from its weights (with a
        zero-initialised low-resolution input channel), so the decoder features and
        attention queries/keys LDM-1 injects are in LDM-2's own feature space, as
        they are in the study, whose two LDMs are both fine-tuned from one Stable
        Diffusion; ``"scratch"``: both LDMs from random weights.
    lr, batch_size : optimiser settings (Adam) for all three stages.
    prompt_dropout : float, default=0.1
        Probability of training LDM-2 on the empty prompt (for guidance).
    kl_weight : float, default=1e-6
    ae_ssim_weight : float, default=0.5
        Weight of the (1 - SSIM) term of the autoencoder's loss, beside L1.
    generation_batch_size : int, default=64
        Generated images per sampling batch in ``transform`` (patients are
        batched together; classifier-free guidance doubles the UNet batch).
    cache_dir : str, optional
        Write generated images to this content-addressed cache and put
        references in ``future_images`` (else arrays).
    output_shape : (int, int), optional
    checkpoint_dir : str, optional
        Write each training stage's state there after every epoch; a ``fit``
        with the same data and parameters resumes from the last finished epoch.
    device, precision, random_state, verbose
        The shared training parameters, documented once in :mod:`fracsurv.nn.base`.

    Attributes
    ----------
    module_ : DiffXModule
        Autoencoder, both LDMs and both prompt encoders.
    n_train_images_ : int
    """

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        **{k: v for k, v in TorchEstimatorMixin._parameter_constraints.items()
           if k in ("lr", "batch_size", "device", "precision", "random_state", "verbose")},
        "image_column": [str],
        "followup_column": [str],
        "followup_age_column": [str],
        "age_column": [str],
        "sex_column": [str],
        "horizons": ["array-like"],
        "n_seeds": [Interval(Integral, 1, None, closed="left")],
        "prompt_template": [str],
        "input_shape": [tuple, list],
        "image_size": [tuple, list, Hidden(StrOptions({"deprecated"}))],
        "ae_channels": ["array-like"],
        "latent_channels": [Interval(Integral, 1, None, closed="left")],
        "ae_patch": [Interval(Integral, 1, None, closed="left")],
        "unet_channels": ["array-like"],
        "layers_per_block": [Interval(Integral, 1, None, closed="left")],
        "cross_attention_dim": [Interval(Integral, 1, None, closed="left")],
        "attention_head_dim": [Interval(Integral, 1, None, closed="left")],
        "n_train_timesteps": [Interval(Integral, 1, None, closed="left")],
        "n_inference_steps": [Interval(Integral, 1, None, closed="left")],
        "beta_schedule": [StrOptions({"scaled_linear", "squaredcos_cap_v2"})],
        "prediction_type": [StrOptions({"epsilon", "v_prediction"})],
        "snr_gamma": [Interval(Real, 0, None, closed="neither"), None],
        "ema_decay": [Interval(Real, 0, 1, closed="left")],
        "strength": [Interval(Real, 0, 1, closed="right")],
        "guidance_scale": [Interval(Real, 0, None, closed="left")],
        "guidance_reference": [StrOptions({"null", "baseline"})],
        "detail_transfer": ["boolean"],
        "eta": [Interval(Real, 0, 1, closed="both")],
        "inject": ["boolean"],
        "tau_f": [Interval(Real, 0, 1, closed="both")],
        "tau_attn": [Interval(Real, 0, 1, closed="both")],
        "injection_block": [Interval(Integral, 0, None, closed="left")],
        "injection_layer": [Interval(Integral, 0, None, closed="left")],
        "ae_epochs": [Interval(Integral, 1, None, closed="left")],
        "ldm_epochs": [Interval(Integral, 1, None, closed="left")],
        "ldm1_epochs": [Interval(Integral, 1, None, closed="left"), None],
        "ldm1_init": [StrOptions({"ldm2", "scratch"})],
        "prompt_dropout": [Interval(Real, 0, 1, closed="both")],
        "kl_weight": [Interval(Real, 0, None, closed="left")],
        "ae_ssim_weight": [Interval(Real, 0, None, closed="left")],
        "checkpoint_dir": [str, os.PathLike, None],
        "generation_batch_size": [Interval(Integral, 1, None, closed="left")],
        "cache_dir": [str, os.PathLike, None],
        "output_shape": [tuple, list, None],
    }

    def __init__(self, image_column: str = "image", *, followup_column: str = "followup_image",
                 followup_age_column: str = "followup_age", age_column: str = "age",
                 sex_column: str = "sex", horizons: Sequence[Any] = (1, 5, 10, "last"),
                 n_seeds: int = 10, prompt_template: str = "An image of {age} years old {sex}",
                 input_shape: tuple[int, int] = (512, 512),
                 ae_channels: tuple[int, ...] = (64, 128, 256, 256), latent_channels: int = 4,
                 ae_patch: int = 1,
                 unet_channels: tuple[int, ...] = (128, 256, 512, 512), layers_per_block: int = 2,
                 cross_attention_dim: int = 256, attention_head_dim: int = 8,
                 n_train_timesteps: int = 1000, n_inference_steps: int = 50,
                 beta_schedule: str = "scaled_linear", prediction_type: str = "v_prediction",
                 snr_gamma: float | None = 5.0, ema_decay: float = 0.999, strength: float = 1.0,
                 guidance_scale: float = 4.0, guidance_reference: str = "null",
                 detail_transfer: bool = False, eta: float = 0.5, inject: bool = True,
                 tau_f: float = 0.8, tau_attn: float = 0.5, injection_block: int = 1,
                 injection_layer: int = 1, ae_epochs: int = 100, ldm_epochs: int = 300,
                 ldm1_epochs: int | None = None, ldm1_init: str = "ldm2",
                 lr: float = 1e-4, batch_size: int = 16, prompt_dropout: float = 0.1,
                 kl_weight: float = 1e-6, ae_ssim_weight: float = 0.5,
                 generation_batch_size: int = 64, cache_dir: str | None = None,
                 checkpoint_dir: str | None = None,
                 output_shape: tuple[int, int] | None = None, device: str = "auto",
                 precision: str = "auto", random_state: int | None = None,
                 verbose: int = 0, image_size: Any = "deprecated") -> None:
        self.image_column = image_column
        self.followup_column = followup_column
        self.followup_age_column = followup_age_column
        self.age_column = age_column
        self.sex_column = sex_column
        self.horizons = horizons
        self.n_seeds = n_seeds
        self.prompt_template = prompt_template
        self.input_shape = input_shape
        self.ae_channels = ae_channels
        self.latent_channels = latent_channels
        self.ae_patch = ae_patch
        self.unet_channels = unet_channels
        self.layers_per_block = layers_per_block
        self.cross_attention_dim = cross_attention_dim
        self.attention_head_dim = attention_head_dim
        self.n_train_timesteps = n_train_timesteps
        self.n_inference_steps = n_inference_steps
        self.beta_schedule = beta_schedule
        self.prediction_type = prediction_type
        self.snr_gamma = snr_gamma
        self.ema_decay = ema_decay
        self.strength = strength
        self.guidance_scale = guidance_scale
        self.guidance_reference = guidance_reference
        self.detail_transfer = detail_transfer
        self.eta = eta
        self.inject = inject
        self.tau_f = tau_f
        self.tau_attn = tau_attn
        self.injection_block = injection_block
        self.injection_layer = injection_layer
        self.ae_epochs = ae_epochs
        self.ldm_epochs = ldm_epochs
        self.ldm1_epochs = ldm1_epochs
        self.ldm1_init = ldm1_init
        self._set_shared_params(locals())
        self.prompt_dropout = prompt_dropout
        self.kl_weight = kl_weight
        self.ae_ssim_weight = ae_ssim_weight
        self.generation_batch_size = generation_batch_size
        self.cache_dir = cache_dir
        self.checkpoint_dir = checkpoint_dir
        self.output_shape = output_shape
        self.image_size = image_size

    # -- checks and data ---------------------------------------------------
    def _training_settings(self) -> dict[str, Any]:
        # Fixed, not parameters: Adam without weight decay and without an inner
        # validation split; each stage sets its own number of epochs.
        return {"optimizer": "adam", "lr": self.lr, "weight_decay": 0.0,
                "batch_size": self.batch_size, "max_epochs": 1, "validation_fraction": 0.0,
                "patience": 0}

    def _check_values(self) -> None:
        """Rules beyond the declared constraints: the prompt's fields, the horizons and
        the image size's divisibility by both networks' downsampling."""
        if "{age}" not in self.prompt_template or "{sex}" not in self.prompt_template:
            raise ValueError("prompt_template must contain {age} and {sex}, got "
                             f"{self.prompt_template!r}")
        for h in self.horizons:
            if h != "last" and not (isinstance(h, int | float) and h >= 0):
                raise ValueError(f"horizons are years >= 0 or 'last', got {h!r}")
        factor = int(self.ae_patch) * 2 ** (len(self.ae_channels) - 1)
        h, w = self._input_shape()
        unet_factor = 2 ** (len(self.unet_channels) - 1)
        if h % (factor * unet_factor) or w % (factor * unet_factor):
            raise ValueError(f"input_shape {(h, w)} must be divisible by "
                             f"{factor * unet_factor} (autoencoder x UNet downsampling)")

    def _input_shape(self, warn: bool = False) -> tuple[int, int]:
        """``input_shape``, or the deprecated ``image_size`` when that was given."""
        shape = renamed_param(self, "input_shape", "image_size", warn=warn)
        h, w = (int(s) for s in shape)
        return h, w

    def _build(self) -> DiffXModule:
        return DiffXModule(
            template=self.prompt_template, ae_channels=tuple(self.ae_channels),
            latent_channels=int(self.latent_channels), unet_channels=tuple(self.unet_channels),
            layers_per_block=int(self.layers_per_block),
            cross_attention_dim=int(self.cross_attention_dim),
            attention_head_dim=int(self.attention_head_dim), ae_patch=int(self.ae_patch))

    def _prep(self, image: np.ndarray) -> torch.Tensor:
        """(1, 1, H, W) tensor in [-1, 1] at ``input_shape`` from a [0, 1] image."""
        arr = np.asarray(image, dtype=np.float32)
        if arr.ndim == 3:
            arr = arr[0]
        t = torch.from_numpy(antialiased_resize([arr], self._input_shape()))[:, None]
        return t * 2 - 1

    def _row_image(self, X: pd.DataFrame, pos: int, column: str) -> np.ndarray | None:
        items = iter_cell(X[column].iloc[pos])
        if not items:
            return None
        return load_row_image(items[0], f"{row_label(X, pos)} (column {column!r})")

    def _row_age_sex(self, X: pd.DataFrame, pos: int) -> tuple[float, Any]:
        age = X[self.age_column].iloc[pos]
        sex = X[self.sex_column].iloc[pos]
        try:
            age = float(age)
        except (TypeError, ValueError):
            age = float("nan")
        if not np.isfinite(age):
            raise ValueError(f"{self.age_column}: {row_label(X, pos)} has no valid age ({age!r})")
        try:
            format_prompt(self.prompt_template, age, sex)
        except ValueError as exc:
            raise ValueError(f"{self.sex_column}: {row_label(X, pos)}: {exc}") from None
        return age, sex

    def fit(self, X: pd.DataFrame, y: Any = None) -> DiffXGenerator:
        """Train the autoencoder, then LDM-1 and LDM-2, on every image of ``X``.

        Parameters
        ----------
        X : DataFrame
            ``image_column``, ``age_column``, ``sex_column``; optionally
            ``followup_column`` / ``followup_age_column`` (longitudinal pairs).
        y : ignored
            Present so the generator fits inside a survival Pipeline.
        """
        self._validate_params()
        self._require_columns(X, [self.image_column, self.age_column, self.sex_column],
                              type(self).__name__)
        self._input_shape(warn=True)
        self._check_values()
        self.feature_names_in_ = np.asarray(X.columns, dtype=object)
        self.n_features_in_ = len(self.feature_names_in_)
        self._seed()
        module = self._build()
        images, prompts = self._training_images(X)
        self.n_train_images_ = len(images)
        self.loss_history_ = self._fit_stages(module, images, prompts)
        self.module_ = module.eval()
        self._inversions = {}
        return self


    def _row_horizons(self, X: pd.DataFrame, pos: int, age: float) -> list[float]:
        out = []
        for h in self.horizons:
            if h == "last":
                if self.followup_age_column in X.columns:
                    fu = X[self.followup_age_column].iloc[pos]
                    if pd.notna(fu) and float(fu) >= age:
                        out.append(round(float(fu) - age, 2))
            else:
                out.append(float(h))
        return out

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        """Add ``future_images`` (horizon-major, ``n_seeds`` per horizon) and ``future_horizons``.

        The layout is what :class:`fracsurv.scoring.PVFScorer` with
        ``n_seeds=self.n_seeds`` aggregates (mean over seeds, max over horizons).
        Rows are generated ``generation_batch_size // (horizons x seeds)`` at a time.
        """
        check_is_fitted(self, "module_")
        self._require_columns(X, [self.image_column, self.age_column, self.sex_column],
                              type(self).__name__)
        cache = ImageCache(self.cache_dir) if self.cache_dir else None
        futures: list[Any] = [None] * len(X)
        horizons: list[Any] = [None] * len(X)
        per_batch = max(1, int(self.generation_batch_size) // max(
            1, len(self.horizons) * int(self.n_seeds)))
        pending: dict[tuple, list] = {}

        def flush(key: tuple) -> None:
            rows = pending.pop(key)
            arr = self.generate_many([r[1] for r in rows], [r[2] for r in rows],
                                     [r[3] for r in rows], [r[4] for r in rows])
            for (pos, *_), a in zip(rows, arr, strict=True):
                flat = list(a.reshape(-1, *a.shape[2:]))
                futures[pos] = [cache.put(f) for f in flat] if cache else flat

        for pos in progress(range(len(X)), desc="generate futures"):
            age, sex = self._row_age_sex(X, pos)
            img = self._row_image(X, pos, self.image_column)
            if img is None:
                raise ValueError(f"{self.image_column}: {row_label(X, pos)} has no image")
            hs = self._row_horizons(X, pos, age)
            horizons[pos] = hs
            key = (len(hs), tuple(self.output_shape or img.shape[-2:]))
            pending.setdefault(key, []).append((pos, img, age, sex, hs))
            if len(pending[key]) >= per_batch:
                flush(key)
        for key in list(pending):
            flush(key)
        return append_columns(X, {"future_images": list(futures), "future_horizons": list(horizons)})

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        """Input columns plus ``future_images`` and ``future_horizons``."""
        check_is_fitted(self, "module_")
        names = list(self.feature_names_in_ if input_features is None else input_features)
        return appended_feature_names(names, ["future_images", "future_horizons"])

    # -- persistence ---------------------------------------------------------
    def _extra_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return {"feature_names_in": list(self.feature_names_in_),
                "n_train_images": int(self.n_train_images_)}, {}

    def _restore(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.feature_names_in_ = np.asarray(meta["feature_names_in"], dtype=object)
        self.n_features_in_ = len(self.feature_names_in_)
        self.n_train_images_ = int(meta["n_train_images"])
        self.module_ = self._build()
        self._inversions = {}
