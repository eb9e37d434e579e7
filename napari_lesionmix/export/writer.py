"""The nnU-Net v2 raw layout, atomic case writes, the manifest and resume.

Output folder::

    OUT/export_config.json     settings, code fingerprint + library versions (written first;
                               identifies the folder)
    OUT/imagesTr/CASE_0000.nii.gz ...   one file per channel
    OUT/labelsTr/CASE.nii.gz
    OUT/manifest.jsonl         one JSON line per case (appended + fsynced as cases finish,
                               rewritten sorted at the end)
    OUT/splits_final.json      nnU-Net folds (see :mod:`napari_lesionmix.export.plan`)
    OUT/dataset.json           written last: its presence means the export completed

Every file goes through a temporary file and a rename, so a kill at any
moment leaves complete files only (plus dot-prefixed ``.tmp`` files, which
:func:`clean_temporaries` removes on the next run). A case counts as done
when its manifest line exists and the checksums of its files match it; a
case whose channels were partly written when an error struck has them
removed, and one written but not yet in the manifest is simply made again
(with the same bytes).

``export_config.json`` holds the settings that decide the files (not the
worker count, the scheduler or ``n``): a rerun with other settings is
refused unless ``overwrite``; a rerun with a larger ``n`` adds cases.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from napari_lesionmix.errors import LesionMixError
from napari_lesionmix.io.atomic import write_error as _write_error
from napari_lesionmix.io.atomic import write_text_atomic
from napari_lesionmix.io.nifti import DEFAULT_GZIP

FILE_ENDING = ".nii.gz"
CONFIG_NAME = "export_config.json"
MANIFEST_NAME = "manifest.jsonl"
OUTPUT_ITEMS = ("imagesTr", "labelsTr", MANIFEST_NAME, "splits_final.json", "dataset.json", CONFIG_NAME)


def image_path(out: Path, case_id: str, channel: int) -> Path:
    return Path(out) / "imagesTr" / f"{case_id}_{channel:04d}{FILE_ENDING}"


def label_path(out: Path, case_id: str) -> Path:
    return Path(out) / "labelsTr" / f"{case_id}{FILE_ENDING}"


def sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def encode_case(out: Path, case_id: str, image: np.ndarray, label: np.ndarray, host,
                codec: str = DEFAULT_GZIP) -> tuple[list[tuple[Path, bytes]], dict[str, str]]:
    """One case's channels and label encoded with the host's geometry: ``([(path, bytes)], {relpath: sha256})``.

    Nothing is written: :func:`commit_case` writes the bytes. The checksums
    are of these bytes (no read-back).
    """
    from napari_lesionmix.io.nifti import encode_nifti, image_nifti, label_nifti

    out = Path(out)
    targets = [(image_path(out, case_id, c), image_nifti(ch, host.affine, host.header, host.image_dtype))
               for c, ch in enumerate(image)]
    lpath = label_path(out, case_id)
    targets.append((lpath, label_nifti(label, host.affine, host.header, where=os.fspath(lpath))))
    blobs, files = [], {}
    for path, img in targets:
        blob = encode_nifti(img, codec=codec)
        blobs.append((path, blob))
        files[os.fspath(path.relative_to(out))] = hashlib.sha256(blob).hexdigest()
    return blobs, files


def commit_case(blobs: list[tuple[Path, bytes]]) -> None:
    """Write a case's encoded files, each atomically (temporary file, fsync, rename).

    Raises :class:`LesionMixError` (from the atomic writer) on a full disk,
    with the target untouched, no temporary file left and the case's files
    already written removed.
    """
    from napari_lesionmix.io.atomic import write_bytes_atomic

    written: list[Path] = []
    try:
        for path, blob in blobs:
            written.append(write_bytes_atomic(blob, path))
    except BaseException:
        # No half-written case: drop the channels already saved (a rerun makes the case again).
        for p in written:
            p.unlink(missing_ok=True)
        raise


def write_case(out: Path, case_id: str, image: np.ndarray, label: np.ndarray, host,
               codec: str = DEFAULT_GZIP) -> dict[str, str]:
    """Write one case's channels and label with the host's geometry; return ``{relpath: sha256}``.

    :func:`encode_case` then :func:`commit_case`: each file is encoded in
    memory, hashed from those bytes and written atomically.
    """
    blobs, files = encode_case(out, case_id, image, label, host, codec)
    commit_case(blobs)
    return files


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class Manifest:
    """Append-only ``manifest.jsonl``: one line per finished case, flushed and fsynced.

    A line cut short by a kill is ignored on reading (and dropped when the
    file is rewritten at the end).
    """

    def __init__(self, out: Path):
        self.path = Path(out) / MANIFEST_NAME

    def read(self) -> dict[str, dict[str, Any]]:
        records: dict[str, dict[str, Any]] = {}
        if not self.path.is_file():
            return records
        for line in self.path.read_text().splitlines():
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # the torn last line of a killed run
            if isinstance(rec, dict) and "id" in rec:
                records[rec["id"]] = rec
        return records

    def append(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, sort_keys=True) + "\n"
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                # A torn previous line must not swallow this one.
                if os.fstat(fd).st_size and not self._ends_with_newline():
                    line = "\n" + line
                os.write(fd, line.encode())
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise _write_error(self.path, exc) from None

    def _ends_with_newline(self) -> bool:
        with open(self.path, "rb") as fh:
            fh.seek(-1, os.SEEK_END)
            return fh.read(1) == b"\n"

    def rewrite(self, records: Iterable[dict[str, Any]]) -> None:
        """Replace the file atomically with ``records`` (sorted, complete lines only)."""
        text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in records)
        write_text_atomic(text, self.path)



class ManifestAppender:
    """Append records to a :class:`Manifest` on one background thread, in order (a context manager).

    Each append still writes and fsyncs its line; the export goes on making
    cases meanwhile, instead of waiting on the disk. Leaving the block waits
    for every line and raises the first failed append (a full disk) unless
    the block itself raised.
    """

    def __init__(self, manifest: Manifest):
        self.manifest = manifest
        self._io = None
        self._futures: list = []

    def __enter__(self) -> ManifestAppender:
        from concurrent.futures import ThreadPoolExecutor

        self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lesionmix-manifest")
        return self

    def append(self, record: dict[str, Any]) -> None:
        self._futures = [f for f in self._futures if not f.done() or f.exception() is not None]
        failed = next((f for f in self._futures if f.done()), None)
        if failed is not None:
            failed.result()  # a line could not be written: stop making cases
        self._futures.append(self._io.submit(self.manifest.append, dict(record)))

    def __exit__(self, exc_type, exc, tb) -> None:
        self._io.shutdown(wait=True)
        if exc_type is None:
            for f in self._futures:
                f.result()


def write_json(data: Any, path: Path) -> Path:
    return write_text_atomic(json.dumps(data, indent=2, sort_keys=False) + "\n", path)


def clean_temporaries(out: Path) -> list[Path]:
    """Remove the dot-prefixed temporary files a killed run left behind."""
    removed = []
    for folder in (Path(out), Path(out) / "imagesTr", Path(out) / "labelsTr"):
        if not folder.is_dir():
            continue
        for p in folder.iterdir():
            if p.name.startswith(".") and ".tmp" in p.name and p.is_file():
                p.unlink()
                removed.append(p)
    return removed


def prepare_output(out: Path, identity: dict[str, Any], overwrite: bool) -> None:
    """Make ``out`` ready: new, resumable (same settings), or replaced (``overwrite``).

    Raises
    ------
    LesionMixError
        If ``out`` is a non-empty folder made with other settings (or not by
        an export) and ``overwrite`` is false.
    """
    from napari_lesionmix import __version__

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise LesionMixError(f"Output path '{os.fspath(out)}' is a file, not a folder.")
    cfg_path = out / CONFIG_NAME
    if out.is_dir() and any(out.iterdir()):
        previous = None
        if cfg_path.is_file():
            try:
                previous = json.loads(cfg_path.read_text()).get("settings")
            except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
                previous = None
        same = previous == json.loads(json.dumps(identity))
        if not cfg_path.is_file() and _holds_user_files(out):
            # Not an export's folder (an nnU-Net dataset, the user's cases...): --overwrite would
            # delete its imagesTr and labelsTr, so it is never offered.
            raise LesionMixError(
                f"Output folder '{os.fspath(out)}' is not empty and was not made by an export; "
                "choose another folder (an export never clears a folder it did not make)."
            )
        if not same:
            if not overwrite:
                keys = sorted(k for k in set(previous or {}) | set(identity)
                              if (previous or {}).get(k) != identity.get(k))
                diff = f" (differs in: {', '.join(keys)})" if keys and previous is not None else ""
                raise LesionMixError(
                    f"Output folder '{os.fspath(out)}' is not empty and was made with other settings{diff}; "
                    "use --overwrite to replace it or choose another folder."
                )
            for name in OUTPUT_ITEMS:
                p = out / name
                if p.is_dir():
                    shutil.rmtree(p)
                elif p.exists():
                    p.unlink()
    out.mkdir(parents=True, exist_ok=True)
    (out / "imagesTr").mkdir(exist_ok=True)
    (out / "labelsTr").mkdir(exist_ok=True)
    if not cfg_path.is_file():
        from napari_lesionmix.export.provenance import environment

        write_json({"version": __version__, "environment": environment(), "settings": identity}, cfg_path)
    _fsync_dir(out)


def _holds_user_files(out: Path) -> bool:
    """Whether ``out`` holds anything but empty ``imagesTr``/``labelsTr`` folders and our temporaries.

    Those two are all a run killed before ``export_config.json`` leaves: such a folder is resumed.
    """
    for p in out.iterdir():
        if p.name.startswith(".") and ".tmp" in p.name:
            continue
        if p.name in ("imagesTr", "labelsTr") and p.is_dir() and not any(p.iterdir()):
            continue
        return True
    return False


def finished_cases(out: Path, manifest: Manifest) -> dict[str, dict[str, Any]]:
    """Manifest records whose files all exist with the recorded checksums."""
    done = {}
    for cid, rec in manifest.read().items():
        files = rec.get("files") or {}
        ok = bool(files)
        for rel, digest in files.items():
            p = Path(out) / rel
            if not p.is_file() or sha256(p) != digest:
                ok = False
                break
        if ok:
            done[cid] = rec
    return done


def check_dataset_names(plan) -> None:
    """Check the configured channel and label names against the sources, before any case is written.

    Raises
    ------
    LesionMixError
        A bad or repeated name, a channel-name count other than the source
        scans' channels, ``background`` among the label names, or fewer label
        names than the source dataset declares.
    """
    from napari_lesionmix.export.naming import check_name, names_for

    cfg = plan.config
    check_name(cfg.dataset_name, "Dataset name")
    if cfg.channel_names and plan.cases:
        names_for(cfg.channel_names, len(plan.cases[0].image_paths), "Channel name")
    if cfg.label_names:
        names = [check_name(n, "Label name") for n in cfg.label_names]
        if "background" in names or len(set(names)) != len(names):
            raise LesionMixError(f"Label names are for values 1, 2, ... and must differ (background is 0), "
                                 f"got {', '.join(names)}.")
        declared = sorted(v for k, v in plan.labels.items() if isinstance(v, int) and v > 0)
        if declared and declared[-1] > len(names):
            raise LesionMixError(f"{len(names)} label name(s) given ({', '.join(names)}) but the source dataset "
                                 f"has label values up to {declared[-1]}; name every value from 1 on.")


def dataset_json(plan, n_cases: int, n_channels: int) -> dict[str, Any]:
    """nnU-Net v2 ``dataset.json``: channel names, labels (background 0), numTraining, file ending.

    The names given in the export's settings (``channel_names``, ``label_names``)
    win over the source dataset's.
    """
    cfg = plan.config
    channels = {str(c): name for c, name in enumerate(cfg.channel_names)} or plan.channel_names or {}
    if len(channels) != n_channels:
        channels = {str(c): (f"channel{c}" if n_channels > 1 else "image") for c in range(n_channels)}
    if cfg.label_names:
        labels = {"background": 0, **{name: v for v, name in enumerate(cfg.label_names, start=1)}}
    else:
        labels = dict(plan.labels)
    if "background" not in labels:
        zero = [k for k, v in labels.items() if v == 0]
        for k in zero:
            labels.pop(k)
        labels = {"background": 0, **labels}
    return {
        "name": cfg.dataset_name,
        "description": "Synthetic lesion cases made by napari-lesionmix (see manifest.jsonl).",
        "channel_names": channels,
        "labels": labels,
        "numTraining": int(n_cases),
        "file_ending": FILE_ENDING,
    }


def splits_final(plan, records: dict[str, dict[str, Any]]) -> list[dict[str, list[str]]]:
    """nnU-Net ``splits_final.json`` folds, leakage-free (rules in :mod:`~napari_lesionmix.export.plan`)."""
    holdout = set(plan.holdout_ids)
    synthetic = {cid: set(r.get("sources", ())) for cid, r in records.items() if r.get("method") != "real"}
    real = set(plan.real_ids)
    folds = []
    for k, val_k in enumerate(plan.folds):
        val_set = set(val_k)
        if plan.fold_train is not None:
            train_real = [c for c in plan.fold_train[k] if c not in holdout]
        else:
            train_real = [c for c in plan.train_ids if c not in val_set]
        syn_train = sorted(c for c, s in synthetic.items() if not (s & (val_set | holdout)))
        if real:
            val = sorted((val_set | holdout) & real)
            train = sorted(set(train_real) & real) + syn_train
        else:
            val = sorted(c for c, s in synthetic.items() if s & val_set)
            train = syn_train
        if not train or not val:
            # nnU-Net cannot train (or validate) such a fold: say so instead of writing it.
            what = f"({len(synthetic)} synthetic case(s), {len(plan.folds)} folds)"
            fix = ("export more cases (a rerun with a larger --n adds them), use fewer --folds, add --include-real, "
                   "or --folds 0 for no splits file.")
            share = fold_share(plan, records)
            if not real and share < 0.5:
                # Cases with many sources (LesionMix pastes lesions from many cases) train few folds each:
                # more of them barely help, so lead with what does.
                mean = sum(len(s) for s in synthetic.values()) / len(synthetic)
                what = (f"({len(synthetic)} synthetic case(s), {len(plan.folds)} folds; a case trains only the "
                        f"folds that validate none of its sources, and with {mean:.1f} source cases each a fold "
                        f"trains on {share:.0%} of them)")
                fix = ("add --include-real (the real cases then train every fold), or --folds 0 for no splits file; "
                       "more cases or fewer --folds help less.")
            raise LesionMixError(
                f"Fold {k} of splits_final.json would have no {'training' if not train else 'validation'} case "
                f"{what}; {fix}"
            )
        folds.append({"train": sorted(train), "val": val})
    return folds


def fold_share(plan, records: dict[str, dict[str, Any]]) -> float | None:
    """The mean fraction of the synthetic cases a fold trains on (``None`` without folds or synthetic cases).

    A synthetic case trains only the folds that validate none of its sources
    (:func:`splits_final`'s rule; its sources are never held out).
    """
    synthetic = [set(r.get("sources", ())) for r in records.values() if r.get("method") != "real"]
    vals = [set(v) for v in plan.folds]
    if not synthetic or not vals:
        return None
    return sum(sum(not (s & v) for v in vals) for s in synthetic) / (len(synthetic) * len(vals))
