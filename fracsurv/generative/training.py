"""Training of :class:`~fracsurv.generative.DiffXGenerator`: three stages in order.

1. the autoencoder (L1 + SSIM + KL) on every image;
2. the latent scale (unit-variance latents of the training images);
3. the two LDMs, each with Min-SNR-weighted noise or velocity prediction and EMA
   weights: LDM-2 (prompt only, with prompt dropout for classifier-free guidance)
   and LDM-1 (conditioned on a low-resolution copy and the image's own prompt).
   With ``ldm1_init="ldm2"`` LDM-2 is trained first and LDM-1 starts from its
   weights (:func:`~fracsurv.generative.nets.warm_start_ldm1`), so that the features
   LDM-1 injects live in LDM-2's feature space; with ``"scratch"`` both start from
   random weights.

With ``checkpoint_dir`` each stage writes its state (weights, optimiser, EMA,
losses) after every epoch. Each stage's file is keyed by the training data and by
the parameters that change *that* stage and the ones before it, not by its own
number of epochs, so

* a ``fit`` that is interrupted and called again goes on from the last finished epoch;
* asking for more epochs of a finished stage trains only the extra epochs;
* changing an LDM's settings keeps the trained autoencoder.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from fracsurv._base import row_label
from fracsurv.generative.nets import DiffXModule, make_schedulers, warm_start_ldm1
from fracsurv.generative.objectives import AELoss, AEObjective, DenoiseLoss, DenoiseObjective
from fracsurv.generative.prompts import format_prompt, tokenize
from fracsurv.nn.callbacks import EMACallback, EpochCheckpoint, read_checkpoint, save_checkpoint
from fracsurv.nn.resume import note

__all__ = ["DiffXTrainingMixin"]

#: Parameters that only change sampling, not the trained weights.
_SAMPLING_PARAMS = ("n_inference_steps", "strength", "guidance_scale", "guidance_reference",
                    "detail_transfer", "eta",
                    "inject", "tau_f", "tau_attn", "injection_block", "injection_layer")
#: Parameters that change nothing trained.
_RUNTIME = ("verbose", "device", "cache_dir", "checkpoint_dir", "generation_batch_size",
            "output_shape", "horizons", "n_seeds", *_SAMPLING_PARAMS)
#: What the autoencoder stage depends on (besides the data); every other trained
#: parameter belongs to the LDM stages.
_AE_PARAMS = ("input_shape", "image_size", "ae_channels", "ae_patch", "latent_channels",
              "kl_weight", "ae_ssim_weight", "lr", "batch_size", "precision", "random_state")
_EPOCHS = ("ae_epochs", "ldm_epochs", "ldm1_epochs")


def _digest(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


class DiffXTrainingMixin:
    """The methods of :class:`~fracsurv.generative.DiffXGenerator` that train it."""

    def _training_images(self, X: pd.DataFrame) -> tuple[torch.Tensor, list[str]]:
        """Every baseline and follow-up image of ``X`` with the prompt of its own age."""
        images, prompts = [], []
        has_fu = self.followup_column in X.columns and self.followup_age_column in X.columns
        for pos in range(len(X)):
            age, sex = self._row_age_sex(X, pos)
            img = self._row_image(X, pos, self.image_column)
            if img is None:
                raise ValueError(f"{self.image_column}: {row_label(X, pos)} has no image")
            images.append(self._prep(img))
            prompts.append(format_prompt(self.prompt_template, age, sex))
            if has_fu:
                fu = self._row_image(X, pos, self.followup_column)
                fu_age = X[self.followup_age_column].iloc[pos]
                if fu is not None and pd.notna(fu_age):
                    images.append(self._prep(fu))
                    prompts.append(format_prompt(self.prompt_template, float(fu_age), sex))
        return torch.cat(images), prompts

    def _schedulers(self) -> tuple[Any, Any]:
        return make_schedulers(self.n_train_timesteps, self.beta_schedule, self.prediction_type)

    def _ldm1_epochs(self) -> int:
        return int(self.ldm_epochs if self.ldm1_epochs is None else self.ldm1_epochs)

    # -- checkpoints ---------------------------------------------------------
    def _stage_keys(self, images: torch.Tensor, prompts: list[str]) -> dict[str, str]:
        """Checkpoint key of each stage: the data, the parameters that change the stage or
        an earlier one, and the epochs of the earlier stages (never its own epochs)."""
        h = hashlib.sha256(images.numpy().tobytes())
        h.update("\n".join(prompts).encode())
        data = h.hexdigest()[:16]
        params = {k: v for k, v in self.get_params(deep=False).items() if k not in _RUNTIME}
        ae = {k: v for k, v in params.items() if k in _AE_PARAMS}
        # LDM-2 never depends on LDM-1 (each stage is seeded alike whatever the order)
        ldm = {k: v for k, v in params.items()
               if k not in _AE_PARAMS and k not in _EPOCHS and k != "ldm1_init"}
        keys = {"data": data, "autoencoder": _digest(data, ae)}
        keys["ldm2"] = _digest(keys["autoencoder"], self.ae_epochs, ldm)
        keys["ldm1"] = _digest(keys["ldm2"], self.ldm_epochs) if self.ldm1_init == "ldm2" \
            else _digest(keys["autoencoder"], self.ae_epochs, ldm, "ldm1 from scratch")
        return keys

    def _stage_file(self, keys: dict[str, str], stage: str, kind: str) -> Path | None:
        if self.checkpoint_dir is None:
            return None
        return Path(self.checkpoint_dir) / f"diffx-{keys['data']}" / f"{stage}-{keys[stage]}.{kind}.pt"

    def _train_stage(self, stage: str, objective: nn.Module, criterion: nn.Module, data: Any,
                     n: int, epochs: int, keys: dict[str, str], ema: bool) -> list[float]:
        """Train ``objective`` (whose modules are the generator's) for ``epochs`` epochs,
        resuming from, or extending, the stage's checkpoint."""
        epochs = int(epochs)
        use_ema = ema and float(self.ema_decay) > 0
        done, part = self._stage_file(keys, stage, "done"), self._stage_file(keys, stage, "epoch")
        state = None
        for path in (part, done):  # an unfinished run is newer than a finished shorter one
            state = state or (read_checkpoint(path) if path is not None else None)
        if state is not None and int(state["epoch"]) > epochs:
            note(f"DiffXGenerator {stage}: the checkpoint has {state['epoch']} epochs, more than "
                 f"the {epochs} asked for; trained again")
            state = None
        finished = int(state["epoch"]) if state else 0
        if state is not None and finished == epochs:
            objective.load_state_dict(state["module"])
            if use_ema and state.get("ema") is not None:
                _apply_ema(objective, state["ema"])
            note(f"DiffXGenerator {stage}: finished earlier")
            return list(state["losses"])
        note(f"DiffXGenerator {stage}: " + (f"resumed at epoch {finished + 1} of {epochs}"
                                            if state else "trained"))
        losses = list(state["losses"]) if state else []
        callbacks: list[Any] = []
        if use_ema:
            callbacks.append(EMACallback(float(self.ema_decay), state["ema"] if state else None))
        if part is not None:
            callbacks.append(EpochCheckpoint(part, stage, finished, losses))
        self._seed()
        net = self._make_net(objective, criterion, n_train=n, callbacks=callbacks)
        net.max_epochs = epochs - finished
        if state:
            net.initialize()
            net.module_.load_state_dict(state["module"])
            net.optimizer_.load_state_dict(state["optimizer"])
            # a different draw of batches from the resumed epoch on
            torch.manual_seed(int(np.random.SeedSequence([finished]).generate_state(1)[0]))
            net.warm_start = True
        net.fit(data, None)
        if part is not None:  # the last epoch's full state (raw weights + EMA) is the stage
            final = read_checkpoint(part)
            if final is None or int(final["epoch"]) != epochs:
                raise RuntimeError(f"DiffXGenerator {stage}: training ended at epoch "
                                   f"{final and final['epoch']} of {epochs} (interrupted?)")
            save_checkpoint(final, done)
            part.unlink()
        return losses + [float(h["train_loss"]) for h in net.history]

    def _fit_stages(self, module: DiffXModule, images: torch.Tensor,
                    prompts: list[str]) -> dict[str, list[float]]:
        """Stages 1-3 of the module docstring; returns the loss history per stage."""
        n = len(images)
        keys = self._stage_keys(images, prompts)
        history = {"autoencoder": self._train_stage(
            "autoencoder", AEObjective(module.vae),
            AELoss(float(self.kl_weight), float(self.ae_ssim_weight)), images, n,
            self.ae_epochs, keys, ema=False)}
        module.eval()
        with torch.no_grad():
            lat = torch.cat([module.vae.encode(images[i:i + 64]).latent_dist.mean
                             for i in range(0, n, 64)])
        module.latent_scale.fill_(1.0 / max(float(lat.std()), 1e-6))
        z0 = lat * module.latent_scale
        ids, values, _ = tokenize(prompts, module.text1.vocab, module.text1.length)
        data = {"z0": z0, "ids": torch.from_numpy(ids), "values": torch.from_numpy(values)}
        sched, _ = self._schedulers()
        gamma = None if self.snr_gamma is None else float(self.snr_gamma)

        def ldm1() -> None:
            history["ldm1"] = self._train_stage(
                "ldm1", DenoiseObjective(module.ldm1, module.text1, sched, 0.0, gamma),
                DenoiseLoss(), {**data, "lowres": module.lowres(images)}, n,
                self._ldm1_epochs(), keys, ema=True)

        def ldm2() -> None:
            history["ldm2"] = self._train_stage(
                "ldm2", DenoiseObjective(module.ldm2, module.text2, sched,
                                         float(self.prompt_dropout), gamma),
                DenoiseLoss(), data, n, self.ldm_epochs, keys, ema=True)

        if self.ldm1_init == "ldm2":
            ldm2()
            warm_start_ldm1(module.ldm1, module.ldm2)
            module.text1.load_state_dict(module.text2.state_dict())
            ldm1()
        else:
            ldm1()
            ldm2()
        return {k: history[k] for k in ("autoencoder", "ldm1", "ldm2")}


def _apply_ema(module: nn.Module, ema_state: dict[str, Any]) -> None:
    """Copy the averaged weights of an :class:`EMACallback`'s saved state into ``module``."""
    from diffusers.training_utils import EMAModel

    ema = EMAModel(module.parameters())
    ema.load_state_dict(ema_state)
    ema.copy_to(module.parameters())
