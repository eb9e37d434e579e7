"""A donor's lesions, and one transformed, soft-masked lesion crop ready to paste (Soft-CP section 3.2-3.3)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from scipy import ndimage as ndi

from napari_lesionmix.augment.lesions import connectivity_rank
from napari_lesionmix.augment.softmask import soft_mask_box
from napari_lesionmix.augment.transforms import (
    AffineParams,
    IntensityParams,
    apply_intensity,
    warp_crop,
)
from napari_lesionmix.errors import LesionMixError
from napari_lesionmix.io.morphology import connected_components
from napari_lesionmix.io.nifti import Case


@dataclass(frozen=True)
class PastedLesion:
    """One pasted donor lesion.

    Attributes
    ----------
    component : int
        1-based index of the donor's connected component (``scipy.ndimage.label``
        order of the lesion mask with the params' connectivity).
    rigid : tuple of AffineParams
        Object-level rigid transforms, in order (composed into one resampling).
    intensity : tuple of IntensityParams
        Object-level intensity transforms, in order, after the rigid ones.
    offset : tuple of 3 int
        Host voxel of the corner of the pasted crop (lesion plus soft band).
    """

    component: int
    rigid: tuple[AffineParams, ...] = ()
    intensity: tuple[IntensityParams, ...] = ()
    offset: tuple[int, int, int] = (0, 0, 0)


class DonorLesions:
    """The connected lesions of a donor label, found once (cache it per donor).

    Parameters
    ----------
    label : ndarray, 3D
    lesion_labels : sequence of int
        Label values that are lesion; empty: every non-zero value.
    connectivity : int
    """

    def __init__(self, label: np.ndarray, lesion_labels: Sequence[int] = (), connectivity: int = 26):
        self.lesion_labels = tuple(int(v) for v in lesion_labels)
        self.connectivity = int(connectivity)
        self.mask = lesion_mask(label, self.lesion_labels)
        self.components, self.n = connected_components(self.mask, connectivity_rank(connectivity))
        self.boxes = ndi.find_objects(self.components)
        self.sizes = np.bincount(self.components.ravel(), minlength=self.n + 1)
        self.shape = self.mask.shape

    @classmethod
    def from_case(cls, donor: Case, lesion_labels: Sequence[int] = (), connectivity: int = 26) -> DonorLesions:
        donor.require_lesion("Donor")
        lesions = cls(donor.label, lesion_labels, connectivity)
        if lesions.n == 0:
            where = donor.label_path or donor.case_id
            raise LesionMixError(
                f"Donor label '{where}' has no voxels with the lesion label value(s) {list(lesion_labels)}."
            )
        return lesions

    @classmethod
    def loader(cls, sources, lesion_labels: Sequence[int] = (), connectivity: int = 26):
        """``donor -> DonorLesions``, found once per donor in ``sources``' cache (a method's ``prepare``).

        Soft-CP and TumorCP share the entries: the same donor, labels and connectivity give the same lesions.
        """
        labels, conn = tuple(lesion_labels), int(connectivity)

        def lesions_of(donor: Case) -> DonorLesions:
            return sources.cached(("donor-lesions", donor.case_id, labels, conn),
                                  lambda: cls.from_case(donor, labels, conn))

        return lesions_of

    def matches(self, params, shape) -> bool:
        return (self.lesion_labels == tuple(params.lesion_labels) and self.connectivity == params.connectivity
                and tuple(shape) == self.shape)


def lesion_mask(label: np.ndarray, lesion_labels: Sequence[int]) -> np.ndarray:
    if lesion_labels:
        return np.isin(label, np.asarray(lesion_labels))
    return np.asarray(label) != 0


def grow_box(box, margin, shape):
    return tuple(slice(max(b.start - m, 0), min(b.stop + m, n)) for b, m, n in zip(box, margin, shape, strict=True))


def union_box(boxes):
    return tuple(slice(min(b[a].start for b in boxes), max(b[a].stop for b in boxes)) for a in range(3))


@dataclass
class PasteObject:
    """A transformed lesion crop ready to paste: image, binary lesion, label values and S."""

    image: np.ndarray   # (C, i, j, k) float32
    lesion: np.ndarray  # bool
    label: np.ndarray   # donor label values on ``lesion``, 0 elsewhere
    soft: np.ndarray    # S, float32

    @property
    def shape(self):
        return self.lesion.shape

    @cached_property
    def lesion_box(self) -> tuple[slice, ...]:
        return ndi.find_objects(self.lesion.view(np.uint8))[0]

    @cached_property
    def n_voxels(self) -> int:
        return int(np.count_nonzero(self.lesion))

    def crop(self, box) -> PasteObject:
        return PasteObject(self.image[(slice(None), *box)], self.lesion[box], self.label[box], self.soft[box])


def prepare_object(
    donor: Case,
    lesions: DonorLesions,
    component: int,
    rigid: Sequence[AffineParams],
    intensity: Sequence[IntensityParams],
    a: float,
    k_erode: int,
    k_dilate: int,
    order: int,
) -> PasteObject | None:
    """Soft-copy one donor lesion: crop, transform, soft mask; ``None`` if the transform empties it."""
    if not 1 <= component <= lesions.n:
        raise LesionMixError(
            f"Donor lesion {component} does not exist; the donor has {lesions.n} lesion(s)."
        )
    spacing = donor.spacing
    step = min(spacing)
    reach = [int(math.ceil(k_dilate * step / s)) + 1 for s in spacing]
    # Donor lesions within the chosen one's dilated band travel with it.
    comps = lesions.components
    near = grow_box(lesions.boxes[component - 1], reach, lesions.shape)
    sub = comps[near]
    dist_out = ndi.distance_transform_edt(sub != component, sampling=spacing) / step
    ids = np.unique(sub[(dist_out <= k_dilate) & (sub > 0)])
    # Margin: the band after the smallest scaling, plus the translation range.
    lin_scale = 1.0
    shift = 0.0
    for tr in rigid:
        lin_scale *= min(tr.scale)
        shift += max(abs(v) for v in tr.translation)
    margin = [int(math.ceil((k_dilate + 2) * step / s / min(lin_scale, 1.0) + shift)) + 1 for s in spacing]
    box = grow_box(union_box([lesions.boxes[i - 1] for i in ids]), margin, lesions.shape)
    crop_comps = comps[box]
    obj = np.isin(crop_comps, ids)
    label = np.where(obj, donor.label[box], 0)
    image = donor.image[(slice(None), *box)]

    if rigid and not all(t.is_identity for t in rigid):
        image, obj_w = warp_crop(image, obj, rigid, spacing, order=order, mask_mode="threshold")
        values = np.unique(label[obj])
        if values.size == 1:
            label = np.where(obj_w, values[0], 0).astype(donor.label.dtype)
        else:
            _, lab_w = warp_crop(np.zeros((0, *obj.shape), np.float32), label, rigid, spacing,
                                 mask_mode="nearest", output_shape=obj_w.shape)
            lab_w = np.where(obj_w, lab_w, 0)
            lab_w[obj_w & (lab_w == 0)] = values.max()
            label = lab_w
        obj = obj_w
    else:
        image = image.astype(np.float32, copy=True)
    if not obj.any():
        return None
    if intensity:
        image = apply_intensity(image, intensity, region=obj)
    res = soft_mask_box(obj, a, k_erode, k_dilate, spacing)
    sbox, soft = res
    return PasteObject(image[(slice(None), *sbox)], obj[sbox], label[sbox], soft)
