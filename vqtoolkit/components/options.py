"""A component's options: read from its constructor, checked in one place, whoever builds it.

A component's options are its constructor's parameters (:func:`signature`, where ``**options``
stand for the options of the class they are passed on to). :func:`check_config` refuses options
the constructor does not take (with close matches), values whose JSON type does not fit the
constructor's annotations and numbers outside the class's :class:`Limit` s.
:class:`~vqtoolkit.components.base.Component` runs it on every construction (:func:`capture`), so
``create()``, ``build()``, a bundle being loaded and a plain ``cls(**config)`` all give the same
:class:`~vqtoolkit.errors.ConfigError`.
"""

from __future__ import annotations

import collections.abc
import difflib
import functools
import inspect
import json
import math
import types
import typing
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from vqtoolkit.errors import ConfigError


@dataclass(frozen=True)
class Limit:
    """Bounds of a numeric option: ``Limit(1)`` is ``>= 1``, ``Limit(0, 1, low_open=True)`` ``in (0, 1]``.

    ``None`` always passes (it is how an optional option is switched off); NaN never does.
    """

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def allows(self, value: Any) -> bool:
        """Whether ``value`` lies within the bounds (non-numbers are the type check's business)."""
        if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
            return True
        if math.isnan(value):
            return False
        above = self.low is None or (value > self.low if self.low_open else value >= self.low)
        below = self.high is None or (value < self.high if self.high_open else value <= self.high)
        return above and below

    def __str__(self) -> str:
        """``"be >= 1"``, ``"lie in (0, 1)"``: what a value must do, for messages."""
        if self.high is None:
            return f"be {'>' if self.low_open else '>='} {self.low:g}"
        if self.low is None:
            return f"be {'<' if self.high_open else '<='} {self.high:g}"
        left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
        return f"lie in {left}{self.low:g}, {self.high:g}{right}"


def bounds(**limits: Limit) -> Mapping[str, Limit]:
    """Read-only ``limits`` for a component class, one :class:`Limit` per option name."""
    return types.MappingProxyType(limits)


def defaults(**values: Any) -> Mapping[str, Any]:
    """A read-only ``preset`` for a component class: new default values by option name."""
    return types.MappingProxyType(values)


def _init_chain(cls: type) -> Iterator[type]:
    """``cls``, then each class its constructor's ``**options`` are passed on to, in turn."""
    seen: set[type] = set()
    current: type | None = cls
    while current is not None and current not in seen and not current.__module__.startswith("torch"):
        seen.add(current)
        yield current
        params = inspect.signature(current.__init__).parameters.values()  # type: ignore[misc]
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
            return
        current = getattr(current, "options_to", None) or _parent_constructor(current)


def _parent_constructor(cls: type) -> type | None:
    """The next class in ``cls``'s MRO, after the one defining its constructor, that defines one."""
    mro = cls.__mro__
    owner = next(i for i, base in enumerate(mro) if "__init__" in base.__dict__)
    return next((base for base in mro[owner + 1 :] if "__init__" in base.__dict__), None)


@functools.cache
def signature(cls: type) -> inspect.Signature:
    """``cls``'s options (``self`` left out), its ``**options`` expanded into those they go to.

    A constructor that passes ``**options`` on (to its parent, or to the class named by its
    ``options_to``) takes that class's options too: they are listed here as keyword-only, so every
    option has a name, a default and an annotation. ``**options`` stays only where nothing names
    them (a truly open constructor).
    """
    params: list[inspect.Parameter] = []
    open_options: list[inspect.Parameter] = []
    for depth, owner in enumerate(_init_chain(cls)):
        open_options = []
        for p in list(inspect.signature(owner.__init__).parameters.values())[1:]:  # type: ignore[misc]
            if p.kind is inspect.Parameter.VAR_KEYWORD:
                open_options = [p]
            elif depth == 0:
                params.append(p)
            elif p.kind is not inspect.Parameter.VAR_POSITIONAL and p.name not in {q.name for q in params}:
                params.append(p.replace(kind=inspect.Parameter.KEYWORD_ONLY))
    return inspect.Signature(sorted(params, key=lambda p: p.kind) + open_options)


