"""ARHNet generator and discriminator (shapes chosen here; see :mod:`.config`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from napari_lesionmix.harmonize.arh import ARH, resize_mask
from napari_lesionmix.harmonize.config import ModelConfig


def _act() -> nn.Module:
    return nn.LeakyReLU(0.2, inplace=True)


class EncoderBlock(nn.Sequential):
    """(Conv3d 3^3, InstanceNorm, LeakyReLU) x 2."""

    def __init__(self, cin: int, cout: int):
        super().__init__(
            nn.Conv3d(cin, cout, 3, padding=1), nn.InstanceNorm3d(cout, affine=True), _act(),
            nn.Conv3d(cout, cout, 3, padding=1), nn.InstanceNorm3d(cout, affine=True), _act(),
        )


class DecoderBlock(nn.Module):
    """Up-sample, concat the skip, then (Conv3d, ARH, LeakyReLU) and (Conv3d, [ARH], LeakyReLU).

    The ARH module takes the place of the normalisation layer. With
    ``arh_per_block=1`` the second convolution has no normalisation (an
    instance norm there would mix foreground and background statistics, which
    ARH exists to avoid); ``2`` puts an ARH after both convolutions.
    """

    def __init__(self, cin: int, cskip: int, cout: int, arh_per_block: int = 1):
        super().__init__()
        self.conv1 = nn.Conv3d(cin + cskip, cout, 3, padding=1)
        self.arh1 = ARH(cout)
        self.conv2 = nn.Conv3d(cout, cout, 3, padding=1)
        self.arh2 = ARH(cout) if arh_per_block >= 2 else None
        self.act = _act()

    def forward(self, x: torch.Tensor, skip: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=skip.shape[2:], mode="trilinear", align_corners=False)
        m = resize_mask(mask, skip.shape[2:])
        x = self.act(self.arh1(self.conv1(torch.cat([x, skip], dim=1)), m))
        x = self.conv2(x)
        if self.arh2 is not None:
            x = self.arh2(x, m)
        return self.act(x)


class Generator(nn.Module):
    """3D U-Net with ARH decoder blocks; predicts the intensity-difference map G(I~, M).

    ``forward(image, mask)`` returns the harmonized image
    ``I^ = I~ + G(I~, M) * M`` (Fig. 1); :meth:`difference` returns ``G`` alone.
    With ``config.anchor_channel`` the input also holds ``M * anchored``:
    ``anchored`` (one value per patch, 0 by default) says the paste's level was
    set from the host's lesions (:mod:`napari_lesionmix.harmonize.anchor`).
    """

    def __init__(self, config: ModelConfig | None = None):
        super().__init__()
        self.config = config or ModelConfig()
        c, b, d = self.config.in_channels, self.config.base_channels, self.config.depth
        widths = [b * 2**i for i in range(d + 1)]
        self.encoders = nn.ModuleList()
        cin = c + 1 + int(self.config.anchor_channel)
        for w in widths[:-1]:
            self.encoders.append(EncoderBlock(cin, w))
            cin = w
        self.bottleneck = EncoderBlock(widths[-2], widths[-1])
        self.decoders = nn.ModuleList(
            DecoderBlock(widths[i + 1], widths[i], widths[i], self.config.arh_per_block) for i in reversed(range(d))
        )
        self.head = nn.Conv3d(widths[0], c, 1)
        # Start from the identity (G = 0): training then only has to learn the correction.
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def difference(self, image: torch.Tensor, mask: torch.Tensor,
                   anchored: torch.Tensor | None = None) -> torch.Tensor:
        """The intensity-difference map ``G(I~, M)``, shape of ``image``.

        ``anchored``: one value per patch, shape (N,) (``None``: 0), 1 where the
        paste's level was anchored; used only with ``config.anchor_channel``.
        """
        parts = [image, mask]
        if self.config.anchor_channel:
            a = torch.as_tensor(0.0 if anchored is None else anchored, dtype=mask.dtype, device=mask.device)
            parts.append(mask * a.reshape(-1, *([1] * (mask.dim() - 1))))
        x = torch.cat(parts, dim=1)
        skips = []
        for enc in self.encoders:
            x = enc(x)
            skips.append(x)
            x = F.max_pool3d(x, 2)
        x = self.bottleneck(x)
        for dec, skip in zip(self.decoders, reversed(skips), strict=True):
            x = dec(x, skip, mask)
        return self.head(x)

    def forward(self, image: torch.Tensor, mask: torch.Tensor, anchored: torch.Tensor | None = None) -> torch.Tensor:
        return image + self.difference(image, mask, anchored) * mask


class Discriminator(nn.Module):
    """3D PatchGAN critic on ``concat(I^ or I, I~, M)`` (2C + 1 channels); outputs patch scores."""

    def __init__(self, config: ModelConfig | None = None):
        super().__init__()
        self.config = config or ModelConfig()
        c, w = self.config.in_channels, self.config.disc_channels
        layers: list[nn.Module] = [nn.Conv3d(2 * c + 1, w, 4, stride=2, padding=1), _act()]
        for _ in range(self.config.disc_layers - 1):
            layers += [nn.Conv3d(w, 2 * w, 4, stride=2, padding=1), nn.InstanceNorm3d(2 * w, affine=True), _act()]
            w *= 2
        layers.append(nn.Conv3d(w, 1, 3, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, candidate: torch.Tensor, composite: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([candidate, composite, mask], dim=1))


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
