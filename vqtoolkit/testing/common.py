"""What every kind's check shares: building from a config, the config, the state, meta builds, bundles."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping
from typing import Any, TypeVar, cast

import torch
from safetensors.torch import load as load_bytes
from safetensors.torch import save as save_bytes
from torch import Tensor, nn

from vqtoolkit.components import options, registry
from vqtoolkit.errors import ComponentNotFoundError, VQToolkitError
from vqtoolkit.storage import bundle
from vqtoolkit.storage import restore as bundle_restore

_Check = TypeVar("_Check", bound=Callable[..., None])


class ConformanceError(AssertionError):
    """A component that breaks its kind's contract; the message names the check and the fix."""


class KitUsageError(ValueError):
    """The kit was called wrongly (a check name to skip that does not exist): not the component's fault."""


def _reports_crashes(check: _Check) -> _Check:
    """A component that crashes a check fails it with a :class:`ConformanceError`, never a raw error."""

    @functools.wraps(check)
    def run(component: Any, *args: Any, **kwargs: Any) -> None:
        try:
            check(component, *args, **kwargs)
        except (ConformanceError, ComponentNotFoundError, KitUsageError):
            raise
        except Exception as err:
            name = component if isinstance(component, str) else getattr(component, "__name__", None)
            raise ConformanceError(
                f"{name or type(component).__name__} fails 'runs without crashing': "
                f"{type(err).__name__}: {err}"
            ) from err

    return cast(_Check, run)


def _fail(cls: type, check: str, problem: str) -> ConformanceError:
    return ConformanceError(f"{cls.__name__} fails '{check}': {problem}")


def devices() -> list[torch.device]:
    """The devices the device checks run on: the CPU and, where present, CUDA and MPS."""
    found = [torch.device("cpu")]
    if torch.cuda.is_available():
        found.append(torch.device("cuda"))
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        found.append(torch.device("mps"))
    return found


def _resolve(kind: str, component: str | type) -> tuple[type, str | None]:
    if isinstance(component, str):
        return registry.get_class(kind, component), registry.split_name(component)[0]
    return component, None


def _build(kind: str, cls: type, config: Mapping[str, Any], name: str | None) -> Any:
    try:
        instance: Any = cls(**config)
    except Exception as err:
        raise _fail(cls, "construct", f"cls(**{dict(config)!r}) raised {type(err).__name__}: {err}") from err
    if not isinstance(instance, nn.Module):
        raise _fail(
            cls, "is a module", "components must subclass torch.nn.Module (via vqtoolkit's base classes)"
        )
    instance = cast(Any, instance)  # components carry attributes nn.Module's typing does not know
    if getattr(instance, "kind", None) != kind:
        raise _fail(
            cls,
            "kind",
            f"kind is {getattr(instance, 'kind', None)!r}, expected {kind!r}: "
            f"subclass the {kind} base class in vqtoolkit",
        )
    if name is not None:
        instance.registered_name = name
    return instance


def check_config(cls: type, instance: Any) -> None:
    """``config`` is plain JSON, names only constructor options, and ``cls(**config)`` rebuilds it."""
    config = getattr(instance, "config", None)
    if not isinstance(config, dict) or not all(isinstance(k, str) for k in config):
        raise _fail(cls, "config", "config must be a dict of constructor options keyed by name")
    try:
        options.check_json(config, what=cls.__name__)
    except VQToolkitError as err:
        raise _fail(cls, "config is JSON", str(err)) from err
    round_tripped = json.loads(json.dumps(config))
    if round_tripped != config:
        raise _fail(
            cls,
            "config is JSON",
            f"{config!r} changes through JSON (to {round_tripped!r}); "
            f"store lists, not tuples, and string dict keys",
        )
    try:
        options.check_config(cls, config, what=cls.__name__)  # the checks every construction runs
        rebuilt = cls(**config)
    except Exception as err:
        raise _fail(cls, "config rebuilds", f"cls(**config) raised {type(err).__name__}: {err}") from err
    if rebuilt.config != config:
        raise _fail(cls, "config rebuilds", f"cls(**config).config is {rebuilt.config!r}, not {config!r}")


def check_state(cls: type, instance: Any) -> None:
    """Every buffer is a tensor and every tensor attribute is registered, so ``state_dict`` is complete."""
    for module_name, module in instance.named_modules():
        where = f"{module_name}." if module_name else ""
        for name, buffer in module._buffers.items():
            if buffer is None:
                raise _fail(
                    cls,
                    "no None buffers",
                    f"buffer {where}{name} is None, so state_dict drops it and a "
                    f"bundle cannot restore it; register a tensor of the right shape",
                )
        for name, value in vars(module).items():
            if isinstance(value, Tensor):
                raise _fail(
                    cls,
                    "tensors are registered",
                    f"{where}{name} is a plain tensor attribute: bundles "
                    f"do not save it and .to() does not move it; use "
                    f"register_buffer({name!r}, ...)",
                )


