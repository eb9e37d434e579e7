"""The cross-subject criterion: does a lesion pasted from another scan end with the host's lesion contrast?

The ARHNet paper (Sec. 3.2.1, Table 1) scores harmonization by restoring a lesion
*of the same scan* after the Eq. 1 perturbation. Users paste lesions from *another*
scan, often of another gain. Here that task is scored directly:

    contrast  c(R) = (median(I inside R) - b) / (median(I over the host's normal brain) - b)
    error       e  = | log( c(pasted region after harmonization) / c(host's own lesions) ) |

so ``e = log(1.15) = 0.140`` is "within 15 %" of the host's own lesion contrast.
``b`` is the host's zero-signal level, its background (:func:`~napari_lesionmix.io.brain.background_level`):
0 for a skull-stripped scan with an exact-zero background, the constant background of a z-scored scan
(BraTS: about -0.5 to -5), where the normal brain's median is near 0 and a plain ratio is undefined.
Measured from ``b`` the contrast is the same for a scan and its z-score.
Normal brain = brain mask (or the estimated brain, :mod:`napari_lesionmix.io.brain`) minus every lesion and minus
the mixing mask. Pastes are made with the augment package's public functions:
CarveMix at lambda = 0 (the ROI is exactly the donor's lesion mask) and Soft-CP.

NumPy only (no torch): the benchmark, the training validation and tests share it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from napari_lesionmix.errors import LesionMixError
from napari_lesionmix.io.brain import background_level, case_brain
from napari_lesionmix.io.morphology import connected_components

WITHIN_15_PERCENT = math.log(1.15)
SHIFTS = ("as is", "donor x0.6", "donor x1.7", "donor bias", "host outlier")


def contrast(image: np.ndarray, region: np.ndarray, normal: np.ndarray, channel: int = 0,
             zero: float = 0.0) -> float:
    """``(median(image[region]) - zero) / (median(image[normal]) - zero)`` of one channel of a ``(C, I, J, K)`` image.

    ``zero`` is the intensity of no signal (the background level), so a z-scored scan, whose normal
    brain has a median near 0, has the contrast of the scan it was made from.
    """
    region = np.asarray(region, bool)
    normal = np.asarray(normal, bool)
    if not region.any() or not normal.any():
        raise LesionMixError("Contrast needs a non-empty region and a non-empty normal-brain reference.")
    ref = float(np.median(image[channel][normal])) - zero
    if ref <= 0:
        raise LesionMixError(
            f"The normal brain's median is not above the background level ({zero:g}); contrast is undefined."
        )
    return (float(np.median(image[channel][region])) - zero) / ref


def contrast_error(c: float, c_ref: float) -> float:
    """``|log(c / c_ref)|``: 0 is the reference contrast, ``log(1.15)`` is 15 % off."""
    if c <= 0 or c_ref <= 0:
        return float("inf")
    return abs(math.log(c / c_ref))


def bias_field(shape: Sequence[int], strength: float = 0.35) -> np.ndarray:
    """A smooth multiplicative field, ``exp(strength * r)`` with ``r`` a fixed ramp in [-1, 1].

    Deterministic (no random draw): a linear ramp along the first axis plus a
    gentle bowl, as a receive-coil shading looks; ``strength=0.35`` gives a
    factor from about 0.7 to 1.4 across the volume.
    """
    axes = [np.linspace(-1.0, 1.0, int(n), dtype=np.float32) for n in shape]
    i, j, k = np.meshgrid(*axes, indexing="ij")
    r = 0.7 * i + 0.3 * (j**2 + k**2 - 0.66)
    return np.exp(strength * r / max(float(np.abs(r).max()), 1e-6)).astype(np.float32)


def shift_case(case, kind: str):
    """A copy of ``case`` with its intensities shifted: ``"x0.6"``, ``"x1.7"``, ``"bias"`` or ``"outlier"``.

    ``"outlier"`` sets one voxel in the brain's corner region to 20 times the
    image maximum, as one hot voxel of a real float FLAIR does (the case that
    undoes a min-max scaling).
    """
    image = case.image.astype(np.float32, copy=True)
    gain = None
    if kind.startswith("x"):
        try:
            gain = float(kind[1:])
        except ValueError:
            gain = None
    if gain is not None:
        image *= gain
    elif kind == "bias":
        image *= bias_field(image.shape[1:])[None]
    elif kind == "outlier":
        nz = np.argwhere(image[0] > 0)
        where = tuple(nz[0]) if len(nz) else (0, 0, 0)
        image[(slice(None), *where)] = 20.0 * float(image.max())
    else:
        raise LesionMixError(f"Unknown intensity shift '{kind}'.")
    return dataclasses.replace(case, image=image)


@dataclass
class Paste:
    """One cross-subject paste: the synthetic image, its mixing mask and what to measure.

    ``region`` is the pasted lesion, ``host_lesions`` the host's own lesions left
    untouched, ``normal`` the host's normal brain, ``label`` the synthetic label.
    """

    name: str
    image: np.ndarray
    mask: np.ndarray
    label: np.ndarray
    region: np.ndarray
    host_lesions: np.ndarray
    normal: np.ndarray
    spacing: tuple[float, float, float]
    zero: float = 0.0  # the host's background level: contrast is measured from it

    @property
    def host_contrast(self) -> float:
        return contrast(self.image, self.host_lesions, self.normal, zero=self.zero)

    def error(self, harmonized: np.ndarray) -> float:
        """Contrast error of the pasted region of ``harmonized`` against the host's own lesions."""
        return contrast_error(contrast(harmonized, self.region, self.normal, zero=self.zero), self.host_contrast)