def accepted_options(cls: type) -> set[str] | None:
    """Keyword options ``cls`` accepts, or ``None`` when it takes any ``**kwargs``."""
    params = signature(cls).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return {p.name for p in params if p.kind is not inspect.Parameter.VAR_POSITIONAL}


def widths(name: str, values: Sequence[int]) -> list[int]:
    """``values`` as a list of ints, refused when empty (layer widths: at least one layer)."""
    if not values:
        raise ConfigError(f"{name} must list at least one width, e.g. [32, 64]; got {list(values)}")
    return [int(v) for v in values]


def label(cls: type) -> str:
    """``"quantizer 'VectorQuantizer'"``: how messages name a component class."""
    return f"{getattr(cls, 'kind', '') or 'component'} {cls.__name__!r}"


def plain(value: Any) -> Any:
    """``value`` as JSON holds it: tuples become lists, recursively."""
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


def capture(cls: type, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The checked options of ``cls(*args, **kwargs)``, defaults filled in, as plain JSON values."""
    what = label(cls)
    check_options(cls, kwargs, what=what)
    sig = signature(cls)
    try:
        bound = sig.bind(*args, **kwargs)
    except TypeError as err:
        raise ConfigError(f"{what}: {err}") from err
    bound.apply_defaults()
    config: dict[str, Any] = {}
    for name, value in bound.arguments.items():
        kind = sig.parameters[name].kind
        if kind is inspect.Parameter.VAR_KEYWORD:
            config.update(value)
        elif kind is not inspect.Parameter.VAR_POSITIONAL:
            config[name] = value
    config = {key: plain(value) for key, value in config.items()}
    check_types(cls, config, what=what)
    check_limits(cls, config, what=what)
    return config


def check_limits(cls: type, config: Mapping[str, Any], *, what: str) -> None:
    """Raise a :class:`ConfigError` for a number outside its option's :class:`Limit`.

    Limits are the ``limits`` class attributes of ``cls``'s bases and of the classes its
    ``**options`` go to, merged (a subclass's limit of an option wins).
    """
    for name, limit in _limits(cls).items():
        if name in config and not limit.allows(config[name]):
            raise ConfigError(f"{what} option {name} must {limit}; got {config[name]!r}")


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
    hints = _hints(cls)
    for key, value in config.items():
        expected = hints.get(key)
        if expected is not None and not matches(value, expected):
            raise ConfigError(f"{what} option {key}={value!r} is not of type {type_name(expected)}")
        if not fits_int64(value):
            raise ConfigError(
                f"{what} option {key}={value!r} holds an integer beyond 64 bits, which torch cannot use; "
                f"use a smaller number"
            )


def fits_int64(value: Any) -> bool:
    """Whether every integer in ``value`` (a JSON value) fits torch's ``int64``."""
    if isinstance(value, int) and not isinstance(value, bool):
        return -(2**63) <= value < 2**63
    if isinstance(value, (list, tuple)):
        return all(fits_int64(v) for v in value)
    return True


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
    """The checks of every construction: known options, JSON types that fit, numbers within limits."""
    check_options(cls, config, what=what)
    check_types(cls, config, what=what)
    check_limits(cls, config, what=what)


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    """The annotations of ``cls``'s options, over the classes its ``**options`` go to (cached per class)."""
    hints: dict[str, Any] = {}
    for owner in reversed(list(_init_chain(cls))):
        try:
            hints.update(typing.get_type_hints(owner.__init__))  # type: ignore[misc]
        except Exception:  # an annotation this check cannot read is left to the constructor
            continue
    return hints


@functools.cache
def _limits(cls: type) -> dict[str, Limit]:
    """The ``limits`` of ``cls``'s bases and of the classes its ``**options`` go to, merged."""
    return merged_over_bases(cls, "limits")


def merged_over_bases(cls: type, attribute: str) -> dict[str, Any]:
    """A mapping class attribute (``limits``, ``added_options``) merged over the classes that shape ``cls``.

    Those are ``cls``'s bases and the classes its ``**options`` go to; the nearer class wins.
    """
    merged: dict[str, Any] = {}
    for owner in reversed(list(_init_chain(cls))):
        for base in reversed(owner.__mro__):
            merged.update(base.__dict__.get(attribute, {}))
    return merged


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
