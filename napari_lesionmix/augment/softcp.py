"""Soft-CP: soft copy-paste of lesions (Zhang et al., "Soft-CP", section 3).

A lesion (a connected component of a *donor* label) is copied together with
its surroundings through a soft mask S (:mod:`~napari_lesionmix.augment.softmask`,
section 3.2, Figs. 4-5), transformed (section 3.3) and pasted into a *host*
scan at a position that respects the anatomy (section 3.4):

    I_syn = S * I_lesion + (1 - S) * I_host                      (Eq. 1)
    M_syn = M_lesion U M_host                                    (Eq. 2)
    |M_lesion n M_refer| / |M_lesion|  >= delta1                 (Eq. 3)
    |M_lesion n M_host lesions| / |M_lesion|  <= delta2          (Eq. 4)

All image channels share S. Object-level transforms (section 3.3): two rigid
transforms drawn with replacement from [none, flip, rotation, scaling,
translation] and two intensity transforms from [none, gamma, Gaussian noise,
Gaussian blur], applied in the drawn order (rigid ones composed into one
resampling). Image-level transforms act on the host ("the main image does the
image-level transformation to generate background images"): ``n_image_ops``
drawn with replacement from [none, crop-and-resize, gamma, Gaussian noise].

Choices where the paper is silent (each a parameter; defaults in brackets):

* **What is copied.** ``n_lesions`` [1] connected components
  (``connectivity`` [26]) of the donor's lesion labels (``lesion_labels``
  [every non-zero value]) with at least ``min_lesion_voxels`` [1] voxels, drawn
  uniformly without replacement; each gets its own transforms and position.
  Donor lesions that fall inside a chosen lesion's dilated band travel with it
  and are labelled, so no faded, unlabelled lesion tissue is pasted.
* **Soft mask.** S is computed *after* the rigid transforms, from the
  transformed binary lesion mask, so S keeps its definition in host space.
  Its defaults are :data:`~napari_lesionmix.augment.softmask.DEFAULT_A`
  [0.5], ``k_erode`` [1], ``k_dilate`` [4].
* **Constraints.** Eqs. (3)-(4) are measured on the transformed binary
  lesion, as fractions of its volume; Eq. (3) uses ``>=`` and Eq. (4) ``<=``
  so that ``delta1 = 1`` means "wholly inside" and ``delta2 = 0`` [default]
  "no overlap at all". ``delta1`` [0.9]. The reference is the host's brain
  mask ["brain_mask"], a host label value ("label:N", e.g. the kidney for
  kidney tumours), the brain estimated from the host image ("foreground",
  :mod:`~napari_lesionmix.io.brain`; the registry passes that estimate as the
  brain mask when none is given) or the whole volume ("none"). When the reference is a label,
  that label does not count as lesion in Eq. (4). Earlier pastes of the same
  sample count as host lesions for later ones.
* **Placement search.** Each try puts the lesion's centre of mass on a voxel
  drawn uniformly from the reference mask (``placement="random"``, the
  paper's "the location of the kidney tumor is random"), or near the lesion's
  own place in the donor (``"source"``, N(0, ``jitter_mm`` [10]) per axis,
  for registered data where large lesions fit few places); the lesion must
  lie inside the volume (its soft band is clipped at the volume's edge).
  ``max_tries`` [200] tries per lesion; a lesion that finds no place is
  replaced by another draw from the donor's lesions (up to
  :data:`MAX_REPLACEMENTS`, recorded in ``params.skipped`` with the
  constraint that failed most often), and the sample fails
  (:class:`~napari_lesionmix.augment.registry.DrawRejected`) only when no
  lesion is placed.
* **Labels.** Eq. (2) as a union of label maps: the host's values are kept
  and the pasted lesion's voxels take the donor's label values there (so a
  tumour label 2 pasted into a kidney label 1 stays 2). The returned ``mask``
  is the voxel-wise maximum of the pasted soft masks S.
* **Transform ranges.** rotation U(-30, 30) degrees about each axis; isotropic
  scaling U(0.75, 1.25); translation U(-3, 3) voxels per axis; flip of one
  axis drawn uniformly; gamma log-U(0.7, 1.5) on the crop's min/max range;
  noise std U(0, 0.1) x the lesion's std; blur sigma U(0.5, 1.0) voxels.
  Image level: crop-and-resize keeps a box of U(0.85, 1) of each side (one
  factor), zoomed back to the full grid (image linear, labels and reference
  nearest); gamma and noise as above, statistics over the whole volume.
* **Intensity compatibility** (``intensity_compat`` [False], off as in the
  paper): before pasting, each channel of the copied crop is mapped linearly
  so that the mean/std of its band ring (S > 0 outside the lesion) match the
  host's ring at the paste position (host lesions excluded). This is local
  (the tissue around one lesion against the tissue where it lands) and is not
  the registry's shared ``intensity_match`` (one map of the whole donor's
  normal brain onto the host's, :mod:`~napari_lesionmix.augment.intensity`),
  which runs first when both are on.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from napari_lesionmix.augment.distance import bounding_box
from napari_lesionmix.augment.params import Synthetic
from napari_lesionmix.augment.paste.image_ops import (
    IMAGE_CHOICES,
    ImageOp,
    apply_image_ops,
    sample_image_ops,
)
from napari_lesionmix.augment.paste.objects import (
    DonorLesions,
    PastedLesion,
    PasteObject,
    prepare_object,
)
from napari_lesionmix.augment.paste.placement import (
    constraints,
    fits,
    host_lesions,
    parse_reference,
    paste_boxes,
    place,
    placement_message,
    reference_region,
    tissue_region,
)
from napari_lesionmix.augment.registry import (
    DrawRejected,
    Inputs,
    Method,
    Options,
    Sources,
    option,
    register,
)
from napari_lesionmix.augment.softcp_params import (
    DEFAULT_DELTA1,
    DEFAULT_DELTA2,
    DEFAULT_MAX_TRIES,
    INTENSITY_CHOICES,
    MAX_REPLACEMENTS,
    PLACEMENTS,
    RIGID_CHOICES,
    SkippedLesion,
    SoftCPParams,
    check_settings,
)
from napari_lesionmix.augment.softmask import (
    DEFAULT_A,
    DEFAULT_K_DILATE,
    DEFAULT_K_ERODE,
    soft_paste,
)
from napari_lesionmix.augment.transforms import (
    sample_intensity,
    sample_rigid,
)
from napari_lesionmix.errors import LesionMixError
from napari_lesionmix.io.nifti import Case, check_same_grid
from napari_lesionmix.io.position import format_position

#: Names that moved to :mod:`napari_lesionmix.augment.paste` (shared with the other copy-paste
#: methods) and stay importable from here.
__all__ = ["DonorLesions", "ImageOp", "IMAGE_CHOICES", "PastedLesion", "PasteObject", "SoftCPMethod", "SoftCPOptions", "SoftCPParams",
           "place_at", "reference_region", "sample_softcp", "softcp", "tissue_region"]


# --------------------------------------------------------------------------- params


# --------------------------------------------------------------------------- donor lesions


# --------------------------------------------------------------------------- image-level


# --------------------------------------------------------------------------- reference


# --------------------------------------------------------------------------- placement


# --------------------------------------------------------------------------- sample / apply


def sample_softcp(
    rng: np.random.Generator,
    host: Case,
    donor: Case,
    reference_mask: np.ndarray | None = None,
    *,
    reference: str | None = None,
    n_lesions: int = 1,
    a: float = DEFAULT_A,
    k_erode: int = DEFAULT_K_ERODE,
    k_dilate: int = DEFAULT_K_DILATE,
    delta1: float = DEFAULT_DELTA1,
    delta2: float = DEFAULT_DELTA2,
    max_tries: int = DEFAULT_MAX_TRIES,
    placement: str = "random",
    jitter_mm: float = 10.0,
    rigid_choices: Sequence[str] = RIGID_CHOICES,
    intensity_choices: Sequence[str] = INTENSITY_CHOICES,
    n_rigid: int = 2,
    n_intensity: int = 2,
    image_choices: Sequence[str] = IMAGE_CHOICES,
    n_image_ops: int = 1,
    max_angle: float = 30.0,
    scale_range: tuple[float, float] = (0.75, 1.25),
    max_translation: float = 3.0,
    intensity_compat: bool = False,
    lesion_labels: Sequence[int] = (),
    min_lesion_voxels: int = 1,
    connectivity: int = 26,
    order: int = 1,
    seed: int | None = None,
    sample_index: int | None = None,
    donor_lesions: DonorLesions | None = None,
) -> SoftCPParams:
    """Draw Soft-CP params: lesions, object and image transforms, and positions (Eqs. 3-4).

    Parameters
    ----------
    rng : numpy.random.Generator
        The only source of randomness.
    host, donor : Case
        Same grid and channels; the donor must have a lesion.
    reference_mask : ndarray, optional
        The host's brain (or organ) mask for Eq. (3).
    reference : str, optional
        "brain_mask" (default when ``reference_mask`` is given), "label:N",
        "foreground" (default otherwise) or "none".
    n_lesions : int
        Donor lesions pasted (distinct components).
    delta1, delta2 : float
        Thresholds of Eqs. (3) and (4), fractions of the lesion volume.
    max_tries : int
        Positions tried per lesion before giving up.
    placement : {"random", "source"}
        "random" (the paper): the lesion's centre of mass on a voxel drawn
        uniformly from the reference. "source": near the lesion's own place in
        the donor, ``N(0, jitter_mm)`` per axis -- for registered datasets,
        where large lesions rarely fit elsewhere.
    jitter_mm : float
        Standard deviation of the "source" placement, in mm.
    rigid_choices, intensity_choices, n_rigid, n_intensity
        Object-level transforms: ``n_rigid`` drawn with replacement from
        ``rigid_choices``, ``n_intensity`` from ``intensity_choices`` (section 3.3).
    image_choices, n_image_ops
        Image-level transforms of the host.
    max_angle, scale_range, max_translation
        Ranges of the rigid transforms (degrees, factor, voxels).
    min_lesion_voxels : int
        Only donor lesions at least this large are candidates.
    donor_lesions : DonorLesions, optional
        The donor's components, precomputed (cache per donor).

    Returns
    -------
    SoftCPParams
    """
    check_same_grid(host, donor)
    host.require_label("Host", "Soft-CP")
    check_settings(a, k_erode, k_dilate, delta1, delta2, placement)
    if max_tries < 1:
        raise LesionMixError(f"max_tries must be at least 1, got {max_tries}.")
    if not (math.isfinite(jitter_mm) and jitter_mm >= 0):
        raise LesionMixError(f"jitter_mm must be >= 0 mm, got {jitter_mm!r}.")
    if n_lesions < 1:
        raise LesionMixError(f"n_lesions must be at least 1, got {n_lesions}.")
    for name, choices, allowed in (("rigid", rigid_choices, RIGID_CHOICES),
                                   ("intensity", intensity_choices, INTENSITY_CHOICES),
                                   ("image-level", image_choices, IMAGE_CHOICES)):
        bad = [c for c in choices if c not in allowed]
        if bad or not choices:
            raise LesionMixError(
                f"Unknown {name} transform(s) {bad or '(none given)'}; choose from {', '.join(allowed)}."
            )
    if reference is None:
        reference = "brain_mask" if reference_mask is not None else "foreground"
    lesions = donor_lesions
    if lesions is None or lesions.lesion_labels != tuple(lesion_labels) or lesions.connectivity != connectivity:
        lesions = DonorLesions.from_case(donor, lesion_labels, connectivity)
    candidates = np.flatnonzero(lesions.sizes[1:] >= min_lesion_voxels) + 1
    if candidates.size < n_lesions:
        raise LesionMixError(
            f"Donor '{donor.case_id}' has {candidates.size} lesion(s) of at least {min_lesion_voxels} "
            f"voxel(s) but {n_lesions} were asked for."
        )
    ref = reference_region(host, reference, reference_mask)

    image_ops = sample_image_ops(rng, host.shape, image_choices, n_image_ops)
    if any(op.kind == "crop_resize" for op in image_ops):
        _, label, ref = apply_image_ops(host.image[:0], host.label, ref, image_ops)
        if ref is not None and not ref.any():
            raise LesionMixError(f"The reference region '{reference}' is empty after crop-and-resize.")
    else:
        label = host.label
    occupied = host_lesions(label, lesion_labels, reference)
    ref_box = tuple(slice(0, n) for n in host.shape) if ref is None else bounding_box(ref)

    chosen = [int(c) for c in rng.choice(candidates, size=n_lesions, replace=False)]
    # A drawn lesion that fits nowhere (a 47 mL confluent lesion in a small brain) is replaced by
    # another draw from the lesions not yet drawn, up to MAX_REPLACEMENTS times; the sample fails
    # only when none is placed. When every lesion fits, the draws are those of the plain loop.
    spare = [int(c) for c in candidates if int(c) not in set(chosen)]
    queue = list(chosen)
    pasted, skipped, redrawn = [], [], 0
    while queue:
        component = queue.pop(0)
        # Transforms that empty the lesion (e.g. a 1-voxel lesion scaled down) are redrawn.
        for _attempt in range(10):
            rigid = tuple(sample_rigid(rng, str(rigid_choices[int(rng.integers(len(rigid_choices)))]),
                                       max_angle, scale_range, max_translation) for _ in range(n_rigid))
            inten = tuple(sample_intensity(rng, str(intensity_choices[int(rng.integers(len(intensity_choices)))]))
                          for _ in range(n_intensity))
            obj = prepare_object(donor, lesions, component, rigid, inten, a, k_erode, k_dilate, order)
            if obj is not None:
                break
        else:
            rigid = ()
            obj = prepare_object(donor, lesions, component, rigid, inten, a, k_erode, k_dilate, order)
        source = jit = None
        if placement == "source":
            box = lesions.boxes[component - 1]
            local = np.argwhere(lesions.components[box] == component).mean(axis=0)
            source = local + [b.start for b in box]
            if any(op.kind == "crop_resize" for op in image_ops):
                for op in image_ops:  # follow the host's zoom: crop coordinate -> output voxel
                    if op.kind == "crop_resize":
                        source = (source - op.start + 0.5) * np.asarray(host.shape) / op.size - 0.5
            jit = float(jitter_mm) / np.asarray(host.spacing)
        offset, counts = place(rng, obj, ref, ref_box, occupied, delta1, delta2, max_tries, source, jit)
        if offset is None:
            skipped.append(SkippedLesion(component, placement_message(component, obj, counts, reference, delta1,
                                                                       delta2, max_tries, placement)))
            if spare and len(skipped) <= MAX_REPLACEMENTS:
                queue.append(spare.pop(int(rng.integers(len(spare)))))
            continue
        redrawn += sum(counts.values())
        box, cbox = paste_boxes(offset, obj.shape, host.shape)
        occupied[box] |= obj.lesion[cbox]
        pasted.append(PastedLesion(component, rigid, inten, offset))
    if not pasted:
        more = f" The {len(skipped) - 1} other drawn lesion(s) found none either." if len(skipped) > 1 else ""
        raise DrawRejected(skipped[0].reason + more)
    return SoftCPParams(
        host.case_id, donor.case_id, tuple(pasted), float(a), int(k_erode), int(k_dilate), float(delta1),
        float(delta2), reference, placement, image_ops, bool(intensity_compat), tuple(int(v) for v in lesion_labels),
        int(connectivity), int(order), seed, sample_index, tuple(skipped), int(redrawn),
    )


def _match_ring(obj: PasteObject, host_image: np.ndarray, host_lesions: np.ndarray, box) -> np.ndarray:
    """Optional intensity compatibility: match the band ring's mean/std to the host's, per channel."""
    ring = (obj.soft > 0) & ~obj.lesion & ~host_lesions[box]
    if np.count_nonzero(ring) < 2:
        return obj.image
    out = obj.image.copy()
    for c in range(out.shape[0]):
        d = out[c][ring]
        h = host_image[c][box][ring]
        sd_d, sd_h = float(d.std()), float(h.std())
        scale = sd_h / sd_d if sd_d > 0 else 1.0
        out[c] = ((out[c] - float(d.mean())) * scale + float(h.mean())).astype(np.float32)
    return out


def softcp(
    host: Case,
    donor: Case,
    params: SoftCPParams,
    reference_mask: np.ndarray | None = None,
    donor_lesions: DonorLesions | None = None,
) -> Synthetic:
    """Apply Soft-CP params to a host/donor pair (deterministic).

    Parameters
    ----------
    host, donor : Case
        Same grid and channels.
    params : SoftCPParams
    reference_mask : ndarray, optional
        Accepted so that sampling and applying take the same arguments; the
        blend does not need it (the positions that satisfy Eqs. 3-4 are in
        ``params``), so it is only checked for shape.
    donor_lesions : DonorLesions, optional
        The donor's components, precomputed.

    Returns
    -------
    Synthetic
        ``image`` from Eq. (1) (all channels share S), ``label`` from Eq. (2)
        (host values kept, donor lesion values on the pasted lesions) and
        ``mask`` the union (max) of the pasted soft masks S in host space.
    """
    check_same_grid(host, donor)
    host.require_label("Host", "Soft-CP")
    if reference_mask is not None and np.shape(reference_mask) != host.shape:
        raise LesionMixError(
            f"The brain mask has shape {np.shape(reference_mask)} but host '{host.case_id}' has {host.shape}."
        )
    lesions = donor_lesions
    if lesions is None or not lesions.matches(params, donor.shape):
        lesions = DonorLesions.from_case(donor, params.lesion_labels, params.connectivity)
    if params.image_ops and any(op.kind != "none" for op in params.image_ops):
        image, label, _ = apply_image_ops(host.image, host.label, None, params.image_ops, params.order)
    else:
        image, label = host.image.copy(), host.label
    label = label.astype(np.result_type(label.dtype, donor.label.dtype), copy=True)
    host_les = host_lesions(label, params.lesion_labels, params.reference) if params.intensity_compat else None
    mask = np.zeros(host.shape, np.float32)
    for p in params.lesions:
        obj = prepare_object(donor, lesions, p.component, p.rigid, p.intensity, params.a, params.k_erode,
                       params.k_dilate, params.order)
        if obj is None:
            raise LesionMixError(f"The transforms of donor lesion {p.component} leave no lesion voxel.")
        if not fits(p.offset, obj, host.shape):
            raise LesionMixError(
                f"Donor lesion {p.component} at offset {p.offset} does not fit in the host volume {host.shape}."
            )
        box, cbox = paste_boxes(p.offset, obj.shape, host.shape)
        obj = obj.crop(cbox)
        lesion_image = obj.image
        if params.intensity_compat:
            lesion_image = _match_ring(obj, image, host_les, box)
            host_les[box] |= obj.lesion
        # Eq. (1): I_syn = S * I_lesion + (1 - S) * I_host (soft-paste), S shared by all channels.
        soft_paste(image, mask, box, obj.soft, lesion_image)
        # Eq. (2): M_syn = M_lesion U M_host (the pasted lesion keeps its donor label value).
        np.copyto(label[box], obj.label.astype(label.dtype), where=obj.lesion)
    return Synthetic(image=image.astype(np.float32, copy=False), label=label, mask=mask, params=params)


def place_at(rng: np.random.Generator, host, donor, brain, voxel, lesions: DonorLesions, *, reference: str,
                 delta1: float, delta2: float, seed=None, sample_index=None, **kwargs) -> SoftCPParams:
    """Soft-CP params pasting one donor lesion with its centre of mass at ``voxel`` (the studio's click).

    The lesion and its object-level transforms are drawn by
    :func:`sample_softcp` (with the constraints relaxed, so the draw does not
    depend on them); then the offset is moved so the transformed lesion's
    centre of mass (as :func:`sample_softcp` computes it) lands on ``voxel``,
    and Eqs. (3)-(4) are checked at that position.

    Raises
    ------
    LesionMixError
        The lesion does not fit in the volume there, or breaks Eq. (3) or (4).
    """
    kwargs = {**kwargs, "n_lesions": 1, "image_choices": ("none",), "n_image_ops": 0, "placement": "random"}
    kwargs.pop("max_tries", None)
    drawn = sample_softcp(rng, host, donor, brain, reference="none", delta1=0.0, delta2=1.0,
                          donor_lesions=lesions, **kwargs)
    p = drawn.lesions[0]
    # The same transformed object sample_softcp placed (its centre of mass defines the offset).
    obj = prepare_object(donor, lesions, p.component, p.rigid, p.intensity, drawn.a, drawn.k_erode,
                        drawn.k_dilate, drawn.order)
    com = np.round(np.argwhere(obj.lesion).mean(axis=0)).astype(int)
    offset = tuple(int(v - c) for v, c in zip(voxel, com, strict=True))
    at = format_position(voxel, host.affine)
    if not fits(offset, obj, host.shape):
        raise LesionMixError(
            f"Donor lesion {p.component} ({int(obj.lesion.sum())} voxels) centred on {at} does "
            f"not fit inside the host volume {host.shape}; click further from the edge."
        )
    ref = reference_region(host, reference, brain)
    occupied = host_lesions(host.label, kwargs.get("lesion_labels", ()), reference)
    inside, overlap = constraints(obj, offset, ref, occupied)
    if inside < delta1:  # Eq. (3)
        raise LesionMixError(
            f"At {at} only {inside:.0%} of donor lesion {p.component} lies in the reference "
            f"'{reference}' (delta1 = {delta1:.0%}); click inside it or lower delta1."
        )
    if overlap > delta2:  # Eq. (4)
        raise LesionMixError(
            f"At {at} {overlap:.0%} of donor lesion {p.component} overlaps the host's lesions "
            f"(delta2 = {delta2:.0%}); click elsewhere or raise delta2."
        )
    return dataclasses.replace(drawn, lesions=(dataclasses.replace(p, offset=offset),), delta1=float(delta1),
                               delta2=float(delta2), reference=reference, seed=seed, sample_index=sample_index)


# --------------------------------------------------------------------------- the registered method


@dataclass(frozen=True)
class SoftCPOptions(Options):
    """Settings of Soft-CP (the CLI flags and export ``softcp.NAME`` keys); see the module docstring."""

    n_lesions: int = option(1, "donor lesions pasted", low=1)
    a: float = option(DEFAULT_A, "softening coefficient of the soft mask", low=0.0, high=1.0,
                      open_low=True, open_high=True)
    k_erode: int = option(DEFAULT_K_ERODE, "erosion iterations of the soft mask's core", low=0)
    k_dilate: int = option(DEFAULT_K_DILATE, "dilation iterations of the soft mask's band", low=0)
    delta1: float = option(DEFAULT_DELTA1, "least fraction of the lesion inside the reference (Eq. 3)",
                           low=0.0, high=1.0)
    delta2: float = option(DEFAULT_DELTA2, "largest fraction of the lesion on host lesions (Eq. 4)",
                           low=0.0, high=1.0)
    reference: str | None = option(None, "Eq. 3 reference: brain_mask, label:N, foreground, tissue (the brain "
                                         "without its darkest 10 %: no lesion in CSF) or none "
                                         "[brain_mask with a brain mask, else foreground]")
    max_tries: int = option(DEFAULT_MAX_TRIES, "positions tried per lesion", low=1)
    placement: str = option("random", "random: anywhere in the reference (the paper); source: near the "
                                      "lesion's own place in the donor (registered data)", choices=PLACEMENTS)
    jitter_mm: float = option(10.0, "spread of placement 'source', in mm", low=0.0)
    n_image_ops: int = option(1, "image-level transforms of the host drawn from none/crop_resize/gamma/noise",
                              low=0, flag="--image-ops")
    intensity_compat: bool = option(False, "match the lesion's surrounding-ring statistics to the host's "
                                           "(off in the paper)")
    lesion_labels: tuple[int, ...] = option((), "label values that are lesion (default: every non-zero value)",
                                            low=1, flag="--lesion-label")
    connectivity: int = option(26, "connectivity of the donor's lesions", choices=(6, 18, 26))
    rigid_choices: tuple[str, ...] = option(RIGID_CHOICES, "object-level rigid transforms each lesion draws "
                                            "from (with replacement; none: keep it as is)",
                                            choices=RIGID_CHOICES, flag="--rigid")
    intensity_choices: tuple[str, ...] = option(INTENSITY_CHOICES, "object-level intensity transforms each "
                                                "lesion draws from", choices=INTENSITY_CHOICES,
                                                flag="--lesion-intensity")
    image_choices: tuple[str, ...] = option(IMAGE_CHOICES, "image-level transforms of the host drawn from",
                                            choices=IMAGE_CHOICES, flag="--image-op")
    at_voxel: tuple[int, ...] = option((), "paste one donor lesion with its centre of mass on this file voxel "
                                           "(i j k; the studio's place at cursor) instead of a drawn position; "
                                           "image-level transforms off", low=0)

    def __post_init__(self):
        super().__post_init__()
        if self.reference is not None:
            parse_reference(self.reference)
        for name in ("rigid_choices", "intensity_choices", "image_choices"):
            if not getattr(self, name):
                raise LesionMixError(f"Option softcp.{name} needs at least one transform ('none' for none).")
        if self.at_voxel and len(self.at_voxel) != 3:
            raise LesionMixError(f"Option softcp.at_voxel must be three voxel indices i j k, got {self.at_voxel}.")


@register
class SoftCPMethod(Method):
    """Soft-CP through the :mod:`~napari_lesionmix.augment.registry` protocol.

    The host's brain mask (``Inputs.brain_mask``) is the Eq. (3) reference when
    there is one. A draw whose lesions find no place raises
    :class:`~napari_lesionmix.augment.registry.DrawRejected`, so batch export
    can try another donor.
    """

    name = "softcp"
    label = "Soft-CP"
    summary = "soft-copy a donor lesion with its surroundings and soft-paste it into a host scan"
    Options = SoftCPOptions
    Params = SoftCPParams

    def prepare(self, sources: Sources, options: SoftCPOptions):
        return DonorLesions.loader(sources, options.lesion_labels, options.connectivity)

    def sample(self, rng, inputs: Inputs, options: SoftCPOptions, resources) -> SoftCPParams:
        kwargs = options.to_dict()
        kwargs.pop("intensity_match")  # the registry's shared step, not Soft-CP's
        # The tuples as declared (to_dict gives lists).
        kwargs.update({k: getattr(options, k) for k in ("lesion_labels", "rigid_choices", "intensity_choices",
                                                        "image_choices")})
        voxel = kwargs.pop("at_voxel")
        if voxel:
            reference = options.reference or ("brain_mask" if inputs.brain_mask is not None else "foreground")
            kwargs.pop("reference")
            return place_at(rng, inputs.host, inputs.donor, inputs.brain_mask, voxel, resources(inputs.donor),
                            reference=reference, **kwargs)
        return sample_softcp(rng, inputs.host, inputs.donor, inputs.brain_mask,
                             donor_lesions=resources(inputs.donor), **kwargs)

    def apply(self, inputs: Inputs, params: SoftCPParams, resources) -> Synthetic:
        return softcp(inputs.host, inputs.donor, params, inputs.brain_mask, donor_lesions=resources(inputs.donor))

    def options_for(self, params: SoftCPParams) -> SoftCPOptions:
        return SoftCPOptions(lesion_labels=params.lesion_labels, connectivity=params.connectivity)

    def describe(self, synthetic: Synthetic) -> str:
        p = synthetic.params
        ops = ",".join(op.kind for op in p.image_ops) or "none"
        line = (f"{len(p.lesions)} lesion(s) pasted (components {', '.join(str(x.component) for x in p.lesions)}), "
                f"image ops {ops}, soft mask {int(np.count_nonzero(synthetic.mask))} voxels, "
                f"{p.redrawn} position(s) redrawn")
        if p.skipped:
            line += (f"; {len(p.skipped)} drawn lesion(s) skipped (components "
                     f"{', '.join(str(x.component) for x in p.skipped)}: {p.skipped[0].reason})")
        return line
