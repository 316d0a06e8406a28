"""Checking a component's options: the one place a config is validated, whoever builds it.

A component's options are its constructor's parameters. :func:`check_config` refuses options the
constructor does not take (with close matches), values whose JSON type does not fit the
constructor's annotations, and values that are not plain JSON. :class:`~vqtoolkit.component.Component`
runs it on every construction, so ``create()``, ``build()``, a bundle being loaded and a plain
``cls(**config)`` all give the same :class:`~vqtoolkit.errors.ConfigError`.
"""

from __future__ import annotations

import collections.abc
import difflib
import inspect
import json
import types
import typing
from collections.abc import Mapping
from typing import Any

from vqtoolkit.errors import ConfigError


def accepted_options(cls: type) -> set[str] | None:
    """Keyword options ``cls`` accepts, or ``None`` when it takes ``**kwargs``."""
    params = inspect.signature(cls).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return {p.name for p in params if p.kind is not inspect.Parameter.VAR_POSITIONAL}


def unknown_options(cls: type, config: Mapping[str, Any]) -> list[str]:
    """Options of ``config`` that ``cls`` does not take, each with a close match when there is one."""
    valid = accepted_options(cls)
    if valid is None:
        return []
    return [
        f"{u!r} (did you mean {close[0]!r}?)"
        if (close := difflib.get_close_matches(u, valid, 1))
        else repr(u)
        for u in sorted(set(config) - valid)
    ]


def check_options(cls: type, config: Mapping[str, Any], *, what: str) -> None:
    """Raise a :class:`ConfigError` for options ``cls`` does not take, with close matches."""
    unknown = unknown_options(cls, config)
    if unknown:
        valid = sorted(accepted_options(cls) or ())
        raise ConfigError(f"{what} has no option {', '.join(unknown)}; valid options: {', '.join(valid)}.")


def check_types(cls: type, config: Mapping[str, Any], *, what: str) -> None:
    """Raise a :class:`ConfigError` for a value whose JSON type does not fit ``cls``'s annotation.

    Types come from the constructor's annotations; annotations this check cannot read are left to
    the constructor. Sequences are checked as JSON lists (a tuple counts as one).
    """
    try:
        hints = typing.get_type_hints(cls.__init__)  # type: ignore[misc]
    except Exception:
        return
    for key, value in config.items():
        expected = hints.get(key)
        if expected is not None and not matches(value, expected):
            raise ConfigError(f"{what} option {key}={value!r} is not of type {type_name(expected)}")


def check_json(config: Mapping[str, Any], *, what: str) -> None:
    """Raise a :class:`ConfigError` unless ``config`` is plain JSON (what a bundle can store)."""
    try:
        json.dumps(dict(config), allow_nan=False)
    except (TypeError, ValueError) as err:
        raise ConfigError(
            f"the config of the {what} is not plain JSON ({err}); config values must be numbers, "
            f"strings, booleans, None, lists or dicts"
        ) from err


def check_config(cls: type, config: Mapping[str, Any], *, what: str) -> None:
    """Every check of this module: known options, JSON types that fit, plain JSON."""
    check_options(cls, config, what=what)
    check_types(cls, config, what=what)


def matches(value: Any, tp: Any) -> bool:
    """Whether the JSON value ``value`` fits the annotation ``tp`` (``True`` where ``tp`` is opaque)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any or tp is object:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(matches(value, a) for a in args)
    if origin is typing.Literal:
        return any(value == a and type(value) is type(a) for a in args)
    if tp is type(None):
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    if tp in (list, tuple) or origin in (list, tuple, collections.abc.Sequence):
        if not isinstance(value, (list, tuple)):
            return False
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(matches(v, a) for v, a in zip(value, args, strict=True))
        return not args or all(matches(v, args[0]) for v in value)
    if tp is dict or origin in (dict, collections.abc.Mapping):
        return isinstance(value, dict)
    return True


def type_name(tp: Any) -> str:
    """``tp`` as a reader would write it (``int | None``, ``list[int]``)."""
    name = getattr(tp, "__name__", None) if typing.get_origin(tp) is None else None
    return name or str(tp).replace("typing.", "").replace("collections.abc.", "")
