"""Soft mask of a binary lesion mask (Soft-CP, section 3.2 and Figs. 4-5).

Soft-CP copies a lesion *with* its surroundings: instead of the binary mask M
it uses a soft mask S that is 1 on an eroded core of the lesion and falls off
with the distance from it, so that pasting ``S * I_lesion + (1 - S) * I_host``
(Eq. 1) leaves no hard edge. The paper's algorithm (Fig. 5) erodes M
``k_erode`` times, dilates it ``k_dilate`` times and lets the weight of the
unknown band decrease with distance at a rate set by a coefficient
``a`` in (0, 1); the figure itself is not legible, so this module fixes the
following reading (every choice is a parameter or documented here):

* **Morphology by distance.** ``k`` iterations of erosion/dilation with a
  ball of radius one voxel are thresholds of the Euclidean distance transform:
  core ``C = {d(v, background) > k_erode}``, band reach
  ``D = {d(v, M) <= k_dilate}``. With ``spacing`` the ball is round in mm and
  one iteration is one step of the finest axis (``min(spacing)`` mm); without
  it voxels are taken as isotropic. This avoids 2 x k passes of
  ``binary_erosion`` and keeps anisotropic scans isotropic in mm.
* **Geometric fall-off.** ``S(v) = a ** d_C(v)`` for v in D, where ``d_C`` is
  the distance to the core in iteration units (so S = 1 on C, ``a`` one
  iteration away, ``a**2`` two away, ... : the per-ring weights ``a**i`` of an
  iterative dilation, evaluated continuously), and ``S = 0`` outside D. Smaller
  ``a`` gives a sharper edge, larger ``a`` a softer one. S is monotone
  (non-increasing) in the distance to the core.
* **Tiny lesions.** A connected component (26-connectivity) that erosion would
  empty keeps its most interior voxels (those at its maximal inside distance)
  as its core, so every lesion keeps at least one voxel of weight 1 and small
  lesions fade out continuously instead of vanishing.

The work is done on the bounding box of M grown by the dilation reach, so the
cost scales with the lesion, not the volume (:func:`soft_mask_box`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np
from scipy import ndimage as ndi

from napari_lesionmix.errors import LesionMixError
from napari_lesionmix.io.morphology import BALL_MAX, connected_components, exact_grid, within_ball

#: Defaults where the paper gives no value (it says ``a`` is "customized based
#: on the dataset"): one erosion keeps most of a small MS lesion at weight 1,
#: four dilations with a = 0.5 end the band at a weight <= 0.5**5 ~ 0.03, so
#: the cut-off at the band's edge is invisible.
DEFAULT_A = 0.5
DEFAULT_K_ERODE = 1
DEFAULT_K_DILATE = 4


def _check(mask: np.ndarray, a: float, k_erode: int, k_dilate: int, spacing) -> tuple[np.ndarray, tuple]:
    mask = np.asarray(mask)
    if mask.ndim < 1:
        raise LesionMixError("The soft mask needs an array mask, got a scalar.")
    if not (isinstance(a, (int, float, np.floating)) and 0.0 < float(a) < 1.0):
        raise LesionMixError(f"The softening coefficient a must lie in (0, 1), got {a!r}.")
    for name, k in (("k_erode", k_erode), ("k_dilate", k_dilate)):
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
            raise LesionMixError(f"{name} must be a non-negative integer number of iterations, got {k!r}.")
    if spacing is None:
        spacing = (1.0,) * mask.ndim
    spacing = tuple(float(s) for s in spacing)
    if len(spacing) != mask.ndim or not all(math.isfinite(s) and s > 0 for s in spacing):
        raise LesionMixError(
            f"Spacing {spacing} must hold {mask.ndim} positive voxel sizes for a {mask.ndim}D mask."
        )
    return mask != 0, spacing


#: Below this many voxels scipy's transform beats ``edt``'s fixed cost (about 0.2 ms a call) on a lesion's box.
_EDT_SMALL = 20_000


def _edt(mask: np.ndarray, spacing: tuple[float, ...]) -> np.ndarray:
    """Distance (in the units of ``spacing``) from each non-zero voxel to the nearest zero voxel.

    On the grids of :func:`~napari_lesionmix.io.morphology.exact_grid` both transforms return the correctly
    rounded float32 root of an exact squared distance, the same bytes, so the
    faster one for the box's size is used; elsewhere always ``edt`` (its float32
    arithmetic is what the recorded outputs hold), and for a mask with no zero
    voxel (``edt`` gives inf there, scipy does not).
    """
    small = mask.size < _EDT_SMALL and exact_grid(spacing) and not mask.all()
    if mask.ndim in (2, 3) and not small:
        import edt  # seung-lab: several times faster than scipy on 3D crops

        return edt.edt(np.ascontiguousarray(mask, dtype=np.uint8), anisotropy=spacing,
                       black_border=False, parallel=1)
    return ndi.distance_transform_edt(mask, sampling=spacing).astype(np.float32)


@functools.lru_cache(maxsize=16)
def _ball(radius: int, ndim: int) -> np.ndarray:
    """Structuring element of the integer offsets ``o`` with ``|o|**2 <= radius**2``."""
    r = np.arange(-radius, radius + 1)
    grid = np.meshgrid(*([r] * ndim), indexing="ij")
    return sum(g * g for g in grid) <= radius * radius


def _inside(sub, sub_in, inner, spacing, step) -> np.ndarray:
    """Inside distance (iterations) on ``sub``, computed on the mask's box plus one voxel."""
    # Every nearest background voxel lies in that box (where it is not the array's edge).
    inside_in = _edt(sub_in, spacing) / step
    inside = np.zeros(sub.shape, inside_in.dtype)
    inside[inner] = inside_in
    return inside


