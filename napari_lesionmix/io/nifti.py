"""Load and save NIfTI volumes with their geometry.

Arrays keep nibabel's voxel order ``(i, j, k)``; images are stored as
``(C, i, j, k)`` float32 so that several channels (one file per channel, or one
4D file) share every operation. Labels keep their integer values.

Every input problem raises :class:`~napari_lesionmix.errors.LesionMixError`
with one sentence naming the file. Saves are atomic: the volume is written to a
temporary file in the destination folder and renamed over the target, so an
interrupted run never leaves a truncated ``.nii.gz`` behind.
"""

from __future__ import annotations

import gzip
import os
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path

import nibabel as nib
import numpy as np
from isal import igzip, isal_zlib

from napari_lesionmix.errors import LesionMixError
from napari_lesionmix.io.atomic import atomic_path, write_bytes_atomic
from napari_lesionmix.io.position import format_position

#: Largest elementwise difference (in mm) tolerated between two affines that
#: are meant to describe the same grid. Header round-off in float32 is ~1e-5.
AFFINE_TOLERANCE_MM = 1e-3

NIFTI_SUFFIXES = (".nii.gz", ".nii")


def _name(path: str | os.PathLike) -> str:
    return os.fspath(path)


def read_nifti(path: str | os.PathLike, what: str = "NIfTI") -> tuple[nib.Nifti1Image, np.ndarray]:
    """Open a NIfTI file and read its voxels once, eagerly (so a corrupt gzip fails here).

    Returns the image (header and affine) and its voxels (scaled as nibabel
    scales them); ``what`` names the file in errors ("Image", "Label"...).
    ``.nii.gz`` files are decompressed in one call by ISA-L, about 3x faster
    than nibabel's streaming zlib reader; anything that is not a gzipped
    NIfTI-1/2 file goes to ``nibabel.load``.
    """
    p = Path(path)
    if not p.exists():
        raise LesionMixError(f"{what} file '{_name(p)}' does not exist.")
    if p.is_dir():
        raise LesionMixError(f"{what} path '{_name(p)}' is a folder, not a NIfTI file.")
    try:
        img = _from_gzip_bytes(p) if p.name.endswith(".nii.gz") else None
        if img is None:
            img = nib.load(p)
        if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
            raise LesionMixError(
                f"{what} file '{_name(p)}' is a {type(img).__name__}, not a NIfTI image."
            )
        data = np.asanyarray(img.dataobj)  # nibabel is lazy: a truncated gzip only fails on read
    except LesionMixError:
        raise
    except MemoryError:
        shape = _header_shape(p)
        raise LesionMixError(
            f"{what} file '{_name(p)}' declares a {'x'.join(map(str, shape)) or 'huge'} volume, more than "
            "this machine's memory holds; is its header right?"
        ) from None
    except (EOFError, zlib.error, isal_zlib.error, gzip.BadGzipFile, igzip.BadGzipFile) as exc:
        raise LesionMixError(
            f"{what} file '{_name(p)}' is a corrupt or truncated gzip archive ({exc})."
        ) from None
    except Exception as exc:  # nibabel raises many types for non-NIfTI input
        raise LesionMixError(
            f"{what} file '{_name(p)}' could not be read as NIfTI ({type(exc).__name__}: {exc})."
        ) from None
    return img, data


def _header_shape(path: Path) -> tuple[int, ...]:
    """The shape a file's header declares, or ``()`` when even the header cannot be read."""
    try:
        return read_geometry(path)[0]
    except Exception:  # only used to word an error
        return ()


def read_geometry(path: str | os.PathLike) -> tuple[tuple[int, ...], np.ndarray]:
    """Shape and affine of a NIfTI file from its header alone (a few hundred bytes, not the voxels).

    Uses the affine nibabel would (``get_best_affine``); other formats and
    NIfTI-2 go through ``nibabel.load``.
    """
    path = Path(path)
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rb") as fh:
        head = fh.read(4)
        if 348 in (int.from_bytes(head, "little"), int.from_bytes(head, "big")):  # sizeof_hdr of NIfTI-1
            fh.seek(0)
            hdr = nib.Nifti1Header.from_fileobj(fh)
            return tuple(int(v) for v in hdr.get_data_shape()), hdr.get_best_affine()
    img = nib.load(path)
    return tuple(img.shape), img.affine


