"""Image-level measurements: similarity of image pairs and what a small CNN can read.

* :func:`ms_ssim` — multi-scale SSIM of image pairs (MONAI's metric), with as many
  scales as the image size allows;
* :class:`CNNProbe` / :func:`cnn_probe` — train a small CNN (MONAI convolution blocks) to read continuous
  targets (age, BMD) from images and predict them on other images. It is a
  measuring instrument for the synthetic cohort's realism targets ("age is visible"),
  not a fracsurv model, so it trains with a plain torch loop rather than the skorch
  base of the estimators.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

__all__ = ["CNNProbe", "cnn_probe", "ms_ssim"]

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


class CNNProbe:
    """A small CNN regressor of continuous targets from images (MONAI convolution blocks).

    Parameters
    ----------
    channels : sequence of int
        Feature channels per stage (MONAI ``Convolution`` blocks: a stride-2 one, after the
        first stage preceded by a stride-1 one), then mean and max pooling over the image
        and a linear head.
    epochs, batch_size, lr : training settings (AdamW, one-cycle schedule, MSE, random
        horizontal flips — the cohort's patients face either way).
    blur_sigma : float
        If > 0, half of each training batch is blurred by a Gaussian (MONAI's
        ``GaussianFilter``) of standard deviation drawn uniformly from
        ``[0, blur_sigma]`` pixels, so that the probe reads anatomy rather than the
        last bit of sharpness (an autoencoder's reconstruction otherwise moves its
        reading: see ``docs/diffx_generator.md``).
    random_state : int
    """

    def __init__(self, channels: Sequence[int] = (16, 32, 64, 96), *, epochs: int = 30,
                 batch_size: int = 32, lr: float = 2e-3, blur_sigma: float = 0.0,
                 random_state: int = 0) -> None:
        self.channels = tuple(int(c) for c in channels)
        self.epochs, self.batch_size, self.lr = int(epochs), int(batch_size), float(lr)
        self.blur_sigma = float(blur_sigma)
        self.random_state = int(random_state)

    def _blur(self, xb: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        from monai.networks.layers import GaussianFilter

        sigma = float(torch.rand(1, generator=gen)) * self.blur_sigma
        if sigma < 0.05:
            return xb
        half = torch.rand(len(xb), generator=gen) < 0.5
        with torch.no_grad():
            blurred = GaussianFilter(2, sigma)(xb)
        return torch.where(half[:, None, None, None], blurred, xb)

    def fit(self, images: Sequence[np.ndarray], targets: np.ndarray) -> CNNProbe:
        """Train on ``images`` (sequence of (H, W) arrays in [0, 1]) and targets (n,) or (n, k).

        Targets are standardised internally; predictions come back in their units.
        """
        torch.manual_seed(self.random_state)
        gen = torch.Generator().manual_seed(self.random_state)
        y = np.asarray(targets, dtype=np.float32)
        self.squeeze_ = y.ndim == 1
        y = y.reshape(len(y), -1)
        self.mean_, self.sd_ = y.mean(axis=0), y.std(axis=0) + 1e-6
        x_tr, y_tr = _batch(images), torch.from_numpy((y - self.mean_) / self.sd_)
        net = _probe_net(self.channels, y.shape[1])
        opt = torch.optim.AdamW(net.parameters(), lr=self.lr, weight_decay=1e-4)
        steps = self.epochs * -(-len(x_tr) // self.batch_size)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=self.lr, total_steps=steps)
        net.train()
        for _ in range(self.epochs):
            order = torch.randperm(len(x_tr), generator=gen)
            for start in range(0, len(order), self.batch_size):
                idx = order[start:start + self.batch_size]
                if len(idx) < 2:
                    continue
                xb = x_tr[idx]
                flip = torch.rand(len(idx), generator=gen) < 0.5
                xb = torch.where(flip[:, None, None, None], xb.flip(-1), xb)
                if self.blur_sigma > 0:
                    xb = self._blur(xb, gen)
                loss = torch.nn.functional.mse_loss(net(xb), y_tr[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
        self.net_ = net.eval()
        return self

    def predict(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Targets of ``images``, shaped like the training targets."""
        x = _batch(images)
        with torch.no_grad():
            pred = torch.cat([self.net_(x[i:i + 128]) for i in range(0, len(x), 128)]).numpy()
        pred = pred * self.sd_ + self.mean_
        return pred[:, 0] if self.squeeze_ else pred


    def save(self, path: str | Path) -> None:
        """Write the fitted probe (weights and target scaling; no pickle) to ``path``."""
        from safetensors.torch import save_file

        tensors = {f"net.{k}": v.contiguous() for k, v in self.net_.state_dict().items()}
        tensors["mean"], tensors["sd"] = torch.from_numpy(self.mean_), torch.from_numpy(self.sd_)
        meta = {"channels": ",".join(map(str, self.channels)), "squeeze": str(self.squeeze_)}
        save_file(tensors, str(path), metadata=meta)

    @classmethod
    def load(cls, path: str | Path) -> CNNProbe:
        """A probe written by :meth:`save`."""
        from safetensors import safe_open
        from safetensors.torch import load_file

        with safe_open(str(path), "pt") as fh:
            meta = fh.metadata()
        tensors = load_file(str(path))
        probe = cls(tuple(int(c) for c in meta["channels"].split(",")))
        probe.mean_, probe.sd_ = tensors.pop("mean").numpy(), tensors.pop("sd").numpy()
        probe.squeeze_ = meta["squeeze"] == "True"
        probe.net_ = _probe_net(probe.channels, len(probe.mean_))
        probe.net_.load_state_dict({k[4:]: v for k, v in tensors.items()})
        probe.net_.eval()
        return probe


def cnn_probe(train_images: Sequence[np.ndarray], train_targets: np.ndarray,
              test_images: Sequence[np.ndarray], *, channels: Sequence[int] = (16, 32, 64, 96),
              epochs: int = 30, batch_size: int = 32, lr: float = 2e-3,
              random_state: int = 0) -> np.ndarray:
    """Train a :class:`CNNProbe` on images and predict ``test_images``' targets.

    Returns
    -------
    ndarray shaped like the targets, for ``test_images``.
    """
    probe = CNNProbe(channels, epochs=epochs, batch_size=batch_size, lr=lr,
                     random_state=random_state)
    return probe.fit(train_images, train_targets).predict(test_images)
