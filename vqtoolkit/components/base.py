"""The base every component builds on: an ``nn.Module`` that records how to rebuild itself.

A component's options are its constructor's parameters, stated once, in the signature. The base
class captures the arguments of every construction by binding them to that signature (defaults
filled in, as scikit-learn's ``get_params`` reads ``__init__``), checks them in one place
(:mod:`vqtoolkit.components.options`: known options with did-you-mean, JSON types from the annotations, the
numeric :attr:`Component.limits`), and keeps them as :attr:`Component.config`, so
``type(c)(**c.config)`` rebuilds ``c`` (weights aside). Subclasses call ``super().__init__()``
with whatever their parent's constructor needs and nothing more.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any, ClassVar

from torch import nn

from vqtoolkit._compat import deprecated_super_options, options_by_name
from vqtoolkit.components.options import Limit, accepted_options, capture, merged_over_bases, signature


class Component(nn.Module):
    """An ``nn.Module`` with a JSON-serialisable ``config`` such that ``cls(**config)`` rebuilds it.

    Class attributes a subclass may set:

    * ``limits``: numeric bounds of options, ``bounds(num_codes=Limit(1))``, merged over the bases;
    * ``preset``: new defaults for the parent's options, ``defaults(ema=True)``: the subclass is the
      parent with other defaults, and takes exactly the parent's options;
    * ``options_to``: the class that receives this constructor's ``**options`` (the parent by
      default), so their names are known, checked and recorded too;
    * ``added_options``: options added after bundles were first written, each with the value that
      rebuilds a config saved before it existed as it was (merged over the bases): a bundle never
      changes meaning when a later release gives a new option another default.

    A component whose shape is only known after fitting (a prior) writes what it learned into
    ``self._config``.
    """

    kind: ClassVar[str] = ""
    registered_name: str | None = None
    limits: ClassVar[Mapping[str, Limit]] = {}
    preset: ClassVar[Mapping[str, Any]] = {}
    options_to: ClassVar[type | None] = None
    added_options: ClassVar[Mapping[str, Any]] = {}
    _config: dict[str, Any]

    def __new__(cls, *args: Any, **kwargs: Any) -> Component:  # noqa: D102 - documented on the class
        self = super().__new__(cls)
        if args or kwargs or _constructible_without_arguments(cls):  # copy/pickle call __new__ bare
            if args and hasattr(cls.__init__, "positional_names"):  # a 0.2 call by position
                kwargs, args = options_by_name(cls, args, kwargs, warn=True), ()
            object.__setattr__(self, "_config", capture(cls, args, kwargs))
        return self

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Give a subclass that declares a ``preset`` a constructor: its parent's, other defaults."""
        super().__init_subclass__(**kwargs)
        if "preset" in cls.__dict__ and "__init__" not in cls.__dict__:
            _install_preset(cls)

    def __init__(self, **legacy_options: Any) -> None:
        """A component; its options were captured from the subclass's constructor already.

        Args:
            **legacy_options: What constructors written for vqtoolkit 0.1 passed on to the base
                (``super().__init__(num_codes=num_codes)``): accepted with a ``DeprecationWarning``
                and ignored, since ``config`` already holds them.
        """
        if legacy_options:
            deprecated_super_options(type(self), legacy_options, _WARNED_LEGACY_INIT)
        super().__init__()

    @classmethod
    def saved_config(cls, config: Mapping[str, Any]) -> dict[str, Any]:
        """``config`` as saved by any release, completed with the :attr:`added_options` it predates.

        Only options this class's constructor takes are added (a subclass may not pass one on).
        """
        added = merged_over_bases(cls, "added_options")
        taken = accepted_options(cls)
        return {**{k: v for k, v in added.items() if taken is None or k in taken}, **config}

    @property
    def config(self) -> dict[str, Any]:
        """Constructor arguments that rebuild this component (weights aside)."""
        return dict(self._config)

    def extra_repr(self) -> str:
        """The config in ``repr(module)``, so printed models show how they were built."""
        return ", ".join(f"{k}={v!r}" for k, v in self._config.items())


#: Classes already warned about passing options to ``super().__init__()`` (one warning each).
_WARNED_LEGACY_INIT: set[type] = set()


def component_name(component: Any) -> str:
    """How messages and records name a component, without a registry lookup.

    The name it was created under, else its class's ``name`` attribute, else ``module:QualName``
    (an unregistered class). :func:`vqtoolkit.components.registry.name_of` adds the lookup.
    """
    cls = type(component)
    name = getattr(component, "registered_name", None) or getattr(cls, "name", None)
    return str(name or f"{cls.__module__}:{cls.__qualname__}")


def _constructible_without_arguments(cls: type) -> bool:
    return all(
        p.default is not inspect.Parameter.empty or p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
        for p in signature(cls).parameters.values()
    )


def _install_preset(cls: type[Component]) -> None:
    parent = cls.__mro__[1]
    parent_init: Any = parent.__dict__.get("__init__") or parent.__init__  # type: ignore[misc]
    base = signature(parent)
    unknown = sorted(set(cls.preset) - set(base.parameters))
    if unknown:
        raise TypeError(f"{cls.__name__}.preset names options {parent.__name__} does not take: {unknown}")
    params = [p.replace(default=cls.preset.get(p.name, p.default)) for p in base.parameters.values()]
    preset_signature = base.replace(parameters=params)

    def __init__(self: Component, *args: Any, **options: Any) -> None:
        bound = preset_signature.bind(*args, **options)
        bound.apply_defaults()
        parent_init(self, *bound.args, **bound.kwargs)

    __init__.__signature__ = preset_signature.replace(  # type: ignore[attr-defined]
        parameters=[inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD), *params]
    )
    __init__.__doc__ = f"{parent.__name__}'s options, with the defaults {dict(cls.preset)}."
    __init__.__annotations__ = dict(parent_init.__annotations__)  # the type checks read them ...
    __init__.__wrapped__ = parent_init  # type: ignore[attr-defined]  # ... in the parent's namespace
    cls.__init__ = __init__  # type: ignore[method-assign]