def _from_gzip_bytes(path: Path) -> nib.Nifti1Image | None:
    """A gzipped NIfTI-1/2 file decompressed in memory, or ``None`` to let nibabel name what it is."""
    blob = path.read_bytes()
    if blob[:2] != b"\x1f\x8b":  # not gzip at all
        return None
    raw = igzip.decompress(blob)  # every member, like gzip.decompress
    sizeof_hdr = {int.from_bytes(raw[:4], order) for order in ("little", "big")}
    for size, klass in ((348, nib.Nifti1Image), (540, nib.Nifti2Image)):
        if size in sizeof_hdr:
            return klass.from_bytes(raw)
    return None


def _image_array(data: np.ndarray, path: str | os.PathLike, affine: np.ndarray | None = None) -> np.ndarray:
    """Voxels of an image file as ``(C, i, j, k)`` float32, checked for NaN/inf."""
    if data.ndim == 3:
        data = data[np.newaxis]
    elif data.ndim == 4:
        data = np.moveaxis(data, -1, 0)  # NIfTI stores channels/time last
    elif data.ndim == 5 and data.shape[3] == 1:  # some tools write (x, y, z, 1, c)
        data = np.moveaxis(data[:, :, :, 0, :], -1, 0)
    else:
        raise LesionMixError(
            f"Image file '{_name(path)}' has shape {data.shape}; expected a 3D volume "
            "or a 4D file with one channel per volume."
        )
    data = np.ascontiguousarray(data, dtype=np.float32)
    bad = ~np.isfinite(data)
    if bad.any():
        first = tuple(int(v) for v in np.argwhere(bad)[0][1:])
        raise LesionMixError(
            f"Image file '{_name(path)}' contains {int(bad.sum())} NaN or infinite voxels "
            f"(first at {format_position(first, affine)})."
        )
    return data


def _label_array(data: np.ndarray, path: str | os.PathLike) -> np.ndarray:
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise LesionMixError(
            f"Label file '{_name(path)}' is {data.ndim}D with shape {data.shape}; "
            "a label map must be a 3D volume."
        )
    return as_label_array(data, where=f"Label file '{_name(path)}'")


def as_label_array(data: np.ndarray, where: str = "The label map") -> np.ndarray:
    """Check that ``data`` holds non-negative integer labels and return it as an integer array.

    Parameters
    ----------
    data : ndarray
        Label values, of any numeric dtype.
    where : str
        How to name the source in the error message.

    Raises
    ------
    LesionMixError
        If a value is NaN, not a whole number, or negative.
    """
    data = np.asarray(data)
    if data.dtype.kind == "b":
        return data.astype(np.uint8)
    if data.dtype.kind == "f" and data.size:
        lo, hi = float(data.min()), float(data.max())  # NaN propagates, inf shows at an end
        if np.isfinite(lo) and np.isfinite(hi) and 0 <= lo and hi <= 65535:
            # Float labels as tools write them ({0, 1}, BraTS's 0-4): cast in the file's memory order,
            # compare back for fractions, then reorder the small integers; nibabel's arrays are
            # Fortran-ordered, and a strided cast of the floats cost 3x this (40 -> 12 ms at 1 mm).
            out = data.astype(np.uint8 if hi <= 255 else np.uint16)
            if not (out != data).any():
                return np.ascontiguousarray(out)
    if data.dtype.kind == "f":
        if not np.isfinite(data).all():
            raise LesionMixError(f"{where} contains NaN or infinite values; labels must be integers.")
        frac = data != np.round(data)
        if frac.any():
            example = float(data[frac].flat[0])
            raise LesionMixError(
                f"{where} has non-integer values (e.g. {example:.8g}); labels must be whole numbers."
            )
    elif data.dtype.kind not in "iu":
        raise LesionMixError(f"{where} has dtype {data.dtype}; labels must be integers.")
    if data.size and data.min() < 0:
        raise LesionMixError(f"{where} has negative values (min {data.min():g}); labels must be >= 0.")
    top = int(data.max()) if data.size else 0
    dtype = np.uint8 if top <= 255 else (np.uint16 if top <= 65535 else np.int32)
    return np.ascontiguousarray(data, dtype=dtype)


