"""Where the online faces' donors come from: a pool of cases (files or arrays), on the host's grid or resampled to it."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

import numpy as np

from napari_lesionmix.errors import LesionMixError
from napari_lesionmix.io.cache import LRUCache
from napari_lesionmix.io.dataset import CaseRecord, Dataset, discover_dataset
from napari_lesionmix.io.nifti import AFFINE_TOLERANCE_MM, Case, case_id_from_path, read_geometry

#: Most donor cases a pool keeps loaded per process (a 1 mm brain is ~35 MB per channel).
MAX_CASES = 16


def _as_array(value) -> np.ndarray:
    """A NumPy view of an array-like (NumPy, torch or MONAI MetaTensor) without copying when possible."""
    if hasattr(value, "detach"):  # torch.Tensor / MetaTensor: torch stays out of this module
        value = value.detach().cpu()
        value = value.as_tensor() if hasattr(value, "as_tensor") else value
        return value.numpy()
    return np.asarray(value)


def _affine_of(value, default=None) -> np.ndarray:
    aff = getattr(value, "affine", None)
    if aff is None:
        aff = default
    return np.eye(4) if aff is None else np.asarray(_as_array(aff), np.float64)


def label_array(value) -> np.ndarray:
    """A label map as ``(I, J, K)`` integers (a channel-first ``(1, I, J, K)`` float label too).

    Soft (fractional) labels stay float.
    """
    arr = _as_array(value)
    if arr.ndim == 4:
        if arr.shape[0] != 1:
            raise LesionMixError(f"A label must have one channel, got shape {arr.shape}.")
        arr = arr[0]
    if arr.ndim != 3:
        raise LesionMixError(f"A label must be a 3D volume (optionally channel-first), got shape {arr.shape}.")
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            return arr.astype(np.float32, copy=False)
        lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
        return arr.astype(np.uint8 if lo >= 0 and hi < 256 else np.int32)
    return arr


def image_array(value) -> np.ndarray:
    """An image as channel-first ``(C, I, J, K)`` float32."""
    arr = _as_array(value)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4:
        raise LesionMixError(f"An image must be channel-first (C, I, J, K), got shape {arr.shape}.")
    return arr.astype(np.float32, copy=False)


def case_from_arrays(image, label, *, affine=None, case_id: str = "case") -> Case:
    """A :class:`Case` over in-memory arrays (NumPy, torch or MetaTensor; the affine from a MetaTensor)."""
    import nibabel as nib

    return Case(image=image_array(image), label=None if label is None else label_array(label),
                affine=_affine_of(image, affine), header=nib.Nifti1Header(), case_id=str(case_id))


def _paths(value) -> tuple[str, ...] | None:
    """``value`` as file paths, or ``None`` when it is an array."""
    if isinstance(value, (str, os.PathLike)):
        return (os.fspath(value),)
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, (str, os.PathLike)) for v in value):
        return tuple(os.fspath(v) for v in value)
    return None


class DonorPool:
    """The cases an online method takes lesions from: a :class:`~napari_lesionmix.augment.registry.Sources`.

    Parameters
    ----------
    donors : folder, Dataset or sequence, optional
        A dataset folder (any layout :func:`~napari_lesionmix.io.dataset.discover_dataset`
        reads), a :class:`~napari_lesionmix.io.dataset.Dataset`, or items that
        are each a :class:`Case`, a :class:`CaseRecord` or a dict with
        ``image_key`` (a path, a list of per-channel paths, or a channel-first
        array), ``label_key`` (a path or an array) and optionally
        ``brain_mask_key``, ``"case_id"`` and ``"affine"`` (arrays without a
        MetaTensor affine).
    image_key, label_key, brain_mask_key : str
        The keys of dict items.
    max_cases : int
        Most loaded donor cases kept per process (least recently used go first).
    donor_transform : callable, optional
        Applied to each dict donor before it is used: give it the host's
        pre-transforms (e.g. MONAI's ``LoadImaged``, ``Orientationd``,
        ``Spacingd``), so donors reach the method as the host does. It takes
        the donor dict and returns one with ``image_key`` and ``label_key``
        (arrays or MetaTensors; the affine from a MetaTensor or ``"affine"``).

    Notes
    -----
    Cases are loaded lazily, once per process; the pool pickles without them,
    so DataLoader workers each load what they use. Copies
    (:func:`copy.deepcopy`, which TorchIO applies to every subject and its
    history) share the pool instead of copying the donors.
    """

    def __init__(self, donors=None, *, image_key: str = "image", label_key: str = "label",
                 brain_mask_key: str | None = "brain_mask", max_cases: int = MAX_CASES,
                 donor_transform: Callable[[dict], Mapping] | None = None):
        self.source = donors
        self.max_cases = int(max_cases)
        self.donor_transform = donor_transform
        self._keys = (image_key, label_key, brain_mask_key)
        self._raw: dict[str, Mapping] = {}  # dict donors that go through donor_transform
        self._records: dict[str, CaseRecord] = {}
        self._memory: dict[str, tuple[Case, np.ndarray | None]] = {}
        self._dataset: Dataset | None = None
        if isinstance(donors, (str, os.PathLike)):
            self._dataset = discover_dataset(donors)
            self._records = {r.case_id: r for r in self._dataset.cases}
        elif isinstance(donors, Dataset):
            self._dataset = donors
            self._records = {r.case_id: r for r in donors.cases}
        elif donors is not None:
            if isinstance(donors, Mapping) or not isinstance(donors, Sequence):
                raise LesionMixError("Donors must be a dataset folder or a list of cases (dicts of image and label).")
            for i, item in enumerate(donors):
                self._add(i, item, image_key, label_key, brain_mask_key)
            if self._records and not self._memory:  # every donor is on disk: a training set too
                self._dataset = Dataset("", "list", list(self._records.values()))
        self.ids: tuple[str, ...] = tuple(sorted({*self._records, *self._memory, *self._raw}))
        self._init_caches()

    def _add(self, i: int, item, image_key: str, label_key: str, brain_mask_key: str | None) -> None:
        if isinstance(item, Case):
            entry, cid = (item, None), item.case_id
        elif isinstance(item, CaseRecord):
            entry, cid = item, item.case_id
        elif isinstance(item, Mapping):
            if image_key not in item or label_key not in item:
                raise LesionMixError(f"Donor {i} has no '{image_key}' and '{label_key}' entries.")
            if self.donor_transform is not None:  # loaded (and transformed) when first used
                cid = str(item.get("case_id") or case_id_of(item[image_key]) or
                          (case_id_from_path(_paths(item[image_key])[0]) if _paths(item[image_key]) else f"donor{i}"))
                if cid in self._raw:
                    raise LesionMixError(f"Two donors have the case id '{cid}'; give each a distinct 'case_id'.")
                self._raw[cid] = dict(item)
                return
            image, label = item[image_key], item[label_key]
            brain = item.get(brain_mask_key) if brain_mask_key else None
            paths, label_path = _paths(image), _paths(label)
            brain_path = _paths(brain) if brain is not None else None
            if paths is not None and label_path is not None and (brain is None or brain_path is not None):
                cid = str(item.get("case_id") or case_id_from_path(paths[0]))
                entry = CaseRecord(cid, paths, label_path[0], brain_path[0] if brain_path else None)
            else:
                if paths is not None or label_path is not None or brain_path is not None:
                    raise LesionMixError(f"Donor {i} mixes file paths and arrays; give all paths or all arrays.")
                cid = str(item.get("case_id") or case_id_of(image) or f"donor{i}")
                case = case_from_arrays(image, label, affine=item.get("affine"), case_id=cid)
                entry = (case, None if brain is None else label_array(brain) > 0)
        else:
            raise LesionMixError(f"Donor {i} is a {type(item).__name__}; expected a dict of image and label.")
        if cid in self._records or cid in self._memory:
            raise LesionMixError(f"Two donors have the case id '{cid}'; give each a distinct 'case_id'.")
        if isinstance(entry, CaseRecord):
            self._records[cid] = entry
        else:
            self._memory[cid] = entry

    def _init_caches(self) -> None:
        self._cases = LRUCache(max(self.max_cases, 1))
        self._objects: dict[Hashable, Any] = {}
        self._grids: dict[str, tuple[tuple[int, ...], np.ndarray]] = {}
        # Donors resampled onto a host's grid, and what is built on them: per (donor, host grid), so bounded.
        self._resampled = LRUCache(max(self.max_cases, 1) * 4)
        self._lock = threading.Lock()

    def __getstate__(self):
        state = dict(self.__dict__)
        for key in ("_cases", "_objects", "_grids", "_resampled", "_lock"):
            state.pop(key)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._init_caches()

    def __deepcopy__(self, memo):
        return self  # donors are read-only: copies share them (and their prepared work)

    def __len__(self) -> int:
        return len(self.ids)

    def __repr__(self) -> str:
        source = os.fspath(self.source) if isinstance(self.source, (str, os.PathLike)) else f"{len(self)} cases"
        hook = "" if self.donor_transform is None else f", donor_transform={type(self.donor_transform).__name__}"
        return f"DonorPool({source!r}{hook})"

    def spec(self) -> str | list[dict] | None:
        """The donors as JSON (a folder, or dicts of file paths), or ``None`` when some live only in memory."""
        if isinstance(self.source, (str, os.PathLike)):
            return os.fspath(self.source)
        if self._memory or self._raw or (self.source is not None and not self._records):
            return None
        return [{"image": list(r.image_paths), "label": r.label_path, "case_id": r.case_id,
                 **({"brain_mask": r.brain_mask_path} if r.brain_mask_path else {})}
                for r in (self._records[c] for c in self.ids)]

    def _transformed(self, case_id: str) -> tuple[Case, np.ndarray | None]:
        image_key, label_key, brain_key = self._keys
        d = self.donor_transform(dict(self._raw[case_id]))
        if not isinstance(d, Mapping) or image_key not in d or label_key not in d:
            raise LesionMixError(f"donor_transform must return a dict with '{image_key}' and '{label_key}' "
                                 f"(donor '{case_id}').")
        case = case_from_arrays(d[image_key], d[label_key], affine=d.get("affine", getattr(d[label_key], "affine",
                                                                                            None)), case_id=case_id)
        brain = d.get(brain_key) if brain_key else None
        if isinstance(brain, (str, os.PathLike)):  # the donor dicts name a mask the transform did not load
            raise LesionMixError(
                f"Donor '{case_id}': '{brain_key}' is still a file path after donor_transform "
                f"('{os.fspath(brain)}'); load it there with the image and label (e.g. in LoadImaged's keys), "
                f"or leave '{brain_key}' out of the donor dicts.")
        return case, None if brain is None else label_array(brain) > 0

    def case(self, case_id: str) -> Case:
        if case_id in self._raw:
            return self._cases.get(case_id, lambda: self._transformed(case_id))[0]
        if case_id in self._memory:
            return self._memory[case_id][0]
        if case_id not in self._records:
            raise LesionMixError(f"Case '{case_id}' is not among the donors.")
        return self._cases.get(case_id, self._records[case_id].load)

    def brain_mask(self, case_id: str) -> np.ndarray | None:
        if case_id in self._raw:
            return self._cases.get(case_id, lambda: self._transformed(case_id))[1]
        if case_id in self._memory:
            return self._memory[case_id][1]
        rec = self._records.get(case_id)
        if rec is None or rec.brain_mask_path is None:
            return None
        return self.cached(("brain", case_id), rec.load_brain_mask)

    def training_set(self) -> Dataset | None:
        return self._dataset

    def training_cases(self) -> list[tuple[Case, np.ndarray | None]] | None:
        """Every donor through ``donor_transform``, when all were given that way (else ``None``).

        Each is loaded and transformed (once per process, as :meth:`case` does):
        a lesion bank and a likelihood map need every training case, on the grid
        the host's pre-transforms give.
        """
        if not self.all_transformed:
            return None
        return [(self.case(cid), self.brain_mask(cid)) for cid in sorted(self._raw)]

    @property
    def all_transformed(self) -> bool:
        """Every donor is a dict that goes through ``donor_transform`` (nothing is loaded to say so)."""
        return bool(self._raw) and not self._records and not self._memory

    def cached(self, key: Hashable, make: Callable[[], Any]) -> Any:
        with self._lock:
            if key in self._objects:
                return self._objects[key]
        value = make()
        with self._lock:
            return self._objects.setdefault(key, value)

    def grid(self, case_id: str) -> tuple[tuple[int, ...], np.ndarray]:
        """Spatial shape and affine of a donor (from the header alone for files)."""
        if case_id not in self._grids:
            if case_id in self._raw:  # its grid is the transform's output
                c = self.case(case_id)
                grid = (c.shape, c.affine)
            elif case_id in self._memory:
                c = self._memory[case_id][0]
                grid = (c.shape, c.affine)
            else:
                shape, affine = read_geometry(self._records[case_id].image_paths[0])
                grid = (tuple(shape[:3]), np.asarray(affine, np.float64))
            self._grids[case_id] = grid
        return self._grids[case_id]

    def on_grid_of(self, host: Case) -> list[str]:
        """The donors (other than the host) on the host's grid, sorted."""
        out = []
        for cid in self.ids:
            if cid == host.case_id:
                continue
            shape, affine = self.grid(cid)
            if shape == host.shape and float(np.max(np.abs(affine - host.affine))) <= AFFINE_TOLERANCE_MM:
                out.append(cid)
        return out


