"""The base every component builds on: an ``nn.Module`` that can describe how to rebuild itself."""

from __future__ import annotations

from typing import Any, ClassVar

from torch import nn

from vqtoolkit.errors import ConfigError


class Component(nn.Module):
    """An ``nn.Module`` with a JSON-serialisable ``config`` such that ``cls(**config)`` rebuilds it.

    Subclasses pass their constructor arguments to ``super().__init__(**config)``; a component
    whose shape is only known after fitting (a prior) updates ``self._config`` when it learns it.
    """

    kind: ClassVar[str] = ""
    registered_name: str | None = None

    def __init__(self, **config: Any) -> None:
        super().__init__()
        self._config = dict(config)

    @property
    def config(self) -> dict[str, Any]:
        """Constructor arguments that rebuild this component (weights aside)."""
        return dict(self._config)

    def extra_repr(self) -> str:
        """The config in ``repr(module)``, so printed models show how they were built."""
        return ", ".join(f"{k}={v!r}" for k, v in self._config.items())


def check_positive(name: str, value: float, *, minimum: float = 1) -> None:
    """Raise a :class:`ConfigError` unless ``value >= minimum`` (constructor validation; NaN fails)."""
    if not value >= minimum:
        raise ConfigError(f"{name} must be >= {minimum}; got {value}")