@dataclass
class Case:
    """One labelled scan: image channels, label map and geometry.

    Attributes
    ----------
    image : ndarray, shape (C, I, J, K), float32
        Image channels in nibabel voxel order.
    label : ndarray, shape (I, J, K), integer, or None
        Label map (0 = background); ``None`` for an unlabelled image.
    affine : ndarray, shape (4, 4)
        Voxel-to-world (RAS+ mm) transform of the image.
    header : nibabel.Nifti1Header
        Header of the first image file, reused when saving results.
    case_id : str
        Identifier used in params and manifests.
    image_paths, label_path : source files (for provenance).
    image_dtype : numpy dtype of the first image file on disk.
    """

    image: np.ndarray
    label: np.ndarray | None
    affine: np.ndarray
    header: nib.Nifti1Header
    case_id: str = "case"
    image_paths: tuple[str, ...] = ()
    label_path: str | None = None
    image_dtype: np.dtype = field(default_factory=lambda: np.dtype(np.float32))

    @property
    def shape(self) -> tuple[int, int, int]:
        """Spatial shape ``(I, J, K)``."""
        return tuple(int(s) for s in self.image.shape[1:])  # type: ignore[return-value]

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along ``i, j, k`` (column norms of the affine)."""
        return voxel_spacing(self.affine)

    @property
    def n_channels(self) -> int:
        return int(self.image.shape[0])

    def require_label(self, role: str = "Host", needed_by: str = "this method") -> None:
        """Raise if the case has no label map (``needed_by`` says who needs it)."""
        if self.label is None:
            raise LesionMixError(f"{role} case '{self.case_id}' has no label map; {needed_by} needs one.")

    def require_lesion(self, role: str = "Donor") -> None:
        """Raise if the case has no label or an empty one."""
        where = self.label_path or self.case_id
        self.require_label(role, "a lesion source")
        if not self.label.any():
            raise LesionMixError(
                f"{role} label '{where}' has no lesion voxels; at least one lesion is required."
            )


def voxel_spacing(affine: np.ndarray) -> tuple[float, float, float]:
    """Voxel size in mm along each array axis, from the affine's column norms."""
    zooms = np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0))
    return tuple(float(z) for z in zooms)  # type: ignore[return-value]


