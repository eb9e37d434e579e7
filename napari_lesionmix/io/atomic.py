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

    Created with mode 0o666 so that the kernel applies the user's umask: the
    renamed file gets the permissions of any ordinary new file (``mkstemp``
    would leave it readable by its owner alone, which breaks datasets shared
    on a cluster). The name keeps ``.nii.gz``/``.nii`` endings so that writers
    which choose compression from the file name (nibabel) behave as for the
    target.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = ".nii.gz" if path.name.endswith(".nii.gz") else path.suffix
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    while True:
        tmp = os.path.join(path.parent, f".{path.name}.{os.urandom(6).hex()}.tmp{suffix}")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:  # pragma: no cover - 48 random bits collided
            continue


@contextmanager
def _replacing(path: Path) -> Iterator[tuple[int, str]]:
    """Yield a temporary file's (descriptor, name); rename it over ``path`` when the block succeeds.

    The block must close the descriptor. On any error the temporary file is
    removed, and an ``OSError`` becomes the one sentence of :func:`write_error`.
    """
    fd, tmp = _temporary(path)
    try:
        yield fd, tmp
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError):
            raise write_error(path, exc) from None
        raise


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write ``path``'s new content to; fsync and rename it on success."""
    with _replacing(Path(path)) as (fd, tmp):
        os.close(fd)  # the caller's writer opens the file by name
        yield Path(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())


def _write_all(fd: int, data) -> None:
    view = memoryview(data).cast("B")
    while view:
        view = view[os.write(fd, view):]


def write_bytes_atomic(data: bytes, path: str | os.PathLike) -> Path:
    """Write ``data`` to ``path`` atomically (one descriptor: write, fsync, rename)."""
    path = Path(path)
    with _replacing(path) as (fd, _):
        try:
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
    return path


def write_text_atomic(text: str, path: str | os.PathLike) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return write_bytes_atomic(text.encode(), path)


def write_json_atomic(data: Any, path: str | os.PathLike) -> Path:
    """Write ``data`` as indented JSON to ``path`` atomically."""
    return write_text_atomic(json.dumps(data, indent=2) + "\n", path)
