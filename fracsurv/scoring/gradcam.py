"""Grad-CAM explanations (MONAI's :class:`monai.visualize.GradCAM`) and their overlay figure."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["grad_cam_figure", "grad_cam_maps"]


def grad_cam_maps(module: nn.Module, images: torch.Tensor, target_layer: str,
                  class_idx: int = 0) -> np.ndarray:
    """Grad-CAM of ``module`` (one logit output) for a batch ``(B, C, H, W)``.

    Parameters
    ----------
    module : torch module
        Maps ``(B, C, H, W)`` to ``(B, 1)`` logits.
    images : tensor of shape (B, C, H, W)
        Network inputs, on the module's device.
    target_layer : str
        Dotted name of the convolutional layer to explain (``module.named_modules``).
    class_idx : int
        Output unit to explain.

    Returns
    -------
    ndarray of shape (B', H, W)
        Non-negative maps, each min-max normalised to ``[0, 1]`` (MONAI's default
        post-processing), upsampled to the input size. ``B' = B`` unless the
        module scores several crops per input with one shared encoder (then one
        map per crop, ``B * C``).
    """
    from monai.visualize import GradCAM

    names = dict(module.named_modules())
    if target_layer not in names:
        raise ValueError(f"no layer {target_layer!r} in the network; choose one of its "
                         f"named_modules(), e.g. {list(names)[-3:]}")
    was_training = module.training
    layer = names[target_layer]
    # MONAI registers its forward/backward hooks without keeping their handles; left
    # in place they would run on every later forward and make the model unpicklable,
    # so the ones it added are removed afterwards (torch keeps them in these dicts)
    hooks = (layer._forward_hooks, layer._backward_hooks)
    before = [set(h) for h in hooks]
    module.eval()
    try:
        cam = GradCAM(nn_module=module, target_layers=target_layer)
        with torch.enable_grad():
            maps = cam(x=images.float(), class_idx=class_idx)
    finally:
        module.train(was_training)
        for h, keep in zip(hooks, before, strict=True):
            for key in set(h) - keep:
                del h[key]
    maps = maps.detach().float().cpu().numpy()
    return np.clip(maps.reshape(-1, *maps.shape[-2:]), 0.0, 1.0)


def grad_cam_figure(images: Sequence[Any], maps: np.ndarray, *, titles: Sequence[str] | None = None,
                    alpha: float = 0.45, cmap: str = "jet", ncols: int = 4) -> Any:
    """Overlay Grad-CAM maps on their radiographs (matplotlib, Agg-safe).

    Parameters
    ----------
    images : sequence of 2-D arrays or references
        The radiographs (any size; each map is stretched over its image).
    maps : ndarray of shape (n, h, w)
        Maps from :meth:`PVFScorer.grad_cam`.
    titles : sequence of str, optional
        One per panel (e.g. the scores).
    alpha : float
        Opacity of the heat map.
    cmap : str
        Matplotlib colour map of the heat map.
    ncols : int
        Panels per row.

    Returns
    -------
    matplotlib.figure.Figure
    """
    from matplotlib.figure import Figure

    from fracsurv.io.refs import load_image

    maps = np.asarray(maps)
    if len(images) != len(maps):
        raise ValueError(f"{len(images)} images but {len(maps)} maps")
    n = len(images)
    ncols = max(1, min(ncols, n))
    nrows = -(-n // ncols)
    fig = Figure(figsize=(2.6 * ncols, 4.2 * nrows))
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for k, ax in enumerate(axes):
        ax.set_axis_off()
        if k >= n:
            continue
        img = load_image(images[k])
        img = img if img.ndim == 2 else img[0]
        h, w = img.shape
        ax.imshow(img, cmap="gray", extent=(0, w, h, 0))
        ax.imshow(maps[k], cmap=cmap, alpha=alpha, vmin=0, vmax=1, extent=(0, w, h, 0))
        if titles is not None:
            ax.set_title(str(titles[k]), fontsize=9)
    fig.tight_layout()
    return fig
