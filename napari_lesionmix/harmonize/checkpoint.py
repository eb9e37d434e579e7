"""Save and load ARHNet checkpoints, with one-sentence errors for bad files.

A checkpoint is a ``torch.save`` of a plain dict (loadable with
``weights_only=True``)::

    {"format": "napari-lesionmix/arhnet", "format_version": 1, "lesionmix_version": str,
     "model_config": {...}, "train_config": {...}, "normalisation": {...},
     "generator": state_dict, "discriminator": state_dict | absent,
     "opt_g": ..., "opt_d": ... (absent in a slim, inference-only file),
     "epoch": completed epochs, "split": {"train": [...], "val": [...]},
     "history": [per-epoch losses and validation metrics], "val": last validation metrics}
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

from napari_lesionmix.errors import LesionMixError
from napari_lesionmix.harmonize.config import ModelConfig
from napari_lesionmix.io.atomic import write_bytes_atomic

FORMAT = "napari-lesionmix/arhnet"
FORMAT_VERSION = 1


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write ``state`` to ``path`` through a temporary file and a rename (never half a file)."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {"format": FORMAT, "format_version": FORMAT_VERSION, **state}
    # Serialised in memory first: torch.save reports a full disk as a RuntimeError of its zip writer,
    # while the atomic writer turns the OSError into "the disk is full" with any earlier file intact.
    buf = io.BytesIO()
    torch.save(state, buf)
    return write_bytes_atomic(buf.getbuffer(), path)


def slim(state: dict[str, Any]) -> dict[str, Any]:
    """The inference-only part of a checkpoint (no discriminator or optimiser states)."""
    return {k: v for k, v in state.items() if k not in ("discriminator", "opt_g", "opt_d", "format", "format_version")}


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict[str, Any]:
    """Read and check a checkpoint written by :func:`save_checkpoint`.

    Raises
    ------
    LesionMixError
        If the file is missing, is not a PyTorch file, is truncated or
        corrupt, or is not an ARHNet checkpoint of a known format.
    """
    import torch

    where = os.fspath(path)
    p = Path(path)
    if p.is_dir():
        raise LesionMixError(f"Checkpoint '{where}' is a folder; give the checkpoint file (.pt) inside it.")
    if not p.is_file():
        raise LesionMixError(f"Checkpoint '{where}' does not exist.")
    try:
        state = torch.load(p, map_location=map_location, weights_only=True)
    except Exception as exc:  # pickle, zip and stream errors all mean "not a usable file"
        raise LesionMixError(
            f"Checkpoint '{where}' is not a readable PyTorch file; it may be truncated or corrupt "
            f"({type(exc).__name__})."
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise LesionMixError(f"Checkpoint '{where}' is not an ARHNet checkpoint written by napari-lesionmix.")
    if int(state.get("format_version", -1)) > FORMAT_VERSION:
        raise LesionMixError(
            f"Checkpoint '{where}' has format version {state.get('format_version')}, newer than this "
            f"napari-lesionmix reads ({FORMAT_VERSION})."
        )
    for key in ("model_config", "generator"):
        if key not in state:
            raise LesionMixError(f"Checkpoint '{where}' lacks its '{key}' entry.")
    return state


def model_config_of(state: dict[str, Any], where: str) -> ModelConfig:
    """The :class:`ModelConfig` recorded in a checkpoint."""
    try:
        return ModelConfig.from_dict(dict(state["model_config"]))
    except (LesionMixError, TypeError, ValueError) as exc:
        raise LesionMixError(f"Checkpoint '{where}' has an invalid model config ({exc}).") from None


def load_state(module, state_dict: dict, where: str, what: str) -> None:
    """``module.load_state_dict(state_dict)`` with a one-sentence error on any mismatch."""
    try:
        result = module.load_state_dict(state_dict, strict=True)
    except (RuntimeError, KeyError, TypeError, AttributeError) as exc:
        first = str(exc).strip().splitlines()
        detail = first[1].strip() if len(first) > 1 else (first[0] if first else type(exc).__name__)
        raise LesionMixError(
            f"Checkpoint '{where}' does not match the ARHNet {what} it declares ({detail[:200]})."
        ) from None
    return result


def build_generator(state: dict[str, Any], where: str):
    """Rebuild the generator of a loaded checkpoint."""
    from napari_lesionmix.harmonize.model import Generator

    gen = Generator(model_config_of(state, where))
    load_state(gen, state["generator"], where, "generator")
    return gen
