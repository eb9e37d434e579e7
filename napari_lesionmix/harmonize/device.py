"""Pick the torch device: CUDA, then Apple MPS, then CPU."""

from __future__ import annotations

import warnings

from napari_lesionmix.errors import LesionMixError

DEVICES = ("auto", "cuda", "mps", "cpu")
#: How to get torch: the core install leaves it out (a CPU or CUDA build is the user's choice).
TORCH_HINT = "pip install 'napari-lesionmix[harmonize]' (or install the torch build you want first)"


def require_torch(what: str = "ARHNet harmonization"):
    """Import and return ``torch``, or say in one sentence which extra brings it.

    Parameters
    ----------
    what : str
        What needs torch, for the message.

    Raises
    ------
    LesionMixError
        If torch is not installed.
    """
    try:
        import torch
    except ImportError:
        raise LesionMixError(f"{what} needs PyTorch, which the core install leaves out: {TORCH_HINT}.") from None
    return torch


def _mps_available(torch) -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def resolve_device(name: str = "auto"):
    """Return a ``torch.device`` for ``name``.

    ``"auto"`` picks CUDA when present, then MPS, then CPU. A device that was
    asked for by name but is not available falls back to CPU with a
    :class:`RuntimeWarning` that says so; CPU always works.

    Parameters
    ----------
    name : {"auto", "cuda", "mps", "cpu"} or a torch device string such as "cuda:1"

    Raises
    ------
    LesionMixError
        If ``name`` is not a device kind, or torch is not installed.
    """
    torch = require_torch("A torch device")

    text = str(name).strip().lower()
    kind = text.split(":")[0]
    if kind not in DEVICES:
        raise LesionMixError(f"Device '{name}' is not one of auto, cuda, mps, cpu.")
    if kind == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available(torch):
            return torch.device("mps")
        return torch.device("cpu")
    if kind == "cuda":
        if torch.cuda.is_available():
            index = int(text.split(":")[1]) if ":" in text else 0
            if index < torch.cuda.device_count():
                return torch.device("cuda", index)
            warnings.warn(f"CUDA device {index} does not exist; using cuda:0.", RuntimeWarning, stacklevel=2)
            return torch.device("cuda", 0)
        warnings.warn("CUDA was requested but is not available; using the CPU.", RuntimeWarning, stacklevel=2)
        return torch.device("cpu")
    if kind == "mps":
        if _mps_available(torch):
            return torch.device("mps")
        warnings.warn("MPS was requested but is not available; using the CPU.", RuntimeWarning, stacklevel=2)
        return torch.device("cpu")
    return torch.device("cpu")
