"""TorchIO transforms for every registered method (``pip install napari-lesionmix[torchio]``).

TorchIO's random/deterministic pair: :class:`RandomLesionAugment` (one
implementation, parameterised by the method's registered name;
``RandomCarveMix``, ``RandomSoftCP``, ``RandomLesionMix``, ``RandomMixup`` and
``RandomCutMix`` only fix that name) draws the project's params and applies
them through the deterministic :class:`LesionAugment`, which the subject's
history records with the params (JSON-ready) among its arguments. So
``subject.history`` shows them, ``subject.get_composed_history()`` replays them
on the original subject, and ``lesionmix METHOD --params`` replays them offline.

The host is the subject: its :class:`~torchio.ScalarImage` s (stacked as
channels, in order) and its one :class:`~torchio.LabelMap` (name them with
``image_keys``/``label_key`` otherwise).

Seeding follows TorchIO (torch's generator, seeded per DataLoader worker) unless
the subject holds ``index_key`` (``lesionmix_index``: its position ``i`` in the
subject list): then the sample is ``sample_rng(seed, epoch * n + i)``, the same
for any worker count (:meth:`RandomLesionAugment.set_epoch` before each epoch).
"""

from __future__ import annotations

import json
import re
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

try:
    import torch
    import torchio as tio
    from torchio.transforms.augmentation import RandomTransform
except ImportError as exc:  # pragma: no cover - depends on the installation
    raise ImportError(f"The TorchIO transforms need TorchIO: pip install 'napari-lesionmix[torchio]' ({exc}).") from None

from napari_lesionmix.augment.params import Synthetic, params_from_dict
from napari_lesionmix.augment.registry import methods
from napari_lesionmix.errors import LesionMixError
from napari_lesionmix.integrations.online import (
    DonorPool,
    OnlineMethod,
    SharedEpoch,
    case_from_arrays,
    keyed_index,
    spawn_index,
)
from napari_lesionmix.io.nifti import case_id_from_path

#: The subject entry holding its position in the subject list (keyed sampling).
INDEX_KEY = "lesionmix_index"
#: History entries name in-memory donors by this prefix and the pool's id (the pool lives in this process).
POOL_PREFIX = "lesionmix-pool:"
# Donor pools by their history name, so that replays in this process share the loaded donors and their work.
_LIVE_POOLS: weakref.WeakValueDictionary[str, DonorPool] = weakref.WeakValueDictionary()


def pool_name(pool: DonorPool) -> str | list:
    """What a history entry records for ``pool``: its JSON spec, or a name valid in this process."""
    spec = pool.spec()
    key = POOL_PREFIX + str(id(pool)) if spec is None else json.dumps(spec, sort_keys=True)
    _LIVE_POOLS[key] = pool
    return key if spec is None else spec


def _pool_of(donors) -> DonorPool | None:
    """The live pool a history entry names, if any."""
    if isinstance(donors, DonorPool):
        return donors
    if isinstance(donors, str) and donors.startswith(POOL_PREFIX):
        pool = _LIVE_POOLS.get(donors)
        if pool is None:
            raise LesionMixError("This history entry's donors lived in memory in another process; give the "
                                 "donors as files to replay it elsewhere.")
        return pool
    try:
        return _LIVE_POOLS.get(json.dumps(donors, sort_keys=True))
    except TypeError:
        return None


def _host_images(subject, image_keys, label_key, brain_mask_key):
    """The subject's image names, label name and brain-mask name (checked)."""
    images = subject.get_images_dict(intensity_only=False)
    if image_keys is None:
        image_keys = [k for k, v in images.items() if isinstance(v, tio.ScalarImage) and k != brain_mask_key]
    if label_key is None:
        labels = [k for k, v in images.items() if isinstance(v, tio.LabelMap) and k != brain_mask_key]
        if len(labels) != 1:
            raise LesionMixError(f"The subject has label maps {labels or 'none'}; name the lesion label "
                                 "with label_key.")
        label_key = labels[0]
    missing = [k for k in (*image_keys, label_key, *([brain_mask_key] if brain_mask_key else [])) if k not in images]
    if missing or not image_keys:
        raise LesionMixError(f"The subject has no image(s) {missing or 'to mix'}; it has {list(images)}.")
    return list(image_keys), label_key


