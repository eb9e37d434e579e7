"""Lesion extraction and the lesion bank of LesionMix.

LesionMix (Basaran et al., 2023, Sec. 2) works on individual lesions: the
connected components of a case's lesion label. Each :class:`Lesion` keeps its
crop (image channels, label values, component mask) with a margin of
surrounding tissue, so that a pasted lesion can be blended with a soft mask
that extends past its boundary.

Choices where the paper is silent (parameters, with defaults):

* components are found on ``label != 0`` (any class is lesion), with
  26-connectivity (``connectivity=6|18|26``); multi-class label values inside a
  component are kept;
* ``margin=4`` voxels of context around each component's bounding box (enough
  for the soft mask's dilation and fall-off);
* ``min_voxels=1``: every component is a lesion (raise it to drop specks);
* lesion ``index`` is the 0-based position in ``scipy.ndimage.label`` order
  (raster order of each component's first voxel), stable for a given label.

The :class:`LesionBank` loads cases lazily and caches their lesions, so a
dataset's lesions are extracted once per process however many samples use them.
It extracts them from the labels alone (drawing needs each lesion's mask and
volume, not its pixels) and reads a case's image the first time one of its
lesions is pasted (:class:`CaseImage`).
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field, replace

import numpy as np
from scipy import ndimage as ndi

from napari_lesionmix.augment.distance import bounding_box
from napari_lesionmix.augment.intensity import normal_brain
from napari_lesionmix.augment.lesion_load import lesion_load_ml, voxel_volume_ml
from napari_lesionmix.errors import LesionMixError
from napari_lesionmix.io.brain import case_brain
from napari_lesionmix.io.dataset import CaseRecord
from napari_lesionmix.io.morphology import connected_components
from napari_lesionmix.io.nifti import (
    AFFINE_TOLERANCE_MM,
    Case,
    load_image,
    load_label,
    read_geometry,
    voxel_spacing,
)
from napari_lesionmix.io.threads import map_in_threads


@dataclass(frozen=True, eq=False)
class Lesion:
    """One connected lesion and its surroundings, cut from a case.

    Attributes
    ----------
    case_id : str
        The source case.
    index : int
        0-based component index in the source case (``scipy.ndimage.label`` order).
    box : tuple of 3 slices
        Where the crop lies in the source volume (component box plus margin, clipped).
    image : ndarray, shape (C, a, b, c), float32
        Image channels of the crop (from :attr:`source`, read on first use).
    mask : ndarray, shape (a, b, c), bool
        This component only (other lesions in the crop are ``False``).
    label : ndarray, shape (a, b, c), integer
        The source label values on ``mask``, 0 elsewhere.
    volume_ml : float
        Component volume in mL.
    centroid_voxel : tuple of 3 floats
        Centre of mass in source voxel coordinates.
    centroid_mm : tuple of 3 floats
        Centre of mass in world (scanner) mm, through the source affine.
    spacing : tuple of 3 floats
        Voxel size in mm of the source grid.
    reference : tuple of float
        Per-channel reference intensity of the source case's normal tissue
        (:func:`tissue_reference`), for optional intensity matching on paste
        (``intensity_match="median"``); a bank computes it the first time it is read.
    source : CaseImage
        Where :attr:`image` comes from: the image crops of the source case.
    """

    case_id: str
    index: int
    box: tuple[slice, slice, slice]
    mask: np.ndarray
    label: np.ndarray
    volume_ml: float
    centroid_voxel: tuple[float, float, float]
    centroid_mm: tuple[float, float, float]
    spacing: tuple[float, float, float]
    tissue: TissueReference | None = field(default=None, repr=False)
    source: CaseImage | None = field(default=None, repr=False)

    @property
    def image(self) -> np.ndarray:
        return self.source.crop(self.box)

    @property
    def reference(self) -> tuple[float, ...]:
        return () if self.tissue is None else self.tissue.value

    def with_image(self, image: np.ndarray) -> Lesion:
        """This lesion with other crop pixels (e.g. intensity-matched), same shape."""
        return replace(self, source=CaseImage(crops={_key(self.box): image}))

    @property
    def n_voxels(self) -> int:
        return int(np.count_nonzero(self.mask))

    @property
    def centroid_in_crop(self) -> np.ndarray:
        """Centre of mass in crop voxel coordinates."""
        return np.asarray(self.centroid_voxel) - np.array([b.start for b in self.box], float)

    def __repr__(self) -> str:
        return (
            f"Lesion(case_id={self.case_id!r}, index={self.index}, volume_ml={self.volume_ml:.4g}, "
            f"crop={tuple(self.mask.shape)})"
        )


#: ``scipy.ndimage.generate_binary_structure`` rank of each 3D connectivity.
CONNECTIVITY = {6: 1, 18: 2, 26: 3}


def connectivity_rank(connectivity: int) -> int:
    """The structure rank of 6-, 18- or 26-connectivity (:func:`~napari_lesionmix.io.morphology.connected_components`)."""
    if connectivity not in CONNECTIVITY:
        raise LesionMixError(f"Connectivity must be 6, 18 or 26, got {connectivity}.")
    return CONNECTIVITY[connectivity]


def connectivity_structure(connectivity: int) -> np.ndarray:
    """3D structuring element for 6-, 18- or 26-connectivity."""
    return ndi.generate_binary_structure(3, connectivity_rank(connectivity))


def label_components(label: np.ndarray, connectivity: int = 26) -> tuple[np.ndarray, int]:
    """Connected components of ``label != 0`` (``scipy.ndimage.label``) with 6/18/26-connectivity."""
    box, comps_box, n = components_box(label, connectivity)
    comps = np.zeros(np.shape(label), np.int32)
    if box is not None:
        comps[box] = comps_box
    return comps, n


#: Recent :func:`components_box` results, most recent last: ``(box, connectivity) -> (label[box], comps, n)``.
#: An entry is used only when the label's box holds the same values (the result depends on nothing
#: else), so it is never stale: LesionMix labels a host when it draws and again when it applies.
_COMPONENTS: OrderedDict[tuple, tuple[np.ndarray, np.ndarray, int]] = OrderedDict()
_COMPONENTS_MAX_BYTES = 64 * 2**20
_COMPONENTS_LOCK = threading.Lock()  # the studio's workers and a bank's reading threads share it


def components_box(label: np.ndarray, connectivity: int = 26):
    """:func:`label_components` on the lesions' bounding box: ``(box, components on it, n)``.

    Labelling scans in raster order, which a sub-box keeps, so the numbering is
    that of the whole volume; outside ``box`` every voxel is 0 (``box`` is
    ``None`` without lesions). The components array is read-only (it may be
    shared with a later call on the same label).
    """
    rank = connectivity_rank(connectivity)
    label = np.asarray(label)
    if label.ndim == 3:
        box = bounding_box(label)  # axis projections: no full-volume copy
    else:
        objs = ndi.find_objects((label != 0).view(np.uint8))
        box = objs[0] if objs and objs[0] is not None else None
    if box is None:
        return None, np.zeros((0,) * label.ndim, np.int32), 0
    sub = label[box]
    key = (tuple((b.start, b.stop) for b in box), label.shape, label.dtype.str, int(connectivity))
    with _COMPONENTS_LOCK:
        hit = _COMPONENTS.get(key)
    if hit is not None and np.array_equal(hit[0], sub):
        with _COMPONENTS_LOCK, suppress(KeyError):  # evicted meanwhile by another thread
            _COMPONENTS.move_to_end(key)
        return box, hit[1], hit[2]
    comps, n = connected_components(sub != 0, rank)
    comps.flags.writeable = False
    with _COMPONENTS_LOCK:
        _COMPONENTS[key] = (sub.copy(), comps, n)
        while len(_COMPONENTS) > 1 and sum(v[0].nbytes + v[1].nbytes for v in _COMPONENTS.values()) > \
                _COMPONENTS_MAX_BYTES:
            _COMPONENTS.popitem(last=False)
    return box, comps, n


def tissue_reference(image: np.ndarray, label: np.ndarray | None, brain_mask: np.ndarray | None = None) -> tuple[float, ...]:
    """Per-channel median intensity of a case's normal tissue.

    Normal tissue is the brain minus the lesions (:func:`~napari_lesionmix.augment.intensity.normal_brain`;
    without a brain mask, the estimated brain). Used to scale pasted lesions to a host's intensity level.
    """
    out = []
    for ch in image:
        region = normal_brain(ch, label, brain_mask)
        out.append(float(np.median(ch[region])) if region.any() else float(np.median(ch)))
    return tuple(out)


class TissueReference:
    """A case's :func:`tissue_reference`, computed the first time it is read.

    Only ``intensity_match="median"`` reads it, and it costs a brain estimate
    per case (about 0.3 s at 1 mm): a bank over 131 stroke cases spent 37 s of
    a 82 s command on references nothing read. ``load`` returns the case and its
    brain mask (or ``None``); the value is computed once and ``load`` dropped.
    """

    def __init__(self, load: Callable[[], tuple[Case, np.ndarray | None]] | None):
        self._load, self._value, self._lock = load, None, threading.Lock()

    @classmethod
    def of(cls, case: Case, brain_mask: np.ndarray | None) -> TissueReference:
        """The reference of ``case``, computed now (so the caller's arrays are not kept)."""
        ref = cls(None)
        ref._value = tissue_reference(case.image, case.label, case_brain(case, brain_mask).mask)
        return ref

    def __getstate__(self) -> dict:
        # A lock and a loader do not pickle (Dask ships banks to workers): send the value.
        return {"value": self.value}

    def __setstate__(self, state: dict) -> None:
        self._load, self._value, self._lock = None, state["value"], threading.Lock()

    @property
    def value(self) -> tuple[float, ...]:
        with self._lock:
            if self._value is None:
                case, brain = self._load()
                self._value = tissue_reference(case.image, case.label, case_brain(case, brain).mask)
                self._load = None
            return self._value


def _key(box: tuple[slice, ...]) -> tuple[tuple[int, int], ...]:
    return tuple((b.start, b.stop) for b in box)


class CaseImage:
    """The image crops of one case's lesions, cut the first time one is read.

    A bank's lesions come from the labels alone: drawing needs each lesion's
    mask and volume, not its pixels, and on 131 stroke cases the images were a
    third of what a sample read. ``read`` returns the case's ``(C, I, J, K)``
    image; on the first :meth:`crop` every crop is cut from it at once and the
    volume is dropped. ``crops`` gives them directly (a case in memory).
    """

    def __init__(self, read: Callable[[], np.ndarray] | None = None, boxes: Sequence[tuple[slice, ...]] = (),
                 crops: dict | None = None):
        self._read, self._boxes, self._crops, self._lock = read, tuple(boxes), crops, threading.Lock()

    @classmethod
    def cut(cls, image: np.ndarray, boxes: Sequence[tuple[slice, ...]]) -> CaseImage:
        """The crops of ``image`` at ``boxes``, cut now."""
        return cls(crops=_cut_crops(image, boxes))

    def crop(self, box: tuple[slice, ...]) -> np.ndarray:
        with self._lock:
            if self._crops is None:
                self._crops = _cut_crops(self._read(), self._boxes)
                self._read = None
            return self._crops[_key(box)]

    def __getstate__(self) -> dict:
        # The loader is an _ImageFile (a record and a shape): a worker reads the image itself.
        return {"read": self._read, "boxes": self._boxes, "crops": self._crops}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["read"], state["boxes"], state["crops"])