def load_image(paths: str | os.PathLike | Sequence[str | os.PathLike]):
    """Load one or more image files as channels.

    Parameters
    ----------
    paths : path or sequence of paths
        One file per channel (``CASE_0000.nii.gz``, ``CASE_0001.nii.gz``...), or
        a single 3D or 4D file.

    Returns
    -------
    image : ndarray, shape (C, I, J, K), float32
    img : nibabel.Nifti1Image
        The first file, for its affine and header.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    if not paths:
        raise LesionMixError("No image file was given.")
    channels, first = [], None
    for p in paths:
        img, data = read_nifti(p, "Image")
        arr = _image_array(data, p, img.affine)
        if first is None:
            first = (img, p)
        else:
            if arr.shape[1:] != channels[0].shape[1:]:
                raise LesionMixError(
                    f"Image file '{_name(p)}' has shape {arr.shape[1:]} but '{_name(first[1])}' "
                    f"has {channels[0].shape[1:]}; all channels must share one grid."
                )
            check_affines(first[0].affine, img.affine, _name(first[1]), _name(p))
        channels.append(arr)
    image = channels[0] if len(channels) == 1 else np.concatenate(channels, axis=0)
    return image, first[0]


def load_label(path: str | os.PathLike):
    """Load a label map; returns ``(label, nibabel image)``."""
    img, data = read_nifti(path, "Label")
    return _label_array(data, path), img


def load_case(
    image_paths: str | os.PathLike | Sequence[str | os.PathLike],
    label_path: str | os.PathLike | None = None,
    case_id: str | None = None,
) -> Case:
    """Load a case (image channels + optional label) and check they share a grid.

    Raises
    ------
    LesionMixError
        Missing or unreadable files, NaN/inf voxels, a 4D or non-integer label,
        or an image and label of different shape or affine.
    """
    if isinstance(image_paths, (str, os.PathLike)):
        image_paths = [image_paths]
    image, img = load_image(image_paths)
    label = None
    if label_path is not None:
        label, limg = load_label(label_path)
        if label.shape != image.shape[1:]:
            raise LesionMixError(
                f"Label file '{_name(label_path)}' has shape {label.shape} but image "
                f"'{_name(image_paths[0])}' has {image.shape[1:]}; they must match."
            )
        check_affines(img.affine, limg.affine, _name(image_paths[0]), _name(label_path))
    if case_id is None:
        case_id = case_id_from_path(image_paths[0])
    return Case(
        image=image,
        label=label,
        affine=np.asarray(img.affine, dtype=np.float64),
        header=img.header.copy(),
        case_id=case_id,
        image_paths=tuple(_name(p) for p in image_paths),
        label_path=None if label_path is None else _name(label_path),
        image_dtype=np.dtype(img.get_data_dtype()),
    )


#: File stems that name a modality or role, not a case: ``patient07/flair.nii.gz`` is case ``patient07``.
GENERIC_STEMS = frozenset({
    "flair", "t1", "t1w", "t1ce", "t1c", "t1gd", "t2", "t2w", "pd", "pdw", "dwi", "adc", "swi",
    "image", "img", "mri", "scan", "anat", "brain", "volume", "data",
})


def case_id_from_path(path: str | os.PathLike) -> str:
    """The case a file belongs to.

    ``/x/sub-01_0000.nii.gz`` -> ``sub-01`` (the file name without NIfTI suffix or channel
    index); when that only names a modality (:data:`GENERIC_STEMS`, with processing words but no
    number: ``Flair_subtrMeanDivStd``), the parent folder's: ``/x/patient07/flair.nii.gz`` ->
    ``patient07``, so that two patients' FLAIRs are two cases.
    """
    p = Path(path)
    name = p.name
    for suf in NIFTI_SUFFIXES:
        if name.endswith(suf):
            name = name[: -len(suf)]
            break
    stem, _, tail = name.rpartition("_")
    if stem and len(tail) == 4 and tail.isdigit():
        name = stem
    if _names_a_modality(name) and p.parent.name not in ("", ".", "/"):
        return p.parent.name
    return name


def _names_a_modality(name: str) -> bool:
    """A file name that names an image kind, not a case: ``flair``, ``Flair_subtrMeanDivStd``, ``t1_brain``.

    Its first word is a :data:`GENERIC_STEMS` entry and no later word holds a digit (``flair_001``
    is a case).
    """
    words = [w for w in re.split(r"[_.\-]", name.lower()) if w]
    return bool(words) and words[0] in GENERIC_STEMS and not any(ch.isdigit() for w in words[1:] for ch in w)


def check_affines(a: np.ndarray, b: np.ndarray, name_a: str, name_b: str) -> None:
    """Raise unless two affines agree within :data:`AFFINE_TOLERANCE_MM` (the error names both files)."""
    diff = float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
    if diff > AFFINE_TOLERANCE_MM:
        raise LesionMixError(
            f"'{name_b}' and '{name_a}' have affines that differ by up to {diff:.4g} mm "
            f"(tolerance {AFFINE_TOLERANCE_MM:g} mm); they are not on the same grid."
        )


def check_same_grid(a: Case, b: Case, role_a: str = "Host", role_b: str = "Donor") -> None:
    """Raise unless two cases have the same spatial shape and (nearly) the same affine.

    The error names both cases and, for affines, the largest difference in mm.
    """
    name_a = a.image_paths[0] if a.image_paths else a.case_id
    name_b = b.image_paths[0] if b.image_paths else b.case_id
    if a.shape != b.shape:
        raise LesionMixError(
            f"{role_b} '{name_b}' has shape {b.shape} but {role_a.lower()} '{name_a}' has "
            f"{a.shape}; resample them to one grid first."
        )
    diff = float(np.max(np.abs(a.affine - b.affine)))
    if diff > AFFINE_TOLERANCE_MM:
        raise LesionMixError(
            f"{role_b} '{name_b}' and {role_a.lower()} '{name_a}' have affines that differ by up "
            f"to {diff:.4g} mm (tolerance {AFFINE_TOLERANCE_MM:g} mm); register them to one grid first."
        )
    if a.n_channels != b.n_channels:
        raise LesionMixError(
            f"{role_b} '{name_b}' has {b.n_channels} image channel(s) but {role_a.lower()} "
            f"'{name_a}' has {a.n_channels}; give both the same channels."
        )


def _header_for(header: nib.Nifti1Header | None, affine: np.ndarray, dtype) -> nib.Nifti1Header:
    hdr = nib.Nifti1Header() if header is None else header.copy()
    hdr.set_data_dtype(dtype)
    # Stored values are the real values: drop any scaling from the source file.
    hdr.set_slope_inter(1.0, 0.0)
    hdr.set_qform(affine, code=int(hdr["qform_code"]) or 1)
    hdr.set_sform(affine, code=int(hdr["sform_code"]) or 1)
    return hdr


#: gzip encoders for the ``.nii.gz`` files we write, name -> (zlib-like module, level). Both write
#: standard gzip (RFC 1952) with mtime 0, which every NIfTI reader opens.
#: ``isal`` (Intel ISA-L's igzip, level 1) compresses a 2 mm brain about 7x faster than
#: zlib and a few per cent smaller; ``zlib`` at level 1 is nibabel's own setting
#: (``Opener.default_compresslevel``), i.e. the stream ``nibabel.save`` writes.
GZIP_CODECS = {"isal": (isal_zlib, 1), "zlib": (zlib, 1)}
DEFAULT_GZIP = "isal"


def check_gzip_codec(codec: str) -> str:
    """Return ``codec`` if it names one of :data:`GZIP_CODECS`; raise a one-sentence error otherwise."""
    if codec not in GZIP_CODECS:
        raise LesionMixError(f"Unknown gzip codec '{codec}' (known: {', '.join(GZIP_CODECS)}).")
    return codec


def gzip_compressor(codec: str = DEFAULT_GZIP):
    """A fresh gzip-stream compressor object (``compress``/``flush``) of ``codec``."""
    lib, level = GZIP_CODECS[check_gzip_codec(codec)]
    return lib.compressobj(level, lib.DEFLATED, 16 + 15)  # 16 + window bits: a gzip wrapper


def encode_nifti(img: nib.Nifti1Image, compress: bool = True, codec: str = DEFAULT_GZIP) -> bytes:
    """The bytes of ``img`` as a ``.nii.gz`` file (``compress=False``: a ``.nii`` file).

    nibabel makes the header, and the uncompressed bytes are exactly those
    ``nibabel.save`` writes (tested); only the gzip stream is ours: one call
    of ``codec`` (see :data:`GZIP_CODECS`) over the whole volume. nibabel
    instead streams it through Python's ``gzip.GzipFile`` in small chunks and
    re-checks the array for scaling. When the array's dtype is not the
    header's (nibabel would scale it) or the header carries a scaling other
    than 1/0, nibabel encodes the bytes itself.
    """
    data = img.dataobj
    hdr = img.header
    fast = isinstance(data, np.ndarray) and type(img) in (nib.Nifti1Image, nib.Nifti2Image)
    if fast:
        disk = hdr.get_data_dtype()
        slope, inter = hdr.get_slope_inter()
        fast = data.dtype.newbyteorder("=") == disk.newbyteorder("=") and (
            (slope, inter) in ((None, None), (1.0, 0.0))
        )
    if not fast:
        raw = [img.to_bytes()]
    else:
        img.update_header()
        hdr = img.header.copy()
        # What nibabel stores for an array that needs no scaling (its ArrayWriter's 1 and 0).
        hdr.set_slope_inter(1.0, 0.0)
        head = BytesIO()
        hdr.write_to(head)  # header block + extension flag/extensions; sets vox_offset if unset
        offset = int(hdr.get_data_offset())
        # NIfTI stores voxels in Fortran order in the header's byte order: a C-order copy of
        # the transpose (no copy at all when the array already is Fortran-ordered).
        body = np.ascontiguousarray(data.T, dtype=disk)
        pad = b"\0" * max(0, offset - head.tell())
        raw = [head.getvalue() + pad, body.reshape(-1).view(np.uint8)]
    if not compress:
        return b"".join(raw)
    gz = gzip_compressor(codec)
    return b"".join([*(gz.compress(part) for part in raw), gz.flush()])


def save_nifti_atomic(img: nib.Nifti1Image, path: str | os.PathLike) -> Path:
    """Write ``img`` to ``path`` atomically (see :mod:`napari_lesionmix.io.atomic`).

    The target only ever holds a complete file: the old one until the rename,
    the new one after. A full disk or any other write error removes the
    temporary file and raises :class:`LesionMixError`.
    """
    name = Path(path).name
    if name.endswith(NIFTI_SUFFIXES) and isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        return write_bytes_atomic(encode_nifti(img, compress=name.endswith(".gz")), path)
    with atomic_path(path) as tmp:
        nib.save(img, tmp)
    return Path(path)


def image_nifti(
    data: np.ndarray,
    affine: np.ndarray,
    header: nib.Nifti1Header | None = None,
    source_dtype: np.dtype | None = None,
    where: str = "image",
) -> nib.Nifti1Image:
    """One 3D image channel as a NIfTI image with the given geometry (see :func:`save_image`)."""
    data = np.asarray(data)
    if data.ndim != 3:
        raise LesionMixError(f"Cannot save '{where}': expected a 3D channel, got shape {data.shape}.")
    out = None
    if source_dtype is not None and np.dtype(source_dtype).kind in "iu":
        out = _exact_integer_cast(data, np.dtype(source_dtype))
    if out is None:
        out = data.astype(np.float32, copy=False)
    return nib.Nifti1Image(out, affine, _header_for(header, affine, out.dtype))


def _exact_integer_cast(data: np.ndarray, dtype: np.dtype) -> np.ndarray | None:
    """``data`` as ``dtype`` if every value is a whole number that fits it, else ``None``.

    One cast and one comparison: a value that is fractional, NaN or out of
    range cannot survive the round trip (a wrapped or saturated cast lands in
    ``dtype``'s range, the original does not), so equality is the whole check.
    """
    if data.dtype == dtype:
        return data
    with np.errstate(invalid="ignore", over="ignore"):
        # Every 4th voxel per axis first: a pasted lesion in a float scale (a brain-linear export) is
        # fractional, and one fractional voxel refuses the cast without a full-volume cast and compare.
        probe = data[::4, ::4, ::4] if data.ndim == 3 else data
        if not np.array_equal(probe.astype(dtype), probe):
            return None
        out = data.astype(dtype)
        return out if np.array_equal(out, data) else None


def save_image(
    data: np.ndarray,
    path: str | os.PathLike,
    affine: np.ndarray,
    header: nib.Nifti1Header | None = None,
    source_dtype: np.dtype | None = None,
) -> Path:
    """Save one 3D image channel atomically with the given geometry.

    Stored as float32, or as ``source_dtype`` when that is an integer type and
    every value is a whole number that fits it (so an int16 scan stays int16).
    """
    return save_nifti_atomic(image_nifti(data, affine, header, source_dtype, where=_name(path)), path)


def label_nifti(
    label: np.ndarray,
    affine: np.ndarray,
    header: nib.Nifti1Header | None = None,
    where: str = "label",
) -> nib.Nifti1Image:
    """A label map as a NIfTI image of the smallest unsigned integer type that holds it."""
    label = as_label_array(label, where=f"The label map for '{where}'")
    if label.ndim != 3:
        raise LesionMixError(f"Cannot save '{where}': expected a 3D label, got shape {label.shape}.")
    hdr = _header_for(header, affine, label.dtype)
    hdr["cal_min"], hdr["cal_max"] = 0, 0
    return nib.Nifti1Image(label, affine, hdr)


def save_label(
    label: np.ndarray,
    path: str | os.PathLike,
    affine: np.ndarray,
    header: nib.Nifti1Header | None = None,
) -> Path:
    """Save a label map atomically as the smallest unsigned integer type that holds it."""
    return save_nifti_atomic(label_nifti(label, affine, header, where=_name(path)), path)


def save_case_images(case_like_image: np.ndarray, paths: Sequence[str | os.PathLike], affine, header, source_dtype=None) -> list[Path]:
    """Save each channel of a ``(C, I, J, K)`` image to its own file."""
    if len(paths) != case_like_image.shape[0]:
        raise LesionMixError(
            f"{case_like_image.shape[0]} channel(s) but {len(paths)} output path(s) were given."
        )
    return [save_image(ch, p, affine, header, source_dtype) for ch, p in zip(case_like_image, paths, strict=True)]