def grid_tag(shape: Sequence[int], affine: np.ndarray) -> str:
    """A short name of a voxel grid (shape and affine rounded to the affine tolerance)."""
    import hashlib

    key = np.round(np.asarray(affine, np.float64) / AFFINE_TOLERANCE_MM).astype(np.int64).tobytes()
    return hashlib.sha1(repr(tuple(int(s) for s in shape)).encode() + key).hexdigest()[:10]


def resample_case(case: Case, shape: Sequence[int], affine: np.ndarray, case_id: str | None = None) -> Case:
    """``case`` resampled onto the grid ``(shape, affine)`` of the same physical space.

    Images linearly (outside the case: its minimum, the background), labels by
    nearest neighbour (outside: 0). The result keeps no file paths.
    """
    import nibabel as nib
    from scipy import ndimage as ndi

    affine = np.asarray(affine, np.float64)
    to_case = np.linalg.inv(case.affine) @ affine  # host voxel -> donor voxel
    matrix, offset = to_case[:3, :3], to_case[:3, 3]
    shape = tuple(int(s) for s in shape)
    image = np.stack([ndi.affine_transform(ch, matrix, offset, output_shape=shape, order=1,
                                           cval=float(ch.min()) if ch.size else 0.0) for ch in case.image])
    label = None
    if case.label is not None:
        label = ndi.affine_transform(case.label, matrix, offset, output_shape=shape, order=0, cval=0)
    return Case(image=image.astype(np.float32), label=label, affine=affine, header=nib.Nifti1Header(),
                case_id=case_id or case.case_id)