def _cut_crops(image: np.ndarray, boxes) -> dict:
    return {_key(b): np.ascontiguousarray(image[(slice(None), *b)], dtype=np.float32) for b in boxes}


@dataclass(frozen=True)
class _ImageFile:
    """Reads a bank case's image from its record (picklable, unlike a closure), on its label's grid."""

    record: CaseRecord
    shape: tuple[int, ...]

    def __call__(self) -> np.ndarray:
        image, _ = load_image(self.record.image_paths)
        if image.shape[1:] != self.shape:  # the header said otherwise when the bank was built
            raise LesionMixError(f"Image '{self.record.image_paths[0]}' has shape {image.shape[1:]} but its label "
                                 f"'{self.record.label_path}' has {self.shape}; they must match.")
        return image


def extract_lesions(
    case: Case,
    connectivity: int = 26,
    margin: int = 4,
    min_voxels: int = 1,
    components: tuple[np.ndarray, int] | None = None,
    brain_mask: np.ndarray | None = None,
    reference: TissueReference | None = None,
) -> list[Lesion]:
    """Cut every connected lesion of a case, with its crop, volume and centroid.

    Parameters
    ----------
    case : Case
        A labelled case; a case with an empty label gives an empty list.
    connectivity : {6, 18, 26}
        Component connectivity (26 by default: diagonal neighbours join).
    margin : int
        Voxels of context kept around each component's bounding box.
    min_voxels : int
        Components smaller than this are skipped (indices stay those of the
        full labelling, so they still name the same component).
    components : (labels, n), optional
        A precomputed :func:`label_components` result to reuse.
    brain_mask : ndarray of bool, optional
        The case's brain mask, for :attr:`Lesion.reference`.
    reference : TissueReference, optional
        Where :attr:`Lesion.reference` comes from (default: computed now from
        ``case`` and ``brain_mask``).

    Returns
    -------
    list of Lesion
    """
    case.require_label("Case", "lesion extraction")
    reference = reference if reference is not None else TissueReference.of(case, brain_mask)
    return _cut_lesions(case.case_id, case.label, case.affine, connectivity, margin, min_voxels,
                        lambda boxes: CaseImage.cut(case.image, boxes), reference, components)


