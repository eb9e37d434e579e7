"""``LesionMixDataset``: synthetic cases made on the fly from a dataset folder, for a PyTorch DataLoader.

It needs no torch itself (items are NumPy arrays, which the DataLoader's
default collate turns into tensors), so it also feeds other loaders.

Seeding (the spawn rule of :mod:`~napari_lesionmix.integrations.online` and
the pipeline's streams, :mod:`~napari_lesionmix.augment.pipeline`): item ``i``
of epoch ``e`` is sample ``index = e * len(dataset) + i`` of the root seed.
Its method (by ``weights``), whether it is synthetic (``p_synthetic``) and its
donor are drawn in that order from ``choice_rng(seed, index)``; its params
from ``sample_rng(seed, index)``. Its host is case ``i % n_cases``. Nothing depends
on the worker that makes it, so 0, 1 or N workers give the same items; call
:meth:`LesionMixDataset.set_epoch` before each epoch (as with
``DistributedSampler``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from napari_lesionmix.augment.params import Params, Synthetic, params_from_json
from napari_lesionmix.errors import LesionMixError
from napari_lesionmix.integrations.online import DonorPool, OnlineMethod, spawn_index
from napari_lesionmix.random import choice_rng


class LesionMixDataset:
    """Synthetic training cases made on the fly, the same for any DataLoader worker count.

    Parameters
    ----------
    dataset_dir : folder
        A dataset (nnU-Net, Decathlon or plain pairs): hosts and donors.
    methods : str or sequence of str
        Registered methods to draw from.
    seed : int
        Root seed.
    options : dict, optional
        ``{method: {option: value}}`` (as the CLI flags; checked).
    weights : sequence of float, optional
        Relative frequency of each method (default: equal).
    p_synthetic : float
        Fraction of items that are synthetic; the others are the real host as it is
        (e.g. 0.5 for a 50:50 real:synthetic mix).
    length : int, optional
        Items per epoch (default: the number of cases; item ``i``'s host is case ``i % n_cases``).
    transform : callable, optional
        Applied to each item dict after it is made (e.g. a MONAI crop).
    on_sample : callable, optional
        ``on_sample(index, params_json)`` for each synthetic item, in the worker that makes it.
    with_mask : bool
        Put the mixing mask in each item (``False``: image and label only, as an
        exported folder holds; at 1 mm that is 35 MB less per item to send from a
        DataLoader worker).

    Items are dicts: ``image`` (C, I, J, K) float32, ``label`` (1, I, J, K)
    float32 (soft for Mixup/CutMix), ``mask`` (1, I, J, K) float32 (the mixing
    mask; left out with ``with_mask=False``), ``affine`` (4, 4), ``case_id`` (the host), ``method`` and ``params``
    (JSON; ``""`` for a real item) and ``index`` (the sample index).

    Examples
    --------
    >>> from torch.utils.data import DataLoader                             # doctest: +SKIP
    >>> ds = LesionMixDataset("sample_data", methods=("carvemix", "softcp"), seed=0)  # doctest: +SKIP
    >>> for epoch in range(2):                                            # doctest: +SKIP
    ...     ds.set_epoch(epoch)
    ...     for batch in DataLoader(ds, batch_size=2, num_workers=2):
    ...         ...
    """

    def __init__(self, dataset_dir: str | os.PathLike, methods: str | Sequence[str] = ("carvemix",), *,
                 seed: int = 0, options: Mapping[str, Mapping[str, Any]] | None = None,
                 weights: Sequence[float] | None = None, p_synthetic: float = 1.0, length: int | None = None,
                 transform: Callable[[dict], Any] | None = None,
                 on_sample: Callable[[int, str], None] | None = None, with_mask: bool = True):
        self.pool = DonorPool(dataset_dir)
        names = [methods] if isinstance(methods, str) else list(methods)
        if not names:
            raise LesionMixError("methods must name at least one registered method.")
        options = dict(options or {})
        unknown = sorted(set(options) - set(names))
        if unknown:
            raise LesionMixError(f"Options were given for {', '.join(unknown)}, which is not among the methods.")
        self.engines = [OnlineMethod(n, self.pool, options.get(n), p_synthetic) for n in names]
        w = np.ones(len(names)) if weights is None else np.asarray(weights, float)
        if w.shape != (len(names),) or not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
            raise LesionMixError(f"weights must be {len(names)} non-negative numbers with a positive sum.")
        self.weights = w / w.sum()
        self.seed = int(seed)
        if self.seed < 0:
            raise LesionMixError(f"seed must be non-negative, got {seed}.")
        self.length = len(self.pool) if length is None else int(length)
        if self.length < 1:
            raise LesionMixError(f"length must be at least 1, got {length}.")
        self.transform, self.on_sample = transform, on_sample
        self.with_mask = bool(with_mask)
        self.epoch = 0

    def __len__(self) -> int:
        return self.length

    def set_epoch(self, epoch: int) -> None:
        """Make the next iteration epoch ``epoch`` (item ``i`` is then sample ``epoch * len + i``)."""
        spawn_index(epoch, 0, self.length)  # checks
        self.epoch = int(epoch)

    def host_id(self, item: int) -> str:
        return self.pool.ids[item % len(self.pool)]

    def engine_for(self, index: int, choice: np.random.Generator | None = None) -> OnlineMethod:
        """The method of sample ``index``: the first draw of its choice stream (none for a single method)."""
        if len(self.engines) == 1:
            return self.engines[0]
        choice = choice if choice is not None else choice_rng(self.seed, index)
        return self.engines[int(choice.choice(len(self.engines), p=self.weights))]

    def __getitem__(self, item: int) -> dict:
        item = int(item)
        if item < 0:
            item += self.length
        index = spawn_index(self.epoch, item, self.length)
        host_id = self.host_id(item)
        host, brain = self.pool.case(host_id), self.pool.brain_mask(host_id)
        choice = choice_rng(self.seed, index)  # method, then whether synthetic, then donor (the pipeline's order)
        engine = self.engine_for(index, choice)
        params = engine.draw(self.seed, index, host, brain, choice=choice)
        if params is None:
            out = self._item(host, None, index, "", "", self.with_mask)
        else:
            text = params.to_json(indent=None)
            out = self._item(host, engine.apply(params, host, brain), index, engine.method.name, text,
                             self.with_mask)
            if self.on_sample is not None:
                self.on_sample(index, text)
        return self.transform(out) if self.transform is not None else out

    @staticmethod
    def _item(host, syn: Synthetic | None, index: int, method: str, params: str, with_mask: bool = True) -> dict:
        label = host.label if syn is None else syn.label
        item = {
            "image": np.ascontiguousarray(host.image if syn is None else syn.image, np.float32),
            "label": np.asarray(label, np.float32)[None],
        }
        if with_mask:
            mask = np.zeros(host.shape, np.float32) if syn is None else syn.mask
            item["mask"] = np.asarray(mask, np.float32)[None]
        item.update(affine=np.asarray(host.affine, np.float64), case_id=host.case_id, method=method,
                    params=params, index=index)
        return item

    def replay(self, params: Params | str) -> Synthetic:
        """The sample of recorded params (an item's ``params`` JSON), from this dataset's cases."""
        if isinstance(params, str):
            params = params_from_json(params)
        engine = next((e for e in self.engines if e.method.name == params.method), None)
        if engine is None:
            engine = OnlineMethod(params.method, self.pool, None, 1.0)
        host = self.pool.case(params.host_id)
        return engine.apply(params, host, self.pool.brain_mask(params.host_id))
