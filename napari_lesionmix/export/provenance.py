"""What made an export: a fingerprint of this package's code and the versions of what it runs on.

The package version stays the same while the code changes between releases,
so a resumed export could otherwise mix cases made by different code without
a sign. :func:`code_fingerprint` hashes the core's sources (everything but
the Qt widgets, which never touch an exported file) and the shipped ARHNet
weights; it is part of an export's settings, so resuming a folder with other
code is refused like resuming it with other settings.
"""

from __future__ import annotations

import functools
import hashlib
import os
from importlib import metadata
from pathlib import Path

import napari_lesionmix

#: Distributions whose versions are recorded in ``export_config.json``.
RECORDED_PACKAGES = ("numpy", "scipy", "nibabel", "edt", "isal", "opencv-python-headless", "torch")


@functools.lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """SHA-256 (first 16 hex digits) of the package's core sources and shipped weights."""
    root = Path(napari_lesionmix.__file__).parent
    h = hashlib.sha256()
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in (".py", ".pt")
                   and "widgets" not in p.relative_to(root).parts and "__pycache__" not in p.parts)
    for p in files:
        h.update(p.relative_to(root).as_posix().encode() + b"\0")
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


def source_fingerprint(plan) -> str:
    """SHA-256 (first 16 hex digits) of every source file's path, size and modification time.

    Recorded in the export's settings: a source scan edited (or replaced)
    between an interrupted run and its resume changes it, so the resume is
    refused instead of mixing cases built from the old and the new file.
    """
    h = hashlib.sha256()
    for case in plan.cases:
        for path in (*case.image_paths, case.label_path, case.brain_mask_path):
            if path is None:
                continue
            st = os.stat(path)
            h.update(f"{case.case_id}\0{path}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
    return h.hexdigest()[:16]


def environment() -> dict[str, str]:
    """Versions of the package and of the libraries that decide an export's bytes."""
    versions = {"napari-lesionmix": napari_lesionmix.__version__, "code": code_fingerprint()}
    for name in RECORDED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


#: The namespaced key of ``dataset.json`` holding :func:`export_summary` (nnU-Net reads only its own keys and
#: copies the file into every trained model's folder, so the model carries where its training data came from).
DATASET_JSON_KEY = "napari_lesionmix"


def export_summary(config, plan, records: dict[str, dict], manifest_path) -> dict:
    """What made an export, in a few lines: methods, options, seed, sources, manifest hash, versions.

    Parameters
    ----------
    config : ExportConfig
        The export's settings.
    plan : ExportPlan
        Its checked plan (source cases, hold-out).
    records : dict
        The manifest's records by case id.
    manifest_path : path
        The written ``manifest.jsonl`` (hashed as it is on disk).

    Returns
    -------
    dict
        JSON-serialisable; the same for 1 and N workers (no run-only setting in it).
    """
    h = hashlib.sha256(Path(manifest_path).read_bytes()).hexdigest()
    by_method: dict[str, int] = {}
    for rec in records.values():
        by_method[str(rec.get("method"))] = by_method.get(str(rec.get("method")), 0) + 1
    used = sorted({s for rec in records.values() if rec.get("method") != "real" for s in rec.get("sources", ())})
    return {
        "version": napari_lesionmix.__version__,
        "code": code_fingerprint(),
        "methods": [[m, float(w)] for m, w in config.methods],
        "options": config.options,
        "seed": int(config.seed),
        "n_synthetic": int(config.n),
        "cases_by_method": dict(sorted(by_method.items())),
        "harmonize": config.harmonize,
        "source_dataset": os.fspath(Path(config.dataset).resolve()),
        "source_fingerprint": source_fingerprint(plan),
        "source_cases_used": used,
        "holdout": list(plan.holdout_ids),
        "manifest": Path(manifest_path).name,
        "manifest_sha256": h,
    }
