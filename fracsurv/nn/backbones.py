"""Image backbones from MONAI (no torchvision, no downloads) as feature extractors.

:func:`make_backbone` returns a module mapping ``(B, C, H, W)`` to ``(B, F)``
features and ``F``. Every network is initialised from scratch; weights a user
trained elsewhere are loaded with the estimator's ``load``.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["BACKBONES", "cam_layer_candidates", "cam_map_sizes", "default_cam_layer",
           "make_backbone"]

_RESNETS = {
    "resnet10": ("basic", (1, 1, 1, 1), (64, 128, 256, 512)),
    "resnet18": ("basic", (2, 2, 2, 2), (64, 128, 256, 512)),
    "resnet34": ("basic", (3, 4, 6, 3), (64, 128, 256, 512)),
    "resnet50": ("bottleneck", (3, 4, 6, 3), (64, 128, 256, 512)),
    # a narrow ResNet-10 for CPUs and tests
    "resnet10-tiny": ("basic", (1, 1, 1, 1), (16, 32, 64, 128)),
}
_EFFICIENTNETS = tuple(f"efficientnet-b{i}" for i in range(8))
BACKBONES = (*_RESNETS, *_EFFICIENTNETS, "vit")


def make_backbone(name: str, in_channels: int = 1, image_shape: tuple[int, int] = (256, 128)
                  ) -> tuple[nn.Module, int]:
    """A MONAI network without its classification head.

    Parameters
    ----------
    name : str
        ``resnet10|18|34|50``, ``resnet10-tiny``, ``efficientnet-b0`` ... ``b7`` or ``vit``.
    in_channels : int
        1 for radiographs, N for a stack of N vertebra crops (the first
        convolution is built for N channels).
    image_shape : (int, int)
        Input size (needed by the ViT's patch grid).

    Returns
    -------
    (module, n_features)
    """
    if name in _RESNETS:
        from monai.networks.nets import ResNet

        block, layers, planes = _RESNETS[name]
        net = ResNet(block=block, layers=list(layers), block_inplanes=list(planes), spatial_dims=2,
                     n_input_channels=in_channels, num_classes=1)
        n = net.fc.in_features
        net.fc = nn.Identity()
        return net, n
    if name in _EFFICIENTNETS:
        from monai.networks.nets import EfficientNetBN

        net = EfficientNetBN(name, pretrained=False, spatial_dims=2, in_channels=in_channels,
                             num_classes=1)
        n = net._fc.in_features
        net._fc = nn.Identity()
        return net, n
    if name == "vit":
        return _ViTFeatures(in_channels, image_shape), 256
    raise ValueError(f"unknown backbone {name!r}; choose from {BACKBONES}")


class _ViTFeatures(nn.Module):
    """MONAI ViT (small configuration), mean-pooled tokens as features."""

    def __init__(self, in_channels: int, image_shape: tuple[int, int]) -> None:
        super().__init__()
        from monai.networks.nets import ViT

        patch = (max(4, image_shape[0] // 16), max(4, image_shape[1] // 8))
        self.vit = ViT(in_channels=in_channels, img_size=tuple(image_shape), patch_size=patch,
                       hidden_size=256, mlp_dim=512, num_layers=4, num_heads=4,
                       classification=False, spatial_dims=2)

    def forward(self, x):
        tokens, _ = self.vit(x)
        return tokens.mean(dim=1)


#: Grad-CAM needs a map with some spatial extent: a 4 x 4 map stretched over a
#: vertebra crop hardly says where inside it the network looked. Chosen by
#: measurement (docs/pvf_scorer.md, "Grad-CAM layer"): on 64 x 64 detected crops
#: layer3 (8 x 8) put more of its mass on the vertebral body than layer4 (4 x 4)
#: and the shallower, less class-specific layer2/layer1.
MIN_CAM_SIDE = 8


def cam_layer_candidates(name: str) -> tuple[str, ...]:
    """Grad-CAM layers (inside the backbone), deepest first."""
    if name in _RESNETS:
        return ("layer4", "layer3", "layer2", "layer1")
    if name in _EFFICIENTNETS:
        return ("_conv_head",)
    raise ValueError(f"Grad-CAM needs a convolutional backbone, not {name!r}")


def cam_map_sizes(name: str, backbone: nn.Module, input_shape: tuple[int, int]
                  ) -> dict[str, tuple[int, int]]:
    """Spatial size of each Grad-CAM candidate's map, from one forward pass of a blank image.

    The backbone runs in eval mode (a blank image must not move BatchNorm's running
    statistics) and gets its training flag back.
    """
    sizes: dict[str, tuple[int, int]] = {}
    modules = dict(backbone.named_modules())
    hooks = [modules[c].register_forward_hook(
        lambda _m, _i, out, c=c: sizes.__setitem__(c, tuple(out.shape[-2:])))
        for c in cam_layer_candidates(name) if c in modules]
    training = backbone.training
    backbone.eval()
    try:
        param = next(backbone.parameters())
        in_channels = next(m for m in backbone.modules() if isinstance(m, nn.Conv2d)).in_channels
        with torch.no_grad():
            backbone(torch.zeros(1, in_channels, *input_shape, dtype=param.dtype,
                                 device=param.device))
    finally:
        for h in hooks:
            h.remove()
        backbone.train(training)
    return sizes


def default_cam_layer(name: str, backbone: nn.Module | None = None,
                      input_shape: tuple[int, int] | None = None) -> str:
    """The deepest convolutional block whose map is at least ``MIN_CAM_SIDE`` pixels a side.

    Without ``backbone`` and ``input_shape`` (or when no block is that large): the
    last block. ResNets on small inputs (64 x 64 vertebra crops: layer4 is 4 x 4)
    get an earlier block (sizes from :func:`cam_map_sizes`).
    """
    candidates = cam_layer_candidates(name)
    if backbone is None or input_shape is None or len(candidates) == 1:
        return candidates[0]
    sizes = cam_map_sizes(name, backbone, input_shape)
    return next((c for c in candidates if min(sizes.get(c, (0,))) >= MIN_CAM_SIDE), candidates[0])
