"""Where the shipped sample subjects are (works from a checkout and from an installed wheel)."""

from __future__ import annotations

from pathlib import Path

from napari_lesionmix.errors import LesionMixError
from napari_lesionmix.io.dataset import Dataset, discover_dataset


def sample_data_dir() -> Path:
    """Folder of the shipped sample subjects.

    An installed wheel carries them as ``napari_lesionmix/_data/sample_data``;
    an editable install or a checkout uses ``sample_data/`` at the repository root.
    """
    here = Path(__file__).resolve().parent
    for candidate in (here / "_data" / "sample_data", here.parent / "sample_data"):
        if any(candidate.glob("*_seg.nii.gz")):
            return candidate
    raise LesionMixError(
        "The sample data is missing from this installation (expected napari_lesionmix/_data/sample_data)."
    )


def sample_dataset() -> Dataset:
    """The shipped subjects as a :class:`~napari_lesionmix.io.dataset.Dataset` (plain pairs layout)."""
    return discover_dataset(sample_data_dir())
