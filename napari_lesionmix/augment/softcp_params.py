"""Soft-CP's frozen params: everything needed to replay one sample (:mod:`~napari_lesionmix.augment.softcp`)."""

from __future__ import annotations

from dataclasses import dataclass

from napari_lesionmix.augment.lesions import connectivity_structure
from napari_lesionmix.augment.params import Params
from napari_lesionmix.augment.paste.image_ops import ImageOp
from napari_lesionmix.augment.paste.objects import PastedLesion
from napari_lesionmix.augment.paste.placement import check_delta, parse_reference
from napari_lesionmix.augment.softmask import DEFAULT_A, DEFAULT_K_DILATE, DEFAULT_K_ERODE
from napari_lesionmix.errors import LesionMixError

RIGID_CHOICES = ("none", "flip", "rotation", "scaling", "translation")


INTENSITY_CHOICES = ("none", "gamma", "noise", "blur")


PLACEMENTS = ("random", "source")


DEFAULT_DELTA1 = 0.9


DEFAULT_DELTA2 = 0.0


DEFAULT_MAX_TRIES = 200


@dataclass(frozen=True)
class SkippedLesion:
    """A donor lesion that was drawn but found no position (provenance: why the sample has others).

    Attributes
    ----------
    component : int
        1-based donor component.
    reason : str
        The sentence of :func:`placement_message`.
    """

    component: int
    reason: str


#: Replacement draws per sample for donor lesions that find no position (the bound of "try another lesion").
MAX_REPLACEMENTS = 16


@dataclass(frozen=True)
class SoftCPParams(Params):
    """Everything needed to replay one Soft-CP sample.

    Attributes
    ----------
    host_id, donor_id : str
    lesions : tuple of PastedLesion
        The pasted lesions, in paste order.
    a, k_erode, k_dilate : soft-mask parameters (see :func:`~napari_lesionmix.augment.softmask.soft_mask`).
    delta1, delta2 : float
        The thresholds of Eqs. (3)-(4) the positions were drawn under (provenance).
    reference : str
        "brain_mask", "label:N", "foreground" or "none" (see the module docstring).
    placement : str
        How the positions were drawn: "random" or "source" (provenance).
    image_ops : tuple of ImageOp
        Image-level transforms of the host, in order.
    intensity_compat : bool
        Match the band ring statistics of each lesion to the host's.
    lesion_labels : tuple of int
        Donor/host label values that are lesion; empty: every non-zero value.
    connectivity : int
        6, 18 or 26, for the donor's components.
    order : int
        Spline order of the image resampling (1 or 3).
    seed, sample_index : int or None
        Provenance of the random draw.
    skipped : tuple of SkippedLesion
        Donor lesions drawn first but placed nowhere (each replaced by another draw).
    redrawn : int
        Positions drawn and refused (outside the volume, Eq. 3 or Eq. 4) before the lesions found theirs.
    """

    method = "softcp"
    host_id: str
    donor_id: str
    lesions: tuple[PastedLesion, ...] = ()
    a: float = DEFAULT_A
    k_erode: int = DEFAULT_K_ERODE
    k_dilate: int = DEFAULT_K_DILATE
    delta1: float = DEFAULT_DELTA1
    delta2: float = DEFAULT_DELTA2
    reference: str = "brain_mask"
    placement: str = "random"
    image_ops: tuple[ImageOp, ...] = ()
    intensity_compat: bool = False
    lesion_labels: tuple[int, ...] = ()
    connectivity: int = 26
    order: int = 1
    seed: int | None = None
    sample_index: int | None = None
    skipped: tuple[SkippedLesion, ...] = ()
    redrawn: int = 0

    def __post_init__(self):
        if not self.lesions:
            raise LesionMixError("Soft-CP params need at least one pasted lesion.")
        check_settings(self.a, self.k_erode, self.k_dilate, self.delta1, self.delta2, self.placement)
        parse_reference(self.reference)
        if self.order not in (1, 3):
            raise LesionMixError(f"Image interpolation order must be 1 or 3, got {self.order}.")
        connectivity_structure(self.connectivity)


def check_settings(a: float, k_erode: int, k_dilate: int, delta1: float, delta2: float, placement: str) -> None:
    """The checks Soft-CP's draw and its params share (one sentence each, written once)."""
    if not 0.0 < a < 1.0:
        raise LesionMixError(f"The softening coefficient a must lie in (0, 1), got {a!r}.")
    if k_erode < 0 or k_dilate < 0:
        raise LesionMixError(f"k_erode and k_dilate must be >= 0 iterations, got {k_erode} and {k_dilate}.")
    check_delta(delta1, delta2)
    if placement not in PLACEMENTS:
        raise LesionMixError(f"Unknown placement '{placement}'; choose 'random' or 'source'.")
