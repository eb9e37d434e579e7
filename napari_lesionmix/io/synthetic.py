"""Write one synthetic sample as ``DIR/image_0000.nii.gz``..., ``label.nii.gz``,
``mask.nii.gz`` and ``params.json`` (the layout every ``lesionmix`` method command shares)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from napari_lesionmix.io.atomic import write_json_atomic
from napari_lesionmix.io.nifti import Case, save_image, save_label


class SampleLike(Protocol):
    """What is written of a sample (:class:`~napari_lesionmix.augment.params.Synthetic` is one)."""

    image: np.ndarray
    label: np.ndarray
    mask: np.ndarray
    params: Any  # has to_dict()


def write_synthetic(
    out_dir: str | os.PathLike,
    synthetic: SampleLike,
    host: Case,
    inputs: dict[str, Any] | None = None,
) -> dict[str, Path]:
    """Save a synthetic sample with the host's affine and header.

    ``params.json`` holds ``{"version", "inputs", "params"}``; ``params`` alone
    replays the sample (see :func:`~napari_lesionmix.augment.params.params_from_json`).
    The mask is saved as uint8 when binary, float32 when soft (Soft-CP).
    """
    from napari_lesionmix import __version__

    out = Path(out_dir)
    paths: dict[str, Path] = {}
    for c, channel in enumerate(synthetic.image):
        paths[f"image_{c:04d}"] = save_image(
            channel, out / f"image_{c:04d}.nii.gz", host.affine, host.header, host.image_dtype
        )
    label = synthetic.label
    if np.issubdtype(label.dtype, np.floating) and np.any(label != np.round(label)):
        # Soft labels (Mixup/CutMix baselines) are kept as float images.
        paths["label"] = save_image(label, out / "label.nii.gz", host.affine, host.header)
    else:
        paths["label"] = save_label(label, out / "label.nii.gz", host.affine, host.header)
    mask = synthetic.mask
    if mask.dtype == bool or np.isin(mask, (0, 1)).all():
        paths["mask"] = save_label(mask.astype(np.uint8), out / "mask.nii.gz", host.affine, host.header)
    else:
        paths["mask"] = save_image(mask.astype(np.float32), out / "mask.nii.gz", host.affine, host.header)
    record = {"version": __version__, "inputs": inputs or {}, "params": synthetic.params.to_dict()}
    paths["params"] = write_json_atomic(record, out / "params.json")
    return paths
