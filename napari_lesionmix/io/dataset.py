"""Find the labelled cases of a dataset folder.

Three layouts are recognised, in this order:

``nnunet``
    nnU-Net v2 (``dataset.json`` with ``channel_names``) or v1 raw folders:
    ``imagesTr/CASE_0000.nii.gz`` (one file per channel) and ``labelsTr/CASE.nii.gz``.
``msd``
    Medical Segmentation Decathlon: ``dataset.json`` whose ``training`` entries
    point at ``imagesTr/CASE.nii.gz`` files that exist (3D, or 4D with channels last).
``pairs``
    A plain folder of ``CASE.nii.gz`` (or ``CASE_0000.nii.gz``...) beside
    ``CASE_seg.nii.gz``, ``CASE_label.nii.gz`` or ``CASE_mask.nii.gz`` (two of
    them for one case are an error: which is the lesion label?). A
    ``CASE_brainmask.nii.gz`` (or ``CASE_brain.nii.gz``) is attached as the
    case's brain mask instead of being taken for an image.

Discovery only lists files; :meth:`CaseRecord.load` reads them.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from napari_lesionmix.errors import LesionMixError
from napari_lesionmix.io.nifti import NIFTI_SUFFIXES, Case, load_case

LABEL_SUFFIXES = ("_seg", "_label", "_mask")
BRAIN_MASK_SUFFIXES = ("_brainmask", "_brain")
_CHANNEL = re.compile(r"^(?P<case>.+)_(?P<ch>\d{4})$")


def _strip_nifti(name: str) -> str | None:
    for suf in NIFTI_SUFFIXES:
        if name.endswith(suf):
            return name[: -len(suf)]
    return None


@dataclass(frozen=True)
class CaseRecord:
    """Where one case's files are.

    Attributes
    ----------
    case_id : str
    image_paths : tuple of str
        One path per channel (or one 4D file).
    label_path : str or None
    brain_mask_path : str or None
    """

    case_id: str
    image_paths: tuple[str, ...]
    label_path: str | None
    brain_mask_path: str | None = None

    def load(self) -> Case:
        """Read the case's image channels and label."""
        return load_case(self.image_paths, self.label_path, case_id=self.case_id)

    def load_brain_mask(self):
        """The brain mask as a bool array, or ``None`` when the case has none."""
        if self.brain_mask_path is None:
            return None
        from napari_lesionmix.io.brain import load_brain_mask

        return load_brain_mask(self.brain_mask_path)[0]


@dataclass
class Dataset:
    """The cases of a dataset folder and what is known of its channels and labels."""

    root: str
    layout: str
    cases: list[CaseRecord]
    channel_names: dict[str, str] = field(default_factory=dict)
    labels: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.cases)

    def __getitem__(self, key: int | str) -> CaseRecord:
        if isinstance(key, str):
            for rec in self.cases:
                if rec.case_id == key:
                    return rec
            ids = self.case_ids
            shown = ", ".join(ids[:5]) + (f", ... ({len(ids)} in all)" if len(ids) > 5 else "")
            raise LesionMixError(f"Dataset '{self.root}' has no case '{key}'; its cases are {shown}.")
        return self.cases[key]

    @property
    def case_ids(self) -> list[str]:
        return [c.case_id for c in self.cases]


