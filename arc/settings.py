"""Typed settings: dataclasses given as an instance, a mapping of their fields, or None (the defaults).

Configs reach the library as YAML mappings; :func:`as_settings` turns one into its dataclass and
fails on a typo with one line that names the valid keys, e.g.
``unknown key 'stepz' in data.fit (valid: steps, lr, ...)``.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping, TypeVar

T = TypeVar("T")

__all__ = ["SettingsError", "as_settings"]


class SettingsError(ValueError):
    """A settings mapping with an unknown key or an invalid value."""


def as_settings(cls: type[T], value: T | Mapping[str, Any] | None, where: str, **defaults: Any) -> T:
    """``value`` as a ``cls`` instance; ``defaults`` fill keys the mapping does not set; ``where`` names it in errors."""
    if isinstance(value, cls):
        return value
    if value is None:
        value = {}
    if not isinstance(value, Mapping):
        raise SettingsError(f"{where} must be a mapping of {cls.__name__} settings, got {value!r}")
    valid = [f.name for f in dataclasses.fields(cls)]
    unknown = [key for key in value if key not in valid]
    if unknown:
        keys = ", ".join(repr(k) for k in unknown)
        raise SettingsError(f"unknown key{'s' if len(unknown) > 1 else ''} {keys} in {where} (valid: {', '.join(valid)})")
    try:
        return cls(**{**defaults, **value})
    except TypeError as err:
        raise SettingsError(f"{where}: {err}") from err
