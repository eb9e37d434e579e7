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