def _cut_lesions(case_id: str, label: np.ndarray, affine: np.ndarray, connectivity: int, margin: int,
                 min_voxels: int, image_of: Callable[[list], CaseImage], reference: TissueReference | None,
                 components: tuple[np.ndarray, int] | None = None) -> list[Lesion]:
    """:func:`extract_lesions` from a label and its affine; ``image_of(crops)`` gives the crops' pixels.

    Works on the lesions' bounding box (:func:`components_box`), never on the
    whole volume: the numbering, crops and centroids are those of the whole.
    """
    if int(margin) < 0:
        raise LesionMixError(f"Lesion crop margin must be >= 0 voxels, got {margin}.")
    if components is not None:
        box, comps, n = tuple(slice(0, s) for s in label.shape), components[0], components[1]
    else:
        box, comps, n = components_box(label, connectivity)
    if n == 0:
        return []
    spacing = voxel_spacing(affine)
    vox_ml = voxel_volume_ml(spacing)
    shape = label.shape
    lo = np.array([b.start for b in box])
    counts = np.bincount(comps.ravel(), minlength=n + 1)
    found = []
    for k, sub in enumerate(ndi.find_objects(comps), start=1):
        if sub is None or counts[k] < min_voxels:
            continue
        crop = tuple(slice(max(b.start + o - margin, 0), min(b.stop + o + margin, s))
                     for b, o, s in zip(sub, lo, shape, strict=True))
        # The component's voxels all lie in ``box``; the margin may reach past it (zeros there).
        mask = np.zeros(tuple(c.stop - c.start for c in crop), bool)
        inner = tuple(slice(max(c.start, b.start), min(c.stop, b.stop)) for c, b in zip(crop, box, strict=True))
        mask[tuple(slice(i.start - c.start, i.stop - c.start) for i, c in zip(inner, crop, strict=True))] = \
            comps[tuple(slice(i.start - b.start, i.stop - b.start) for i, b in zip(inner, box, strict=True))] == k
        found.append((k, crop, mask))
    source = image_of([crop for _, crop, _ in found])
    lesions = []
    for k, crop, mask in found:
        centroid = np.asarray(ndi.center_of_mass(mask), float) + np.array([c.start for c in crop], float)
        world = affine @ np.append(centroid, 1.0)
        lesions.append(
            Lesion(
                case_id=case_id,
                index=k - 1,
                box=crop,
                mask=mask,
                label=np.where(mask, label[crop], 0).astype(label.dtype),
                volume_ml=float(counts[k]) * vox_ml,
                centroid_voxel=tuple(float(c) for c in centroid),
                centroid_mm=tuple(float(c) for c in world[:3]),
                spacing=spacing,
                tissue=reference,
                source=source,
            )
        )
    return lesions