class HostGridPool:
    """A view of a :class:`DonorPool` for one host: every other donor, on the host's grid.

    Donors already on the host's grid are as they are; the others are
    resampled onto it (:func:`resample_case`) under the id ``"ID@GRID"``, so
    what is built on them (a CarveMix field) is cached apart from the donor on
    its own grid, in a bounded cache. Meant for cases in one physical space
    (e.g. after the same ``Orientationd``/``Spacingd``, or registered to one
    template): a donor whose lesions fall outside the host's field of view
    cannot make a sample and is redrawn.
    """

    def __init__(self, pool: DonorPool, host: Case):
        self.pool, self.host = pool, host
        self.tag = grid_tag(host.shape, host.affine)

    def __len__(self) -> int:
        return len(self.pool)

    @staticmethod
    def base_id(case_id: str) -> str:
        return case_id.split("@", 1)[0]

    def on_grid_of(self, host: Case) -> list[str]:
        on = set(self.pool.on_grid_of(host))
        return [c if c in on else f"{c}@{self.tag}" for c in self.pool.ids
                if c != host.case_id and c != self.base_id(host.case_id)]

    def case(self, case_id: str) -> Case:
        base, _, tag = case_id.partition("@")
        if not tag:
            return self.pool.case(case_id)
        if tag != self.tag:
            raise LesionMixError(f"Donor '{case_id}' was resampled onto another host's grid than "
                                 f"'{self.host.case_id}'.")
        return self.pool._resampled.get(case_id, lambda: resample_case(self.pool.case(base), self.host.shape,
                                                                         self.host.affine, case_id))

    def brain_mask(self, case_id: str) -> np.ndarray | None:
        return self.pool.brain_mask(case_id) if "@" not in case_id else None

    def training_set(self) -> Dataset | None:
        return self.pool.training_set()

    def training_cases(self) -> list[tuple[Case, np.ndarray | None]] | None:
        return self.pool.training_cases()

    def cached(self, key: Hashable, make: Callable[[], Any]) -> Any:
        parts = key if isinstance(key, tuple) else (key,)
        if any(isinstance(k, str) and "@" in k for k in parts):
            return self.pool._resampled.get(key, make)
        return self.pool.cached(key, make)


def case_id_of(value) -> str | None:
    """The case id of a MONAI MetaTensor loaded from a file (its ``filename_or_obj``)."""
    meta = getattr(value, "meta", None)
    name = meta.get("filename_or_obj") if isinstance(meta, Mapping) else None
    return case_id_from_path(name) if isinstance(name, (str, os.PathLike)) and name else None
