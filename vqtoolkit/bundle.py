"""Bundles: one ``.safetensors`` file holding every tensor, and JSON metadata to rebuild the model.

Tensor names are prefixed by role (``encoder.``, ``quantizer.``, ``decoder.``, ``prior.``). The
metadata key ``vqtoolkit`` holds a JSON document with the format version and, per component, its
kind, registered name, config and providing distribution; ``vqtoolkit.sha256`` is a checksum over
that document and every tensor, so corruption is caught instead of loaded. Loading validates
everything, building each component first on PyTorch's ``meta`` device (no memory) to learn the
shapes it expects, before it allocates anything; it never unpickles or evaluates anything, so a
bundle from a stranger is safe to open. Every failure is a :class:`BundleError`. Writes are atomic.
The format is specified in ``docs/bundle-format.md``.
"""

from __future__ import annotations

import collections.abc
import contextlib
import hashlib
import json
import platform
import re
import signal
import threading
import time
import types
import typing
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save as save_bytes
from torch import Tensor, nn

from vqtoolkit import __version__, registry
from vqtoolkit.atomic import atomic_write
from vqtoolkit.bundle_checks import check_codebook, check_info, check_prior_shapes
from vqtoolkit.errors import BundleError, VQToolkitError
from vqtoolkit.model import VQVAE

FORMAT = "vqtoolkit.bundle"
FORMAT_VERSION = 1
METADATA_KEY = "vqtoolkit"
DIGEST_KEY = "vqtoolkit.sha256"
ROLES = ("encoder", "quantizer", "decoder", "prior")
REQUIRED_ROLES = ("encoder", "quantizer", "decoder")
#: PEP 508 distribution names; anything else is refused, so no message ever suggests `pip install <junk>`.
DISTRIBUTION_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$")
#: Longest a component may take to build on the meta device from a bundle's config (seconds).
BUILD_SECONDS = 10.0
#: Bytes a component's implied parameters and buffers may exceed its tensors in the file by (buffers
#: that are not saved, such as fsq's levels); anything beyond is refused before it is allocated.
SLACK_BYTES = 1 << 20
COMPONENT_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,99}$")


# -- writing ---------------------------------------------------------------------------------------
def describe(kind: str, component: nn.Module) -> dict[str, Any]:
    """The metadata entry of one component: kind, registered name, config, providing distribution."""
    try:
        provider = registry.provider_of(kind, component)
    except VQToolkitError as err:
        raise BundleError(f"cannot save the {kind}: {err}") from err
    config = component.config
    try:
        json.loads(json.dumps(config, allow_nan=False))
    except (TypeError, ValueError) as err:
        raise BundleError(
            f"cannot save the {kind} {provider.name!r}: its config is not plain JSON ({err}); "
            f"config values must be numbers, strings, booleans, None, lists or dicts"
        ) from err
    return {
        "kind": kind,
        "name": provider.name,
        "config": config,
        "distribution": provider.distribution,
        "version": provider.version,
    }


def component_tensors(prefix: str, component: nn.Module) -> dict[str, Tensor]:
    """``component``'s state as CPU tensors named ``prefix.key``, ready for safetensors."""
    return {
        f"{prefix}.{key}": value.detach().to("cpu", copy=True).contiguous()
        for key, value in component.state_dict().items()
    }


def digest(document_json: str, tensors: Mapping[str, Tensor]) -> str:
    """SHA-256 over the metadata document and every tensor's name, dtype, shape and bytes."""
    h = hashlib.sha256(document_json.encode())
    for key in sorted(tensors):
        t = tensors[key]
        h.update(f"\0{key}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def role_components(pipeline: Any) -> dict[str, nn.Module]:
    """The pipeline's components by bundle role (``prior`` only when it has one)."""
    model = pipeline.model
    parts = {"encoder": model.encoder, "quantizer": model.quantizer, "decoder": model.decoder}
    if pipeline.prior is not None:
        parts["prior"] = pipeline.prior
    return parts


def save(pipeline: Any, path: str | Path) -> Path:
    """Write ``pipeline`` to ``path`` as one safetensors bundle; returns the path."""
    path = Path(path)
    if path.is_dir():
        raise BundleError(f"{path} is a directory; give a file name such as {path / 'model.safetensors'}")
    tensors: dict[str, Tensor] = {}
    components = {}
    for role, component in role_components(pipeline).items():
        components[role] = describe(role, component)
        tensors.update(component_tensors(role, component))
    document = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "vqtoolkit_version": __version__,
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "components": components,
        "info": pipeline.info,
    }
    try:
        text = json.dumps(document, allow_nan=True)
    except (TypeError, ValueError) as err:
        raise BundleError(f"cannot save: the pipeline's info is not plain JSON ({err})") from err
    metadata = {METADATA_KEY: text, DIGEST_KEY: digest(text, tensors)}
    atomic_write(path, save_bytes(tensors, metadata=metadata))
    return path


