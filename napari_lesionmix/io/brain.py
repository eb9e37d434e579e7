"""The brain region of a case: the one definition of "brain" and "normal brain" in the package.

Everything that needs to know where the brain is (intensity matching, Soft-CP's
placement reference, LesionMix's placement, likelihood map and inpainting,
harmonization's criterion and anchor, the studio's display window) asks
:func:`brain_region`. With a brain mask it is the mask. Without one (the normal
nnU-Net layout) it is an estimate from the image that must hold on real scans:

* an exact-zero background with slightly negative interpolation ringing around
  the brain (skull-stripped FLAIR: the minimum is -13 to -20, not the background);
* a constant negative background (z-scored BraTS: -3.2 to -5.3, brain voxels on
  both sides of 0);
* a constant non-zero background, noise around it, bright outliers;
* scans with and without a skull.

The estimate (:func:`estimate_brain`):

1. The **background level** is the median of the volume's outer faces: the
   six faces lie outside the head in every scan we know of, and a median
   ignores the ringing, noise and a few bright voxels there. Taking the
   minimum instead (as before) fails on ringing: the exact-zero background,
   84 % of a real FLAIR volume, became "brain". Faces that are neither dark
   (at most the volume's 25th percentile) nor flat (noise about a constant)
   are tissue: a volume cropped to the head falls back to a constant
   minimum, or has no background (all foreground).
2. **Foreground**: voxels brighter than the background by more than
   :data:`THRESHOLD_FRACTION` of the range from the background to the
   90th percentile of the non-background voxels. A fraction of a robust
   range, not Otsu: on a skull-stripped scan Otsu splits the brain itself
   (CSF from tissue), while 10 % of the range sits far above noise and
   ringing and below CSF on FLAIR and T1; the 90th percentile, not the
   maximum, so bright outliers (hot voxels, saturated lesions) do not raise
   it. Several channels: a voxel is
   foreground when it is in any channel.
3. An **opening** by :data:`OPENING_MM` (exact distance transforms with the
   voxel spacing, so anisotropic scans are handled) removes thin strands
   (ringing shells, vessels, the optic nerve) and, with a skull, the bridges
   between brain and scalp across the dark bone.
4. The **largest connected component** (26-connected), **holes filled**
   (ventricles, dark lesions, necrotic cores: every cavity that does not reach
   the volume's border).

Normal brain is that region minus the lesions (any non-zero label). The
estimate is deterministic (it depends only on the image), so a replay
recomputes it; the params record which region was used and its voxel count
(:meth:`BrainRegion.record`), and a replay whose region differs is refused.

When the estimate looks unreliable (it covers more than
:data:`MAX_FRACTION` or less than :data:`MIN_FRACTION` of the volume, or is
the size of a head rather than a brain) it carries a one-sentence
:attr:`BrainRegion.warning`, warned once per case. A volume with no
background at all (cropped to the brain) is all brain, without a warning.

With a skull the estimate is the head, not the brain (Dice 0.59 against the
skull-stripped Colin27 brain, 0.995 on the stripped scan itself): a threshold
cannot follow the brain's edge across the bone, and erosion-based splitting
cost the skull-stripped BraTS scans more than it gained. Such a scan is warned
about by its volume; give it a brain mask or skull-strip it first.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from napari_lesionmix.errors import LesionMixError, LesionMixWarning
from napari_lesionmix.io.morphology import BALL_MAX, connected_components, exact_grid, within_ball

if TYPE_CHECKING:
    import nibabel as nib

#: Fraction of the background-to-bright range above which a voxel is foreground.
THRESHOLD_FRACTION = 0.10
#: Percentile of the non-background voxels taken as "bright" (robust to outliers, even a few % of 1e6 voxels).
BRIGHT_PERCENTILE = 90.0
#: Radius (mm) of the opening that cuts thin strands and brain-scalp bridges.
OPENING_MM = 2.0
#: An estimate covering more than this fraction of the volume is warned about (it may hold the background).
MAX_FRACTION = 0.95
#: An estimate covering less than this fraction of the volume is warned about.
MIN_FRACTION = 0.01
#: An estimate larger than this (mL) is warned about: an adult brain is 1.0-1.7 L, a head with its skull 3-5 L.
MAX_BRAIN_ML = 2200.0
#: The values of :attr:`BrainRegion.source`.
SOURCES = ("mask", "estimated")


@dataclass(frozen=True)
class BrainRegion:
    """Where the brain of one case is, and how that was decided.

    Attributes
    ----------
    mask : ndarray of bool, shape (I, J, K)
        The brain.
    source : {"mask", "estimated"}
        A given brain mask, or :func:`estimate_brain`.
    warning : str or None
        One sentence when an estimate looks unreliable.
    """

    mask: np.ndarray = field(repr=False)
    source: str
    warning: str | None = None

    @property
    def n_voxels(self) -> int:
        return int(np.count_nonzero(self.mask))

    def record(self) -> dict:
        """What a sample's params keep of the region: enough for a replay to check it is the same."""
        return {"source": self.source, "voxels": self.n_voxels}

    def normal(self, label: np.ndarray | None) -> np.ndarray:
        """Normal brain: the region without lesion voxels (any non-zero label)."""
        return self.mask if label is None else self.mask & (np.asarray(label) == 0)


