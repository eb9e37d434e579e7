"""nnU-Net v2 names: the ``DatasetXXX_Name`` output folder and the names in ``dataset.json``.

nnU-Net v2 finds a raw dataset by its folder name, ``Dataset`` + a three-digit
id + ``_`` + a name, under ``$nnUNet_raw``; a folder named otherwise is invisible
to ``nnUNetv2_plan_and_preprocess -d ID``. Channel names matter too: nnU-Net
picks each channel's intensity normalisation from its name (``CT`` gets the
dataset-wide CT clipping and scaling, any other name a per-case z-score).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from napari_lesionmix.errors import LesionMixError

#: ``DatasetXXX_Name`` as nnU-Net v2 parses it (three digits, an underscore, a name).
DATASET_FOLDER = re.compile(r"^Dataset(\d{3})_([A-Za-z0-9][A-Za-z0-9_-]*)$")
#: A name in ``DatasetXXX_Name``, a channel name or a label name: no spaces or path characters.
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
#: ``name`` of a dataset made with ``--dataset-id`` and no ``--name``.
DEFAULT_NAME = "LesionMix"


@dataclass(frozen=True)
class OutputName:
    """Where an export goes and what ``dataset.json`` calls it.

    Attributes
    ----------
    out : Path
        The output folder.
    name : str or None
        The dataset's name (``Name`` of ``DatasetXXX_Name``); ``None`` keeps the export's default.
    warning : str or None
        One sentence when nnU-Net will not find the folder by its name.
    """

    out: Path
    name: str | None
    warning: str | None


def check_name(name: str, what: str) -> str:
    """``name`` if it can stand in an nnU-Net folder or ``dataset.json`` key, else a one-sentence error."""
    if not isinstance(name, str) or not NAME.match(name):
        raise LesionMixError(f"{what} '{name}' must be letters, digits, '-' or '_' (no spaces), starting with "
                             "a letter or digit.")
    return name


def dataset_folder_name(dataset_id: int, name: str = DEFAULT_NAME) -> str:
    """``DatasetXXX_Name`` for an nnU-Net v2 dataset id (1-999) and name.

    Examples
    --------
    >>> dataset_folder_name(501, "MSsyn")
    'Dataset501_MSsyn'
    """
    if isinstance(dataset_id, bool) or not isinstance(dataset_id, int) or not 1 <= dataset_id <= 999:
        raise LesionMixError(f"The nnU-Net dataset id must be an integer from 1 to 999, got {dataset_id!r}.")
    return f"Dataset{dataset_id:03d}_{check_name(name, 'Dataset name')}"


def folder_warning(out: str | os.PathLike) -> str | None:
    """One sentence when ``out`` is not named ``DatasetXXX_Name``, else ``None``."""
    name = Path(out).name
    if DATASET_FOLDER.match(name):
        return None
    return (f"Output folder '{name}' is not named DatasetXXX_Name (e.g. Dataset501_LesionMix), so nnU-Net v2 "
            "will not find it: rename it, or give --dataset-id and --name instead of --out.")


def resolve_output(out: str | os.PathLike | None, dataset_id: int | None = None, name: str | None = None,
                   environ: Mapping[str, str] | None = None) -> OutputName:
    """The output folder from ``--out`` or from ``--dataset-id``/``--name``.

    Parameters
    ----------
    out : path or None
        The folder itself. When given with a dataset id, the two must agree if
        ``out`` is named ``DatasetXXX_Name``.
    dataset_id : int, optional
        nnU-Net dataset id: without ``out`` the folder is ``DatasetXXX_Name``
        under ``$nnUNet_raw`` (the current folder when it is not set).
    name : str, optional
        Dataset name (default: the folder's, else :data:`DEFAULT_NAME` with an id).
    environ : mapping, optional
        Where ``nnUNet_raw`` is looked up (default ``os.environ``).

    Returns
    -------
    OutputName

    Raises
    ------
    LesionMixError
        Neither ``out`` nor an id, a bad id or name, or ``out`` naming another dataset than id and name.
    """
    environ = os.environ if environ is None else environ
    if name is not None:
        check_name(name, "Dataset name")
    if out is None:
        if dataset_id is None:
            raise LesionMixError("Give the output folder (--out), or --dataset-id (and --name) to make "
                                 "DatasetXXX_Name under $nnUNet_raw.")
        folder = dataset_folder_name(dataset_id, name or DEFAULT_NAME)
        root = environ.get("nnUNet_raw")
        return OutputName(Path(root) / folder if root else Path(folder), name or DEFAULT_NAME, None)
    out = Path(out)
    parsed = DATASET_FOLDER.match(out.name)
    if parsed and dataset_id is not None:
        wanted = dataset_folder_name(dataset_id, name or parsed.group(2))
        if wanted != out.name:
            raise LesionMixError(f"Output folder '{out.name}' names another dataset than --dataset-id/--name "
                                 f"({wanted}); give one of them.")
    elif dataset_id is not None:
        dataset_folder_name(dataset_id, name or DEFAULT_NAME)  # checks the id
    return OutputName(out, name or (parsed.group(2) if parsed else None), folder_warning(out))


def names_for(names: Sequence[str], count: int, what: str) -> list[str]:
    """``names`` checked one by one and against ``count`` (the channels of the source scans).

    Raises
    ------
    LesionMixError
        A bad name, a repeated one, or a count other than ``count``.
    """
    names = [check_name(n, what) for n in names]
    if len(set(names)) != len(names):
        raise LesionMixError(f"{what}s must differ from each other, got {', '.join(names)}.")
    if len(names) != count:
        raise LesionMixError(f"{len(names)} {what.lower()}(s) given ({', '.join(names)}) but the source scans have "
                             f"{count} channel(s); give one name per channel, in order.")
    return names