# -- reading and validating ------------------------------------------------------------------------
def read(path: str | Path) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """The validated metadata document and the tensors of a bundle, without building anything.

    Checks the file is a safetensors file, the document's format and version, the checksum, and
    the document's structure. Does not need any component's plugin to be installed.
    """
    path = Path(path)
    if not path.is_file():
        raise BundleError(f"no bundle at {path}: the file does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118 - safe_open is no dict
    except Exception as err:
        raise BundleError(
            f"{path} is not a readable safetensors file ({type(err).__name__}: {err}); "
            f"it may be truncated or corrupt"
        ) from err
    if METADATA_KEY not in metadata:
        raise BundleError(
            f"{path} is a safetensors file but not a vqtoolkit bundle (no '{METADATA_KEY}' metadata)"
        )
    text = metadata[METADATA_KEY]
    try:
        document = json.loads(text)
    except (ValueError, RecursionError) as err:
        raise BundleError(f"{path}: the bundle metadata is not valid JSON ({err})") from err
    _check_format(path, document)
    if DIGEST_KEY not in metadata:
        raise BundleError(
            f"{path} has no '{DIGEST_KEY}' checksum: it was written before bundles carried one (or it was "
            f"stripped); rebuild it with this vqtoolkit"
        )
    if metadata[DIGEST_KEY] != digest(text, tensors):
        raise BundleError(
            f"{path}: checksum mismatch: the file changed after it was written (corrupt copy or edited "
            f"by hand); copy it again from its source"
        )
    _check_document(path, document, tensors)
    return document, tensors


def _check_format(path: Path, document: Any) -> None:
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise BundleError(f"{path}: metadata does not describe a {FORMAT} document")
    version = document.get("format_version")
    if version != FORMAT_VERSION or isinstance(version, bool):
        raise BundleError(
            f"{path}: bundle format version {version!r} is not supported by vqtoolkit {__version__} "
            f"(it reads version {FORMAT_VERSION}); install the vqtoolkit that wrote it "
            f"({document.get('vqtoolkit_version', 'unknown')!r})"
        )


def _check_document(path: Path, document: dict[str, Any], tensors: Mapping[str, Tensor]) -> None:
    components = document.get("components")
    if not isinstance(components, dict):
        raise BundleError(f"{path}: the bundle metadata has no 'components' table")
    absent = [role for role in REQUIRED_ROLES if role not in components]
    if absent:
        raise BundleError(
            f"{path}: the bundle must describe an encoder, a quantizer and a decoder (missing {absent})"
        )
    for role, entry in components.items():
        if role not in ROLES:
            raise BundleError(f"{path}: unknown component role {role!r}; roles are {', '.join(ROLES)}")
        _check_entry(path, role, entry)
    try:
        check_info(document.get("info", {}))
    except BundleError as err:
        raise BundleError(f"{path}: {err}") from err
    stray = sorted(k for k in tensors if k.split(".", 1)[0] not in components)
    if stray:
        raise BundleError(f"{path}: tensors {stray[:5]} belong to no component of the bundle")


def _check_entry(path: Path, role: str, entry: Any) -> None:
    def bad(what: str) -> BundleError:
        return BundleError(f"{path}: the {role} entry {what}")

    if not isinstance(entry, dict):
        raise bad("must be a JSON object")
    if entry.get("kind") != role:
        raise bad(f"has kind {entry.get('kind')!r}, expected {role!r}")
    name = entry.get("name")
    if not isinstance(name, str) or not COMPONENT_NAME.match(name):
        raise bad(f"has an invalid component name {name!r}")
    if not isinstance(entry.get("config"), dict):
        raise bad("needs a 'config' object")
    distribution = entry.get("distribution")
    if not isinstance(distribution, str) or not DISTRIBUTION_NAME.match(distribution):
        raise bad(f"names an invalid distribution {distribution!r}")
    if not isinstance(entry.get("version"), str):
        raise bad("needs a string 'version'")


# -- building --------------------------------------------------------------------------------------
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


def check_config_types(cls: type, config: Mapping[str, Any], *, what: str) -> None:
    """Raise a :class:`BundleError` for options ``cls`` does not take or values of the wrong JSON type.

    Types come from the constructor's annotations; annotations this check cannot read are left
    to the constructor.
    """
    try:
        registry.check_options(cls, dict(config), what=what)
    except VQToolkitError as err:
        raise BundleError(str(err)) from err
    try:
        hints = typing.get_type_hints(cls.__init__)  # type: ignore[misc]
    except Exception:
        return
    for key, value in config.items():
        expected = hints.get(key)
        if expected is not None and not _matches(value, expected):
            raise BundleError(f"{what} option {key}={value!r} is not of type {_type_name(expected)}")


def _matches(value: Any, tp: Any) -> bool:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any or tp is object:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, a) for a in args)
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
        if not isinstance(value, list):
            return False
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(_matches(v, a) for v, a in zip(value, args, strict=True))
        return not args or all(_matches(v, args[0]) for v in value)
    if tp is dict or origin in (dict, collections.abc.Mapping):
        return isinstance(value, dict)
    return True


