"""Name-based discovery of components through Python entry points.

Built-ins register through vqtoolkit's own ``pyproject.toml`` exactly as a third-party plugin
would, so there is one code path for both. Entry points are read once, lazily, on first use.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from functools import cache
from importlib import metadata
from typing import Any

from vqtoolkit.components.base import component_name
from vqtoolkit.components.options import accepted_options as accepted_options  # what a registered class takes
from vqtoolkit.components.options import check_config
from vqtoolkit.errors import ComponentNotFoundError, ConfigError

KINDS: tuple[str, ...] = ("encoder", "quantizer", "decoder", "prior")
GROUP_PREFIX = "vqtoolkit."


@dataclass(frozen=True)
class ComponentSpec:
    """One registered entry point: where it comes from and how to load it."""

    kind: str
    name: str
    value: str
    distribution: str
    version: str

    def load(self) -> type:
        """Import the component class (may raise whatever the plugin's import raises)."""
        cls: type = metadata.EntryPoint(self.name, self.value, group_name(self.kind)).load()
        return cls


@dataclass(frozen=True)
class Problem:
    """A plugin that could not be used, and why (reported, never fatal to the others)."""

    kind: str
    name: str
    distribution: str
    reason: str


def group_name(kind: str) -> str:
    """Entry-point group of a component kind, e.g. ``vqtoolkit.priors``."""
    _check_kind(kind)
    return f"{GROUP_PREFIX}{kind}s"


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ConfigError(f"unknown component kind {kind!r}; expected one of {', '.join(KINDS)}")


def _distribution_of(ep: metadata.EntryPoint) -> tuple[str, str]:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return "unknown", "unknown"
    return dist.metadata["Name"], dist.version


@cache
def _discover(kind: str) -> tuple[dict[str, tuple[ComponentSpec, ...]], tuple[Problem, ...]]:
    specs: dict[str, list[ComponentSpec]] = {}
    seen: set[tuple[str, str, str]] = set()
    for ep in metadata.entry_points(group=group_name(kind)):
        dist, version = _distribution_of(ep)
        key = (ep.name, ep.value, dist)
        if key in seen:  # the same distribution visible twice on sys.path
            continue
        seen.add(key)
        specs.setdefault(ep.name, []).append(ComponentSpec(kind, ep.name, ep.value, dist, version))
    problems = [
        Problem(
            kind,
            name,
            ", ".join(s.distribution for s in found),
            "registered by more than one distribution: "
            + ", ".join(s.distribution for s in found)
            + f"; uninstall all but one, or choose one as '{name}@DISTRIBUTION'",
        )
        for name, found in specs.items()
        if len(found) > 1
    ]
    return {name: tuple(found) for name, found in specs.items()}, tuple(problems)


def refresh() -> None:
    """Forget what was discovered (after installing a plugin in a running process)."""
    _discover.cache_clear()
    _load_class.cache_clear()


def available(kind: str) -> list[str]:
    """The names registered for a kind of component, the built-ins and every installed plugin's.

    Args:
        kind: ``encoder``, ``quantizer``, ``decoder`` or ``prior``.

    Returns:
        The names, sorted.
    """
    return sorted(_discover(kind)[0])


def specs(kind: str) -> list[ComponentSpec]:
    """Every registration of ``kind``, duplicates included, sorted by name."""
    found = _discover(kind)[0]
    return [spec for name in sorted(found) for spec in found[name]]


def problems(kind: str | None = None) -> list[Problem]:
    """Plugins that cannot be used: import failures and names registered twice."""
    kinds = KINDS if kind is None else (kind,)
    out: list[Problem] = []
    for k in kinds:
        out.extend(_discover(k)[1])
        for spec in specs(k):
            try:
                _load_class(spec)
            except ComponentNotFoundError as err:
                out.append(Problem(k, spec.name, spec.distribution, str(err)))
    return out


def split_name(name: str) -> tuple[str, str | None]:
    """``"markov@vqtoolkit-markov"`` → ``("markov", "vqtoolkit-markov")``; a plain name has no distribution.

    The ``NAME@DISTRIBUTION`` form picks one provider of a name that two distributions register.
    """
    base, sep, distribution = name.partition("@")
    return (base, distribution) if sep else (name, None)


def spec(kind: str, name: str, distribution: str | None = None) -> ComponentSpec:
    """The registration of ``name`` (or ``name@distribution``).

    Errors list close matches, or the competing distributions of a name registered twice.
    """
    name, chosen = split_name(name)
    distribution = distribution or chosen
    found = _discover(kind)[0]
    if name not in found:
        names = sorted(found)
        close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise ComponentNotFoundError(
            f"unknown {kind} {name!r}.{hint} Available {kind}s: {', '.join(names) or '(none)'}."
        )
    candidates = found[name]
    if distribution is not None:
        candidates = tuple(s for s in candidates if s.distribution == distribution)
        if not candidates:
            raise ComponentNotFoundError(
                f"{kind} {name!r} is not provided by distribution {distribution!r}; "
                f"it is provided by {', '.join(s.distribution for s in found[name])}."
            )
    if len(candidates) > 1:
        dists = " and ".join(s.distribution for s in candidates)
        raise ComponentNotFoundError(
            f"{kind} {name!r} is registered by both {dists}; uninstall one of them, or choose one "
            f"as {name}@DISTRIBUTION (e.g. --{kind} {name}@{candidates[0].distribution})."
        )
    return candidates[0]


@cache
def _load_class(s: ComponentSpec) -> type:
    try:
        return s.load()
    except Exception as err:  # a broken plugin must not take the others down
        raise ComponentNotFoundError(
            f"{s.kind} {s.name!r} from {s.distribution} {s.version} failed to import "
            f"({type(err).__name__}: {err}); reinstall or upgrade {s.distribution}."
        ) from err


def get_class(kind: str, name: str, distribution: str | None = None) -> type:
    """The class registered as ``name`` for ``kind``."""
    return _load_class(spec(kind, name, distribution))


def create(kind: str, name: str, *, distribution: str | None = None, **config: Any) -> Any:
    """Build the component registered as ``name``, e.g. ``create("quantizer", "vq", num_codes=512)``.

    Options are checked before anything is built (:func:`vqtoolkit.components.options.check_config`):
    one the constructor does not take raises a :class:`ConfigError` naming close matches.

    Args:
        kind: ``encoder``, ``quantizer``, ``decoder`` or ``prior``.
        name: Its registered name (``"dist:name"`` picks one distribution's where two register it).
        distribution: The distribution to take ``name`` from, where several provide it.
        **config: Constructor options.

    Returns:
        The component, with ``registered_name`` set.

    Raises:
        ComponentNotFoundError: No such name (the message lists close matches), or its plugin is broken.
        ConfigError: An option the constructor does not take (naming close matches and the valid
            ones), of the wrong JSON type, or outside the class's limits.
    """
    cls = get_class(kind, name, distribution)
    name = split_name(name)[0]
    check_config(cls, config, what=f"{kind} {name!r}")
    component = cls(**config)
    component.registered_name = name
    return component


def takes(kind: str, name: str, option: str) -> bool:
    """Whether the component registered as ``name`` takes ``option`` (``False`` for a broken plugin)."""
    try:
        valid = accepted_options(get_class(kind, name))
    except ComponentNotFoundError:
        return False
    return valid is None or option in valid


def takers(kind: str, option: str) -> list[str]:
    """Names registered for ``kind`` whose constructor takes ``option`` (broken plugins skipped)."""
    return [name for name in available(kind) if takes(kind, name, option)]


def check_taken(shared: dict[str, Any], chosen: dict[str, Any], routes: dict[str, dict[str, str]]) -> None:
    """Refuse a :func:`~vqtoolkit.build` option that no chosen component takes, instead of dropping it.

    ``chosen`` maps kinds to names or instances (an instance takes no shared option); ``routes`` maps
    each kind to the shared options it may take and the constructor option each becomes.
    """
    for key, value in shared.items():
        if value is None:
            continue
        kinds = [kind for kind in chosen if key in routes[kind]]
        if any(
            isinstance(chosen[kind], str) and takes(kind, chosen[kind], routes[kind][key]) for kind in kinds
        ):
            continue
        others = "; ".join(
            f"{kind}s taking {option}: {', '.join(takers(kind, option)) or 'none'}"
            for kind in kinds
            if (option := routes[kind][key])
        )
        names = ", ".join(
            f"{kind} {c if isinstance(c, str) else component_name(c)!r}" for kind, c in chosen.items()
        )
        raise ConfigError(
            f"build({key}={value!r}): no chosen component takes {key} ({names}); {others}. "
            f"Drop {key}, or choose a component that takes it"
        )


def name_of(component: Any) -> str:
    """The registered name of a component.

    The name it was created under, its class's ``name`` attribute, or the name its class is
    registered as (so a directly constructed built-in still has a name).
    """
    name = component_name(component)
    cls = type(component)
    target = f"{cls.__module__}:{cls.__qualname__}"
    if name == target:
        kind = getattr(component, "kind", "")
        found = [s.name for s in specs(kind) if s.value == target] if kind in KINDS else []
        if not found:
            raise ConfigError(
                f"{cls.__name__} is not registered under any name; register it through an entry point "
                f"(see docs/plugins.md) so that bundles can rebuild it"
            )
        name = found[0]
    return str(name)


def provider_of(kind: str, component: Any) -> ComponentSpec:
    """The registration that builds ``component``'s class: the one a bundle records and reloads.

    Raises a :class:`ConfigError` when the registered class is not the component's own class (a
    bundle would otherwise silently rebuild something else).
    """
    name = name_of(component)
    for candidate in _discover(kind)[0].get(name, ()):
        try:
            if _load_class(candidate) is type(component):
                return candidate
        except ComponentNotFoundError:
            continue
    raise ConfigError(
        f"the {kind} {type(component).__name__} calls itself {name!r}, but no installed distribution "
        f"registers that class under that name; register it through an entry point (see docs/plugins.md)"
    )
