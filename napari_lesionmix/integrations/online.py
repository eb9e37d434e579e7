"""One registered method in a training loop: the engine under the MONAI, TorchIO and PyTorch faces.

:class:`OnlineMethod` binds a method of :mod:`~napari_lesionmix.augment.registry`
(by name: no face names a method in an ``if``) to its options and a
:class:`DonorPool`, prepares the method's shared work (a donor's distance
field, LesionMix's lesion bank) once per process, and makes samples with
:meth:`~OnlineMethod.draw` (only draws) and :meth:`~OnlineMethod.apply`
(deterministic). Pickling drops what was prepared, so each DataLoader worker
builds it once, lazily, and keeps it for every later sample.

Seeding
-------
The pipeline's rule (:mod:`~napari_lesionmix.augment.pipeline`): from the
choice stream :func:`~napari_lesionmix.random.choice_rng` ``(seed, index)``,
whether the method applies (``prob``), then the donor (uniform over the
pool's other cases on the host's grid; another, up to
:data:`~napari_lesionmix.augment.pipeline.DONOR_TRIES` draws, when one cannot
make a sample); the method's params from ``sample_rng(seed, index)``, as in
the CLI. Item ``i`` of epoch ``e`` of a dataset of ``n`` items has

    index = e * n + i                                        (:func:`spawn_index`)

so every (epoch, item) pair has its own stream and a sample does not depend on
which worker makes it or how many there are. The params record ``seed`` and
``index``; :func:`~napari_lesionmix.augment.registry.replay` (or ``lesionmix
METHOD --params params.json``) rebuilds the sample from them exactly.
"""

from __future__ import annotations

import copy
import os
import threading
import warnings
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

import numpy as np

from napari_lesionmix.augment import pipeline
from napari_lesionmix.augment.intensity import gain_warning
from napari_lesionmix.augment.params import Params, Synthetic
from napari_lesionmix.augment.registry import (
    DrawRejected,
    Inputs,
    Method,
    apply_params,
    get_method,
    options_of,
)
from napari_lesionmix.errors import LesionMixError, LesionMixWarning
from napari_lesionmix.io.cache import LRUCache
from napari_lesionmix.io.checks import check_case
from napari_lesionmix.io.dataset import CaseRecord, Dataset, discover_dataset
from napari_lesionmix.io.nifti import (
    AFFINE_TOLERANCE_MM,
    Case,
    case_id_from_path,
    read_geometry,
)
from napari_lesionmix.random import choice_rng

#: Most donor cases a pool keeps loaded per process (a 1 mm brain is ~35 MB per channel).
MAX_CASES = 16


def keyed_index(epoch: int, length: int | None, item: int) -> int:
    """:func:`spawn_index` of a transform's item, where ``length`` may stay unset in epoch 0."""
    if length is None:
        if epoch:
            raise LesionMixError("set_epoch(epoch, length) needs the number of items of the data list.")
        length = int(item) + 1
    return spawn_index(epoch, item, length)


def spawn_index(epoch: int, item: int, length: int) -> int:
    """The sample index of item ``item`` of epoch ``epoch`` of a dataset of ``length`` items.

    ``epoch * length + item``: every (epoch, item) pair gets its own
    :func:`~napari_lesionmix.random.sample_rng` stream, whatever the worker count.

    Examples
    --------
    >>> spawn_index(0, 3, 10), spawn_index(2, 3, 10)
    (3, 23)
    """
    epoch, item, length = int(epoch), int(item), int(length)
    if epoch < 0 or length < 1 or not 0 <= item < length:
        raise LesionMixError(f"Item {item} of epoch {epoch} is outside a dataset of {length} items.")
    return epoch * length + item


class SharedEpoch:
    """The epoch and data-list length of keyed sampling, in shared memory.

    DataLoader workers are forked (or spawned) with it, so :meth:`set` in the
    main process reaches them, persistent workers too. Copies share it; a
    pickle outside process start (where shared memory cannot go) keeps the
    values of that moment.
    """

    def __init__(self):
        import multiprocessing as mp

        self._value = mp.Value("q", 0)
        self._length = mp.Value("q", -1)

    @property
    def epoch(self) -> int:
        return int(self._value.value)

    @property
    def length(self) -> int | None:
        n = int(self._length.value)
        return None if n < 0 else n

    def set(self, epoch: int, length: int) -> None:
        with self._value.get_lock():
            self._value.value, self._length.value = int(epoch), int(length)

    def __deepcopy__(self, memo):
        return self

    def __getstate__(self):
        from multiprocessing.context import get_spawning_popen

        if get_spawning_popen() is not None:  # a worker being started: the shared memory goes with it
            return {"_value": self._value, "_length": self._length}
        return {"epoch": self.epoch, "length": -1 if self.length is None else self.length}

    def __setstate__(self, state):
        if "_value" in state:
            self.__dict__.update(state)
        else:
            self.__init__()
            self.set(state["epoch"], state["length"])

    def __repr__(self) -> str:
        return f"SharedEpoch(epoch={self.epoch}, length={self.length})"


# ----------------------------------------------------------------------------- donors


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


# ----------------------------------------------------------------------------- the engine


