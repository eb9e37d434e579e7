"""The Adaptive Region Harmonization (ARH) module (ARHNet, Sec. 2.2, Eqs. 7-11)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

EPS = 1e-5


def masked_mean_std(x: torch.Tensor, m: torch.Tensor, eps: float = EPS) -> tuple[torch.Tensor, torch.Tensor]:
    """Channel-wise mean and standard deviation of ``x`` (N, C, ...) weighted by ``m`` (N, 1, ...).

    Eqs. 7-8 with ``m = 1 - M``. Eq. 8 as printed squares ``F * (1 - M) - mu``
    at every voxel, which would count each foreground voxel as a background
    value 0; we take the variance over the weighted region only, which is what
    the text ("background standard deviation") describes.
    """
    dims = tuple(range(2, x.dim()))
    w = m.sum(dim=dims, keepdim=True)
    mean = (x * m).sum(dim=dims, keepdim=True) / (w + eps)
    var = (((x - mean) ** 2) * m).sum(dim=dims, keepdim=True) / (w + eps)
    return mean, torch.sqrt(var + eps)


class ARH(nn.Module):
    """Adaptive Region Harmonization: align foreground features to the background's style.

    Given features ``F`` (N, C, H, W, D) and the resized mask ``M`` (N, 1, H, W, D):

    1. ``Ff = IN_f(F) * M`` and ``Fb = IN_b(F) * (1 - M)``: each region
       instance-normalised with its own statistics (region-wise IN, as RAIN).
    2. ``mu``, ``sigma``: channel-wise background mean and std of ``F`` (Eqs. 7-8).
    3. ``Fa = sigmoid(Conv([Fmax, Favg, FConv]))`` (Eq. 9), where ``Fmax`` and
       ``Favg`` are the channel-wise max and mean of ``F`` and ``FConv`` a
       one-channel convolution of ``F``.
    4. ``gamma = Conv(Fa)``, ``beta = Conv(Fa)`` (Eq. 10), C channels each.
    5. ``gamma_f = Conv(gamma + sigma)``, ``beta_f = Conv(beta + mu)`` (Eq. 11).
    6. ``F^ = Ff * (1 + gamma_f) + beta_f * M + Fb``.

    In step 6 the paper adds ``beta_f`` everywhere; we restrict it to the
    foreground (``* M``) so that the background features pass through as
    ``Fb``, which is what "align the foreground to the background" asks.
    Kernel sizes are not given: 7^3 for the attention convolution (CBAM's
    spatial attention, whose [max, avg] pooling Eq. 9 follows) and 3^3 for the
    others, set by ``attention_kernel`` and ``kernel``.

    Parameters
    ----------
    channels : int
        Feature channels C.
    """

    def __init__(self, channels: int, attention_kernel: int = 7, kernel: int = 3):
        super().__init__()
        pa, pk = attention_kernel // 2, kernel // 2
        self.channels = channels
        self.feat_conv = nn.Conv3d(channels, 1, kernel, padding=pk)            # FConv of Eq. 9
        self.attn_conv = nn.Conv3d(3, 1, attention_kernel, padding=pa)          # Conv of Eq. 9
        self.gamma_conv = nn.Conv3d(1, channels, kernel, padding=pk)            # Eq. 10
        self.beta_conv = nn.Conv3d(1, channels, kernel, padding=pk)             # Eq. 10
        self.gamma_f_conv = nn.Conv3d(channels, channels, kernel, padding=pk)   # Eq. 11
        self.beta_f_conv = nn.Conv3d(channels, channels, kernel, padding=pk)    # Eq. 11

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if mask.shape[2:] != x.shape[2:]:
            mask = resize_mask(mask, x.shape[2:])
        fg, bg = mask, 1.0 - mask
        mean_f, std_f = masked_mean_std(x, fg)
        mean_b, std_b = masked_mean_std(x, bg)                                   # Eqs. 7-8: mu, sigma
        ff = (x - mean_f) / std_f * fg
        fb = (x - mean_b) / std_b * bg
        f_max = x.amax(dim=1, keepdim=True)
        f_avg = x.mean(dim=1, keepdim=True)
        fa = torch.sigmoid(self.attn_conv(torch.cat([f_max, f_avg, self.feat_conv(x)], dim=1)))  # Eq. 9
        gamma = self.gamma_conv(fa)                                               # Eq. 10
        beta = self.beta_conv(fa)
        gamma_f = self.gamma_f_conv(gamma + std_b)                                # Eq. 11
        beta_f = self.beta_f_conv(beta + mean_b)
        return ff * (1.0 + gamma_f) + beta_f * fg + fb


def resize_mask(mask: torch.Tensor, size) -> torch.Tensor:
    """Resize a (soft) mask by area averaging, so small lesions survive down-sampling as fractions."""
    size = tuple(int(s) for s in size)
    if tuple(mask.shape[2:]) == size:
        return mask
    if all(s_in % s_out == 0 for s_in, s_out in zip(mask.shape[2:], size, strict=True)):
        k = tuple(s_in // s_out for s_in, s_out in zip(mask.shape[2:], size, strict=True))
        return F.avg_pool3d(mask, k)
    return F.interpolate(mask, size=size, mode="trilinear", align_corners=False)
