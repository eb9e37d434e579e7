"""MONAI dictionary transforms for every registered method (``pip install napari-lesionmix[monai]``).

:class:`RandLesionAugmentd` is the one implementation, parameterised by the
method's registered name; ``RandCarveMixd``, ``RandSoftCPd``,
``RandLesionMixd``, ``RandMixupd`` and ``RandCutMixd`` (one per method of the
registry, made below) only fix that name.

MONAI's conventions are kept: a :class:`~monai.transforms.RandomizableTransform`
whose only random call is in :meth:`~RandLesionAugmentd.randomize` (on
``self.R``, so :meth:`set_random_state`, ``Compose.set_random_state`` and
MONAI's DataLoader worker seeding control it); channel-first arrays; a
``MetaTensor`` in gives a ``MetaTensor`` out with its meta (affine, file name)
kept; it runs inside ``monai.data.Dataset``/``CacheDataset`` and multi-worker
DataLoaders.

Keyed sampling: when a data dict carries ``index_key`` (``lesionmix_index``,
its position ``i`` in the data list; :func:`with_sample_index` adds it), the
sample is drawn from ``sample_rng(seed, epoch * n + i)`` instead of
``self.R`` (the spawn rule of :mod:`~napari_lesionmix.integrations.online`),
so it is the same for 0, 1 or N workers; call :meth:`~RandLesionAugmentd.set_epoch`
before each epoch (workers that are not persistent take the new epoch with them).

Every output dict has ``params_key`` (``lesionmix_params``): the JSON of the
sample's params (``""`` when not augmented). Saved to a file, it replays the
sample offline: ``lesionmix METHOD --params params.json ...``.
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np

try:
    import torch
    from monai.config import KeysCollection
    from monai.transforms import InvertibleTransform, MapTransform, RandomizableTransform
    from monai.utils import convert_to_dst_type
except ImportError as exc:  # pragma: no cover - depends on the installation
    raise ImportError("The MONAI transforms need MONAI: pip install 'napari-lesionmix[monai]' "
                      f"({exc}).") from None

from napari_lesionmix.augment.params import Params, Synthetic
from napari_lesionmix.augment.registry import methods
from napari_lesionmix.errors import LesionMixError
from napari_lesionmix.integrations.online import (
    DonorPool,
    OnlineMethod,
    SharedEpoch,
    case_from_arrays,
    case_id_of,
    keyed_index,
    label_array,
    spawn_index,
)

#: The data-dict key holding an item's position in its data list (keyed sampling).
INDEX_KEY = "lesionmix_index"
#: The output key holding the sample's params as JSON.
PARAMS_KEY = "lesionmix_params"


def with_sample_index(data: Sequence[Mapping], key: str = INDEX_KEY) -> list[dict]:
    """Copies of MONAI data dicts with their position under ``key``: keyed, worker-independent sampling.

    Examples
    --------
    >>> with_sample_index([{"image": "a.nii.gz"}, {"image": "b.nii.gz"}])
    [{'image': 'a.nii.gz', 'lesionmix_index': 0}, {'image': 'b.nii.gz', 'lesionmix_index': 1}]
    """
    return [{**d, key: i} for i, d in enumerate(data)]


class RandLesionAugmentd(RandomizableTransform, MapTransform, InvertibleTransform):
    """Any registered method as a MONAI random dictionary transform.

    Parameters
    ----------
    method : str
        A registered method (``"carvemix"``, ``"softcp"``, ``"lesionmix"``, ``"mixup"``, ``"cutmix"``).
    keys : (str, str)
        The image key (channel-first, all channels mixed together) and the label key.
    donors : folder or list of dicts
        A dataset folder or dicts like MONAI's data list (``{"image": path or array, "label": ...}``,
        paths not yet loaded, or channel-first arrays/MetaTensors).
    prob : float
        Probability of augmenting a sample.
    options : dict, optional
        The method's options (as the CLI flags; checked).
    seed : int
        Root seed of keyed sampling (items with ``index_key``).
    brain_mask_key : str, optional
        The host's brain (or organ) mask in the data dict.
    mask_key : str, optional
        Also return the mixing mask under this key.
    params_key, index_key, case_id_key : str
        Output key of the params JSON; input key of an item's position; input
        key of the host's case id (else the case id of its file name).
    allow_missing_keys : bool
        Leave dicts without the keys unchanged.
    donor_transform : callable, optional
        The host's pre-transforms (e.g. ``Compose([LoadImaged, EnsureChannelFirstd,
        Orientationd, Spacingd])``), applied to each donor dict before use, so
        that donors reach the method as the host does. LesionMix then builds its
        bank and likelihood map from every donor so transformed (one grid for all).
    resample : bool
        Resample donors that are not on the host's grid onto it (cases in one
        physical space, e.g. after ``Orientationd`` and ``Spacingd``, whose
        fields of view differ); else such donors are left out.

    Notes
    -----
    Each call records a MONAI ``applied_operations`` entry on the image and
    the label (``extra_info``: the method and its params JSON); :meth:`inverse`
    only removes it (a mix cannot be undone), so ``Invertd`` of the transforms
    before it still works. The epoch set by :meth:`set_epoch` is shared memory,
    so it reaches persistent DataLoader workers too.
    """

    def __init__(self, method: str, keys: KeysCollection = ("image", "label"), donors=None, prob: float = 1.0,
                 options: Mapping[str, Any] | None = None, seed: int = 0, brain_mask_key: str | None = None,
                 mask_key: str | None = None, params_key: str = PARAMS_KEY, index_key: str = INDEX_KEY,
                 case_id_key: str = "case_id", allow_missing_keys: bool = False, donor_transform=None,
                 resample: bool = False):
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        if len(self.keys) != 2:
            raise LesionMixError(f"keys must name the image and the label, got {list(self.keys)}.")
        if donor_transform is not None and not isinstance(donors, DonorPool):
            donors = DonorPool(donors, image_key=self.keys[0], label_key=self.keys[1],
                               donor_transform=donor_transform)
        self.engine = OnlineMethod(method, donors, options, prob, resample=resample)
        self.seed = int(seed)
        self.brain_mask_key, self.mask_key = brain_mask_key, mask_key
        self.params_key, self.index_key, self.case_id_key = params_key, index_key, case_id_key
        self._epoch = SharedEpoch()
        self._draw: tuple[int, int] | None = None
        self.params: Params | None = None

    @property
    def epoch(self) -> int:
        return self._epoch.epoch

    @property
    def epoch_length(self) -> int | None:
        return self._epoch.length

    def set_epoch(self, epoch: int, length: int) -> None:
        """Keyed sampling: item ``i`` of the next epoch is sample ``epoch * length + i`` of ``seed``.

        The value is shared memory: DataLoader workers see it, persistent ones too.
        """
        spawn_index(epoch, 0, length)  # checks
        self._epoch.set(epoch, length)

    def __repr__(self) -> str:
        e = self.engine
        return (f"{type(self).__name__}(keys={tuple(self.keys)}, method={e.method.name!r}, donors={e.pool!r}, "
                f"prob={e.prob}, options={e.options.changed()!r}, seed={self.seed}"
                f"{', resample=True' if e.resample else ''})")

    def randomize(self, data: Mapping[Hashable, Any]) -> None:
        """Choose the sample's (seed, index): from the item's position when keyed, else from ``self.R``."""
        if self.index_key in data:
            item = int(np.asarray(data[self.index_key]))
            self._draw = (self.seed, keyed_index(self.epoch, self.epoch_length, item))
        else:
            self._draw = (int(self.R.randint(0, 2**31 - 1)), 0)  # MONAI's stream: the R of this worker

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        image_key, label_key = self.keys
        if image_key not in d or label_key not in d:
            if self.allow_missing_keys:
                return d
            raise LesionMixError(f"The data dict has no '{image_key}' and '{label_key}' entries.")
        image, label = d[image_key], d[label_key]
        case_id = d.get(self.case_id_key) or case_id_of(image) or "host"
        host = case_from_arrays(image, label, affine=getattr(label, "affine", None), case_id=str(case_id))
        brain = label_array(d[self.brain_mask_key]) > 0 if self.brain_mask_key else None
        self.randomize(d)
        engine = self.engine.for_host(host)
        self.params = engine.draw(*self._draw, host, brain)
        self._do_transform = self.params is not None
        d[self.params_key] = "" if self.params is None else self.params.to_json(indent=None)
        if self.params is None:
            if self.mask_key:
                d[self.mask_key] = convert_to_dst_type(np.zeros_like(host.label, np.float32)[None], label,
                                                       dtype=torch.float32)[0]
            return self._trace(d)
        syn = engine.apply(self.params, host, brain)
        return self._trace(self._write(d, syn, image, label))

    def _trace(self, d: dict) -> dict:
        # MONAI's record of what ran (Compose/Invertd read it); only MetaTensors carry one.
        info = {"method": self.engine.method.name, "params": d[self.params_key]}
        for key in self.keys:
            if hasattr(d[key], "applied_operations"):
                self.push_transform(d, key, extra_info=info)
        return d

    def inverse(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Remove this transform's ``applied_operations`` entry (the mix itself cannot be undone)."""
        d = dict(data)
        for key in self.key_iterator(d):
            if hasattr(d[key], "applied_operations"):
                self.pop_transform(d, key)
        return d

    def _write(self, d: dict, syn: Synthetic, image, label) -> dict:
        image_key, label_key = self.keys
        d[image_key] = convert_to_dst_type(syn.image, image, dtype=torch.float32)[0]
        soft = np.issubdtype(syn.label.dtype, np.floating)
        dtype = torch.float32 if soft else getattr(label, "dtype", None)
        d[label_key] = convert_to_dst_type(syn.label[None], label, dtype=dtype)[0]
        if self.mask_key:
            d[self.mask_key] = convert_to_dst_type(np.asarray(syn.mask, np.float32)[None], label,
                                                   dtype=torch.float32)[0]
        return d


def _class_name(label: str) -> str:
    return "Rand" + re.sub(r"\W", "", label) + "d"


def _method_transform(name: str, label: str) -> type[RandLesionAugmentd]:
    def __init__(self, keys: KeysCollection = ("image", "label"), donors=None, prob: float = 1.0, **kwargs):
        RandLesionAugmentd.__init__(self, name, keys, donors, prob, **kwargs)

    doc = (f"{label} as a MONAI random dictionary transform: :class:`RandLesionAugmentd` with "
           f"``method='{name}'`` (same parameters, without ``method``).")
    return type(_class_name(label), (RandLesionAugmentd,), {"__init__": __init__, "__doc__": doc,
                                                            "__module__": __name__})


__all__ = ["INDEX_KEY", "PARAMS_KEY", "RandLesionAugmentd", "with_sample_index"]
for _m in methods():
    globals()[_class_name(_m.label)] = _method_transform(_m.name, _m.label)
    __all__.append(_class_name(_m.label))
