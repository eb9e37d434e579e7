"""Atomic writes: a target only ever holds a complete file.

Everything the package writes goes through :func:`atomic_path`: the data is
written to a dot-prefixed temporary file in the target's folder, fsynced and
renamed over the target. A crash or ``kill -9`` leaves the old file (or none)
plus at most a ``.NAME.*.tmp*`` file, which resumable runs clean up. A full
disk or any other OS error removes the temporary file and raises one
:class:`~napari_lesionmix.errors.LesionMixError` sentence.
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from napari_lesionmix.errors import LesionMixError


def write_error(path: str | os.PathLike, exc: OSError) -> LesionMixError:
    """The one-sentence error for a failed write of ``path``."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return LesionMixError(f"Could not write '{os.fspath(path)}': the disk is full (nothing was overwritten).")
    return LesionMixError(f"Could not write '{os.fspath(path)}': {exc.strerror or exc}.")


def _temporary(path: Path) -> tuple[int, str]:
    """Create the dot-prefixed temporary file beside ``path``; return its descriptor and name.

    It keeps ``.nii.gz``/``.nii`` endings so that writers which choose
    compression from the file name (nibabel) behave as for the target.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = ".nii.gz" if path.name.endswith(".nii.gz") else path.suffix
    return tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + suffix, dir=path.parent)


def _discard(tmp: str, path: Path, exc: BaseException) -> BaseException:
    """Remove the temporary file; the exception to raise (an OSError becomes one sentence)."""
    try:
        os.unlink(tmp)
    except OSError:
        pass
    return write_error(path, exc) if isinstance(exc, OSError) else exc


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write ``path``'s new content to; fsync and rename it on success."""
    path = Path(path)
    fd, tmp = _temporary(path)
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        err = _discard(tmp, path, exc)
        if err is exc:
            raise
        raise err from None


def _write_all(fd: int, data) -> None:
    view = memoryview(data).cast("B")
    while view:
        view = view[os.write(fd, view):]


def write_bytes_atomic(data: bytes, path: str | os.PathLike) -> Path:
    """Write ``data`` to ``path`` atomically (one descriptor: write, fsync, rename)."""
    path = Path(path)
    fd, tmp = _temporary(path)
    try:
        try:
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException as exc:
        err = _discard(tmp, path, exc)
        if err is exc:
            raise
        raise err from None
    return path


def write_text_atomic(text: str, path: str | os.PathLike) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return write_bytes_atomic(text.encode(), path)


def write_json_atomic(data: Any, path: str | os.PathLike) -> Path:
    """Write ``data`` as indented JSON to ``path`` atomically."""
    return write_text_atomic(json.dumps(data, indent=2) + "\n", path)