class OnlineMethod:
    """A registered method with its options and donors, ready to make samples in a training loop.

    Parameters
    ----------
    method : str or Method
        A registered name (:func:`~napari_lesionmix.augment.registry.method_names`).
    donors : folder, Dataset, sequence or DonorPool, optional
        Lesion sources (:class:`DonorPool`); methods that need a training set
        (LesionMix) need donors on disk.
    options : Options or dict, optional
        The method's options (checked against its ``Options``).
    prob : float
        Probability that a sample is augmented (else the host is returned unchanged).
    resample : bool
        Donors not on a host's grid are resampled onto it (:class:`HostGridPool`;
        cases in one physical space), instead of being left out.
    """

    def __init__(self, method: str | Method, donors=None, options=None, prob: float = 1.0,
                 resample: bool = False):
        self.resample = bool(resample)
        self.method = get_method(method) if isinstance(method, str) else method
        self.options = options_of(self.method, options)
        self.pool = donors if isinstance(donors, DonorPool) else DonorPool(donors)
        prob = float(prob)
        if not 0.0 <= prob <= 1.0:
            raise LesionMixError(f"prob must lie in [0, 1], got {prob}.")
        self.prob = prob
        self._gain_warned = False
        if self.method.needs_donor and not len(self.pool):
            raise LesionMixError(f"{self.method.label} needs donors (a dataset folder or a list of cases).")
        if self.method.needs_training_set and self.pool.training_set() is None:
            raise LesionMixError(f"{self.method.label} takes lesions from a training set: give the donors as a "
                                 "dataset folder or as dicts of file paths.")

    @property
    def resources(self) -> Any:
        """The method's prepared work (distance fields, lesion bank), built once per process.

        It is kept by the pool, so every transform and dataset over one pool
        (and every TorchIO copy of it) shares it.
        """
        return self.pool.cached(("prepared", self.method.name, self.options),
                                lambda: self.method.prepare(self.pool, self.options))

    def draw(self, seed: int, index: int, host: Case, brain_mask: np.ndarray | None = None,
             choice: np.random.Generator | None = None) -> Params | None:
        """Params of sample ``index`` of seed ``seed`` for ``host``, or ``None`` when it is left as it is.

        The pipeline's rule (:mod:`~napari_lesionmix.augment.pipeline`): whether
        it is augmented and its donor come from the choice stream (``choice``,
        e.g. after the dataset's method pick; else a fresh
        :func:`~napari_lesionmix.random.choice_rng`), the params from
        ``sample_rng(seed, index)``, so they are the CLI's on the same pair.

        Raises
        ------
        LesionMixError
            When no donor on the host's grid can make a sample.
        """
        choice = choice if choice is not None else choice_rng(seed, index)
        if choice.random() >= self.prob:
            return None
        check_case(host, "Host")  # the host's own problems are not a donor's: no redraw hides them
        donor_id, candidates = None, []
        if self.method.needs_donor:
            candidates = self.pool.on_grid_of(host)
            if not candidates:
                raise LesionMixError(f"No donor lies on the grid of host '{host.case_id}' (shape {host.shape}); "
                                     f"{self.method.label} needs donors on the host's grid.")
            donor_id = candidates[int(choice.integers(len(candidates)))]
        # A pool donor may itself be unusable (no lesion, ...): that too is a reason to take another.
        made = pipeline.draw(self.method, seed, index, host, self.pool, self.options, self.resources,
                             donor_id=donor_id, donor_ids=candidates, choice=choice, brain_mask=brain_mask,
                             retry_on=(DrawRejected, LesionMixError))
        warning = gain_warning(made.params.intensity, host.case_id)
        if warning and not self._gain_warned:
            # Once per sampler (as the CLI warns once per command): after MONAI's NormalizeIntensityd a
            # raw-unit donor pasted into a z-scored host is otherwise silent.
            self._gain_warned = True
            warnings.warn(warning, LesionMixWarning, stacklevel=3)
        return made.params

    def __repr__(self) -> str:
        return (f"OnlineMethod({self.method.name!r}, {self.pool!r}, options={self.options.changed()!r}, "
                f"prob={self.prob}{', resample=True' if self.resample else ''})")

    def for_host(self, host: Case) -> OnlineMethod:
        """This engine, or (``resample``) a copy whose donors are all on ``host``'s grid.

        Call :meth:`draw` and :meth:`apply` on what it returns: the draw is the
        same rule, over the donors as the host sees them.
        """
        if not self.resample or not self.method.needs_donor or isinstance(self.pool, HostGridPool):
            return self
        twin = copy.copy(self)
        twin.pool = HostGridPool(self.pool, host)
        return twin

    def inputs_for(self, params: Params, host: Case, brain_mask: np.ndarray | None = None) -> Inputs:
        """The inputs ``params`` were drawn on (the recorded donor from the pool)."""
        donor_id = getattr(params, "donor_id", None) if self.method.needs_donor else None
        return Inputs(host, None if donor_id is None else self.pool.case(donor_id), brain_mask)

    def apply(self, params: Params, host: Case, brain_mask: np.ndarray | None = None) -> Synthetic:
        """The sample of ``params`` (deterministic)."""
        if params.method != self.method.name:
            raise LesionMixError(f"Params of method '{params.method}' were given to '{self.method.name}'.")
        return apply_params(self.method, self.inputs_for(params, host, brain_mask), params, self.resources)

    def __call__(self, seed: int, index: int, host: Case,
                 brain_mask: np.ndarray | None = None) -> Synthetic | None:
        """Draw and apply sample ``index`` of seed ``seed`` (``None`` when not augmented)."""
        params = self.draw(seed, index, host, brain_mask)
        return None if params is None else self.apply(params, host, brain_mask)
