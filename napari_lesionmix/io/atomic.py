"""Atomic writes: a target only ever holds a complete file.

Everything the package writes goes through :func:`atomic_path` (or, for a
folder of files that belong together, :func:`atomic_folder`): the data is
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
import shutil
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
    try:
        fd, tmp = _temporary(path)
    except OSError as exc:  # the folder cannot be made or written: the same one sentence
        raise write_error(path, exc) from None
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


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


def _real(path: str | os.PathLike) -> Path:
    """``path`` absolute with every link resolved (a link into the output is the file it points at)."""
    return Path(os.path.realpath(os.path.abspath(path)))


def check_not_input(path: str | os.PathLike, inputs=(), what: str = "Output", inside_folders: bool = True) -> None:
    """Refuse an output that is an input, holds one, or lies inside an input folder.

    Checked whatever ``--overwrite`` says: replacing or clearing the output
    would delete the user's source files, and writing into a source folder
    changes what it holds (an export beside a folder of case pairs turns it
    into an nnU-Net dataset of synthetic cases).

    Parameters
    ----------
    path : path-like
        The output file or folder (need not exist).
    inputs : iterable of path-like
        The command's input files and folders (``None`` entries are skipped).
    what : str
        How the message names the output.
    inside_folders : bool
        Also refuse an output inside an input that is a folder (a dataset); false
        where the inputs are files and a folder among them is an error of its own.

    Raises
    ------
    LesionMixError
        One sentence naming the output and the input.
    """
    out = _real(path)
    name = os.fspath(path)
    for inp in inputs:
        if inp is None:
            continue
        real = _real(inp)
        # The output itself, or a folder holding the input: writing it would replace the input.
        if real == out or real.is_relative_to(out) or _same_file(Path(inp), Path(path)):
            raise LesionMixError(f"{what} '{name}' would replace the input '{os.fspath(inp)}'; choose another output.")
        if inside_folders and real.is_dir() and out.is_relative_to(real):
            raise LesionMixError(
                f"{what} '{name}' lies inside the input folder '{os.fspath(inp)}'; choose an output outside it."
            )


def check_output(path: str | os.PathLike, inputs=(), overwrite: bool = False, what: str = "Output") -> Path:
    """Refuse an output that would replace something without ``overwrite``, or one of the inputs.

    Parameters
    ----------
    path : path-like
        The output file or folder.
    inputs : iterable of path-like
        The command's input files: none may be the output or lie inside an output folder.
    overwrite : bool
        The user's ``--overwrite``: an existing output may be replaced.
    what : str
        How messages name the output ("Output", "Output folder"...).

    Raises
    ------
    LesionMixError
        One sentence naming the path and what to do.
    """
    out = Path(path)
    check_not_input(out, inputs, what, inside_folders=False)
    if out.exists() and not overwrite and not (out.is_dir() and not any(out.iterdir())):
        raise LesionMixError(
            f"{what} '{os.fspath(out)}' already exists; pass --overwrite to replace it or choose another output."
        )
    return out


@contextmanager
def atomic_folder(path: str | os.PathLike, replaceable=None) -> Iterator[Path]:
    """Yield a temporary sibling folder to fill; swap it into place once the block succeeds.

    The old folder is kept until the new one is complete, so a failure (a full
    disk, an immutable file, ``kill -9``) leaves the old folder as it was plus at
    most a ``.NAME.*.tmp`` sibling. The swap is two renames (old aside, new in);
    a crash between them leaves the old folder as ``.NAME.*.old``.

    Parameters
    ----------
    path : path-like
        The folder to write.
    replaceable : callable(name) -> bool, optional
        Which files an existing folder may hold for it to be replaced (e.g. a
        sample folder's own files); a folder with other files is refused, so
        ``--overwrite`` never deletes a file the command did not make.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise LesionMixError(f"'{os.fspath(path)}' is a file, not a folder; choose a folder for the output.")
    if path.is_dir() and replaceable is not None:
        foreign = sorted(p.name for p in path.iterdir() if not replaceable(p.name))
        if foreign:
            raise LesionMixError(
                f"Folder '{os.fspath(path)}' holds files this command did not make ({', '.join(foreign[:3])}); "
                "choose another output folder."
            )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / f".{path.name}.{os.urandom(6).hex()}.tmp"
        tmp.mkdir()
    except OSError as exc:
        raise write_error(path, exc) from None
    try:
        yield tmp
        if path.exists():
            old = path.parent / f".{path.name}.{os.urandom(6).hex()}.old"
            os.rename(path, old)
            try:
                os.rename(tmp, path)
            except BaseException:
                os.rename(old, path)
                raise
            shutil.rmtree(old, ignore_errors=True)
            if os.path.lexists(old):
                # The new folder is in place; what could not be deleted (an immutable file...) is named, not hidden.
                import warnings

                warnings.warn(f"The replaced folder's files could not all be removed; what is left of them is "
                              f"in '{os.fspath(old)}' (remove it by hand).", stacklevel=3)
        else:
            os.rename(tmp, path)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError):
            raise write_error(path, exc) from None
        raise