def soft_mask_box(
    mask: np.ndarray,
    a: float = DEFAULT_A,
    k_erode: int = DEFAULT_K_ERODE,
    k_dilate: int = DEFAULT_K_DILATE,
    spacing: Sequence[float] | None = None,
) -> tuple[tuple[slice, ...], np.ndarray] | None:
    """Soft mask on its own bounding box: ``(box, S[box])``, or ``None`` for an empty mask.

    Same parameters as :func:`soft_mask`; S is 0 everywhere outside ``box``.
    """
    m, spacing = _check(mask, a, k_erode, k_dilate, spacing)
    objs = ndi.find_objects(m.view(np.uint8) if m.dtype == bool else m.astype(np.uint8))
    if not objs or objs[0] is None:
        return None
    step = min(spacing)  # one iteration = one step of the finest axis
    # Grow the box by the dilation reach plus one voxel, so the band fits and the
    # crop border (outside the band) never changes a distance that matters.
    margin = [int(math.ceil(k_dilate * step / s)) + 1 for s in spacing]
    box = tuple(slice(max(b.start - g, 0), min(b.stop + g, n))
                for b, g, n in zip(objs[0], margin, m.shape, strict=True))
    sub = m[box]

    # Erosion (k_erode iterations of a unit ball): voxels deeper than k_erode. Only the
    # mask's own box plus one voxel (background all round it, where the box is not the
    # array's edge) is needed: every nearest background voxel lies in it.
    inner = tuple(slice(max(b.start - x.start - 1, 0), min(b.stop - x.start + 1, x.stop - x.start))
                  for b, x in zip(objs[0], box, strict=True))
    sub_in = sub[inner]
    core = np.zeros(sub.shape, bool)
    inside = None
    if exact_grid(spacing):
        core[inner] = ndi.binary_erosion(sub_in, _ball(int(k_erode), sub.ndim), border_value=1)
    else:
        inside = _inside(sub, sub_in, inner, spacing, step)
        core = inside > k_erode
    # Tiny lesions emptied by the erosion keep their most interior voxels.
    comps = np.zeros(sub.shape, np.int32)
    comps[inner], n = connected_components(sub_in)
    if n:
        has_core = np.zeros(n + 1, bool)
        has_core[np.unique(comps[core])] = True
        missing = np.flatnonzero(~has_core[1:]) + 1
        if missing.size:
            if inside is None:
                inside = _inside(sub, sub_in, inner, spacing, step)
            deepest = np.zeros(n + 1, np.float64)
            deepest[missing] = ndi.maximum(inside, comps, index=missing)
            lost = ~has_core[comps] & (comps > 0)
            core |= lost & (inside >= deepest[comps])

    # Dilation (k_dilate iterations): voxels within k_dilate of the lesion.
    if exact_grid(spacing) and k_dilate <= BALL_MAX:
        reach = within_ball(sub, int(k_dilate)) | sub
    else:
        reach = (_edt(~sub, spacing) / step <= k_dilate) | sub
    # Fall-off a ** d(v, core) inside the reach (core: d = 0, S = 1).
    d_core = _edt(~core, spacing) / step
    s = np.zeros(sub.shape, np.float32)
    s[reach] = np.exp(d_core[reach] * math.log(float(a))).astype(np.float32)
    s[core] = 1.0
    return box, s


