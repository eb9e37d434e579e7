"""Harmonization metrics of the ARHNet paper (Sec. 3.1.3): MAE, fMAE, PSNR, fPSNR.

All four compare a harmonized image with the real one on images scaled to
[0, 1] (``data_range`` = 1); the ``f`` variants are restricted to the
foreground (mask > 0). NumPy only.
"""

from __future__ import annotations

import numpy as np

from napari_lesionmix.errors import LesionMixError


def _pair(pred, target):
    pred = np.asarray(pred, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    if pred.shape != target.shape:
        raise LesionMixError(f"Cannot compare images of shapes {pred.shape} and {target.shape}.")
    return pred, target


def _fg(pred, target, mask):
    pred, target = _pair(pred, target)
    m = np.asarray(mask) > 0
    if m.shape != pred.shape:
        m = np.broadcast_to(m, pred.shape)
    if not m.any():
        raise LesionMixError("The foreground mask is empty; fMAE and fPSNR need at least one voxel.")
    return pred[m], target[m]


def _psnr_from_mse(mse: float, data_range: float) -> float:
    if mse == 0:
        return float("inf")
    return float(10.0 * np.log10(data_range**2 / mse))


def mae(pred, target) -> float:
    """Mean absolute error over all voxels."""
    pred, target = _pair(pred, target)
    return float(np.mean(np.abs(pred - target)))


def fmae(pred, target, mask) -> float:
    """Mean absolute error over the foreground (``mask > 0``)."""
    p, t = _fg(pred, target, mask)
    return float(np.mean(np.abs(p - t)))


def psnr(pred, target, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB over all voxels, ``10 log10(range^2 / MSE)``."""
    pred, target = _pair(pred, target)
    return _psnr_from_mse(float(np.mean((pred - target) ** 2)), data_range)


def fpsnr(pred, target, mask, data_range: float = 1.0) -> float:
    """PSNR in dB over the foreground (``mask > 0``)."""
    p, t = _fg(pred, target, mask)
    return _psnr_from_mse(float(np.mean((p - t) ** 2)), data_range)


def all_metrics(pred, target, mask, data_range: float = 1.0) -> dict[str, float]:
    """``{"mae", "fmae", "psnr", "fpsnr"}`` for one image."""
    return {
        "mae": mae(pred, target),
        "fmae": fmae(pred, target, mask),
        "psnr": psnr(pred, target, data_range),
        "fpsnr": fpsnr(pred, target, mask, data_range),
    }
