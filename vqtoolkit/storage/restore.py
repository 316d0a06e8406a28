"""Rebuilding a bundle's components: the installed class for each entry, checked before it allocates.

Each component is first built on PyTorch's ``meta`` device (no memory, under a time limit) to learn
the tensors its config implies; only when every name, shape and dtype matches the file is it built
for real and its tensors loaded. Nothing is unpickled or evaluated. Every failure is a
:class:`~vqtoolkit.errors.BundleError`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from vqtoolkit._util.deadline import build_deadline
from vqtoolkit._version import __version__
from vqtoolkit.components import registry
from vqtoolkit.components.base import Component
from vqtoolkit.components.options import check_config
from vqtoolkit.errors import BundleError, VQToolkitError

#: Bytes a component's implied parameters and buffers may exceed its tensors in the file by (buffers
#: that are not saved, such as fsq's levels); anything beyond is refused before it is allocated.
SLACK_BYTES = 1 << 20

#: What only writes values into a tensor: ``torch.nn.init``'s fills and the in-place random draws.
_FILLS = frozenset(
    [getattr(torch.nn.init, name) for name in torch.nn.init.__all__ if name.endswith("_")]
    + [getattr(Tensor, name) for name in ("normal_", "uniform_", "log_normal_", "exponential_", "cauchy_")]
    + [Tensor.geometric_, Tensor.random_, Tensor.bernoulli_]
)


class _SkipFills(TorchFunctionMode):
    """Hands a fill's tensor back unfilled, for builds on ``meta``.

    A meta tensor has no values to write, and some fills run Python kernels there whose first use
    imports ``torch._dynamo``, which is slow.
    """

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        if func in _FILLS:
            return args[0] if args else next(iter(kwargs.values()))
        return func(*args, **(kwargs or {}))


def _canonical(distribution: str) -> str:
    """PEP 503 normal form, so ``Foo_Bar`` and ``foo-bar`` name the same distribution."""
    return re.sub(r"[-_.]+", "-", distribution).lower()


def resolve_class(role: str, entry: Mapping[str, Any], *, trust_provider: bool = False) -> type:
    """The installed class for a bundle entry, from the distribution the bundle declares.

    A name provided here by another distribution is refused unless ``trust_provider``: anyone can
    write a bundle, so its declared distribution must not silently pick, or be swapped for, code.
    A missing plugin names the package, as the bundle declares it, with a word of caution.
    """
    name, distribution = entry["name"], entry["distribution"]
    providers = [s for s in registry.specs(role) if s.name == name]
    if not providers and distribution == "vqtoolkit":
        raise BundleError(
            f"this bundle needs the {role} {name!r}, which this vqtoolkit ({__version__}) does not have; "
            f"run `pip install --upgrade vqtoolkit`"
        )
    if not providers:
        raise BundleError(
            f"this bundle needs the {role} {name!r} from the package {distribution!r}, which is not "
            f"installed; that package name comes from the bundle, so install it only from a source you "
            f"trust (`pip install {distribution}`)"
        )
    chosen = [s for s in providers if _canonical(s.distribution) == _canonical(distribution)]
    if not chosen and (not trust_provider or len(providers) > 1):
        here = " and ".join(s.distribution for s in providers)
        raise BundleError(
            f"this bundle declares its {role} {name!r} as coming from {distribution!r}, but here "
            f"{name!r} is provided by {here}; if you trust that it builds the same component, load "
            f"with trust_provider=True (--trust-provider), else install {distribution!r} from a source "
            f"you trust"
        )
    try:
        return registry.get_class(role, name, (chosen or providers)[0].distribution)
    except VQToolkitError as err:
        raise BundleError(str(err)) from err


def construct(cls: type, config: Mapping[str, Any], *, what: str, device: str | None = None) -> nn.Module:
    """``cls(**config)`` on ``device``; any failure of the constructor becomes a :class:`BundleError`."""
    try:
        with torch.device(device or "cpu"):
            component: nn.Module = cls(**config)
            return component
    except VQToolkitError as err:
        raise BundleError(f"cannot rebuild the {what} from its config: {err}") from err
    except Exception as err:
        raise BundleError(f"cannot rebuild the {what} from its config ({type(err).__name__}: {err})") from err


def expected_state(
    cls: type, config: Mapping[str, Any], *, what: str, held: int | None = None
) -> dict[str, Tensor]:
    """The state a component of ``config`` holds, learnt without allocating: built on ``meta``.

    A component that cannot be built on ``meta`` (a storage size that overflows, an integer too
    large for torch) is refused, never built on the CPU instead: its config asks for more than any
    file holds. ``held`` is how many bytes of tensors the file holds for it: parameters and buffers
    beyond that plus :data:`SLACK_BYTES` are refused, naming the config fields that ask for them.
    """
    try:
        with build_deadline(what), torch.device("meta"), _SkipFills():
            module: nn.Module = cls(**config)
    except BundleError:
        raise
    except VQToolkitError as err:
        raise BundleError(f"cannot rebuild the {what} from its config: {_one_line(err)}") from err
    except Exception as err:
        sizes = [int(n) for n in re.findall(r"\d+", str(err))]
        raise BundleError(
            f"cannot size the {what} from its config without allocating ({type(err).__name__}: "
            f"{_one_line(err)}){_suspects(config, sizes)}"
        ) from err
    tensors = [*module.parameters(), *module.buffers()]
    implied = sum(t.numel() * t.element_size() for t in tensors)
    if held is not None and implied > held + SLACK_BYTES:
        largest = max(tensors, key=lambda t: t.numel() * t.element_size())
        raise BundleError(
            f"the config of the {what} implies {implied:,} bytes of tensors but the file holds "
            f"{held:,} for it{_suspects(config, list(largest.shape))}"
        )
    state: dict[str, Tensor] = module.state_dict()
    return state


def _one_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [""])[0]


def _suspects(config: Mapping[str, Any], sizes: list[int]) -> str:
    """``"; check FIELD=VALUE"`` for config fields that hold one of ``sizes`` (else the largest numbers)."""

    def numbers(value: Any) -> list[int]:
        if isinstance(value, bool):
            return []
        if isinstance(value, (int, float)) and abs(value) < float("inf"):
            return [int(value)]
        return [n for v in value for n in numbers(v)] if isinstance(value, list) else []

    fields = {key: numbers(value) for key, value in config.items()}
    big = {s for s in sizes if s > 1 and s * 1000 >= max(sizes)}  # not the kernel sizes beside them
    named = [key for key, found in fields.items() if big & set(found)]
    if not named:
        ranked = sorted((max(found), key) for key, found in fields.items() if found)
        named = [key for _, key in ranked[-2:]]
    return "; check " + ", ".join(f"{key}={config[key]!r}" for key in named) if named else ""


def restore(
    cls: type,
    config: Mapping[str, Any],
    state: Mapping[str, Tensor],
    *,
    what: str,
) -> nn.Module:
    """Rebuild ``cls(**config)`` and load ``state`` into it, after checking every name, shape and dtype.

    A config saved before an option existed gets the value that keeps its meaning
    (:meth:`~vqtoolkit.components.base.Component.saved_config`).
    """
    if issubclass(cls, Component):
        config = cls.saved_config(config)
    try:
        check_config(cls, config, what=what)
    except VQToolkitError as err:
        raise BundleError(str(err)) from err
    held = sum(t.numel() * t.element_size() for t in state.values())
    expected = expected_state(cls, config, what=what, held=held)
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        raise BundleError(
            f"the {what}'s tensors do not match its config "
            f"(missing {missing[:5]}, unexpected {unexpected[:5]})"
        )
    for key, value in state.items():
        want = expected[key]
        if value.shape != want.shape or value.dtype != want.dtype:
            raise BundleError(
                f"the {what}'s tensor {key} is {tuple(value.shape)} {value.dtype}, "
                f"expected {tuple(want.shape)} {want.dtype}"
            )
    component = construct(cls, config, what=what)
    try:
        component.load_state_dict(dict(state), strict=True)
    except Exception as err:
        raise BundleError(f"cannot load the {what}'s tensors ({type(err).__name__}: {err})") from err
    return component


def restore_components(
    entries: Mapping[str, Mapping[str, Any]], tensors: Mapping[str, Tensor], *, trust_provider: bool
) -> dict[str, nn.Module]:
    """Every component a bundle describes, by role, rebuilt from its entry and its ``role.``-tensors."""
    parts = {}
    for role, entry in entries.items():
        cls = resolve_class(role, entry, trust_provider=trust_provider)
        what = f"{role} {entry['name']!r} ({entry['distribution']} {entry['version']})"
        prefix = f"{role}."
        state = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
        component = restore(cls, entry["config"], state, what=what)
        component.registered_name = entry["name"]
        parts[role] = component
    return parts
