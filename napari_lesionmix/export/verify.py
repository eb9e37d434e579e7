"""Integrity check of an nnU-Net v2 raw dataset (what nnU-Net's ``verify_dataset_integrity`` checks).

Checked: ``dataset.json`` has ``channel_names``, ``labels`` (with background
0), ``numTraining`` and ``file_ending``; every label file has one image file
per channel and every image file belongs to a labelled case; ``numTraining``
equals the number of cases; within a case all files share shape and affine
(tolerance :data:`~napari_lesionmix.io.nifti.AFFINE_TOLERANCE_MM`, nnU-Net
compares spacing, origin and direction); every label value is declared in
``dataset.json``; no image holds NaN or infinite voxels. Where a
``manifest.jsonl`` exists, every file's SHA-256 must match its record.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from napari_lesionmix.errors import LesionMixError
from napari_lesionmix.io.nifti import AFFINE_TOLERANCE_MM, read_geometry, read_nifti

REQUIRED_KEYS = ("channel_names", "labels", "numTraining", "file_ending")


def _label_values(labels: dict) -> set[int]:
    values = set()
    for v in labels.values():
        if isinstance(v, (list, tuple)):  # region-based labels
            values.update(int(x) for x in v)
        else:
            values.add(int(v))
    return values


def verify_dataset(
    out: str | os.PathLike,
    dataset_json: dict[str, Any] | None = None,
    check_checksums: bool = True,
    raise_on_error: bool = False,
    deep: bool = True,
) -> list[str]:
    """Check an nnU-Net v2 raw dataset folder; return the problems found (empty if none).

    Parameters
    ----------
    out : path
        The dataset folder (holding ``imagesTr``, ``labelsTr``, ``dataset.json``).
    dataset_json : dict, optional
        Check against this content instead of reading ``dataset.json`` (the
        exporter checks before it writes the file).
    check_checksums : bool
        Compare files with the SHA-256 sums of ``manifest.jsonl`` when present.
    raise_on_error : bool
        Raise :class:`LesionMixError` naming the first problem (and the count) instead.
    deep : bool
        Read the voxels (label values, NaN). ``False`` checks names, headers
        (shape, affine) and checksums only: the exporter's final check, since
        its workers check the arrays before writing them.
    """
    out = Path(out)
    problems: list[str] = []
    if out.exists() and not out.is_dir():
        raise LesionMixError(f"Dataset folder '{os.fspath(out)}' is a file; give the folder that holds the cases.")
    if not out.is_dir():
        raise LesionMixError(f"Dataset folder '{os.fspath(out)}' does not exist.")
    meta = dataset_json
    if meta is None:
        dj = out / "dataset.json"
        if not dj.is_file():
            problems.append(f"'{os.fspath(dj)}' is missing (an interrupted export writes it last).")
            meta = {}
        else:
            try:
                meta = json.loads(dj.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                problems.append(f"'{os.fspath(dj)}' is not valid JSON ({exc}).")
                meta = {}
    if meta:
        for key in REQUIRED_KEYS:
            if key not in meta:
                problems.append(f"dataset.json lacks the required key '{key}'.")
    ending = meta.get("file_ending", ".nii.gz")
    n_channels = len(meta.get("channel_names", {})) or None
    allowed = _label_values(meta.get("labels", {})) if isinstance(meta.get("labels"), dict) else None
    if allowed is not None and 0 not in allowed:
        problems.append("dataset.json labels lack background = 0.")

    images_dir, labels_dir = out / "imagesTr", out / "labelsTr"
    for d in (images_dir, labels_dir):
        if not d.is_dir():
            problems.append(f"Folder '{os.fspath(d)}' is missing.")
    if problems and not (images_dir.is_dir() and labels_dir.is_dir()):
        return _finish(problems, raise_on_error)

    pattern = re.compile(r"^(?P<case>.+)_(?P<ch>\d{4})" + re.escape(ending) + "$")
    image_files: dict[str, dict[int, Path]] = {}
    for p in sorted(images_dir.iterdir()):
        if p.name.startswith("."):
            problems.append(f"Temporary file '{os.fspath(p)}' was left in imagesTr.")
            continue
        m = pattern.match(p.name)
        if not m:
            problems.append(f"Image file '{p.name}' is not named CASE_XXXX{ending}.")
            continue
        image_files.setdefault(m["case"], {})[int(m["ch"])] = p
    cases = []
    for p in sorted(labels_dir.iterdir()):
        if p.name.startswith("."):
            problems.append(f"Temporary file '{os.fspath(p)}' was left in labelsTr.")
        elif p.name.endswith(ending):
            cases.append(p.name[: -len(ending)])
    for orphan in sorted(set(image_files) - set(cases)):
        problems.append(f"Images of case '{orphan}' have no label file in labelsTr.")
    if "numTraining" in meta and int(meta["numTraining"]) != len(cases):
        problems.append(f"dataset.json says numTraining = {meta['numTraining']} but labelsTr holds {len(cases)} case(s).")

    checksums = _manifest_checksums(out) if check_checksums else {}
    for cid in cases:
        problems.extend(_check_case(out, cid, image_files.get(cid, {}), labels_dir / f"{cid}{ending}",
                                    n_channels, allowed, checksums, deep))
    return _finish(problems, raise_on_error)


def _finish(problems: list[str], raise_on_error: bool) -> list[str]:
    if problems and raise_on_error:
        more = f" ({len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
        raise LesionMixError(f"Integrity check failed: {problems[0]}{more}")
    return problems


def _manifest_checksums(out: Path) -> dict[str, str]:
    from napari_lesionmix.export.writer import Manifest

    sums = {}
    for rec in Manifest(out).read().values():
        sums.update(rec.get("files") or {})
    return sums


def _check_case(out, cid, channels, label_file, n_channels, allowed, checksums, deep=True) -> list[str]:
    from napari_lesionmix.export.writer import sha256

    problems = []
    expected = n_channels or (max(channels) + 1 if channels else 1)
    missing = [c for c in range(expected) if c not in channels]
    if missing:
        problems.append(f"Case '{cid}' lacks channel file(s) {', '.join(f'{cid}_{c:04d}' for c in missing)}.")
    extra = sorted(c for c in channels if c >= expected)
    if extra:
        problems.append(f"Case '{cid}' has channel {extra[0]:04d} but dataset.json declares {expected} channel(s).")
    try:
        if deep:
            limg, label = read_nifti(label_file, "Label")
            label_shape, label_affine = tuple(limg.shape), limg.affine
        else:
            label_shape, label_affine = read_geometry(label_file)
    except Exception as exc:
        return [*problems, f"Label '{label_file.name}' cannot be read ({type(exc).__name__}: {exc})."]
    if allowed is not None and deep:
        values = set(int(v) for v in np.unique(label)) if np.issubdtype(label.dtype, np.integer) else None
        if values is None:
            if not np.all(label == np.round(label)):
                problems.append(f"Label '{label_file.name}' has non-integer values.")
            values = set(int(v) for v in np.unique(label))
        bad = sorted(values - allowed)
        if bad:
            problems.append(f"Label '{label_file.name}' has value(s) {bad} not declared in dataset.json labels.")
    files = [label_file] + [channels[c] for c in sorted(channels)]
    for p in files[1:]:
        try:
            if deep:
                img, data = read_nifti(p, "Image")
                shape, affine = tuple(img.shape), img.affine
            else:
                data = None
                shape, affine = read_geometry(p)
        except Exception as exc:
            problems.append(f"Image '{p.name}' cannot be read ({type(exc).__name__}: {exc}).")
            continue
        if shape[:3] != label_shape[:3]:
            problems.append(f"Image '{p.name}' has shape {shape} but its label has {label_shape}.")
        diff = float(np.max(np.abs(affine - label_affine)))
        if diff > AFFINE_TOLERANCE_MM:
            problems.append(f"Image '{p.name}' and its label have affines that differ by {diff:.3g} mm.")
        if data is not None and np.issubdtype(data.dtype, np.floating) and not np.isfinite(data).all():
            problems.append(f"Image '{p.name}' has {int((~np.isfinite(data)).sum())} NaN or infinite voxel(s).")
    for p in files:
        rel = os.fspath(p.relative_to(out))
        if rel in checksums and sha256(p) != checksums[rel]:
            problems.append(f"File '{rel}' does not match the checksum in manifest.jsonl.")
    return problems


def nnunet_check(out: str | os.PathLike, num_processes: int = 1) -> tuple[bool, str]:
    """Run nnU-Net's own ``verify_dataset_integrity`` on ``out`` when nnU-Net v2 is installed.

    Returns
    -------
    ran : bool
        ``False`` when nnU-Net is not installed (then :func:`verify_dataset` is the only check).
    problem : str
        nnU-Net's complaint in one line, ``""`` when it passed (or did not run).
    """
    import contextlib
    import importlib.util
    import io

    if importlib.util.find_spec("nnunetv2") is None:
        return False, ""
    # nnU-Net prints banners (unset nnUNet_* folders, its "Done"): only its verdict matters here.
    with contextlib.redirect_stdout(io.StringIO()):
        from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity

        try:
            verify_dataset_integrity(os.fspath(out), num_processes=max(1, int(num_processes)))
        except (AssertionError, RuntimeError, FileNotFoundError, ValueError, KeyError) as exc:
            text = " ".join(str(exc).split()) or type(exc).__name__
            return True, f"nnU-Net's verify_dataset_integrity refuses the dataset: {text}"
    return True, ""
