"""``harmonize`` and ``load_harmonizer``: one interface for ARHNet and the baselines (no torch at import)."""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from napari_lesionmix.errors import LesionMixError
from napari_lesionmix.harmonize import baselines
from napari_lesionmix.harmonize.device import require_torch
from napari_lesionmix.harmonize.progress import checked_progress

METHODS = ("arhnet", "composite", "hm", "hm-ring")
SHIPPED_CHECKPOINT = Path(__file__).resolve().parent / "weights" / "arhnet_sample.pt"


def shipped_checkpoint() -> Path:
    """Path of the checkpoint trained on the shipped sample data."""
    if not SHIPPED_CHECKPOINT.is_file():
        raise LesionMixError(
            f"The shipped ARHNet checkpoint '{SHIPPED_CHECKPOINT}' is missing; retrain it with "
            "scripts/train_shipped_harmonizer.py or pass a checkpoint path."
        )
    return SHIPPED_CHECKPOINT


class CompositeHarmonizer:
    """No harmonization (Table 1's "Composite")."""

    method = "composite"

    def params(self, spacing=None) -> dict[str, Any]:
        return {"method": self.method}

    def harmonize(self, image: np.ndarray, mask: np.ndarray,
                  progress: Callable[[int, int], None] | None = None, label: np.ndarray | None = None,
                  spacing=None, *, should_stop: Callable[[], bool] | None = None) -> np.ndarray:
        return baselines.composite(image, mask, progress=checked_progress(progress, should_stop))


class HistogramHarmonizer:
    """Table 1's "HM": pasted lesions matched to the host's own lesions (``hm``), or each
    component to its surrounding ring (``hm-ring``, also ``hm``'s fall-back without a label)."""

    def __init__(self, ring_width: int = 3, connectivity: int = 26, reference: str = "lesions"):
        if reference not in ("lesions", "ring"):
            raise LesionMixError(f"Histogram matching reference must be 'lesions' or 'ring', got {reference!r}.")
        self.ring_width, self.connectivity, self.reference = int(ring_width), int(connectivity), reference
        self.method = "hm" if reference == "lesions" else "hm-ring"

    def params(self, spacing=None) -> dict[str, Any]:
        return {"method": self.method, "ring_width": self.ring_width, "connectivity": self.connectivity}

    def harmonize(self, image: np.ndarray, mask: np.ndarray,
                  progress: Callable[[int, int], None] | None = None, label: np.ndarray | None = None,
                  spacing=None, *, should_stop: Callable[[], bool] | None = None) -> np.ndarray:
        # Cancel per component: the baselines report each one done and take no flag of their own.
        progress = checked_progress(progress, should_stop)
        if self.reference == "ring":
            return baselines.histogram_matching(image, mask, self.ring_width, self.connectivity, progress=progress)
        return baselines.histogram_matching_lesions(image, mask, label, self.ring_width, self.connectivity,
                                                    progress=progress)


_CACHE: OrderedDict = OrderedDict()
_CACHE_LOCK = threading.Lock()
_CACHE_SIZE = 2


def load_harmonizer(method_or_path: str | os.PathLike = "arhnet", device: str = "auto", **kwargs):
    """A harmonizer object with ``.harmonize(image, mask, progress=None, label=None, spacing=None, *,
    should_stop=None)`` and ``.params(spacing=None)`` (what to record; ARHNet adds the spacing it ran at for an input of ``spacing``).

    Parameters
    ----------
    method_or_path : "arhnet" (the shipped checkpoint), "composite", "hm", "hm-ring", or a checkpoint path
    device : {"auto", "cuda", "mps", "cpu"}
        Used by ARHNet only.
    **kwargs
        Passed to the harmonizer (e.g. ``ring_width`` for ``"hm"``, ``batch_size`` for ARHNet).

    Raises
    ------
    LesionMixError
        Unknown method, or a checkpoint that is missing, corrupt or of another architecture.
    """
    if isinstance(method_or_path, str) and method_or_path.lower() in METHODS:
        name = method_or_path.lower()
        if name == "composite":
            return CompositeHarmonizer()
        if name in ("hm", "hm-ring"):
            return HistogramHarmonizer(**kwargs, reference="lesions" if name == "hm" else "ring")
        path = shipped_checkpoint()
    else:
        path = Path(method_or_path)
        if path.suffix not in (".pt", ".pth", ".ckpt") and not path.exists():
            raise LesionMixError(
                f"Harmonization method '{method_or_path}' is not one of {', '.join(METHODS)} or an existing checkpoint file."
            )
    require_torch(f"Harmonization with '{method_or_path}'")
    from napari_lesionmix.harmonize.inference import ARHNetHarmonizer

    return ARHNetHarmonizer(path, device=device, **kwargs)