def check_meta_build(cls: type, instance: Any) -> None:
    """``cls(**config)`` on the meta device has the same state names, shapes and dtypes (bundles need it)."""
    try:
        with torch.device("meta"):
            meta = cls(**instance.config).state_dict()
    except Exception as err:
        raise _fail(
            cls,
            "builds on meta",
            f"building on torch.device('meta') raised {type(err).__name__}: "
            f"{err}; avoid reading tensor values (.item(), numpy) in __init__",
        ) from err
    real = instance.state_dict()
    shapes = {k: (tuple(v.shape), v.dtype) for k, v in real.items()}
    meta_shapes = {k: (tuple(v.shape), v.dtype) for k, v in meta.items()}
    if shapes != meta_shapes:
        changed = sorted(k for k in shapes.keys() | meta_shapes.keys() if shapes.get(k) != meta_shapes.get(k))
        raise _fail(
            cls,
            "config fixes the state",
            f"cls(**config) has different tensors than the instance at "
            f"{changed[:5]}; record in config whatever decides their shapes",
        )


def bundle_round_trip(kind: str, cls: type, instance: Any) -> Any:
    """The component through safetensors bytes and the bundle loader's validation; returns the copy."""
    data = save_bytes(
        bundle.component_tensors(kind, instance), metadata={"config": json.dumps(instance.config)}
    )
    state = {k.split(".", 1)[1]: v for k, v in load_bytes(data).items()}
    try:
        rebuilt: Any = bundle_restore.restore(
            cls, json.loads(json.dumps(instance.config)), state, what=cls.__name__
        )
    except VQToolkitError as err:
        raise _fail(cls, "bundle round trip", str(err)) from err
    before, after = instance.state_dict(), rebuilt.state_dict()
    if not all(torch.equal(before[k].cpu(), after[k]) for k in before):
        raise _fail(cls, "bundle round trip", "restored tensors differ from the saved ones")
    rebuilt.registered_name = getattr(instance, "registered_name", None)
    return rebuilt.train(instance.training)


def _check_registered(kind: str, cls: type, instance: Any, name: str | None) -> None:
    if name is None:
        return
    try:
        entry = bundle.describe(kind, instance)
    except VQToolkitError as err:
        raise _fail(cls, "registered", str(err)) from err
    if entry["name"] != name:
        raise _fail(cls, "registered", f"saved as {entry['name']!r}, not {name!r}")


def _common(kind: str, component: str | type, config: Mapping[str, Any] | None) -> tuple[type, Any]:
    cls, name = _resolve(kind, component)
    instance = _build(kind, cls, dict(config or {}), name)
    check_config(cls, instance)
    check_state(cls, instance)
    check_meta_build(cls, instance)
    _check_registered(kind, cls, instance, name)
    return cls, instance


def _positive_ints(cls: type, instance: Any, *names: str) -> list[int]:
    values = [getattr(instance, n, None) for n in names]
    for n, v in zip(names, values, strict=True):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise _fail(
                cls,
                "declares its shape",
                f"attribute {n} must be a positive int (build() reads it); got {v!r}",
            )
    return values  # type: ignore[return-value]


def _check_gradients(cls: type, module: Any, output: Tensor, x: Tensor) -> None:
    output.square().mean().backward()
    if x.grad is None or not torch.isfinite(x.grad).all() or not x.grad.abs().sum() > 0:
        raise _fail(cls, "differentiable", "no finite, non-zero gradient reaches the input")
    unused = [n for n, p in module.named_parameters() if p.requires_grad and p.grad is None]
    if unused:
        raise _fail(
            cls,
            "every parameter is used",
            f"{unused[:5]} receive no gradient (unused parameters "
            f"waste memory and break DistributedDataParallel)",
        )


def _check_dtypes_devices(cls: type, module: Any, run: Any, example: Tensor) -> None:
    """``run(module, x)`` keeps float64 and every available device."""
    for device in devices():
        for dtype in (torch.float32, torch.float64) if device.type != "mps" else (torch.float32,):
            moved = module.to(device=device, dtype=dtype)
            out = run(moved, example.to(device=device, dtype=dtype))
            if out.dtype != dtype or out.device.type != device.type:
                raise _fail(
                    cls,
                    "dtype and device",
                    f"on {device} with {dtype} the output is {out.dtype} on "
                    f"{out.device}; create new tensors with like=input's dtype/device",
                )
    module.to(device="cpu", dtype=torch.float32)