def subject_case(subject, image_keys=None, label_key=None, brain_mask_key=None, case_id: str | None = None):
    """``(Case, brain mask, image keys, label key)`` of a TorchIO subject (images stacked as channels)."""
    image_keys, label_key = _host_images(subject, image_keys, label_key, brain_mask_key)
    first = subject[image_keys[0]]
    image = np.concatenate([subject[k].data.numpy() for k in image_keys])
    path = getattr(first, "path", None)  # a ScalarImage made from a file: its case id as the CLI reads it
    cid = case_id or subject.get("case_id") or (case_id_from_path(path) if path else None) or "host"
    case = case_from_arrays(image, subject[label_key].data, affine=first.affine, case_id=str(cid))
    brain = subject[brain_mask_key].data.numpy()[0] > 0 if brain_mask_key else None
    return case, brain, image_keys, label_key


def _donor_items(donors) -> Any:
    """TorchIO subjects as :class:`DonorPool` items (file paths when every image has one)."""
    if isinstance(donors, DonorPool) or not isinstance(donors, Sequence) or isinstance(donors, str):
        return donors
    items = []
    for s in donors:
        if not isinstance(s, tio.Subject):
            items.append(s)
            continue
        case, brain, keys, label_key = subject_case(s)
        paths = [getattr(s[k], "path", None) for k in (*keys, label_key)]
        if all(p is not None for p in paths):
            items.append({"image": [str(p) for p in paths[:-1]], "label": str(paths[-1]), "case_id": case.case_id})
        else:
            items.append(case)
    return items