def harmonizer_from_record(record: dict[str, Any], device: str | None = None):
    """The harmonizer a recorded ``params()`` dict describes, to harmonize a replayed sample again.

    Parameters
    ----------
    record : dict
        What a harmonizer's ``params()`` gave (``method``; ARHNet: ``checkpoint``,
        ``checkpoint_sha256``, ``device``; HM: ``ring_width``, ``connectivity``).
    device : str, optional
        Overrides the recorded device (default: the recorded one, else ``"auto"``).

    Raises
    ------
    LesionMixError
        Unknown method, a checkpoint that is gone, or one whose bytes changed since it was recorded.
    """
    method = str(record.get("method", ""))
    device = device or str(record.get("device") or "auto")
    if "checkpoint" in record:
        extra = {"anchor": record["anchor"]} if record.get("anchor") else {}
        h = load_harmonizer(record["checkpoint"], device, **extra)
        want = record.get("checkpoint_sha256")
        if want and getattr(h, "sha256", want) != want:
            raise LesionMixError(f"Checkpoint '{record['checkpoint']}' changed since the sample was harmonized "
                                 f"(sha256 {str(h.sha256)[:12]}..., recorded {str(want)[:12]}...).")
        return h
    kwargs = {k: record[k] for k in ("ring_width", "connectivity") if k in record and method in ("hm", "hm-ring")}
    return load_harmonizer(method, device, **kwargs)


def _cached_harmonizer(method: str | os.PathLike, device: str):
    """Reuse loaded models across calls (keyed by file, modification time and device)."""
    key = None
    if not (isinstance(method, str) and method.lower() in ("composite", "hm", "hm-ring")):
        p = shipped_checkpoint() if isinstance(method, str) and method.lower() == "arhnet" else Path(method)
        try:
            st = p.stat()
            key = (os.fspath(p.resolve()), st.st_mtime_ns, st.st_size, str(device))
        except OSError:
            key = None
    if key is None:
        return load_harmonizer(method, device)
    with _CACHE_LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
    h = load_harmonizer(method, device)
    with _CACHE_LOCK:
        _CACHE[key] = h
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return h


def harmonize(
    image: np.ndarray,
    mask: np.ndarray,
    method: str | os.PathLike = "arhnet",
    device: str = "auto",
    progress: Callable[[int, int], None] | None = None,
    label: np.ndarray | None = None,
    spacing=None,
    *,
    should_stop: Callable[[], bool] | None = None,
) -> np.ndarray:
    """Harmonize a synthetic image inside its mask.

    Parameters
    ----------
    image : ndarray, shape (C, I, J, K), float32
        Synthetic image in its own intensity scale.
    mask : ndarray, shape (I, J, K), bool or soft in [0, 1]
        Where the image was changed (the mixing mask); only ``mask > 0`` changes.
    method : "arhnet", "composite", "hm", "hm-ring" or a checkpoint path
    device : {"auto", "cuda", "mps", "cpu"}
    progress : callable(done, total), optional
        Called after each unit of work: a batch of patches (ARHNet), a component (HM).
    label : ndarray, shape (I, J, K), optional
        The synthetic label, which tells pasted lesions (label inside the mask)
        from the host's own (label outside it): ``"hm"`` matches the former to
        the latter; ARHNet (a checkpoint trained with anchoring) takes their
        level from the host's lesions (:mod:`~napari_lesionmix.harmonize.anchor`);
        ``"composite"`` and ``"hm-ring"`` ignore it.
    spacing : tuple of float, optional
        Voxel size in mm: ARHNet warns (``OutOfDomainWarning``) when it, or the
        image's normalised intensities, lie far outside its training data.
    should_stop : callable() -> bool, optional
        Polled between units of work (the studio's Cancel); once it returns True the
        run raises :class:`~napari_lesionmix.errors.Cancelled` and returns nothing
        (the input arrays are never written to).

    Returns
    -------
    ndarray
        Same shape and dtype as ``image``, in the original intensity scale;
        voxels where ``mask == 0`` are bit-identical to the input.

    Examples
    --------
    >>> import numpy as np
    >>> img = np.random.default_rng(0).random((1, 8, 8, 8), dtype=np.float32)
    >>> m = np.zeros((8, 8, 8), bool); m[3:5, 3:5, 3:5] = True
    >>> out = harmonize(img, m, method="hm")
    >>> bool(np.array_equal(out[:, ~m], img[:, ~m]))
    True
    """
    return _cached_harmonizer(method, device).harmonize(image, mask, progress=progress, label=label, spacing=spacing,
                                                        should_stop=should_stop)
