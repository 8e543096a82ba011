"""Sampling of :class:`~fracsurv.generative.DiffXGenerator`: DDIM inversion of the
baselines, guided generation with feature injection, and reconstruction."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from sklearn.utils.validation import check_is_fitted
from torch import nn

from fracsurv.generative.injection import FeatureInjector
from fracsurv.generative.prompts import format_prompt
from fracsurv.io.refs import hash_parts, load_image

__all__ = ["DiffXSamplingMixin"]


# On CPU a network runs faster on chunks of a large batch than on the whole batch
# (its activations stay in cache): rows per pass = these pixel budgets / pixels per
# row, measured on 2 cores with the 256 x 128 cpu preset (UNet on 32 x 16 latents:
# 16 rows 0.40 s vs 80 rows 0.46-0.49 s per step; decoder: 8 rows 0.67 s vs 40 rows
# 0.84 s for 40 images). A GPU takes the whole batch.
_CPU_UNET_PIXELS = 2 ** 13
_CPU_DECODE_PIXELS = 2 ** 18


def _seed_of(random_state: int | None, seed: int) -> int:
    return int(np.random.SeedSequence([int(random_state or 0), int(seed)]).generate_state(1)[0])


def _chunk(device: torch.device, budget: int, pixels: int, cap: int = 64) -> int:
    """Rows per forward pass: ``cap`` on a GPU, ``budget / pixels`` (>= 1) on CPU."""
    return cap if device.type != "cpu" else max(1, min(cap, budget // max(1, pixels)))


class DiffXSamplingMixin:
    """The methods of :class:`~fracsurv.generative.DiffXGenerator` that sample images."""

    def _autocast(self, device: torch.device) -> contextlib.AbstractContextManager[Any]:
        amp = self._amp_dtype()
        return torch.autocast(device.type, dtype=amp) if amp is not None else contextlib.nullcontext()

    def _timesteps(self) -> tuple[Any, Any, Any, Any]:
        """(DDIM, inverse DDIM, inversion timesteps, denoising timesteps) for ``strength``.

        The baseline is inverted through the first ``round(strength x steps)`` DDIM
        steps and generation runs the same steps back, so ``strength=1`` is a
        full inversion to noise.
        """
        ddim, inverse = self._schedulers()
        n = int(self.n_inference_steps)
        ddim.set_timesteps(n)
        inverse.set_timesteps(n)
        k = max(1, round(float(self.strength) * n))
        return ddim, inverse, inverse.timesteps[:k], ddim.timesteps[n - k:]

    def _prep_batch(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """Baselines as one (n, 1, H, W) tensor in [-1, 1] at ``input_shape``, on the device."""
        return torch.cat([self._prep(im) for im in images]).to(self._device())

    def _encode_baselines(self, x: torch.Tensor, ages: Sequence[float], sexes: Sequence[Any]
                          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(inverted latents z_t, low-res copies, LDM-1 prompt embeddings) of baselines
        ``x`` (from :meth:`_prep_batch`).

        Inversions are cached per (image, age, sex, steps, strength); the missing ones are
        computed together in one batch.
        """
        m = self.module_
        cond = m.text1([format_prompt(self.prompt_template, a, s) for a, s in zip(ages, sexes,
                                                                                 strict=True)])
        lowres = m.lowres(x)
        keys = [hash_parts(x[i].cpu().numpy(), float(ages[i]), str(sexes[i]),
                           int(self.n_inference_steps), float(self.strength))
                for i in range(len(x))]
        cache = self.__dict__.setdefault("_inversions", {})
        todo = [i for i, k in enumerate(keys) if k not in cache]
        if todo:
            _, inverse, inversion_steps, _ = self._timesteps()
            z, low, c = m.encode(x[todo]), lowres[todo], cond[todo]
            for t in inversion_steps:
                eps = m.ldm1(torch.cat([z, low], 1), t, encoder_hidden_states=c).sample
                z = inverse.step(eps.float(), t, z).prev_sample
            for j, i in enumerate(todo):
                cache[keys[i]] = z[j:j + 1]
        return torch.cat([cache[k] for k in keys]), lowres, cond

    def generate_many(self, images: Sequence[Any], ages: Sequence[float], sexes: Sequence[Any],
                      horizons: Sequence[Sequence[float]], seeds: Sequence[int] | None = None,
                      inject: bool | None = None, return_injector: bool = False) -> Any:
        """Future images of several patients in one batch.

        Every patient needs the same number of horizons (their values may
        differ) and baselines of one shape (or ``output_shape`` set). Returns an
        array ``(n_patients, n_horizons, n_seeds, H, W)`` in [0, 1]; see
        :meth:`generate` for the other parameters.
        """
        # 1. check inputs
        check_is_fitted(self, "module_")
        seeds = list(range(int(self.n_seeds))) if seeds is None else list(seeds)
        inject = self.inject if inject is None else bool(inject)
        imgs = [load_image(im) for im in images]
        out_shape, n_h = self._check_batch(imgs, horizons)
        # 2. schedule, prompts (one per patient x horizon x seed), seeded generators, hooks
        m, device = self.module_.to(self._device()), self._device()
        ddim, _, _, steps = self._timesteps()
        n_steps = len(steps)
        n_feat, n_attn = round(self.tau_f * n_steps), round(self.tau_attn * n_steps)
        prompts = [format_prompt(self.prompt_template, float(a) + float(h), s)
                   for a, s, hs in zip(ages, sexes, horizons, strict=True) for h in hs for _ in seeds]
        # guidance pushes away from the empty prompt, or from the baseline's own prompt
        reference = None if self.guidance_reference == "null" else [
            format_prompt(self.prompt_template, float(a), s)
            for a, s, hs in zip(ages, sexes, horizons, strict=True) for _ in hs for _ in seeds]
        k = n_h * len(seeds)  # generated images per patient
        gens = [torch.Generator().manual_seed(_seed_of(self.random_state, s)) for s in seeds]
        injector = FeatureInjector(m.ldm1, m.ldm2, int(self.injection_block),
                                   int(self.injection_layer), repeats=k)
        with torch.inference_mode(), self._autocast(device):
            # 3. invert the baselines (DDIM, cached); encode the prompts and guidance's reference
            x0 = self._prep_batch(imgs)
            z_t, lowres, cond1 = self._encode_baselines(x0, [float(a) for a in ages], sexes)
            ref = m.text2.null_embedding(len(prompts)) if reference is None else m.text2(reference)
            enc2 = torch.cat([ref, m.text2(prompts)])
            # 4. denoise: LDM-1 reconstructs the baseline and records its features, LDM-2
            #    generates every future with those features injected (Plug-and-Play), CFG
            z1, z2 = z_t.clone(), z_t.repeat_interleave(k, dim=0)
            every_row = torch.arange(len(z2))
            with injector:
                for i, t in enumerate(steps):
                    with injector.record(i):
                        eps1 = m.ldm1(torch.cat([z1, lowres], 1), t, encoder_hidden_states=cond1).sample
                    z1 = ddim.step(eps1.float(), t, z1).prev_sample
                    # until noise is first added (never, with eta 0) the seeds of a
                    # (patient, horizon) share one latent: the UNet runs once for them
                    shared = len(seeds) > 1 and (i == 0 or float(self.eta) == 0)
                    rows = every_row[::len(seeds)] if shared else every_row
                    eps = self._guided_eps(z2, enc2, t, rows, k, injector, i,
                                           inject and i < n_feat, inject and i < n_attn)
                    if shared:
                        eps = eps.repeat_interleave(len(seeds), dim=0)
                    # the same noise for a seed whatever the batch: a (seed, horizon) is reproducible
                    noise = torch.stack([torch.randn(z2.shape[1:], generator=g) for g in gens])
                    noise = noise.repeat(len(imgs) * n_h, 1, 1, 1).to(device)
                    z2 = ddim.step(eps, t, z2, eta=float(self.eta), variance_noise=noise).prev_sample
            # 5. decode in chunks (+ the baseline's detail the autoencoder loses), resize
            x = self._decode(z2)
            if self.detail_transfer:
                x = x + self._lost_detail(x0).repeat_interleave(k, dim=0)
        x = nn.functional.interpolate(x, size=out_shape, mode="bilinear", align_corners=False)
        arr = ((x.clamp(-1, 1) + 1) / 2).cpu().numpy().reshape(len(imgs), n_h, len(seeds),
                                                                 *out_shape)
        return (arr, injector) if return_injector else arr

    def _guided_eps(self, z: torch.Tensor, enc: torch.Tensor, t: Any, rows: torch.Tensor,
                    per_patient: int, injector: FeatureInjector, step: int, features: bool,
                    attention: bool) -> torch.Tensor:
        """LDM-2's classifier-free-guided noise estimate for ``z[rows]``.

        ``enc`` holds the reference (unconditional or baseline) embeddings of every
        row of ``z``, then the prompted ones; row ``r`` belongs to patient
        ``r // per_patient``, whose recorded features it receives. The doubled
        batch runs in chunks (see ``_CPU_UNET_PIXELS``).
        """
        n = len(z)
        zb = torch.cat([z[rows], z[rows]])
        eb = torch.cat([enc[:n][rows], enc[n:][rows]])
        source = (rows // per_patient).repeat(2)
        size = _chunk(z.device, _CPU_UNET_PIXELS, z.shape[-2] * z.shape[-1], cap=len(zb))
        out = []
        for a in range(0, len(zb), size):
            with injector.inject(step, features, attention, rows=source[a:a + size]):
                out.append(self.module_.ldm2(zb[a:a + size], t,
                                             encoder_hidden_states=eb[a:a + size]).sample.float())
        eps_r, eps_c = torch.cat(out).chunk(2)
        return eps_r + float(self.guidance_scale) * (eps_c - eps_r)

    def _decode(self, z: torch.Tensor) -> torch.Tensor:
        """Decoded latents in chunks (see ``_CPU_DECODE_PIXELS``), float32."""
        size = _chunk(z.device, _CPU_DECODE_PIXELS, int(np.prod(self._input_shape())))
        return torch.cat([self.module_.decode(z[j:j + size]).float()
                          for j in range(0, len(z), size)])

    def _lost_detail(self, x: torch.Tensor) -> torch.Tensor:
        """Baselines ``x`` minus their autoencoder reconstruction, in [-1, 1]."""
        z = torch.cat([self.module_.encode(x[j:j + 64]) for j in range(0, len(x), 64)])
        return x.float() - self._decode(z)

    def _check_batch(self, imgs: list[np.ndarray], horizons: Sequence[Sequence[float]]
                     ) -> tuple[tuple[int, int], int]:
        """Output shape and horizons per patient; one horizon list per image, one shape."""
        n_h = {len(h) for h in horizons}
        if len(n_h) != 1 or len(horizons) != len(imgs):
            raise ValueError("generate_many needs one horizon list per image, all of one length")
        shapes = {tuple(self.output_shape or im.shape[-2:]) for im in imgs}
        if len(shapes) != 1:
            raise ValueError(f"baselines of different shapes {sorted(shapes)}: set output_shape")
        return shapes.pop(), n_h.pop()

    def generate(self, image: Any, age: float, sex: Any, horizons: Sequence[float],
                 seeds: Sequence[int] | None = None, inject: bool | None = None,
                 return_injector: bool = False) -> Any:
        """Future images of one patient: array ``(len(horizons), len(seeds), H, W)`` in [0, 1].

        Parameters
        ----------
        image : array or reference
            Baseline radiograph.
        age, sex : baseline age (years) and sex.
        horizons : sequence of float
            Years after baseline (the prompt's age is ``age + horizon``).
        seeds : sequence of int, optional
            Defaults to ``range(n_seeds)``; with ``random_state`` they fix the
            DDIM noise, so a (seed, horizon) image is reproducible alone.
        inject : bool, optional
            Override of the ``inject`` parameter (the no-injection ablation).
        return_injector : bool
            Also return the :class:`FeatureInjector` (its ``log`` lists every
            replacement as ``(step, module)``).
        """
        out = self.generate_many([image], [age], [sex], [list(horizons)], seeds=seeds,
                                 inject=inject, return_injector=return_injector)
        return (out[0][0], out[1]) if return_injector else out[0]

    def reconstruct(self, image: Any, age: float, sex: Any) -> np.ndarray:
        """LDM-1's reconstruction of ``image`` from its DDIM inversion, in [0, 1]."""
        check_is_fitted(self, "module_")
        img = load_image(image)
        m, device = self.module_.to(self._device()), self._device()
        ddim, _, _, steps = self._timesteps()
        with torch.inference_mode(), self._autocast(device):
            z, lowres, cond = self._encode_baselines(self._prep_batch([img]), [float(age)], [sex])
            for t in steps:
                eps = m.ldm1(torch.cat([z, lowres], 1), t, encoder_hidden_states=cond).sample
                z = ddim.step(eps.float(), t, z).prev_sample
            x = m.decode(z).float()
        x = nn.functional.interpolate(x, size=img.shape[-2:], mode="bilinear", align_corners=False)
        return ((x.clamp(-1, 1) + 1) / 2)[0, 0].cpu().numpy()
