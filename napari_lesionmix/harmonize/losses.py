"""ARHNet losses: reconstruction (Eq. 2), hinge GAN (Eqs. 3-4), boundary-aware TV (Eq. 5)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def boundary_band(mask: torch.Tensor, width: int = 1) -> torch.Tensor:
    """The boundary extractor of Fig. 1: voxels within ``width`` of the edge of ``M > 0``.

    ``M~ = dilate(M) - erode(M)`` with a cube of side ``2 * width + 1``
    (a morphological gradient), as a float mask of the input's shape.
    """
    m = (mask > 0).to(mask.dtype)
    k = 2 * width + 1
    dil = F.max_pool3d(m, k, stride=1, padding=width)
    ero = -F.max_pool3d(-m, k, stride=1, padding=width)
    return dil - ero


def reconstruction_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``L_rec = ||I - I^||_1`` (Eq. 2), the mean over voxels (``nn.L1Loss``)."""
    return F.l1_loss(pred, target)


def btv_loss(image: torch.Tensor, band: torch.Tensor) -> torch.Tensor:
    """Boundary-aware total variation (Eq. 5) of ``image`` over the band ``M~``.

    Sum over band voxels of the absolute forward differences along i, j, k.
    Eqs. 2 and 5 are both sums over voxels; like ``nn.L1Loss`` for Eq. 2 we
    divide by the number of voxels of the batch (times channels), the same
    divisor for both, so the per-voxel balance 100 : 10 of Eq. 6 is kept.
    """
    di = (image[:, :, 1:, :, :] - image[:, :, :-1, :, :]).abs() * band[:, :, :-1, :, :]
    dj = (image[:, :, :, 1:, :] - image[:, :, :, :-1, :]).abs() * band[:, :, :, :-1, :]
    dk = (image[:, :, :, :, 1:] - image[:, :, :, :, :-1]).abs() * band[:, :, :, :, :-1]
    total = di.sum() + dj.sum() + dk.sum()
    return total / image.numel()


def d_hinge_loss(real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
    """Discriminator hinge loss (Eq. 3): ``E[max(0, 1 - D(I))] + E[max(0, 1 + D(I^))]``.

    Eq. 3 as printed puts ``1 - D`` on the harmonized image and ``1 + D`` on
    the real one; with Eq. 4 (``L_G = -E[D(I^)]``) that would reward the
    generator for looking fake. We use the hinge loss of the cited Lim & Ye
    (real scored high, fake low), the only reading consistent with Eq. 4.
    """
    return F.relu(1.0 - real_scores).mean() + F.relu(1.0 + fake_scores).mean()


def g_hinge_loss(fake_scores: torch.Tensor) -> torch.Tensor:
    """Generator adversarial loss (Eq. 4): ``-E[D(I^, I~, M)]``."""
    return -fake_scores.mean()
