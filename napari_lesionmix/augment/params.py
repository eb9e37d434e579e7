"""Params and results shared by every augmentation method.

Each method is a pair (TorchIO's ``RandomGamma``/``Gamma`` split): a
``sample_*(rng, ...)`` function that only draws a frozen :class:`Params`
dataclass, and a deterministic function that only applies it. Params
serialise to JSON and back, so a saved ``params.json`` replays a sample bit for
bit.

Subclasses set the class attribute ``method`` and are registered by name, so
:func:`params_from_dict` can rebuild any method's params from JSON.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from napari_lesionmix.augment.intensity import IntensityMap
from napari_lesionmix.errors import LesionMixError

_REGISTRY: dict[str, type[Params]] = {}


@dataclass(frozen=True)
class BrainRecord:
    """Which brain region a sample was drawn in (:mod:`~napari_lesionmix.io.brain`).

    Attributes
    ----------
    source : {"mask", "estimated"}
        A given brain mask, or the estimate from the host image.
    voxels : int
        Its size: a replay whose region differs (another mask, another estimate) is refused.
    """

    source: str
    voxels: int


@dataclass(frozen=True)
class Params:
    """Base class of every method's frozen, JSON-serialisable parameters.

    Attributes
    ----------
    intensity : tuple of IntensityMap
        The intensity maps of the cases whose voxels the sample pastes (one per
        source case other than the host), fitted by the registry's shared
        ``intensity_match`` step (:mod:`~napari_lesionmix.augment.intensity`)
        and applied again on replay. Keyword-only, after every method's fields;
        empty (and left out of the JSON) when nothing was recorded.
    brain : BrainRecord or None
        The host's brain region the sample was drawn and applied in (the
        registry records it); ``None`` (left out of the JSON) for params made
        outside the registry.
    """

    method: ClassVar[str] = ""
    intensity: tuple[IntensityMap, ...] = field(default=(), kw_only=True)
    brain: BrainRecord | None = field(default=None, kw_only=True)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("method"):
            _REGISTRY[cls.method] = cls

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict, with the method name under ``"method"``."""
        out = {"method": self.method}
        for f in dataclasses.fields(self):
            if f.name not in ("intensity", "brain"):
                out[f.name] = _to_jsonable(getattr(self, f.name))
        if self.intensity:
            out["intensity"] = _to_jsonable(self.intensity)
        if self.brain is not None:
            out["brain"] = _to_jsonable(self.brain)
        return out

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        """Rebuild params from :meth:`to_dict` output (unknown keys are an error)."""
        data = dict(data)
        name = data.pop("method", cls.method)
        if cls.method and name != cls.method:
            raise LesionMixError(f"Params are for method '{name}', not '{cls.method}'.")
        hints = typing.get_type_hints(cls)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise LesionMixError(f"Unknown {cls.method or cls.__name__} parameter(s): {', '.join(unknown)}.")
        kwargs = {}
        for k, v in data.items():
            try:
                kwargs[k] = _from_jsonable(hints[k], v)
            except (TypeError, ValueError) as exc:
                raise LesionMixError(f"Invalid {cls.method or cls.__name__} parameter {k}={v!r} ({exc}).") from None
        try:
            return cls(**kwargs)
        except TypeError as exc:
            raise LesionMixError(f"Invalid {cls.method} params: {exc}.") from None


def params_from_dict(data: dict[str, Any]) -> Params:
    """Rebuild the params of any registered method from a dict with a ``"method"`` key."""
    name = data.get("method")
    if name not in _REGISTRY:
        known = ", ".join(sorted(_REGISTRY)) or "none"
        raise LesionMixError(f"Unknown augmentation method '{name}' in params (known: {known}).")
    return _REGISTRY[name].from_dict(data)


def params_from_json(text: str) -> Params:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise LesionMixError(f"Params are not valid JSON ({exc.msg} at line {exc.lineno}).") from None
    if not isinstance(data, dict):
        raise LesionMixError("Params JSON must be an object with a 'method' key.")
    # A params.json ({"version", "inputs", "params"}) or an export manifest record hold them under "params".
    return params_from_dict(data["params"] if isinstance(data.get("params"), dict) else data)


def _to_jsonable(value: Any) -> Any:
    if isinstance(value, Params) or dataclasses.is_dataclass(value):
        if isinstance(value, Params):
            return value.to_dict()
        return {f.name: _to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (tuple, list)):
        return [_to_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _to_jsonable(v) for k, v in value.items()}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def _from_jsonable(hint: Any, value: Any) -> Any:
    """Convert JSON data back to the type a dataclass field declares."""
    if value is None:
        return None
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        error: Exception = TypeError("unexpected type")
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _from_jsonable(arg, value)
            except (TypeError, ValueError, LesionMixError) as exc:
                error = exc
        raise error
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_from_jsonable(args[0], v) for v in value)
        if args:
            return tuple(_from_jsonable(a, v) for a, v in zip(args, value, strict=True))
        return tuple(value)
    if origin is dict:
        return {k: _from_jsonable(args[1], v) for k, v in value.items()} if args else dict(value)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise TypeError(f"expected an object for {hint.__name__}")
        if issubclass(hint, Params):
            return hint.from_dict(value)
        sub = typing.get_type_hints(hint)
        return hint(**{k: _from_jsonable(sub[k], v) for k, v in value.items()})
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError("expected a number")
        return float(value)
    if hint is int and isinstance(value, bool):
        raise TypeError("expected int")
    if hint in (int, str, bool) and not isinstance(value, hint):
        raise TypeError(f"expected {hint.__name__}")
    return value


@dataclass
class Synthetic:
    """One synthetic sample: the mixed image and label, the mixing mask and its params.

    Attributes
    ----------
    image : ndarray, shape (C, I, J, K), float32
    label : ndarray, shape (I, J, K), integer (float for the soft-label baselines)
    mask : ndarray, shape (I, J, K)
        Where the result differs from the host: CarveMix's binary ROI ``M``,
        Soft-CP's soft mask ``S`` in [0, 1], LesionMix's union of pasted and
        inpainted regions. ARHNet harmonizes inside it.
    params : Params
    """

    image: np.ndarray
    label: np.ndarray
    mask: np.ndarray
    params: Params
