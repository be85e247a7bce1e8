"""Typed fields of a config dataclass: ``key=value`` overrides and values checked against the field types.

A suite's settings are declared once, as the fields of its frozen config dataclass; this module reads their type
annotations (``int``, ``float``, ``bool``, ``str``, ``X | None``, ``tuple[T, ...]``, ``tuple[T, T]``) and

- :func:`parse_assignments` turns ``["lr=1e-3", "epochs=50"]`` (``dtn-bench train --set ...``, torchtune's style of
  overrides) into ``{"lr": 0.001, "epochs": 50}``;
- :func:`check_value` checks a value that is already Python (a YAML preset, a keyword argument) against its field.

An unknown key ("did you mean ...") and a value of the wrong type are one-line
:class:`~dtn_bench.errors.DTNBenchError` s that name the key, the value and the type expected. Any suite can use them
(:meth:`dtn_bench.runner.PresetConfig.from_preset` may check its presets with :func:`check_values`).
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any

from dtn_bench.checks import did_you_mean
from dtn_bench.errors import DTNBenchError

NONE_WORDS = ("none", "null", "~")
TRUE_WORDS = ("true", "yes", "on", "1")
FALSE_WORDS = ("false", "no", "off", "0")


def field_types(cls: type) -> dict[str, Any]:
    """``{field name: resolved type annotation}`` of the dataclass ``cls`` (``ClassVar`` s excluded)."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def type_name(hint: Any) -> str:
    """How an error names the type ``hint``: ``int``, ``float or none``, ``comma-separated floats (2)``."""
    args = typing.get_args(hint)
    if _is_optional(hint):
        inner = next(a for a in args if a is not type(None))
        return f"{type_name(inner)} or none"
    if typing.get_origin(hint) is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"comma-separated {type_name(args[0])}s"
        return f"comma-separated {type_name(args[0])}s ({len(args)})"
    return getattr(hint, "__name__", str(hint))


def _is_optional(hint: Any) -> bool:
    origin = typing.get_origin(hint)
    return origin in (typing.Union, types.UnionType) and type(None) in typing.get_args(hint)


def _scalar_from_text(text: str, kind: type) -> Any:
    """``text`` as ``kind`` (int, float, bool, str); ``ValueError`` when it is not one."""
    s = text.strip()
    if kind is bool:
        if s.lower() in TRUE_WORDS:
            return True
        if s.lower() in FALSE_WORDS:
            return False
        raise ValueError(s)
    if kind is int:
        return int(s)  # "1.5" and "1e3" are not integers
    if kind is float:
        value = float(s)
        if not math.isfinite(value):
            raise ValueError(s)
        return value
    if kind is str:
        if not s:
            raise ValueError(s)
        return s
    raise TypeError(f"unsupported field type {kind!r}")


def _from_text(text: str, hint: Any) -> Any:
    if _is_optional(hint):
        if text.strip().lower() in NONE_WORDS:
            return None
        return _from_text(text, next(a for a in typing.get_args(hint) if a is not type(None)))
    if typing.get_origin(hint) is tuple:
        args = typing.get_args(hint)
        parts = [p for p in text.split(",")]
        if any(not p.strip() for p in parts):
            raise ValueError(text)
        kinds = [args[0]] * len(parts) if len(args) == 2 and args[1] is Ellipsis else list(args)
        if len(kinds) != len(parts):
            raise ValueError(text)
        return tuple(_scalar_from_text(p, k) for p, k in zip(parts, kinds, strict=True))
    return _scalar_from_text(text, hint)


def _scalar_value(value: Any, kind: type) -> Any:
    """A Python value as ``kind``: ints are floats where a float is wanted; nothing else is converted."""
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is float and isinstance(value, float) and not math.isfinite(value):
        raise ValueError(value)
    if kind in (int, float) and isinstance(value, bool):
        raise ValueError(value)
    if not isinstance(value, kind):
        raise ValueError(value)
    return value


def _from_value(value: Any, hint: Any) -> Any:
    if _is_optional(hint):
        if value is None:
            return None
        return _from_value(value, next(a for a in typing.get_args(hint) if a is not type(None)))
    if typing.get_origin(hint) is tuple:
        if isinstance(value, str) or not isinstance(value, Iterable):
            raise ValueError(value)
        items = list(value)
        args = typing.get_args(hint)
        kinds = [args[0]] * len(items) if len(args) == 2 and args[1] is Ellipsis else list(args)
        if len(kinds) != len(items):
            raise ValueError(value)
        return tuple(_scalar_value(v, k) for v, k in zip(items, kinds, strict=True))
    return _scalar_value(value, hint)


def _unknown(key: str, known: Iterable[str], where: str) -> DTNBenchError:
    return DTNBenchError(f"{where}: unknown setting {key!r}{did_you_mean(key, list(known), show=None)}")


def check_value(cls: type, key: str, value: Any, where: str) -> Any:
    """``value`` (Python) checked against the type of field ``key`` of ``cls``; lists become tuples.

    Raises:
        DTNBenchError: no such field (with the near matches), or a value of another type.
    """
    types_ = field_types(cls)
    if key not in types_:
        raise _unknown(key, types_, where)
    try:
        return _from_value(value, types_[key])
    except (ValueError, TypeError):
        raise DTNBenchError(f"{where}: {key}={value!r} is not {_article(types_[key])}") from None


def check_values(cls: type, values: Mapping[str, Any], where: str) -> dict[str, Any]:
    """:func:`check_value` for every item of ``values``."""
    return {k: check_value(cls, k, v, where) for k, v in values.items()}


def parse_assignment(cls: type, item: str, where: str = "--set") -> tuple[str, Any]:
    """``"key=value"`` -> ``(key, value)`` typed as field ``key`` of ``cls`` (``none`` for an optional field).

    Raises:
        DTNBenchError: no ``=``, an unknown key (with the near matches), or a value that is not of the field's type.
    """
    key, sep, text = item.partition("=")
    key = key.strip().replace("-", "_")
    if not sep or not key:
        raise DTNBenchError(f"{where} {item!r}: expected key=value, e.g. lr=1e-3")
    types_ = field_types(cls)
    if key not in types_:
        raise _unknown(key, types_, where)
    try:
        return key, _from_text(text, types_[key])
    except (ValueError, TypeError):
        raise DTNBenchError(f"{where} {key}={text}: expected {_article(types_[key])}") from None


def parse_assignments(cls: type, items: Iterable[str], where: str = "--set") -> dict[str, Any]:
    """``["lr=1e-3", "epochs=50"]`` -> ``{"lr": 0.001, "epochs": 50}`` (:func:`parse_assignment` each).

    Raises:
        DTNBenchError: as :func:`parse_assignment`, or one key given twice with different values.
    """
    out: dict[str, Any] = {}
    for item in items:
        key, value = parse_assignment(cls, item, where)
        if key in out and out[key] != value:
            raise DTNBenchError(f"{where}: {key} is given twice ({out[key]!r} and {value!r})")
        out[key] = value
    return out


def _article(hint: Any) -> str:
    name = type_name(hint)
    if name.startswith("comma"):
        return name
    return f"an {name}" if name[0] in "aeiou" else f"a {name}"
