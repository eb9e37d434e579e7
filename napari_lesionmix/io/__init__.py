"""NIfTI in, NIfTI out: cases with their geometry, atomic saves, dataset discovery."""

from napari_lesionmix.io.dataset import CaseRecord, Dataset, discover_dataset
from napari_lesionmix.io.nifti import (
    Case,
    check_same_grid,
    encode_nifti,
    load_case,
    load_image,
    load_label,
    read_nifti,
    save_image,
    save_label,
    save_nifti_atomic,
)

__all__ = [
    "Case",
    "CaseRecord",
    "Dataset",
    "check_same_grid",
    "discover_dataset",
    "encode_nifti",
    "load_case",
    "load_image",
    "load_label",
    "read_nifti",
    "save_image",
    "save_label",
    "save_nifti_atomic",
]
