"""Training of :class:`~fracsurv.generative.DiffXGenerator`: three stages in order.

1. the autoencoder (L1 + SSIM + KL) on every image;
2. the latent scale (unit-variance latents of the training images);
3. LDM-1 (conditioned on a low-resolution copy and the image's own prompt) and
   LDM-2 (prompt only, with prompt dropout for classifier-free guidance), each
   with Min-SNR-weighted noise or velocity prediction and EMA weights.

With ``checkpoint_dir`` each stage writes its state after every epoch and a
finished stage its weights, so a ``fit`` that is interrupted (killed, a machine
handed back) and called again with the same data and parameters goes on from
the last finished epoch.
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
from fracsurv.generative.nets import DiffXModule, make_schedulers
from fracsurv.generative.objectives import AELoss, AEObjective, DenoiseLoss, DenoiseObjective
from fracsurv.generative.prompts import format_prompt, tokenize
from fracsurv.nn.callbacks import EMACallback, EpochCheckpoint, read_checkpoint, save_checkpoint
from fracsurv.nn.resume import note

__all__ = ["DiffXTrainingMixin"]

#: Parameters that only change sampling, not the trained weights.
_SAMPLING_PARAMS = ("n_inference_steps", "strength", "guidance_scale", "eta", "inject", "tau_f",
                    "tau_attn", "injection_block", "injection_layer")


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

    # -- checkpoints ---------------------------------------------------------
    def _run_key(self, images: torch.Tensor, prompts: list[str]) -> str:
        """Digest of the training data and of every parameter that changes the weights."""
        h = hashlib.sha256(images.numpy().tobytes())
        h.update("\n".join(prompts).encode())
        skip = {"verbose", "device", "cache_dir", "checkpoint_dir", "generation_batch_size",
                "output_shape", "horizons", "n_seeds", *_SAMPLING_PARAMS}
        params = {k: v for k, v in self.get_params(deep=False).items() if k not in skip}
        h.update(json.dumps(params, sort_keys=True, default=str).encode())
        return h.hexdigest()[:16]

    def _stage_file(self, key: str, stage: str, kind: str) -> Path | None:
        if self.checkpoint_dir is None:
            return None
        return Path(self.checkpoint_dir) / f"diffx-{key}" / f"{stage}.{kind}.pt"

    def _train_stage(self, stage: str, module: DiffXModule, objective: nn.Module,
                     criterion: nn.Module, data: Any, n: int, epochs: int, key: str,
                     ema: bool) -> list[float]:
        """Train one stage for ``epochs`` epochs (resuming from its checkpoint)."""
        done = self._stage_file(key, stage, "done")
        if done is not None and done.is_file():
            state = read_checkpoint(done)
            module.load_state_dict(state["module"])
            note(f"DiffXGenerator {stage}: finished earlier")
            return list(state["losses"])
        part = self._stage_file(key, stage, "epoch")
        state = read_checkpoint(part) if part is not None else None
        finished = int(state["epoch"]) if state else 0
        note(f"DiffXGenerator {stage}: " + (f"resumed at epoch {finished + 1} of {epochs}"
                                            if state else "trained"))
        losses = list(state["losses"]) if state else []
        callbacks: list[Any] = []
        if ema and float(self.ema_decay) > 0:
            callbacks.append(EMACallback(float(self.ema_decay),
                                         state["ema"] if state else None))
        if part is not None:
            callbacks.append(EpochCheckpoint(part, stage, finished, losses))
        self._seed()
        if finished < epochs:
            net = self._make_net(objective, criterion, n_train=n, callbacks=callbacks)
            net.max_epochs = int(epochs) - finished
            if state:
                net.initialize()
                net.module_.load_state_dict(state["module"])
                net.optimizer_.load_state_dict(state["optimizer"])
                # a different draw of batches from the resumed epoch on
                torch.manual_seed(int(np.random.SeedSequence([finished]).generate_state(1)[0]))
                net.warm_start = True
            net.fit(data, None)
            losses += [float(h["train_loss"]) for h in net.history]
        if done is not None:
            save_checkpoint({"module": module.state_dict(), "losses": losses}, done)
            if part is not None and part.is_file():
                part.unlink()
        return losses

    def _fit_stages(self, module: DiffXModule, images: torch.Tensor,
                    prompts: list[str]) -> dict[str, list[float]]:
        """Stages 1-3 of the module docstring; returns the loss history per stage."""
        n = len(images)
        key = self._run_key(images, prompts)
        history = {"autoencoder": self._train_stage(
            "autoencoder", module, AEObjective(module.vae),
            AELoss(float(self.kl_weight), float(self.ae_ssim_weight)), images, n,
            self.ae_epochs, key, ema=False)}
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
        history["ldm1"] = self._train_stage(
            "ldm1", module, DenoiseObjective(module.ldm1, module.text1, sched, 0.0, gamma),
            DenoiseLoss(), {**data, "lowres": module.lowres(images)}, n, self.ldm_epochs,
            key, ema=True)
        history["ldm2"] = self._train_stage(
            "ldm2", module, DenoiseObjective(module.ldm2, module.text2, sched,
                                             float(self.prompt_dropout), gamma),
            DenoiseLoss(), data, n, self.ldm_epochs, key, ema=True)
        return history