#: The background must lie at or below this percentile of the volume to be one (else the faces are tissue).
BACKGROUND_PERCENTILE = 25.0
#: Faces whose inter-quartile range is at most this fraction of the volume's 1-99 % range are a (noisy) background.
FLAT_FRACTION = 0.02
#: A volume whose faces are tissue still has a background when its minimum fills this fraction of it.
MIN_BACKGROUND_FRACTION = 0.01


def _background(channel: np.ndarray) -> tuple[float, bool]:
    """(background level, whether the volume has a background at all): step 1 of the module docstring.

    In this order: the faces' median when that exact value fills a sizeable part
    of the volume (an exact-zero or z-scored constant background, whatever
    ringing lies around the brain); else the minimum when it does (a volume cut
    to the head whose faces are tissue, a constant slab outside it); else the
    faces' median when it is dark (at most the volume's 25th percentile) or flat
    (noise about a constant); else there is no background.
    """
    c = np.asarray(channel)
    enough = MIN_BACKGROUND_FRACTION * c.size
    faces = np.concatenate([f.ravel() for f in (c[0], c[-1], c[:, 0], c[:, -1], c[:, :, 0], c[:, :, -1])])
    q1, bg, q3 = (float(v) for v in np.percentile(faces, (25, 50, 75)))
    if np.count_nonzero(c == bg) >= enough:
        return bg, True
    lo = float(c.min())
    if np.count_nonzero(c == lo) >= enough:
        return lo, True
    p1, p25, p99 = (float(v) for v in np.percentile(c.reshape(-1)[::7], (1, BACKGROUND_PERCENTILE, 99)))
    return bg, bool(bg <= p25 or q3 - q1 <= FLAT_FRACTION * (p99 - p1))


def background_level(channel: np.ndarray) -> float:
    """The background intensity of one 3D channel (the value intensity maps leave as it is).

    The median of the volume's six outer faces; for a volume whose faces are
    tissue, its minimum.
    """
    return _background(channel)[0]


def foreground(channel: np.ndarray) -> np.ndarray:
    """Voxels of one channel clearly brighter than its background (step 2 of the module docstring).

    A volume cropped to the head (its faces are tissue) has no credible face
    background: then the background is the minimum if a constant minimum fills
    at least :data:`MIN_BACKGROUND_FRACTION` of the volume, else there is no
    background and every voxel is foreground.
    """
    c = np.asarray(channel)
    bg, has_background = _background(c)
    if not has_background:
        return np.ones(c.shape, bool)
    above = c[c > bg]
    if above.size == 0:
        return np.zeros(c.shape, bool)
    bright = float(np.percentile(above, BRIGHT_PERCENTILE))
    return c > bg + THRESHOLD_FRACTION * (bright - bg)


def _box(mask: np.ndarray, margin: Sequence[int]) -> tuple[slice, ...] | None:
    """The bounding box of ``mask`` grown by ``margin`` voxels per axis (clipped), or ``None`` when empty."""
    box = []
    for axis, m in enumerate(margin):
        others = tuple(a for a in range(mask.ndim) if a != axis)
        hit = np.flatnonzero(mask.any(axis=others))
        if hit.size == 0:
            return None
        box.append(slice(max(int(hit[0]) - m, 0), min(int(hit[-1]) + 1 + m, mask.shape[axis])))
    return tuple(box)


