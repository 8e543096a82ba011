"""Image backbones from MONAI (no torchvision, no downloads) as feature extractors.

:func:`make_backbone` returns a module mapping ``(B, C, H, W)`` to ``(B, F)``
features and ``F``. Every network is initialised from scratch; weights a user
trained elsewhere are loaded with the estimator's ``load``.
"""

from __future__ import annotations

from torch import nn

__all__ = ["BACKBONES", "default_cam_layer", "make_backbone"]

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


def default_cam_layer(name: str) -> str:
    """Name (inside the backbone) of the last convolutional block, for Grad-CAM."""
    if name in _RESNETS:
        return "layer4"
    if name in _EFFICIENTNETS:
        return "_conv_head"
    raise ValueError(f"Grad-CAM needs a convolutional backbone, not {name!r}")
