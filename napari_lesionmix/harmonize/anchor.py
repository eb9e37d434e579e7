"""Host-lesion anchoring: set a pasted lesion's gain from the host's own lesions, then let ARHNet refine it.

Why (issue 17). ARHNet's self-supervised task (Sec. 2.1, Eq. 1) restores a
lesion *in its own scan*: the generator only sees a patch around the lesion, so
it can learn "what a lesion looks like next to this background" as a
population prior, never what *this host's* lesions look like, which usually lie
outside the patch. Lesions pasted from another subject or scanner then keep a
contrast the host's lesions do not have. The host's lesions are the signal that
fixes it (the paper's HM baseline reads them too), so the generator is
conditioned on them at its input: before the network, the pasted foreground
gets one multiplicative gain per channel (a scanner gain acts about intensity
0) chosen so that the median of the pasted lesions equals the median of the
host's own lesions,

    I' = z + (I - z) * (1 + (g - 1) * M),   median_{pasted}(I') = median_{host lesions}(I),

with ``z`` the intensity of "no signal" (0 in the image's own scale) and ``M``
the (soft) mixing mask, and the generator gets one more input channel, ``M``
where the level was so given (``ModelConfig.anchor_channel``). It then does what
the paper trains it for, the boundary and texture (Eqs. 2-6), and keeps the
given level: in training, half of the Eq. 1 pairs are anchored back to their
real lesion's median with the channel set, the other half are the paper's pairs
with the channel at 0 (:func:`~napari_lesionmix.harmonize.data.make_pair`).
Without a label, or when the host keeps no lesion of its own, nothing is
anchored, the channel is 0 and the generator infers the level itself, as the
paper's does.

Pasted lesions are ``label > 0`` where the mask is at least 0.5 (all of
``label > 0`` inside the mask when none is), the host's own are ``label > 0``
where the mask is 0: the regions :mod:`~napari_lesionmix.harmonize.criterion`
scores. One gain covers every pasted lesion: lesions pasted from one donor
share its scanner gain, and their spread around the median is kept.
"""

from __future__ import annotations

import numpy as np

from napari_lesionmix.errors import LesionMixError

ANCHORS = ("host-lesions", "none")
GAIN_LIMIT = 8.0  # a gain beyond x8 (or /8) is not a scanner difference: leave such a paste alone


def check_anchor(mode: str) -> str:
    """``mode`` if it is one of :data:`ANCHORS`, else a one-sentence error."""
    if mode not in ANCHORS:
        raise LesionMixError(f"Anchoring must be one of {', '.join(ANCHORS)}, got {mode!r}.")
    return mode


def lesion_regions(mask: np.ndarray, label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(pasted, host)`` boolean maps: pasted lesions and the host's own lesions (module docstring)."""
    m = np.asarray(mask, np.float32)
    lab = np.asarray(label) > 0
    if lab.shape != m.shape:
        raise LesionMixError(f"The label has shape {lab.shape} but the image grid is {m.shape}.")
    pasted = lab & (m >= 0.5)
    if not pasted.any():
        pasted = lab & (m > 0)
    return pasted, lab & (m <= 0)


def solve_gain(values: np.ndarray, weights: np.ndarray | float, target: float, zero: float = 0.0) -> float | None:
    """The gain ``g`` with ``median(z + (v - z) * (1 + (g - 1) * w)) = target`` (``z = zero``).

    ``g = (target - z) / median(v - z)`` when every weight is 1; a soft mask is
    solved by Brent's method on ``log g`` (the median rises with ``g`` when
    ``v > z``, so the root is unique). ``None`` when the median or the target is
    not above ``zero`` (no ratio to take), or when ``g`` would fall outside
    ``[1 / GAIN_LIMIT, GAIN_LIMIT]`` (not a scanner gain).
    """
    v = np.asarray(values, np.float64) - zero
    w = np.broadcast_to(np.asarray(weights, np.float64), v.shape)
    t = float(target) - zero
    med = float(np.median(v)) if v.size else 0.0
    if med <= 0 or t <= 0:
        return None
    if np.all(w == 1.0):
        g = t / med
    else:
        from scipy.optimize import brentq

        def miss(log_g: float) -> float:
            return float(np.median(v * (1.0 + (np.exp(log_g) - 1.0) * w))) - t

        lim = np.log(GAIN_LIMIT)
        if miss(-lim) > 0 or miss(lim) < 0:
            return None
        g = float(np.exp(brentq(miss, -lim, lim, xtol=1e-7)))
    if not 1.0 / GAIN_LIMIT <= g <= GAIN_LIMIT:
        return None
    return g


def apply_gain(values: np.ndarray, weights: np.ndarray | float, gain: float, zero: float = 0.0) -> np.ndarray:
    """``z + (v - z) * (1 + (g - 1) * w)``: the anchoring itself (module docstring)."""
    return zero + (values - zero) * (1.0 + (gain - 1.0) * weights)


def anchor_to_host_lesions(image: np.ndarray, mask: np.ndarray, label: np.ndarray | None,
                           mode: str = "host-lesions") -> tuple[np.ndarray, list[float | None]]:
    """Anchor the pasted lesions of ``image`` (C, I, J, K) to the host's own; ``(image', gains)``.

    Parameters
    ----------
    image : ndarray, shape (C, I, J, K)
        The synthetic image in its own scale (0 = no signal).
    mask : ndarray, shape (I, J, K)
        The mixing mask, bool or soft in [0, 1].
    label : ndarray or None
        The synthetic label map; ``None`` anchors nothing.
    mode : {"host-lesions", "none"}

    Returns
    -------
    image' : ndarray
        A new array (float32 for integer images); voxels with ``mask == 0`` equal ``image``.
        ``image`` itself when nothing is anchored.
    gains : list of float or None
        The gain per channel, or ``[None] * C`` when nothing was anchored: every
        channel is anchored, or none (a channel without a ratio to take, e.g. a
        z-scored one, or a gain beyond :data:`GAIN_LIMIT`, leaves the paste alone).
    """
    check_anchor(mode)
    n = image.shape[0]
    if mode == "none" or label is None:
        return image, [None] * n
    m = np.asarray(mask, np.float32)
    pasted, host = lesion_regions(m, label)
    if not pasted.any() or not host.any():
        return image, [None] * n
    w = m[pasted]
    gains = [solve_gain(image[c][pasted], w, float(np.median(image[c][host]))) for c in range(n)]
    if any(g is None for g in gains):
        return image, [None] * n
    out = image.copy() if image.dtype.kind == "f" else image.astype(np.float32)
    fg = m > 0
    for c, g in enumerate(gains):
        out[c][fg] = apply_gain(image[c][fg].astype(np.float64), m[fg], g).astype(out.dtype)
    return out, gains
