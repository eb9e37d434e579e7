"""A method's settings: the :class:`Options` dataclass and its :func:`option` fields.

Each field declares its default, help text and allowed values once; the CLI
flags, the export ``--option METHOD.NAME=VALUE`` keys, the studio's controls
and every check of a value come from that declaration
(:mod:`~napari_lesionmix.augment.registry` re-exports both names).
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from napari_lesionmix.augment import intensity
from napari_lesionmix.errors import LesionMixError


def option(default: Any, help: str, *, choices: tuple | None = None, low: float | None = None,
           high: float | None = None, open_low: bool = False, open_high: bool = False,
           flag: str | None = None, kw_only: bool = False) -> Any:
    """A field of a method's :class:`Options`: its default, help text and allowed values.

    Parameters
    ----------
    default
        The default value (immutable: tuples, not lists).
    help : str
        One line for ``--help`` and the export documentation.
    choices : tuple, optional
        The allowed values.
    low, high : float, optional
        Bounds of a number; inclusive unless ``open_low``/``open_high``.
    flag : str, optional
        The CLI flag when it is not ``--field-name`` (kept for a familiar spelling).
    kw_only : bool
        A keyword-only field (the base's shared options, so subclasses' fields keep their positions).
    """
    meta = {"help": help, "choices": choices, "low": low, "high": high, "open_low": open_low,
            "open_high": open_high, "flag": flag}
    return dataclasses.field(default=default, metadata=meta, kw_only=kw_only)


@dataclass(frozen=True)
class Options:
    """Base of every method's options: each value is checked against its field's declaration.

    It holds the options every method shares (one definition for the CLI
    flags, the export keys and the studio of every method): ``intensity_match``.
    """

    method_name: ClassVar[str] = ""
    intensity_match: str = option(
        "none", "map each source case's intensities into the host's scale before mixing, fitted on normal "
        "brain: none (the papers), brain-linear (median and IQR) or histogram (Nyul-Udupa landmarks)",
        choices=intensity.MODES, kw_only=True)

    def __post_init__(self):
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            object.__setattr__(self, f.name, _check_value(self.method_name, f, hints[f.name], getattr(self, f.name)))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> Options:
        """Options from ``{name: value}`` (e.g. parsed ``--option`` specs); unknown names are an error."""
        data = dict(data or {})
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise LesionMixError(
                f"Method '{cls.method_name}' has no option {', '.join(unknown)} "
                f"(options: {', '.join(names) or 'none'})."
            )
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def changed(self) -> dict[str, Any]:
        """The options that differ from their defaults (what a record needs to say)."""
        return {f.name: _jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)
                if getattr(self, f.name) != f.default}


def _jsonable(value):
    return list(value) if isinstance(value, tuple) else value


def option_types(hint) -> tuple[type, bool]:
    """The scalar type of an option's annotation, and whether it holds a tuple of them.

    ``float | None`` -> ``(float, False)``; ``tuple[int, ...]`` -> ``(int, True)``.
    """
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    if typing.get_origin(hint) is tuple:
        return typing.get_args(hint)[0], True
    return hint, False


def _check_value(method: str, f: dataclasses.Field, hint, value):
    """``value`` converted to the field's type (ints to floats, lists to tuples), or a clear error."""
    name = f"{method}.{f.name}" if method else f.name
    if value is None:
        if f.default is None:
            return None
        raise LesionMixError(f"Option {name} needs a value.")
    kind, many = option_types(hint)
    if many:
        if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
            value = (value,)
        return tuple(_check_scalar(name, kind, v, f.metadata) for v in value)
    return _check_scalar(name, kind, value, f.metadata)


def _check_scalar(name: str, kind, value, meta: Mapping[str, Any]):
    if kind is bool:
        if not isinstance(value, (bool, np.bool_)):
            raise LesionMixError(f"Option {name} must be true or false, got {value!r}.")
        value = bool(value)
    elif kind is int:
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
            raise LesionMixError(f"Option {name} must be a whole number, got {value!r}.")
        value = int(value)
    elif kind is float:
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number)):
            raise LesionMixError(f"Option {name} must be a number, got {value!r}.")
        value = float(value)
        if not math.isfinite(value):
            raise LesionMixError(f"Option {name} must be a finite number, got {value!r}.")
    elif kind is str:
        if not isinstance(value, str):
            raise LesionMixError(f"Option {name} must be text, got {value!r}.")
    choices = meta.get("choices")
    if choices and value not in choices:
        raise LesionMixError(f"Option {name} must be one of {', '.join(map(str, choices))}, got {value!r}.")
    low, high = meta.get("low"), meta.get("high")
    if low is not None and (value < low or (meta.get("open_low") and value == low)):
        raise LesionMixError(f"Option {name} must be {'>' if meta.get('open_low') else '>='} {low}, got {value!r}.")
    if high is not None and (value > high or (meta.get("open_high") and value == high)):
        raise LesionMixError(f"Option {name} must be {'<' if meta.get('open_high') else '<='} {high}, got {value!r}.")
    return value