def _finish(name, host, brain, image, mask, label) -> Paste:
    fg = np.asarray(mask) > 0
    host_les = (host.label > 0) & ~fg
    region = (label > 0) & ~(host.label > 0) & (np.asarray(mask) >= 0.5)
    if not region.any():
        region = (label > 0) & fg
    if brain is None:
        brain = case_brain(host).mask  # the one brain region (not "non-zero": BraTS' background is not 0)
    # Normal brain: away from any lesion or pasted voxel (one voxel of partial volume removed).
    normal = brain & ~ndi.binary_dilation((host.label > 0) | fg | (label > 0), iterations=1)
    if not host_les.any():
        raise LesionMixError(f"Host '{host.case_id}' keeps no lesion of its own after the paste; no reference contrast.")
    # Contrast from the host's zero signal: its background, unless that lies above the normal brain (no background).
    zero = background_level(np.asarray(host.image[0], np.float32))
    if not normal.any() or zero >= float(np.median(host.image[0][normal])):
        zero = 0.0
    return Paste(name, image, np.asarray(mask), label, region, host_les, normal, host.spacing, zero)


def carvemix_paste(host, donor, brain: np.ndarray | None = None, name: str = "") -> Paste:
    """CarveMix at lambda = 0 (the ROI is the donor's lesion mask), through the public API."""
    from napari_lesionmix.augment.carvemix import CarveMixParams, carvemix

    syn = carvemix(host, donor, CarveMixParams(host.case_id, donor.case_id, lam=0.0))
    return _finish(name or f"CarveMix {donor.case_id}->{host.case_id}", host, brain, syn.image, syn.mask, syn.label)


def softcp_paste(host, donor, brain: np.ndarray | None = None, seed: int = 0, n_lesions: int = 3,
                 name: str = "") -> Paste:
    """Soft-CP of ``n_lesions`` donor lesions placed near their source (rigid transforms only, no intensity transform)."""
    from napari_lesionmix.augment.softcp import sample_softcp, softcp
    from napari_lesionmix.random import sample_rng

    comps, n = connected_components(donor.label > 0)
    big = int(np.count_nonzero(np.bincount(comps.ravel())[1:] >= 20)) if n else 0
    params = sample_softcp(sample_rng(seed, 0), host, donor, brain, n_lesions=max(1, min(n_lesions, big)),
                           intensity_choices=("none",), image_choices=("none",), min_lesion_voxels=20,
                           placement="source", delta2=0.2,
                           seed=seed, sample_index=0)
    syn = softcp(host, donor, params, brain)
    return _finish(name or f"Soft-CP {donor.case_id}->{host.case_id}", host, brain, syn.image, syn.mask, syn.label)


def cross_subject_pastes(cases: Sequence, brains: Sequence | None = None, shifts: Sequence[str] = SHIFTS,
                         methods: Sequence[str] = ("carvemix", "softcp"), seed: int = 0) -> list[Paste]:
    """Every ordered (host, donor) pair of distinct ``cases``, pasted by each method under each shift.

    Shifts: ``"as is"``; ``"donor x0.6"``/``"donor x1.7"``/``"donor bias"`` (the
    donor from another scanner); ``"host outlier"`` (one hot voxel in the host).
    """
    brains = list(brains) if brains is not None else [None] * len(cases)
    out = []
    for hi, host in enumerate(cases):
        for di, donor in enumerate(cases):
            if hi == di:
                continue
            for shift in shifts:
                h, d = host, donor
                if shift.startswith("donor "):
                    d = shift_case(donor, shift.split(" ", 1)[1])
                elif shift.startswith("host "):
                    h = shift_case(host, shift.split(" ", 1)[1])
                elif shift != "as is":
                    raise LesionMixError(f"Unknown shift '{shift}'; expected one of {', '.join(SHIFTS)}.")
                tag = f"{donor.case_id}->{host.case_id} {shift}"
                if "carvemix" in methods:
                    out.append(carvemix_paste(h, d, brains[hi], name=f"CarveMix {tag}"))
                if "softcp" in methods:
                    out.append(softcp_paste(h, d, brains[hi], seed=seed, name=f"Soft-CP {tag}"))
    return out
