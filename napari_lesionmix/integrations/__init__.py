"""Augmentation in the training loop: MONAI and TorchIO transforms and an on-the-fly PyTorch dataset.

Every face goes through :mod:`napari_lesionmix.augment.registry`, so each
registered method is offered everywhere:

* :mod:`.monai_transforms`: ``RandCarveMixd``, ``RandSoftCPd``, ``RandLesionMixd``,
  ``RandMixupd``, ``RandCutMixd`` (and the generic ``RandLesionAugmentd``);
  needs ``pip install 'napari-lesionmix[monai]'``.
* :mod:`.torchio_transforms`: ``RandomCarveMix``... (and ``RandomLesionAugment``),
  recorded in the subject's history as a replayable ``LesionAugment``;
  needs ``pip install 'napari-lesionmix[torchio]'``.
* :class:`~.dataset.LesionMixDataset`: synthetic cases on the fly from a
  dataset folder, for any ``torch.utils.data.DataLoader``.

MONAI and TorchIO are imported only when one of their names is first used.
"""

from __future__ import annotations

import importlib

from napari_lesionmix.integrations.dataset import LesionMixDataset
from napari_lesionmix.integrations.online import DonorPool, OnlineMethod, spawn_index

_LAZY = {"monai_transforms": "napari_lesionmix.integrations.monai_transforms",
         "torchio_transforms": "napari_lesionmix.integrations.torchio_transforms"}


def __getattr__(name: str):
    # RandCarveMixd, RandomCarveMix...: import the MONAI or TorchIO module only when asked for.
    if name in _LAZY:
        return importlib.import_module(_LAZY[name])
    for module in _LAZY.values():
        if (name.startswith("Rand") and name.endswith("d") and "monai" in module) or (
                (name.startswith("Random") or name == "LesionAugment") and "torchio" in module):
            mod = importlib.import_module(module)
            if hasattr(mod, name):
                return getattr(mod, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["DonorPool", "LesionMixDataset", "OnlineMethod", "spawn_index"]