def soft_mask(
    mask: np.ndarray,
    a: float = DEFAULT_A,
    k_erode: int = DEFAULT_K_ERODE,
    k_dilate: int = DEFAULT_K_DILATE,
    spacing: Sequence[float] | None = None,
) -> np.ndarray:
    """Soft-CP's soft mask S of a binary lesion mask (section 3.2, Fig. 5).

    Parameters
    ----------
    mask : ndarray
        Lesion mask; every non-zero voxel is lesion. Usually 3D, any ndim works.
    a : float
        Softening coefficient in (0, 1): the weight one iteration away from the
        core. Smaller is sharper.
    k_erode : int
        Erosion iterations that give the core of weight 1 (0: the whole lesion).
    k_dilate : int
        Dilation iterations: S is 0 farther than this from the lesion.
    spacing : sequence of float, optional
        Voxel size per axis (mm); distances are then round in mm, with one
        iteration equal to the finest voxel size. ``None``: isotropic voxels.

    Returns
    -------
    ndarray of float32, same shape as ``mask``
        S in [0, 1]: 1 on the eroded core (or, for lesions erosion would
        empty, on their most interior voxels), ``a ** d`` at distance ``d``
        (iterations) from the core within ``k_dilate`` of the lesion, 0 beyond.

    Examples
    --------
    >>> m = np.zeros(9, bool); m[3:6] = True
    >>> soft_mask(m, a=0.5, k_erode=1, k_dilate=2).round(3).tolist()
    [0.0, 0.125, 0.25, 0.5, 1.0, 0.5, 0.25, 0.125, 0.0]
    """
    out = np.zeros(np.shape(mask), np.float32)
    res = soft_mask_box(mask, a, k_erode, k_dilate, spacing)
    if res is not None:
        box, s = res
        out[box] = s
    return out


def soft_paste(image: np.ndarray, mask: np.ndarray, box: tuple[slice, ...], s: np.ndarray,
               patch: np.ndarray) -> None:
    """Soft-CP Eq. (1) in place on ``box``: ``I = S * I_paste + (1 - S) * I_host``, every channel.

    ``image`` is ``(C, I, J, K)``, ``patch`` the ``(C, ...)`` pasted crop and
    ``s`` the soft mask on ``box``; ``mask`` (the sample's mixing mask) keeps
    the voxelwise maximum of the pasted soft masks. Soft-CP and LesionMix paste
    with it.
    """
    region = image[(slice(None), *box)]
    region[:] = s[None] * patch + (1.0 - s[None]) * region
    np.maximum(mask[box], s, out=mask[box])
