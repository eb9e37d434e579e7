"""LesionMix's frozen params: everything needed to replay one sample (:mod:`~napari_lesionmix.augment.lesionmix`)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from napari_lesionmix.augment.lesion_load import LoadDistribution
from napari_lesionmix.augment.params import Params
from napari_lesionmix.augment.paste.warp import LesionAugment, LesionTransform
from napari_lesionmix.augment.softmask import DEFAULT_A, DEFAULT_K_DILATE, DEFAULT_K_ERODE
from napari_lesionmix.errors import LesionMixError

MODES = ("populate", "inpaint")


@dataclass(frozen=True)
class Insertion:
    """One pasted lesion: source, transform and the host voxel its centroid goes to."""

    case_id: str
    lesion_index: int
    position: tuple[int, int, int]
    transform: LesionTransform = field(default_factory=LesionTransform)


@dataclass(frozen=True)
class LesionMixParams(Params):
    """Everything needed to replay one LesionMix sample.

    Attributes
    ----------
    host_id : str
    mode : {"populate", "inpaint"}
    target_load_ml, host_load_ml, reached_load_ml, tolerance_ml : float
        Target, starting and reached lesion load (mL), and the tolerance.
    target_reached : bool
        ``|reached - target| <= tolerance``.
    insertions : tuple of Insertion
        Populate mode: pasted lesions, in paste order.
    removals : tuple of int
        Inpaint mode: removed host lesion indices (components of the host label).
    distribution : LoadDistribution or None
        Where the target was drawn from (``None`` for a given target).
    augment : LesionAugment
        Interpolation settings used by the transforms (and the draw ranges).
    soft_a, soft_erode, soft_dilate : float, int, int
        Soft mask coefficient ``a`` and erosion/dilation iterations (Soft-CP).
    brain_clip : bool
        Pasted lesions were clipped to the host's brain mask (replay needs it).
    intensity_match : {"none", "median"}
        ``"median"`` scales each pasted lesion, per channel, by the ratio of the
        host's to the source case's normal-tissue median (``host_reference`` /
        :attr:`Lesion.reference`), so lesions from brighter scans keep their
        contrast to the tissue rather than their raw values.
    host_reference : tuple of float
        The host's per-channel normal-tissue median (recorded for replay).
    connectivity : int
        Lesion components (host removals and the bank).
    bank_margin : int
        Crop margin of the bank's lesions (it frames the transforms, so replay needs the same).
    inpaint_radius, inpaint_axes, inpaint_dilate
        See :func:`~napari_lesionmix.augment.inpaint.inpaint_telea`.
    seed, sample_index : int or None
        Provenance.
    redrawn : int
        Populate: insertion draws refused (too large, outside the volume, on
        other lesions, over the target) before the pasted ones were found.
    redrawn_outside_brain : int
        Of those, the ones refused because less than ``min_brain_fraction`` of
        the lesion lay in the host's brain.
    """

    method = "lesionmix"
    host_id: str
    mode: str
    target_load_ml: float
    host_load_ml: float
    reached_load_ml: float
    tolerance_ml: float
    target_reached: bool
    insertions: tuple[Insertion, ...] = ()
    removals: tuple[int, ...] = ()
    distribution: LoadDistribution | None = None
    augment: LesionAugment = field(default_factory=LesionAugment)
    soft_a: float = DEFAULT_A
    soft_erode: int = DEFAULT_K_ERODE
    soft_dilate: int = DEFAULT_K_DILATE
    brain_clip: bool = False
    intensity_match: str = "none"
    host_reference: tuple[float, ...] = ()
    connectivity: int = 26
    bank_margin: int = 4
    inpaint_radius: float = 3.0
    inpaint_axes: tuple[int, ...] = (0, 1, 2)
    inpaint_dilate: int = 1
    seed: int | None = None
    sample_index: int | None = None
    redrawn: int = 0
    redrawn_outside_brain: int = 0

    def __post_init__(self):
        if self.mode not in MODES:
            raise LesionMixError(f"LesionMix mode must be 'populate' or 'inpaint', got '{self.mode}'.")
        if not np.isfinite(self.target_load_ml) or self.target_load_ml < 0:
            raise LesionMixError(f"Target lesion load must be a finite value >= 0 mL, got {self.target_load_ml}.")
        if self.mode == "inpaint" and self.insertions:
            raise LesionMixError("Inpaint-mode LesionMix params cannot hold insertions.")
        if self.mode == "populate" and self.removals:
            raise LesionMixError("Populate-mode LesionMix params cannot hold removals.")
        if not 0.0 < float(self.soft_a) < 1.0:
            raise LesionMixError(f"The soft mask coefficient a must lie in (0, 1), got {self.soft_a}.")
        if min(int(self.soft_erode), int(self.soft_dilate), int(self.inpaint_dilate)) < 0:
            raise LesionMixError("Soft mask erosion/dilation and inpainting dilation must be >= 0 iterations.")
        if self.connectivity not in (6, 18, 26):
            raise LesionMixError(f"Connectivity must be 6, 18 or 26, got {self.connectivity}.")
        if self.intensity_match not in ("none", "median"):
            raise LesionMixError(f"Intensity matching must be 'none' or 'median', got '{self.intensity_match}'.")

    def report(self, max_insertions: int | None = None) -> str:
        """One line: reached vs target load.

        ``max_insertions``: the cap the sample was drawn with (not recorded in the params); a target
        missed with that many lesions pasted says it stopped at the cap, not for want of room.
        """
        ok = "reached" if self.target_reached else "NOT reached"
        n = f"{len(self.insertions)} lesion(s) pasted" if self.mode == "populate" else f"{len(self.removals)} lesion(s) inpainted"
        if (self.mode == "populate" and not self.target_reached and max_insertions
                and len(self.insertions) >= max_insertions):
            n += f", the cap: max_insertions = {max_insertions}"
        if self.redrawn:
            n += f"; {self.redrawn} draw(s) refused, {self.redrawn_outside_brain} of them outside the brain"
        return (
            f"{self.mode}: host {self.host_load_ml:.3f} mL -> {self.reached_load_ml:.3f} mL, target "
            f"{self.target_load_ml:.3f} +/- {self.tolerance_ml:.3f} mL {ok} ({n})"
        )