class LesionAugment(tio.Transform):
    """Apply recorded params of any registered method (deterministic): the history entry of a random draw.

    Parameters
    ----------
    params : dict
        A :class:`~napari_lesionmix.augment.params.Params` as JSON (``Params.to_dict()``).
    donors
        The donors the params were drawn from (folder, list, or :class:`DonorPool`).
    options : dict, optional
        The options the donors' prepared work was built with.
    image_keys, label_key, brain_mask_key, resample
        As :class:`RandomLesionAugment`.

    Every argument is JSON (the donors as a folder or dicts of paths, or the
    name of an in-memory pool of this process), so ``subject.history`` is too.
    """

    def __init__(self, params: Mapping[str, Any], donors=None, options: Mapping[str, Any] | None = None,
                 image_keys: Sequence[str] | None = None, label_key: str | None = None,
                 brain_mask_key: str | None = None, resample: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.params = dict(params)
        self.donors = pool_name(donors) if isinstance(donors, DonorPool) else donors
        self.options = dict(options or {})
        self.image_keys = None if image_keys is None else list(image_keys)
        self.label_key, self.brain_mask_key, self.resample = label_key, brain_mask_key, bool(resample)
        self.args_names = ["params", "donors", "options", "image_keys", "label_key", "brain_mask_key", "resample"]
        self._engine: OnlineMethod | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(method={self.params.get('method')!r}, donors={self.donors!r})"

    def apply_transform(self, subject: tio.Subject) -> tio.Subject:
        params = params_from_dict(self.params)
        if self._engine is None:
            pool = _pool_of(self.donors)
            self._engine = OnlineMethod(params.method, pool if pool is not None else _donor_items(self.donors),
                                        self.options, resample=self.resample)
        host, brain, keys, label_key = subject_case(subject, self.image_keys, self.label_key, self.brain_mask_key,
                                                    case_id=params.host_id)
        engine = self._engine.for_host(host)
        _write(subject, engine.apply(params, host, brain), keys, label_key)
        return subject


def _write(subject: tio.Subject, syn: Synthetic, image_keys: list[str], label_key: str) -> None:
    start = 0
    for k in image_keys:
        n = subject[k].data.shape[0]
        subject[k].set_data(torch.from_numpy(np.ascontiguousarray(syn.image[start:start + n], np.float32)))
        start += n
    label = subject[label_key]
    soft = np.issubdtype(syn.label.dtype, np.floating)
    data = torch.from_numpy(np.ascontiguousarray(syn.label[None]))
    label.set_data(data.float() if soft else data.to(label.data.dtype))


class RandomLesionAugment(RandomTransform):
    """Any registered method as a TorchIO random transform.

    Parameters
    ----------
    method : str
        A registered method (``"carvemix"``, ``"softcp"``, ``"lesionmix"``, ``"mixup"``, ``"cutmix"``).
    donors : folder or list
        A dataset folder, or subjects (:class:`~torchio.Subject` with the same image names) or dicts of paths.
    options : dict, optional
        The method's options (as the CLI flags; checked).
    p : float
        Probability of augmenting a subject (drawn from the sample's own stream).
    seed : int
        Root seed of keyed sampling (subjects with ``index_key``).
    image_keys, label_key, brain_mask_key : optional
        The host's images (default: every ScalarImage), its lesion label
        (default: the one LabelMap) and its brain mask.
    index_key : str
        The subject entry holding its position (keyed sampling).
    resample : bool
        Resample donors that are not on the host's grid onto it (cases in one physical space).
    """

    def __init__(self, method: str, donors=None, options: Mapping[str, Any] | None = None, p: float = 1.0,
                 seed: int = 0, image_keys: Sequence[str] | None = None, label_key: str | None = None,
                 brain_mask_key: str | None = None, index_key: str = INDEX_KEY, resample: bool = False,
                 **kwargs):
        super().__init__(p=1, **kwargs)  # the probability is drawn from the sample's stream, not torch's
        self.engine = OnlineMethod(method, _donor_items(donors), options, p, resample=resample)
        self.seed, self.index_key = int(seed), index_key
        self.image_keys, self.label_key, self.brain_mask_key = image_keys, label_key, brain_mask_key
        self._epoch = SharedEpoch()
        self.params = None

    @property
    def epoch(self) -> int:
        return self._epoch.epoch

    @property
    def epoch_length(self) -> int | None:
        return self._epoch.length

    def set_epoch(self, epoch: int, length: int) -> None:
        """Keyed sampling: subject ``i`` of the next epoch is sample ``epoch * length + i`` of ``seed``.

        The value is shared memory: DataLoader workers see it, persistent ones too.
        """
        spawn_index(epoch, 0, length)  # checks
        self._epoch.set(epoch, length)

    def __repr__(self) -> str:
        e = self.engine
        return (f"{type(self).__name__}(method={e.method.name!r}, donors={e.pool!r}, p={e.prob}, "
                f"options={e.options.changed()!r}, seed={self.seed}{', resample=True' if e.resample else ''})")

    def apply_transform(self, subject: tio.Subject) -> tio.Subject:
        if self.index_key in subject:
            draw = (self.seed, keyed_index(self.epoch, self.epoch_length, int(subject[self.index_key])))
        else:
            draw = (self._get_random_seed(), 0)  # TorchIO's stream: torch's generator of this worker
        host, brain, keys, label_key = subject_case(subject, self.image_keys, self.label_key, self.brain_mask_key)
        self.params = self.engine.for_host(host).draw(*draw, host, brain)
        if self.params is None:
            return subject
        replay = LesionAugment(self.params.to_dict(), self.engine.pool, self.engine.options.changed(),
                               keys, label_key, self.brain_mask_key, self.engine.resample,
                               **self._get_base_args())
        return replay(subject)


def _class_name(label: str) -> str:
    return "Random" + re.sub(r"\W", "", label)


def _method_transform(name: str, label: str) -> type[RandomLesionAugment]:
    def __init__(self, donors=None, options=None, p: float = 1.0, **kwargs):
        RandomLesionAugment.__init__(self, name, donors, options, p, **kwargs)

    doc = (f"{label} as a TorchIO random transform: :class:`RandomLesionAugment` with ``method='{name}'`` "
           "(same parameters, without ``method``).")
    return type(_class_name(label), (RandomLesionAugment,), {"__init__": __init__, "__doc__": doc,
                                                             "__module__": __name__})


__all__ = ["INDEX_KEY", "LesionAugment", "RandomLesionAugment", "subject_case"]
for _m in methods():
    globals()[_class_name(_m.label)] = _method_transform(_m.name, _m.label)
    __all__.append(_class_name(_m.label))
