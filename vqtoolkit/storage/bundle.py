"""Bundles: one ``.safetensors`` file holding components by role, and JSON metadata to rebuild them.

Tensor names are prefixed by role (``encoder.``, ``quantizer.``, ``decoder.``, ``prior.``). The
metadata key ``vqtoolkit`` holds a JSON document with the format version and, per component, its
kind, registered name, config and providing distribution; ``vqtoolkit.sha256`` is a checksum over
that document and every tensor, so corruption is caught instead of loaded. This module writes and
reads components plus an ``info`` object, and knows nothing of what they make together: assembling
a model from them is :meth:`vqtoolkit.pipeline.Pipeline.load`'s job (:mod:`vqtoolkit.model.assemble`),
rebuilding each component :mod:`vqtoolkit.storage.restore`'s. Reading never unpickles or evaluates
anything, so a bundle from a stranger is safe to open. Every failure is a :class:`BundleError`.
Writes are atomic. The format is specified in ``docs/bundle-format.md``.
"""

from __future__ import annotations

import hashlib
import json
import platform
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, cast

import torch
from safetensors import safe_open
from safetensors.torch import save as save_bytes
from torch import Tensor, nn

from vqtoolkit._util.atomic import atomic_write
from vqtoolkit._version import __version__
from vqtoolkit.components import registry
from vqtoolkit.components.options import check_json
from vqtoolkit.errors import BundleError, VQToolkitError
from vqtoolkit.storage.header import DIGEST_KEY, FORMAT, FORMAT_VERSION, METADATA_KEY, read_header
from vqtoolkit.storage.restore import restore_components

ROLES = ("encoder", "quantizer", "decoder", "prior")
REQUIRED_ROLES = ("encoder", "quantizer", "decoder")
#: PEP 508 distribution names; anything else is refused, so no message ever suggests `pip install <junk>`.
DISTRIBUTION_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$")
COMPONENT_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,99}$")


#: Largest image side ``info.image_shape`` may record.
MAX_IMAGE_SIDE = 1 << 14


def _integer(low: int, high: int | None = None) -> Callable[[Any], bool]:
    return lambda v: (
        isinstance(v, int) and not isinstance(v, bool) and v >= low and (high is None or v < high)
    )


def _image_shape(value: Any) -> bool:
    side = _integer(1, MAX_IMAGE_SIDE + 1)
    return isinstance(value, list) and len(value) == 3 and all(side(v) for v in value)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


#: The ``info`` fields vqtoolkit reads back, each with a test and what it must be. Others are kept as is.
INFO_FIELDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "dataset": (lambda v: isinstance(v, str), "a string"),
    "image_shape": (_image_shape, f"three sizes [C, H, W] between 1 and {MAX_IMAGE_SIDE}"),
    "num_classes": (lambda v: v is None or _integer(1)(v), "a positive integer or null"),
    "epochs": (_integer(0), "a non-negative integer"),
    "batch_size": (_integer(1), "a positive integer"),
    "lr": (_number, "a number"),
    "lr_schedule": (lambda v: isinstance(v, str), "a string"),
    "seed": (_integer(-(2**63), 2**64), "an integer seed"),
    "device": (lambda v: isinstance(v, str), "a string"),
    "precision": (lambda v: isinstance(v, str), "a string"),
    "history": (lambda v: isinstance(v, list), "a list"),
    "prior_history": (lambda v: isinstance(v, list), "a list"),
    "metrics": (lambda v: isinstance(v, dict), "an object"),
    "world_size": (_integer(1), "a positive integer"),
    "schema_version": (_integer(1), "a positive integer"),
}


def check_info(info: Any) -> None:
    """Raise a :class:`BundleError` naming the first ``info`` field vqtoolkit reads that has a bad value."""
    if not isinstance(info, dict):
        raise BundleError("the bundle's 'info' must be a JSON object")
    for key, (valid, what) in INFO_FIELDS.items():
        if key in info and not valid(info[key]):
            raise BundleError(f"the bundle's info.{key} is {info[key]!r}; it must be {what}")


# -- writing ---------------------------------------------------------------------------------------
def describe(kind: str, component: nn.Module) -> dict[str, Any]:
    """The metadata entry of one component: kind, registered name, config, providing distribution."""
    try:
        provider = registry.provider_of(kind, component)
    except VQToolkitError as err:
        raise BundleError(f"cannot save the {kind}: {err}") from err
    config: dict[str, Any] = cast(Any, component).config
    try:
        check_json(config, what=f"{kind} {provider.name!r}")
    except VQToolkitError as err:
        raise BundleError(f"cannot save: {err}") from err
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


def save(components: Mapping[str, nn.Module], info: Mapping[str, Any], path: str | Path) -> Path:
    """Write ``components`` (by role) and ``info`` to ``path`` as one safetensors bundle; returns the path."""
    path = Path(path)
    if path.is_dir():
        raise BundleError(f"{path} is a directory; give a file name such as {path / 'model.safetensors'}")
    tensors: dict[str, Tensor] = {}
    described = {}
    for role, component in components.items():
        described[role] = describe(role, component)
        tensors.update(component_tensors(role, component))
    document = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "vqtoolkit_version": __version__,
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "components": described,
        "info": dict(info),
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

    Checks the header first (:func:`~vqtoolkit.storage.header.read_header`: a safetensors file, the
    document's format and version), then the checksum and the document's structure. Does not need
    any component's plugin to be installed.
    """
    path = Path(path)
    header = read_header(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            tensors = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118 - safe_open is no dict
    except Exception as err:
        raise BundleError(
            f"{path} is not a readable safetensors file ({type(err).__name__}: {err}); "
            f"it may be truncated or corrupt"
        ) from err
    if header.checksum != digest(header.text, tensors):
        raise BundleError(
            f"{path}: checksum mismatch: the file changed after it was written (corrupt copy or edited "
            f"by hand); copy it again from its source"
        )
    _check_document(path, header.document, tensors)
    return header.document, tensors


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


def load_components(
    path: str | Path, *, trust_provider: bool = False
) -> tuple[dict[str, nn.Module], dict[str, Any]]:
    """The components of the bundle at ``path`` by role, rebuilt and filled, and its ``info``.

    Everything is validated first (:func:`read`, then each component on the ``meta`` device, see
    :mod:`vqtoolkit.storage.restore`). ``trust_provider=True`` accepts a component whose name is
    installed from another distribution than the one the bundle declares.
    """
    path = Path(path)
    document, tensors = read(path)
    try:
        parts = restore_components(document["components"], tensors, trust_provider=trust_provider)
    except VQToolkitError as err:
        raise BundleError(f"{path}: {err}") from err
    return parts, document.get("info", {})


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
