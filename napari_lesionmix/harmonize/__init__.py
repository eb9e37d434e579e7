"""Lesion harmonization: ARHNet (Huo et al., MICCAI 2023) and classical baselines.

Public API (torch is imported only when a torch-using function runs, so
``import napari_lesionmix.harmonize`` stays light):

- :func:`harmonize` / :func:`load_harmonizer`: harmonize a synthetic image
  inside its mask with ``"arhnet"`` (the shipped checkpoint), ``"composite"``,
  ``"hm"`` (pasted lesions matched to the host's lesions, as the paper), ``"hm-ring"``
  or a checkpoint path. Voxels outside the mask are unchanged. Given the
  synthetic label, ARHNet takes the pasted lesions' level from the host's own
  lesions (:mod:`~napari_lesionmix.harmonize.anchor`). It warns with
  :class:`OutOfDomainWarning` on inputs far outside its training data.
- :mod:`~napari_lesionmix.harmonize.criterion`: the cross-subject contrast criterion.
- :func:`train_harmonizer` with :class:`TrainConfig`: self-supervised training
  on a labelled dataset, reporting progress through a callback.
- :func:`resolve_device`: ``auto`` -> CUDA, then MPS, then CPU.
- :func:`mae`, :func:`fmae`, :func:`psnr`, :func:`fpsnr`: the paper's metrics.
"""

from __future__ import annotations

import importlib

from napari_lesionmix.harmonize.api import (
    METHODS,
    SHIPPED_CHECKPOINT,
    harmonize,
    harmonizer_from_record,
    load_harmonizer,
    shipped_checkpoint,
)
from napari_lesionmix.harmonize.config import ModelConfig, TrainConfig
from napari_lesionmix.harmonize.data import OutOfDomainWarning
from napari_lesionmix.harmonize.device import require_torch
from napari_lesionmix.harmonize.metrics import fmae, fpsnr, mae, psnr

_LAZY = {
    "train_harmonizer": "napari_lesionmix.harmonize.train",
    "resolve_device": "napari_lesionmix.harmonize.device",
    "ARHNetHarmonizer": "napari_lesionmix.harmonize.inference",
    "Generator": "napari_lesionmix.harmonize.model",
    "Discriminator": "napari_lesionmix.harmonize.model",
    "ARH": "napari_lesionmix.harmonize.arh",
    "load_checkpoint": "napari_lesionmix.harmonize.checkpoint",
}

__all__ = [
    "METHODS", "SHIPPED_CHECKPOINT", "ModelConfig", "OutOfDomainWarning", "TrainConfig", "harmonize", "harmonizer_from_record",
    "load_harmonizer",
    "shipped_checkpoint", "mae", "fmae", "psnr", "fpsnr", *_LAZY,
]


def __getattr__(name: str):
    if name in _LAZY:
        if _LAZY[name] != "napari_lesionmix.harmonize.device":
            require_torch(f"napari_lesionmix.harmonize.{name}")
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
