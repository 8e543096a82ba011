"""Plug-and-Play feature injection between two UNets, with forward hooks only.

The Diff-X study (after Tumanyan et al.'s Plug-and-Play diffusion features)
copies, while sampling, the reconstruction LDM's decoder ResNet features and its
self-attention queries and keys into the prompt-guided LDM at the same places:

* **features**: the output of the second convolution of one decoder ResNet
  block (``up_blocks[block].resnets[layer].conv2``), i.e. before the block adds
  its skip connection — so the receiving block still adds its own input;
* **attention**: the ``to_q`` and ``to_k`` projections of the self-attention
  (``attn1``) of that decoder position and of every decoder attention layer
  after it; values (``to_v``) stay the receiver's.

Each is active only for the first ``tau_f`` / ``tau_attn`` fraction of the
sampling steps. Hooks on the projection and convolution modules replace their
outputs, so no diffusers code is copied or patched; a record of every
replacement (``log``) makes the schedule testable.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

__all__ = ["FeatureInjector", "injection_points"]


def injection_points(unet: nn.Module, block: int, layer: int) -> tuple[list[str], list[str]]:
    """Module names receiving features and attention q/k for ``(block, layer)``.

    Returns ``(feature_modules, attention_modules)``: the one ``conv2`` and the
    ``attn1.to_q`` / ``attn1.to_k`` projections of decoder position
    ``(block, layer)`` and after.
    """
    ups = unet.up_blocks
    if not 0 <= block < len(ups) or not 0 <= layer < len(ups[block].resnets):
        raise ValueError(f"injection point up_blocks[{block}].resnets[{layer}] does not exist "
                         f"(the decoder has {[len(u.resnets) for u in ups]} ResNet layers per block)")
    feats = [f"up_blocks.{block}.resnets.{layer}.conv2"]
    attn = []
    for b in range(block, len(ups)):
        for j, att in enumerate(getattr(ups[b], "attentions", None) or []):
            if b == block and j < layer:
                continue
            for name, _ in att.named_modules():
                if name.endswith("attn1.to_q") or name.endswith("attn1.to_k"):
                    attn.append(f"up_blocks.{b}.attentions.{j}.{name}")
    return feats, attn


class FeatureInjector:
    """Record features from ``source`` and inject them into ``target``.

    Parameters
    ----------
    source, target : UNet2DConditionModel
        Same architecture (the input channel count may differ).
    block, layer : int
        Decoder position (``up_blocks[block].resnets[layer]``).
    repeats : int
        Target samples per source sample: the source runs one baseline per
        patient, the target ``repeats`` (horizons x seeds) per patient, each
        block of them receiving its own patient's features (and again for the
        unconditional half of classifier-free guidance).

    Use as a context manager (hooks are removed on exit). Call :meth:`record`
    around the source's forward pass, then :meth:`inject` around the target's,
    once per sampling step (or once per chunk of the target's batch, naming the
    source sample of each row with ``rows``).
    """

    def __init__(self, source: nn.Module, target: nn.Module, block: int, layer: int,
                 repeats: int = 1) -> None:
        self.features, self.attention = injection_points(target, block, layer)
        self.source, self.target = source, target
        self.repeats = int(repeats)
        self.store: dict[str, torch.Tensor] = {}
        self.log: list[tuple[int, str]] = []
        self._logged: set[tuple[int, str]] = set()
        self._mode: str | None = None
        self._active: set[str] = set()
        self._step = -1
        self._rows: torch.Tensor | None = None
        self._handles: list[Any] = []

    def __enter__(self) -> FeatureInjector:
        src = dict(self.source.named_modules())
        tgt = dict(self.target.named_modules())
        for name in self.features + self.attention:
            self._handles.append(src[name].register_forward_hook(self._recorder(name)))
            self._handles.append(tgt[name].register_forward_hook(self._injector(name)))
        return self

    def __exit__(self, *exc: Any) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self.store.clear()

    def _recorder(self, name: str):
        def hook(module: nn.Module, args: Any, output: torch.Tensor) -> None:
            if self._mode == "record":
                self.store[name] = output.detach()
        return hook

    def _injector(self, name: str):
        def hook(module: nn.Module, args: Any, output: torch.Tensor) -> torch.Tensor | None:
            if self._mode != "inject" or name not in self._active:
                return None
            src, rows = self.store[name], self._rows
            if rows is None and output.shape[0] % (len(src) * self.repeats) == 0:
                # ``repeats`` rows per source sample, tiled over the batch (CFG's halves)
                rows = torch.arange(output.shape[0]) // self.repeats % len(src)
            if rows is not None:
                src = src[rows.to(src.device)]
            if src.shape != output.shape:
                raise RuntimeError(f"cannot inject {name}: shapes {tuple(src.shape)} and "
                                   f"{tuple(output.shape)} do not match")
            if (self._step, name) not in self._logged:
                self._logged.add((self._step, name))
                self.log.append((self._step, name))
            return src.to(output.dtype)
        return hook

    @contextlib.contextmanager
    def record(self, step: int) -> Iterator[None]:
        """Store the source's features during this block (sampling step ``step``)."""
        self._mode, self._step = "record", step
        try:
            yield
        finally:
            self._mode = None

    @contextlib.contextmanager
    def inject(self, step: int, features: bool, attention: bool,
               rows: torch.Tensor | None = None) -> Iterator[None]:
        """Replace the target's features and/or attention q, k during this block.

        ``rows`` gives, for each sample of the target's batch in this block, the
        index of the source sample whose features it receives; without it the
        batch is ``repeats`` samples per source sample, tiled (classifier-free
        guidance's two halves). The log keeps one entry per step and module.
        """
        self._mode, self._step, self._rows = "inject", step, rows
        self._active = set(self.features if features else ()) | set(
            self.attention if attention else ())
        try:
            yield
        finally:
            self._mode, self._active, self._rows = None, set(), None
