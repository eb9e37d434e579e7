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
import warnings
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
from napari_lesionmix.integrations.donors import (
    DonorPool,
    HostGridPool,
    case_from_arrays,
    case_id_of,
    grid_tag,
    image_array,
    label_array,
    resample_case,
)
from napari_lesionmix.io.checks import check_case
from napari_lesionmix.io.nifti import Case

#: The engine, and the donor machinery it moved to :mod:`~napari_lesionmix.integrations.donors`
#: (still importable from here).
__all__ = ["DonorPool", "HostGridPool", "OnlineMethod", "SharedEpoch", "case_from_arrays", "case_id_of", "grid_tag",
           "image_array", "keyed_index", "label_array", "resample_case", "spawn_index"]
from napari_lesionmix.random import choice_rng


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
        if self.method.needs_training_set and self.pool.training_set() is None and not self.pool.all_transformed:
            raise LesionMixError(f"{self.method.label} takes lesions from a training set: give the donors as a "
                                 "dataset folder, as dicts of file paths, or all through a donor_transform "
                                 "(not as arrays, and not a mix of these).")

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