def discover_dataset(root: str | os.PathLike) -> Dataset:
    """List the labelled cases under ``root`` (nnU-Net v1/v2, MSD or plain pairs).

    Raises
    ------
    LesionMixError
        If the folder is missing, or holds no labelled case in any known layout.
    """
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise LesionMixError(f"Dataset folder '{os.fspath(root)}' is a file; give the folder that holds the cases.")
    if not root.is_dir():
        raise LesionMixError(f"Dataset folder '{os.fspath(root)}' does not exist.")
    meta = {}
    dj = root / "dataset.json"
    if dj.is_file():
        try:
            meta = json.loads(dj.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise LesionMixError(f"'{os.fspath(dj)}' is not valid JSON ({exc}).") from None
    if (root / "imagesTr").is_dir() and (root / "labelsTr").is_dir():
        ds = _discover_msd(root, meta) if _is_msd(root, meta) else _discover_nnunet(root, meta)
    else:
        ds = _discover_pairs(root)
    if not ds.cases:
        raise LesionMixError(
            f"No labelled cases found in '{os.fspath(root)}' (expected nnU-Net imagesTr/labelsTr, "
            "a Decathlon dataset.json, or CASE.nii.gz beside CASE_seg.nii.gz)."
        )
    return ds


def _labels_from_meta(meta: dict) -> dict[str, int]:
    labels = meta.get("labels", {})
    if not isinstance(labels, dict):
        return {}
    out = {}
    for k, v in labels.items():
        # v2: {"background": 0, "lesion": 1}; v1/MSD: {"0": "background", "1": "lesion"}
        if isinstance(v, int) or (isinstance(v, list) and v and isinstance(v[0], int)):
            out[str(k)] = v if isinstance(v, int) else int(v[0])
        elif str(k).isdigit():
            out[str(v)] = int(k)
    return out


def _channels_from_meta(meta: dict) -> dict[str, str]:
    ch = meta.get("channel_names") or meta.get("modality") or {}
    return {str(k): str(v) for k, v in ch.items()} if isinstance(ch, dict) else {}


def _is_msd(root: Path, meta: dict) -> bool:
    training = meta.get("training")
    if not isinstance(training, list) or not training:
        return False
    first = training[0].get("image", "") if isinstance(training[0], dict) else ""
    return bool(first) and (root / first).is_file()


def _discover_msd(root: Path, meta: dict) -> Dataset:
    cases = []
    for entry in meta["training"]:
        img, lab = root / entry["image"], root / entry["label"]
        if img.name.startswith("._"):  # macOS resource forks shipped in some MSD tarballs
            continue
        cid = _strip_nifti(img.name) or img.stem
        cases.append(CaseRecord(cid, (os.fspath(img),), os.fspath(lab)))
    return Dataset(os.fspath(root), "msd", cases, _channels_from_meta(meta), _labels_from_meta(meta))


def _discover_nnunet(root: Path, meta: dict) -> Dataset:
    ending = meta.get("file_ending", ".nii.gz")
    channels: dict[str, dict[int, str]] = {}
    for p in sorted((root / "imagesTr").iterdir()):
        if p.name.startswith(".") or not p.name.endswith(ending):
            continue
        m = _CHANNEL.match(p.name[: -len(ending)])
        if m:
            channels.setdefault(m["case"], {})[int(m["ch"])] = os.fspath(p)
    cases = []
    n_channels = len(_channels_from_meta(meta)) or None
    for cid in sorted(channels):
        chans = channels[cid]
        lab = root / "labelsTr" / f"{cid}{ending}"
        if not lab.is_file():
            continue
        expected = n_channels or (max(chans) + 1)
        missing = [i for i in range(expected) if i not in chans]
        if missing:
            raise LesionMixError(
                f"Case '{cid}' in '{os.fspath(root / 'imagesTr')}' lacks channel file(s) "
                + ", ".join(f"{cid}_{i:04d}{ending}" for i in missing)
                + "."
            )
        cases.append(CaseRecord(cid, tuple(chans[i] for i in range(expected)), os.fspath(lab)))
    return Dataset(os.fspath(root), "nnunet", cases, _channels_from_meta(meta), _labels_from_meta(meta))


def _discover_pairs(root: Path) -> Dataset:
    images: dict[str, dict[int, str]] = {}
    labels: dict[str, str] = {}
    brains: dict[str, str] = {}
    for p in sorted(root.iterdir()):
        stem = _strip_nifti(p.name)
        if stem is None or p.name.startswith("."):
            continue
        for suf in BRAIN_MASK_SUFFIXES:
            if stem.endswith(suf):
                brains[stem[: -len(suf)]] = os.fspath(p)
                break
        else:
            for suf in LABEL_SUFFIXES:
                if stem.endswith(suf):
                    cid = stem[: -len(suf)]
                    if cid in labels:
                        # e.g. CASE_label (lesions) beside CASE_mask (a brain mask): guessing loses.
                        raise LesionMixError(
                            f"Case '{cid}' of '{root}' has two label files, '{Path(labels[cid]).name}' and "
                            f"'{p.name}'; keep one (name a brain mask CASE_brainmask.nii.gz)."
                        )
                    labels[cid] = os.fspath(p)
                    break
            else:
                m = _CHANNEL.match(stem)
                cid, ch = (m["case"], int(m["ch"])) if m else (stem, 0)
                images.setdefault(cid, {})[ch] = os.fspath(p)
    cases = [
        CaseRecord(
            cid,
            tuple(images[cid][i] for i in sorted(images[cid])),
            labels[cid],
            brains.get(cid),
        )
        for cid in sorted(images)
        if cid in labels
    ]
    return Dataset(os.fspath(root), "pairs", cases)
