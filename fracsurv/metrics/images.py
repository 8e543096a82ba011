"""Image-level measurements: similarity of image pairs and what a small CNN can read.

* :func:`ms_ssim` — multi-scale SSIM of image pairs (MONAI's metric), with as many
  scales as the image size allows;
* :func:`cnn_probe` — trains a small CNN (MONAI convolution blocks) to read continuous
  targets (age, BMD) from images and returns its predictions on other images. It is a
  measuring instrument for the synthetic cohort's realism targets ("age is visible"),
  not a fracsurv model, so it trains with a plain torch loop rather than the skorch
  base of the estimators.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["cnn_probe", "ms_ssim"]

_MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)  # Wang et al. 2003


def _batch(images: Sequence[np.ndarray] | np.ndarray) -> torch.Tensor:
    arr = np.stack([np.asarray(im, dtype=np.float32) for im in images])
    return torch.from_numpy(arr)[:, None]


def ms_ssim(a: Sequence[np.ndarray] | np.ndarray, b: Sequence[np.ndarray] | np.ndarray,
            kernel_size: int = 7) -> np.ndarray:
    """MS-SSIM of each pair ``(a[i], b[i])`` of images in [0, 1].

    Uses as many of the five standard scales as fit: the coarsest scale must still
    hold a ``kernel_size`` window.

    Returns
    -------
    ndarray of shape (n,)
    """
    from monai.metrics import MultiScaleSSIMMetric

    ta, tb = _batch(a), _batch(b)
    if ta.shape != tb.shape:
        raise ValueError(f"image batches differ in shape: {tuple(ta.shape)} vs {tuple(tb.shape)}")
    side = min(ta.shape[-2:])
    scales = max(s for s in range(1, 6) if (kernel_size - 1) * 2 ** (s - 1) < side)
    w = _MS_SSIM_WEIGHTS[:scales]
    metric = MultiScaleSSIMMetric(spatial_dims=2, data_range=1.0, kernel_size=kernel_size,
                                  weights=tuple(x / sum(w) for x in w))
    return metric(ta, tb).numpy().reshape(-1)


class _Pooled(torch.nn.Module):
    """Mean and max over the image: counts and extremes of local findings, anywhere."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x.mean(dim=(-2, -1)), x.amax(dim=(-2, -1))], dim=1)


def _probe_net(channels: tuple[int, ...], n_out: int) -> torch.nn.Module:
    from monai.networks.blocks import Convolution

    layers: list[torch.nn.Module] = []
    c_in = 1
    for k, c in enumerate(channels):
        if k:  # the first stage downsamples at once: full-resolution convolutions are slow
            layers.append(Convolution(2, c_in, c_in, strides=1, kernel_size=3, norm="BATCH",
                                      act="PRELU"))
        layers.append(Convolution(2, c_in, c, strides=2, kernel_size=3, norm="BATCH",
                                  act="PRELU"))
        c_in = c
    return torch.nn.Sequential(*layers, _Pooled(), torch.nn.Dropout(0.1),
                               torch.nn.Linear(2 * c_in, n_out))


def cnn_probe(train_images: Sequence[np.ndarray], train_targets: np.ndarray,
              test_images: Sequence[np.ndarray], *, channels: Sequence[int] = (16, 32, 64, 96),
              epochs: int = 30, batch_size: int = 32, lr: float = 2e-3,
              random_state: int = 0) -> np.ndarray:
    """Train a small CNN regressor on images and predict ``test_images``' targets.

    Parameters
    ----------
    train_images, test_images : sequences of (H, W) arrays in [0, 1]
    train_targets : array of shape (n,) or (n, k)
        Standardised internally; predictions come back in the original units.
    channels : sequence of int
        Feature channels per stage (MONAI ``Convolution`` blocks: a stride-2 one, after the
        first stage preceded by a stride-1 one), then mean and max pooling over the image
        and a linear head.
    epochs, batch_size, lr : training settings (AdamW, cosine schedule, MSE, random
        horizontal flips — the cohort's patients face either way).
    random_state : int

    Returns
    -------
    ndarray shaped like the targets, for ``test_images``.
    """
    torch.manual_seed(random_state)
    gen = torch.Generator().manual_seed(random_state)
    y = np.asarray(train_targets, dtype=np.float32)
    squeeze = y.ndim == 1
    y = y.reshape(len(y), -1)
    mean, sd = y.mean(axis=0), y.std(axis=0) + 1e-6
    x_tr, y_tr = _batch(train_images), torch.from_numpy((y - mean) / sd)
    net = _probe_net(tuple(channels), y.shape[1])
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * -(-len(x_tr) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    net.train()
    for _ in range(epochs):
        order = torch.randperm(len(x_tr), generator=gen)
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            if len(idx) < 2:
                continue
            xb = x_tr[idx]
            flip = torch.rand(len(idx), generator=gen) < 0.5
            xb = torch.where(flip[:, None, None, None], xb.flip(-1), xb)
            loss = torch.nn.functional.mse_loss(net(xb), y_tr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    net.eval()
    x_te = _batch(test_images)
    with torch.no_grad():
        pred = torch.cat([net(x_te[i:i + 128]) for i in range(0, len(x_te), 128)]).numpy()
    pred = pred * sd + mean
    return pred[:, 0] if squeeze else pred
