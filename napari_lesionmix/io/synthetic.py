"""Write one synthetic sample as ``DIR/image_0000.nii.gz``..., ``label.nii.gz``,
``mask.nii.gz`` and ``params.json`` (the layout every ``lesionmix`` method command shares)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from napari_lesionmix.io.atomic import atomic_folder, write_json_atomic
from napari_lesionmix.io.nifti import Case, save_image, save_label


class SampleLike(Protocol):
    """What is written of a sample (:class:`~napari_lesionmix.augment.params.Synthetic` is one)."""

    image: np.ndarray
    label: np.ndarray
    mask: np.ndarray
    params: Any  # has to_dict()


def is_sample_file(name: str) -> bool:
    """Whether a file name is one that :func:`write_synthetic` writes."""
    return name in ("label.nii.gz", "mask.nii.gz", "params.json") or (
        name.startswith("image_") and name.endswith(".nii.gz"))


def write_synthetic(
    out_dir: str | os.PathLike,
    synthetic: SampleLike,
    host: Case,
    inputs: dict[str, Any] | None = None,
) -> dict[str, Path]:
    """Save a synthetic sample with the host's affine and header, whole or not at all.

    The files are written into a temporary sibling folder that replaces
    ``out_dir`` once complete (:func:`~napari_lesionmix.io.atomic.atomic_folder`):
    a failure leaves the previous sample as it was. A folder holding other
    files than a sample's is refused. Whether an existing sample may be
    replaced, and that no input lies in ``out_dir``, is the caller's to check
    (:func:`~napari_lesionmix.io.atomic.check_output`).

    ``params.json`` holds ``{"version", "inputs", "params"}``; ``params`` alone
    replays the sample (see :func:`~napari_lesionmix.augment.params.params_from_json`).
    The mask is saved as uint8 when binary, float32 when soft (Soft-CP).
    """
    final = Path(out_dir)
    with atomic_folder(final, replaceable=is_sample_file) as tmp:
        paths = _write_files(tmp, synthetic, host, inputs)
    return {k: final / p.name for k, p in paths.items()}


def _write_files(out: Path, synthetic: SampleLike, host: Case, inputs) -> dict[str, Path]:
    from napari_lesionmix import __version__

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
