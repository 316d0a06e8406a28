"""Bundles: one ``.safetensors`` file holding every tensor, and JSON metadata to rebuild the model.

Tensor names are prefixed by role (``encoder.``, ``quantizer.``, ``decoder.``, ``prior.``). The
metadata key ``vqtoolkit`` holds a JSON document with the format version and, per component, its
kind, registered name, config and providing distribution. Loading validates everything before it
builds anything, and never unpickles: a bundle from a stranger is safe to open. Writes are atomic.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as save_bytes

from vqtoolkit import __version__, registry
from vqtoolkit.errors import BundleError, VQToolkitError
from vqtoolkit.model import VQVAE

FORMAT = "vqtoolkit.bundle"
FORMAT_VERSION = 1
METADATA_KEY = "vqtoolkit"
ROLES = ("encoder", "quantizer", "decoder", "prior")


def _describe(kind: str, component: Any) -> dict[str, Any]:
    name = registry.name_of(component)
    try:
        provider = registry.spec(kind, name)
        dist, version = provider.distribution, provider.version
    except VQToolkitError:  # an instance built outside the registry
        dist, version = "unknown", "unknown"
    return {"kind": kind, "name": name, "config": component.config, "distribution": dist, "version": version}


def _role_components(pipeline: Any) -> dict[str, Any]:
    parts = {"encoder": pipeline.model.encoder, "quantizer": pipeline.model.quantizer, "decoder": pipeline.model.decoder}
    if pipeline.prior is not None:
        parts["prior"] = pipeline.prior
    return parts


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, fsync, then rename over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save(pipeline: Any, path: str | Path) -> Path:
    """Write ``pipeline`` to ``path`` as one safetensors bundle; returns the path."""
    path = Path(path)
    tensors: dict[str, torch.Tensor] = {}
    components = {}
    for role, component in _role_components(pipeline).items():
        components[role] = _describe(role, component)
        for key, value in component.state_dict().items():
            tensors[f"{role}.{key}"] = value.detach().cpu().contiguous().clone()
    document = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "vqtoolkit_version": __version__,
        "components": components,
        "info": pipeline.info,
    }
    metadata = {METADATA_KEY: json.dumps(document, allow_nan=True)}
    atomic_write(path, save_bytes(tensors, metadata=metadata))
    return path


def read(path: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The validated metadata document and the tensors of a bundle, without building anything."""
    path = Path(path)
    if not path.is_file():
        raise BundleError(f"no bundle at {path}: the file does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {key: f.get_tensor(key) for key in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise BundleError(f"{path} is not a readable safetensors file ({err}); it may be truncated or corrupt") from err
    if METADATA_KEY not in metadata:
        raise BundleError(f"{path} is a safetensors file but not a vqtoolkit bundle (no '{METADATA_KEY}' metadata)")
    try:
        document = json.loads(metadata[METADATA_KEY])
    except json.JSONDecodeError as err:
        raise BundleError(f"{path}: the bundle metadata is not valid JSON ({err})") from err
    _validate_document(path, document)
    return document, tensors


def _validate_document(path: Path, document: Any) -> None:
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise BundleError(f"{path}: metadata does not describe a {FORMAT} document")
    version = document.get("format_version")
    if version != FORMAT_VERSION:
        raise BundleError(
            f"{path}: bundle format version {version!r} is not supported by vqtoolkit {__version__} "
            f"(it reads version {FORMAT_VERSION}); upgrade vqtoolkit"
        )
    components = document.get("components")
    if not isinstance(components, dict) or not {"encoder", "quantizer", "decoder"} <= set(components):
        raise BundleError(f"{path}: the bundle must describe an encoder, a quantizer and a decoder")
    for role, entry in components.items():
        if role not in ROLES:
            raise BundleError(f"{path}: unknown component role {role!r}")
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) or not isinstance(entry.get("config"), dict):
            raise BundleError(f"{path}: component {role!r} needs a string 'name' and a dict 'config'")


def _build_component(path: Path, role: str, entry: dict[str, Any], tensors: dict[str, torch.Tensor]) -> Any:
    name = entry["name"]
    if name not in registry.available(role):
        dist = entry.get("distribution", "unknown")
        raise BundleError(
            f"{path} needs the {role} {name!r} from the package {dist!r}, which is not installed; "
            f"run `pip install {dist}`"
        )
    try:
        component = registry.create(role, name, **entry["config"])
    except VQToolkitError as err:
        raise BundleError(f"{path}: cannot rebuild {role} {name!r}: {err}") from err
    prefix = f"{role}."
    state = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    expected = component.state_dict()
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        raise BundleError(f"{path}: {role} tensors do not match its config (missing {missing}, unexpected {unexpected})")
    for key, value in state.items():
        want = expected[key]
        if value.shape != want.shape or value.dtype != want.dtype:
            raise BundleError(
                f"{path}: tensor {prefix}{key} is {tuple(value.shape)} {value.dtype}, "
                f"expected {tuple(want.shape)} {want.dtype}"
            )
    component.load_state_dict(state)
    return component


def load(path: str | Path) -> Any:
    """Rebuild the :class:`~vqtoolkit.pipeline.Pipeline` saved at ``path`` (validated first)."""
    from vqtoolkit.pipeline import Pipeline, check_wiring

    path = Path(path)
    document, tensors = read(path)
    stray = sorted(k for k in tensors if k.split(".", 1)[0] not in document["components"])
    if stray:
        raise BundleError(f"{path}: tensors {stray[:5]} belong to no component of the bundle")
    parts = {role: _build_component(path, role, entry, tensors) for role, entry in document["components"].items()}
    try:
        check_wiring(parts["encoder"], parts["quantizer"], parts["decoder"])
    except VQToolkitError as err:
        raise BundleError(f"{path}: {err}") from err
    model = VQVAE(parts["encoder"], parts["quantizer"], parts["decoder"]).eval()
    info = document.get("info") if isinstance(document.get("info"), dict) else {}
    return Pipeline(model, parts.get("prior"), info)
