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

    Notes
    -----
    Cases are loaded lazily, once per process; the pool pickles without them,
    so DataLoader workers each load what they use. Copies
    (:func:`copy.deepcopy`, which TorchIO applies to every subject and its
    history) share the pool instead of copying the donors.
    """

    def __init__(self, donors=None, *, image_key: str = "image", label_key: str = "label",
                 brain_mask_key: str | None = "brain_mask", max_cases: int = MAX_CASES):
        self.source = donors
        self.max_cases = int(max_cases)
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
        self.ids: tuple[str, ...] = tuple(sorted({*self._records, *self._memory}))
        self._init_caches()

    def _add(self, i: int, item, image_key: str, label_key: str, brain_mask_key: str | None) -> None:
        if isinstance(item, Case):
            entry, cid = (item, None), item.case_id
        elif isinstance(item, CaseRecord):
            entry, cid = item, item.case_id
        elif isinstance(item, Mapping):
            if image_key not in item or label_key not in item:
                raise LesionMixError(f"Donor {i} has no '{image_key}' and '{label_key}' entries.")
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
        self._lock = threading.Lock()

    def __getstate__(self):
        state = dict(self.__dict__)
        for key in ("_cases", "_objects", "_grids", "_lock"):
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
        return f"DonorPool({source!r})"

    def case(self, case_id: str) -> Case:
        if case_id in self._memory:
            return self._memory[case_id][0]
        if case_id not in self._records:
            raise LesionMixError(f"Case '{case_id}' is not among the donors.")
        return self._cases.get(case_id, self._records[case_id].load)

    def brain_mask(self, case_id: str) -> np.ndarray | None:
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
            if case_id in self._memory:
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
    """

    def __init__(self, method: str | Method, donors=None, options=None, prob: float = 1.0):
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