class LesionBank:
    """The lesions of many cases, extracted lazily and cached.

    Parameters
    ----------
    records : sequence of CaseRecord, optional
        Cases on disk (from :func:`~napari_lesionmix.io.dataset.discover_dataset`);
        each is read the first time its lesions are needed.
    cases : sequence of Case, optional
        Cases already in memory.
    connectivity, margin, min_voxels
        Passed to :func:`extract_lesions`.

    Examples
    --------
    >>> bank = LesionBank.from_dataset("sample_data")          # doctest: +SKIP
    >>> lesion = bank.lesion("sub-01", 0)                        # doctest: +SKIP
    """

    def __init__(
        self,
        records: Sequence = (),
        cases: Sequence[Case] = (),
        connectivity: int = 26,
        margin: int = 4,
        min_voxels: int = 1,
    ):
        connectivity_structure(connectivity)  # validates
        self.connectivity = int(connectivity)
        self.margin = int(margin)
        self.min_voxels = int(min_voxels)
        self._records = {r.case_id: r for r in records}
        self._cases: dict[str, Case] = {}
        self._lesions: dict[str, list[Lesion]] = {}
        self._loads: dict[str, float] = {}
        self._label_grids: dict[str, tuple[tuple[int, ...], np.ndarray]] = {}  # label files' shape and affine
        self._grid: tuple[np.ndarray, str] | None = None
        for c in cases:
            self.add_case(c)

    @classmethod
    def from_dataset(cls, dataset, **kwargs) -> LesionBank:
        """A bank over a :class:`~napari_lesionmix.io.dataset.Dataset` or a dataset folder."""
        from napari_lesionmix.io.dataset import Dataset, discover_dataset

        if isinstance(dataset, (str, os.PathLike)):
            dataset = discover_dataset(dataset)
        if not isinstance(dataset, Dataset):
            raise LesionMixError(f"Expected a Dataset or a dataset folder, got {type(dataset).__name__}.")
        return cls(records=dataset.cases, **kwargs)

    @property
    def case_ids(self) -> list[str]:
        ids = list(self._records)
        ids += [c for c in self._cases if c not in self._records]
        return ids

    def __contains__(self, case_id: str) -> bool:
        return case_id in self._records or case_id in self._cases

    def add_case(self, case: Case, keep: bool = False, brain_mask: np.ndarray | None = None) -> None:
        """Add (or replace) an in-memory case; ``keep`` also keeps the whole case cached."""
        self._check_grid(case.case_id, case.spacing)
        self._lesions[case.case_id] = extract_lesions(case, self.connectivity, self.margin, self.min_voxels,
                                                      brain_mask=brain_mask)
        self._loads[case.case_id] = lesion_load_ml(case.label, case.spacing)
        if keep or case.case_id not in self._records:
            self._cases[case.case_id] = case

    def case(self, case_id: str) -> Case:
        """The full case (read from disk if needed; cached only for in-memory cases)."""
        if case_id in self._cases:
            return self._cases[case_id]
        if case_id not in self._records:
            raise LesionMixError(f"The lesion bank has no case '{case_id}' (known: {', '.join(self.case_ids)}).")
        case = self._records[case_id].load()
        self._check_grid(case.case_id, case.spacing)
        return case

    def brain_mask(self, case_id: str) -> np.ndarray | None:
        """The case's brain mask (bool) when its record has one."""
        rec = self._records.get(case_id)
        return None if rec is None else rec.load_brain_mask()

    def lesions(self, case_id: str) -> list[Lesion]:
        """The lesions of one case (extracted on first use, from its label; the image is read on first paste)."""
        if case_id not in self._lesions:
            self._extract([case_id])
        return self._lesions[case_id]

    def lesions_of(self, case_ids: Iterable[str]) -> dict[str, list[Lesion]]:
        """The lesions of many cases, ``{case_id: lesions}``; the labels not read yet are read in threads."""
        case_ids = list(case_ids)
        self._extract([cid for cid in dict.fromkeys(case_ids) if cid not in self._lesions])
        return {cid: self._lesions[cid] for cid in case_ids}

    def _extract(self, case_ids: list[str]) -> None:
        """Extract cases' lesions: labels read in threads, then checked and stored in ``case_ids`` order."""
        # The reference reads the case again, from its record, only if something asks for it.
        refs = {cid: TissueReference(lambda cid=cid: (self.case(cid), self.brain_mask(cid))) for cid in case_ids}
        found = map_in_threads(lambda cid: self._from_label(cid, refs[cid]), case_ids)
        for cid, res in zip(case_ids, found, strict=True):
            if res is None:  # a case in memory, or files whose headers disagree: load_case says how
                case = self.case(cid)
                case.require_label("Case", "lesion extraction")
                res = (extract_lesions(case, self.connectivity, self.margin, self.min_voxels, reference=refs[cid]),
                       lesion_load_ml(case.label, case.spacing), None, None)
            lesions, load, spacing, grid = res
            if spacing is not None:
                self._check_grid(cid, spacing)  # here, in order: the first case sets the grid
            self._lesions[cid], self._loads[cid] = lesions, load
            if grid is not None:
                self._label_grids[cid] = grid

    def _from_label(self, case_id: str, reference: TissueReference):
        """A record's ``(lesions, load, spacing, (label shape, label affine))`` from its label and its image's
        header, or ``None`` to load the case.

        Runs in a reading thread (:meth:`_extract`): it changes nothing on the bank.
        """
        rec = self._records.get(case_id)
        if not isinstance(rec, CaseRecord) or case_id in self._cases or rec.label_path is None or \
                not rec.image_paths:  # other records (nnU-Net's preprocessed cases) only load whole
            return None
        label, limg = load_label(rec.label_path)
        try:
            shape, affine = read_geometry(rec.image_paths[0])
        except Exception:  # an unreadable header: load_case words the error
            return None
        affine = np.asarray(affine, dtype=np.float64)
        if tuple(shape[:3]) != label.shape or len(shape) not in (3, 4, 5) or \
                np.max(np.abs(affine - limg.affine)) > AFFINE_TOLERANCE_MM:
            return None
        spacing = voxel_spacing(affine)
        read = _ImageFile(rec, label.shape)
        lesions = _cut_lesions(case_id, label, affine, self.connectivity, self.margin, self.min_voxels,
                               lambda boxes: CaseImage(read, boxes), reference)
        return lesions, lesion_load_ml(label, spacing), spacing, (label.shape, np.asarray(limg.affine, float))

    def label_grid(self, case_id: str) -> tuple[tuple[int, ...], np.ndarray] | None:
        """The shape and affine of the label file a case's lesions were cut from (``None``: not from a file).

        With the lesions (every label voxel lies in exactly one when ``min_voxels`` is 1), enough to sum
        the labels for a likelihood map without reading them again.
        """
        self.lesions(case_id)
        return self._label_grids.get(case_id)

    def lesion(self, case_id: str, index: int) -> Lesion:
        """Lesion ``index`` (component index) of a case."""
        for les in self.lesions(case_id):
            if les.index == index:
                return les
        raise LesionMixError(f"Case '{case_id}' has no lesion with index {index}.")

    def all_lesions(self, case_ids: Iterable[str] | None = None) -> list[Lesion]:
        """Every lesion of the given cases (all cases by default), in case then index order."""
        ids = list(self.case_ids if case_ids is None else case_ids)
        by_case = self.lesions_of(ids)
        return [les for cid in ids for les in by_case[cid]]

    def load_ml(self, case_id: str) -> float:
        """Lesion load (mL) of a case."""
        if case_id not in self._loads:
            self.lesions(case_id)
        return self._loads[case_id]

    def loads(self) -> dict[str, float]:
        """Per-case lesion loads (mL) of every case in the bank."""
        self.lesions_of(self.case_ids)
        return {cid: self._loads[cid] for cid in self.case_ids}

    def __len__(self) -> int:
        return len(self.all_lesions())

    def _check_grid(self, case_id: str, spacing) -> None:
        """All cases of a bank share a voxel size (lesions are pasted voxel for voxel)."""
        sp = np.asarray(spacing)
        if self._grid is None:
            self._grid = (sp, case_id)
            return
        if np.max(np.abs(sp - self._grid[0])) > AFFINE_TOLERANCE_MM:
            raise LesionMixError(
                f"Case '{case_id}' has voxel size {tuple(np.round(sp, 4))} mm but "
                f"'{self._grid[1]}' has {tuple(np.round(self._grid[0], 4))} mm; resample the dataset to one grid."
            )

    def __repr__(self) -> str:
        return f"LesionBank({len(self.case_ids)} cases, connectivity={self.connectivity}, margin={self.margin})"