def _type_name(tp: Any) -> str:
    name = getattr(tp, "__name__", None) if typing.get_origin(tp) is None else None
    return name or str(tp).replace("typing.", "").replace("collections.abc.", "")


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


@contextlib.contextmanager
def build_deadline(what: str, seconds: float | None = None) -> Iterator[None]:
    """Raise a :class:`BundleError` if the block runs longer than ``seconds`` (default :data:`BUILD_SECONDS`).

    Building on ``meta`` allocates nothing, but a config can still ask a constructor for absurd work
    (``num_stages: 10**9`` modules); this bounds it. POSIX main thread only (it uses ``SIGALRM``);
    elsewhere it does nothing. An outer alarm keeps running.
    """
    seconds = BUILD_SECONDS if seconds is None else seconds
    if not hasattr(signal, "setitimer") or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum: int, frame: object) -> None:
        raise BundleError(
            f"building the {what} from its config took more than {seconds:g} s; the config asks for "
            f"more than any real component needs"
        )

    start = time.monotonic()
    previous = signal.signal(signal.SIGALRM, expire)
    outer, _ = signal.setitimer(signal.ITIMER_REAL, seconds)
    if outer and outer < seconds:
        signal.setitimer(signal.ITIMER_REAL, outer)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if outer:
            signal.setitimer(signal.ITIMER_REAL, max(outer - (time.monotonic() - start), 1e-3))


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
        with build_deadline(what), torch.device("meta"):
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
    """Rebuild ``cls(**config)`` and load ``state`` into it, after checking every name, shape and dtype."""
    check_config_types(cls, config, what=what)
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


def _build_component(
    role: str, entry: Mapping[str, Any], tensors: Mapping[str, Tensor], *, trust_provider: bool
) -> nn.Module:
    cls = resolve_class(role, entry, trust_provider=trust_provider)
    what = f"{role} {entry['name']!r} ({entry['distribution']} {entry['version']})"
    prefix = f"{role}."
    state = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
    component = restore(cls, entry["config"], state, what=what)
    component.registered_name = entry["name"]
    return component


def load(path: str | Path, *, trust_provider: bool = False) -> Any:
    """Rebuild the :class:`~vqtoolkit.pipeline.Pipeline` saved at ``path`` (validated first).

    ``trust_provider=True`` accepts a component whose name is installed from another distribution
    than the one the bundle declares (a fork or a renamed package you trust). Every problem, from a
    truncated file to a plugin that is not installed, raises a
    :class:`~vqtoolkit.errors.BundleError` that says what is wrong and what to do.
    """
    from vqtoolkit.pipeline import Pipeline, check_wiring

    path = Path(path)
    document, tensors = read(path)
    try:
        parts = {
            role: _build_component(role, entry, tensors, trust_provider=trust_provider)
            for role, entry in document["components"].items()
        }
        check_wiring(parts["encoder"], parts["quantizer"], parts["decoder"])  # type: ignore[arg-type]
        model = VQVAE(parts["encoder"], parts["quantizer"], parts["decoder"]).eval()  # type: ignore[arg-type]
        check_codebook(model)
        if "prior" in parts:
            check_prior_shapes(model, parts["prior"], document.get("info", {}))  # type: ignore[arg-type]
    except VQToolkitError as err:
        raise BundleError(f"{path}: {err}") from err
    return Pipeline(model, parts.get("prior"), document.get("info", {}))  # type: ignore[arg-type]


# -- describing ------------------------------------------------------------------------------------
def summary(path: str | Path) -> dict[str, Any]:
    """What a bundle holds, without building it: components, providers, tensor sizes, training facts.

    Works even where the components' plugins are not installed (``installed`` says which are).
    """
    path = Path(path)
    document, tensors = read(path)
    components = {}
    for role, entry in document["components"].items():
        mine = [t for k, t in tensors.items() if k.startswith(f"{role}.")]
        providers = {s.distribution: s.version for s in registry.specs(role) if s.name == entry["name"]}
        components[role] = {
            **entry,
            "installed": providers,
            "tensors": len(mine),
            "values": sum(t.numel() for t in mine),
            "bytes": sum(t.numel() * t.element_size() for t in mine),
        }
    return {
        "path": str(path),
        "file_bytes": path.stat().st_size,
        "format_version": document["format_version"],
        "vqtoolkit_version": document.get("vqtoolkit_version"),
        "torch_version": document.get("torch_version"),
        "checksum": "ok",
        "components": components,
        "info": document.get("info", {}),
    }