def _open(mask: np.ndarray, radius_mm: float, spacing: Sequence[float]) -> np.ndarray:
    """Morphological opening by a ball of ``radius_mm``, from two exact distance thresholds.

    Each transform runs on a box, not the volume (the head is a fraction of
    it), with the same result: the erosion's box is the mask's plus one
    background voxel, so every mask voxel's nearest background voxel lies in
    it (clamping a farther one into the box only brings it closer); the
    dilation's box is the eroded mask's grown by more than the radius, and
    every voxel outside it is farther than the radius from the eroded mask.
    """
    import edt  # seung-lab's anisotropic EDT: a ball of any radius at the cost of one pass

    spacing = tuple(float(s) for s in spacing)
    out = np.zeros(mask.shape, bool)
    box = _box(mask, (1, 1, 1))
    if box is None:
        return out
    # A whole number of voxels on a power-of-two isotropic grid (2 mm on 1 mm or 2 mm voxels): the
    # thresholds of the distances are exactly balls of integer squared radius, found in a few uint8
    # passes (7x faster than the transforms on a 1 mm head; the same voxels).
    steps = radius_mm / spacing[0]
    ball = int(steps) if exact_grid(spacing) and float(steps).is_integer() and 0 < steps <= BALL_MAX else None
    # The volume's edge is not background: a brain cut by the field of view keeps its cut face
    # (edt's black_border=False; the passes never look past the array).
    inner = np.zeros(mask.shape, bool)
    sub = mask[box]
    inner[box] = ~within_ball(~sub, ball) if ball is not None else \
        edt.edt(np.ascontiguousarray(sub, np.uint8), anisotropy=spacing, black_border=False, parallel=0) > radius_mm
    grow = _box(inner, tuple(int(np.ceil(radius_mm / s)) + 1 for s in spacing))
    if grow is None:
        return out
    out[grow] = within_ball(inner[grow], ball) if ball is not None else \
        edt.edt(np.ascontiguousarray(~inner[grow], np.uint8), anisotropy=spacing, black_border=False,
                parallel=0) <= radius_mm
    return out


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 26-connected component of a mask (empty when the mask is).

    Labelled on the mask's bounding box: the same components, numbered in
    the same (raster) order, so a tie goes to the same one.
    """
    out = np.zeros(mask.shape, bool)
    box = _box(mask, (0, 0, 0))
    if box is None:
        return out
    lab, n = connected_components(mask[box])
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    out[box] = lab == int(np.argmax(sizes))
    return out


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """``mask`` with every cavity that does not reach the volume's border filled.

    Labels the complement once (6-connected) instead of ``ndi.binary_fill_holes``'s
    iterated dilation, which takes seconds on a 1 mm volume. Only the mask's
    bounding box plus one voxel is labelled: outside the box lies background
    connected to the volume's border, so a cavity is a component of the box's
    complement that does not touch the box's faces.
    """
    box = _box(mask, (1, 1, 1))
    if box is None:
        return mask.copy()
    sub = mask[box]
    lab, n = connected_components(~sub, 1)
    if n == 0:
        return mask.copy()
    border = np.unique(np.concatenate([f.ravel() for f in (lab[0], lab[-1], lab[:, 0], lab[:, -1],
                                                             lab[:, :, 0], lab[:, :, -1])]))
    outside = np.zeros(n + 1, bool)
    outside[border] = True
    outside[0] = False
    out = np.zeros(mask.shape, bool)
    out[box] = ~outside[lab]
    return out


def estimate_brain(image: np.ndarray, spacing: Sequence[float] = (1.0, 1.0, 1.0)) -> np.ndarray:
    """An estimate of the brain of a scan without a brain mask (the module docstring says how and why).

    Parameters
    ----------
    image : ndarray, shape (C, I, J, K) or (I, J, K)
    spacing : sequence of 3 floats
        Voxel size in mm (the opening radius is in mm).

    Returns
    -------
    ndarray of bool, shape (I, J, K)
    """
    image = np.asarray(image)
    channels = image[np.newaxis] if image.ndim == 3 else image
    fg = np.zeros(channels.shape[1:], bool)
    for ch in channels:
        fg |= foreground(ch)
    opened = _open(fg, OPENING_MM, spacing)
    # A small brain or a coarse grid can vanish under the opening: keep the plain threshold then.
    return fill_holes(largest_component(opened if opened.any() else fg))


#: A brain-mask voxel within this of a whole number is that number (masks saved as floats: 0.99999997).
MASK_TOLERANCE = 1e-4


def load_brain_mask(path: str | os.PathLike, what: str = "Brain mask") -> tuple[np.ndarray, nib.Nifti1Image]:
    """A brain mask file as ``(bool mask, nibabel image)``: its non-zero voxels.

    Masks are often stored as floats a rounding away from whole numbers (BraTS's
    ``brainmask.nii.gz`` holds 0.99999997): a value within :data:`MASK_TOLERANCE`
    of a whole number counts as that number. Other fractions (a probability map, a
    linearly resampled mask) are refused, since which voxels are brain would be a guess.

    Raises
    ------
    LesionMixError
        A missing or unreadable file, not 3D, NaN, negative or fractional values.
    """
    from napari_lesionmix.io.nifti import as_label_array, read_nifti

    img, data = read_nifti(path, what)
    name = f"{what} file '{path}'"
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise LesionMixError(f"{name} is {data.ndim}D with shape {data.shape}; a mask must be a 3D volume.")
    if data.dtype.kind == "f":
        if not np.isfinite(data).all():
            raise LesionMixError(f"{name} contains NaN or infinite values; a mask must be 0 or 1.")
        whole = np.rint(data)
        off = np.abs(data - whole) > MASK_TOLERANCE
        if off.any():
            raise LesionMixError(f"{name} has fractional values (e.g. {float(data[off].flat[0]):.6g}); a mask "
                                 "must be binary: threshold it (e.g. at 0.5) first.")
        data = whole
    return as_label_array(data, where=name) != 0, img


def brain_region(image: np.ndarray, brain_mask: np.ndarray | None = None,
                 spacing: Sequence[float] = (1.0, 1.0, 1.0), case_id: str = "the case") -> BrainRegion:
    """The brain of one case: ``brain_mask`` when given, else :func:`estimate_brain`.

    Parameters
    ----------
    image : ndarray, shape (C, I, J, K) or (I, J, K)
    brain_mask : ndarray, optional
        Any non-zero voxel is brain (masks stored as 0.99999997 included).
    spacing : sequence of 3 floats
    case_id : str
        Named in the warning.

    Raises
    ------
    LesionMixError
        When the mask's shape is not the image's, or the region is empty.
    """
    shape = np.shape(image)[-3:]
    if brain_mask is not None:
        mask = np.asarray(brain_mask)
        if mask.shape != shape:
            raise LesionMixError(f"The brain mask of '{case_id}' has shape {mask.shape} but its image has {shape}.")
        mask = mask if mask.dtype == bool else mask != 0
        if not mask.any():
            raise LesionMixError(f"The brain mask of '{case_id}' is empty.")
        return BrainRegion(mask, "mask")
    mask = estimate_brain(image, spacing)
    if not mask.any():
        raise LesionMixError(
            f"No brain could be found in '{case_id}' (the image is constant or has nothing above its "
            "background); give a brain mask."
        )
    fraction = float(np.count_nonzero(mask)) / mask.size
    volume_ml = float(np.count_nonzero(mask)) * float(np.prod(spacing)) / 1000.0
    warning = None
    if fraction == 1.0:
        pass  # no background at all (a volume cropped to the brain): all brain, by design
    elif fraction > MAX_FRACTION or fraction < MIN_FRACTION:
        warning = (f"The brain estimated for '{case_id}' covers {fraction:.0%} of the volume, which looks wrong; "
                   "give a brain mask.")
    elif volume_ml > MAX_BRAIN_ML:
        # A threshold cannot tell the brain from the scalp across the skull: the estimate is then the head.
        warning = (f"The brain estimated for '{case_id}' is {volume_ml:.0f} mL, the size of a head rather than a "
                   "brain (a scan with its skull?); give a brain mask or skull-strip the scan.")
    return BrainRegion(mask, "estimated", warning)


#: The attribute under which :func:`case_brain` keeps a case's estimate (a case is estimated once).
_CACHE_ATTR = "_lesionmix_brain_estimate"


def case_brain(case, brain_mask: np.ndarray | None = None) -> BrainRegion:
    """:func:`brain_region` of a :class:`~napari_lesionmix.io.nifti.Case` (its spacing, its id).

    The estimate (no ``brain_mask``) is computed once per case object and kept
    on it: every sample of a host, and every step of one sample, asks for it.
    A case whose image is changed in place must be copied first.
    """
    if brain_mask is not None:
        return brain_region(case.image, brain_mask, case.spacing, case.case_id)
    cached = getattr(case, _CACHE_ATTR, None)
    if cached is not None and cached[0] is case.image:
        return cached[1]
    region = brain_region(case.image, None, case.spacing, case.case_id)
    if region.warning:  # once per case: the estimate is kept below
        warnings.warn(region.warning, LesionMixWarning, stacklevel=2)
    try:
        setattr(case, _CACHE_ATTR, (case.image, region))
    except AttributeError:  # a slotted stand-in: recompute next time
        pass
    return region
