"""Training checkpoints: everything needed to continue a run exactly, in one pickle-free file.

A checkpoint is a ``.safetensors`` file. Tensors: the model's full ``state_dict`` (parameters *and*
buffers, so EMA codebook statistics travel too) under ``model.``, the optimiser's per-parameter state
under ``optimizer.``, the shuffling generator's and torch's RNG states under ``rng.``, and the partial
epoch's per-code counts; with the VQGAN recipe, the discriminator's weights and optimiser under
``discriminator.`` (:class:`Trainable`; a run without one writes and reads none). JSON metadata: the
position in training (epoch, batches done, step), the history so far, the optimiser's hyper-parameters,
the grad scaler's scalars, and the fingerprint that must match for ``--resume`` to reproduce an
uninterrupted run. No pickle, so a checkpoint is as safe to open as a bundle. Writes are atomic
(:func:`vqtoolkit._util.atomic.atomic_write`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as save_bytes
from torch import Tensor, nn

from vqtoolkit._util.atomic import atomic_write
from vqtoolkit.components.base import component_name
from vqtoolkit.errors import CheckpointError

FORMAT = "vqtoolkit.checkpoint"
FORMAT_VERSION = 1
METADATA_KEY = "vqtoolkit_checkpoint"
#: The prefix of the discriminator's tensors (its ``model.`` weights and ``optimizer.`` state).
DISCRIMINATOR = "discriminator."


@dataclass
class Position:
    """Where a run stands: ``batches_done`` batches of ``epoch`` (1-based) are already trained.

    ``shuffle_state`` is the shuffling generator's state at the *start* of ``epoch``, so a resumed
    run draws the same batch order and skips the batches already done.
    """

    epoch: int
    batches_done: int
    step: int
    shuffle_state: Tensor
    history: list[dict[str, Any]] = field(default_factory=list)
    #: Running sums of the unfinished epoch (``recon``, ``vq``, ``seconds``) and its code counts.
    partial: dict[str, float] = field(default_factory=dict)
    counts: Tensor | None = None


@dataclass
class Trainable:
    """A network trained beside the model (the VQGAN recipe's discriminator), with its optimiser."""

    module: nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler


def optimizer_state(
    optimizer: torch.optim.Optimizer, prefix: str = "optimizer."
) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """An optimiser's state as CPU tensors named ``PREFIX INDEX.KEY`` and a JSON document of the rest."""
    state = optimizer.state_dict()
    tensors: dict[str, Tensor] = {}
    scalars: dict[str, Any] = {}
    for index, entries in state["state"].items():
        for key, value in entries.items():
            if torch.is_tensor(value):
                tensors[f"{prefix}{index}.{key}"] = value.detach().cpu().contiguous().clone()
            else:
                scalars[f"{index}.{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def load_optimizer_state(
    optimizer: torch.optim.Optimizer,
    tensors: dict[str, Tensor],
    document: dict[str, Any],
    prefix: str = "optimizer.",
) -> None:
    """Restore what :func:`optimizer_state` saved (under the same ``prefix``)."""
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith(prefix):
            index, name = key.removeprefix(prefix).split(".", 1)
            state.setdefault(int(index), {})[name] = value
    for key, value in document["scalars"].items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": document["param_groups"]})


def describe_model(model: nn.Module) -> dict[str, Any]:
    """Name and config of each component: what a checkpoint must match to be resumed.

    The name is the one the component was created under, or its class's import path for a
    component built without the registry (a checkpoint is only ever resumed by the same code).
    """
    parts = {"encoder": model.encoder, "quantizer": model.quantizer, "decoder": model.decoder}
    return {
        role: {"name": component_name(part), "config": getattr(part, "config", None)}
        for role, part in parts.items()
    }


def save(
    path: Path,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    position: Position,
    fingerprint: dict[str, Any],
    discriminator: Trainable | None = None,
) -> Path:
    """Write a checkpoint of the run at ``position`` (and its ``discriminator``) to ``path`` (atomically)."""
    tensors = _module_tensors(model, "model.")
    optim_tensors, optim_document = optimizer_state(optimizer)
    tensors.update(optim_tensors)
    trained_beside = None
    if discriminator is not None:
        tensors.update(_module_tensors(discriminator.module, f"{DISCRIMINATOR}model."))
        d_tensors, d_document = optimizer_state(discriminator.optimizer, f"{DISCRIMINATOR}optimizer.")
        tensors.update(d_tensors)
        scaler_state = discriminator.scaler.state_dict() if discriminator.scaler.is_enabled() else None
        trained_beside = {"optimizer": d_document, "scaler": scaler_state}
    tensors["rng.shuffle"] = position.shuffle_state.clone()
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = state
    if position.counts is not None:
        tensors["partial.counts"] = position.counts.detach().cpu().clone()
    document = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "settings": fingerprint,
        "position": {"epoch": position.epoch, "batches_done": position.batches_done, "step": position.step},
        "history": position.history,
        "partial": position.partial,
        "optimizer": optim_document,
        "scaler": scaler.state_dict() if scaler.is_enabled() else None,
        **({"discriminator": trained_beside} if trained_beside is not None else {}),
    }
    metadata = {METADATA_KEY: json.dumps(document, allow_nan=True)}
    atomic_write(Path(path), save_bytes(tensors, metadata=metadata))
    return Path(path)


def _module_tensors(module: nn.Module, prefix: str) -> dict[str, Tensor]:
    """A module's ``state_dict`` as CPU tensors named ``PREFIX KEY``."""
    return {f"{prefix}{k}": v.detach().cpu().contiguous().clone() for k, v in module.state_dict().items()}


def _load_module(path: Path, module: nn.Module, tensors: dict[str, Tensor], prefix: str) -> None:
    """Load the tensors named ``PREFIX KEY`` into ``module``, refusing any that do not fit it."""
    state = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
    expected = module.state_dict()
    if set(state) != set(expected) or any(state[k].shape != v.shape for k, v in expected.items()):
        what = "model" if prefix == "model." else "discriminator"
        raise CheckpointError(
            f"{path}: its {what} tensors do not match this {what}; start afresh without --resume"
        )
    module.load_state_dict(state)


def _read(path: Path) -> tuple[dict[str, Any], dict[str, Tensor]]:
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path} to resume from; run without --resume to start afresh")
    try:
        with safe_open(str(path), framework="pt") as f:  # always onto the CPU first
            metadata = f.metadata() or {}
            tensors = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118 (a safetensors handle, not a dict)
        document = json.loads(metadata[METADATA_KEY])
    except (SafetensorError, OSError, ValueError, RuntimeError, KeyError) as err:
        raise CheckpointError(
            f"{path} is not a readable vqtoolkit checkpoint ({err!r}); delete it to start afresh"
        ) from err
    if document.get("format") != FORMAT or document.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: not a version-{FORMAT_VERSION} {FORMAT} file")
    return document, tensors


def _first_difference(saved: Any, current: Any, where: str) -> tuple[str, Any, Any] | None:
    """The first leaf (dotted path) where two JSON-like values differ."""
    if isinstance(saved, dict) and isinstance(current, dict):
        for key in sorted(set(saved) | set(current)):
            found = _first_difference(saved.get(key), current.get(key), f"{where}.{key}")
            if found:
                return found
        return None
    return None if saved == current else (where, saved, current)


def check_fingerprint(path: Path, saved: dict[str, Any], current: dict[str, Any]) -> None:
    """Refuse to resume a run whose model or training options (its fingerprint) differ from the checkpoint."""
    found = _first_difference(saved, current, "settings")
    if found:
        where, was, now = found
        raise CheckpointError(
            f"{path} was written by a different configuration: {where.removeprefix('settings.')} is {was!r} "
            f"there but {now!r} in this run. Resume with the original options, or drop --resume (or pick "
            f"another --checkpoint) to start afresh"
        )


def load(
    path: Path,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    fingerprint: dict[str, Any],
    discriminator: Trainable | None = None,
) -> Position:
    """Restore model, optimiser, scaler and RNG states (and the ``discriminator``'s) from ``path``.

    Everything is validated against ``fingerprint`` and the model's own tensors before anything
    changes (a discriminator's fingerprint differs from a plain run's, so neither resumes the other).
    Returns where the run stands.
    """
    path = Path(path)
    document, tensors = _read(path)
    check_fingerprint(path, document["settings"], fingerprint)
    if (discriminator is None) != ("discriminator" not in document):
        raise CheckpointError(
            f"{path}: its discriminator does not match this run's; start afresh without --resume"
        )
    device = next(model.parameters()).device
    _load_module(path, model, tensors, "model.")
    load_optimizer_state(optimizer, tensors, document["optimizer"])
    if document["scaler"] is not None:
        scaler.load_state_dict(document["scaler"])
    if discriminator is not None:
        _load_module(path, discriminator.module, tensors, f"{DISCRIMINATOR}model.")
        trained_beside = document["discriminator"]
        load_optimizer_state(
            discriminator.optimizer, tensors, trained_beside["optimizer"], f"{DISCRIMINATOR}optimizer."
        )
        if trained_beside["scaler"] is not None:
            discriminator.scaler.load_state_dict(trained_beside["scaler"])
    torch.set_rng_state(tensors["rng.torch"])
    cuda_keys = sorted(
        (k for k in tensors if k.startswith("rng.cuda.")), key=lambda k: int(k.rsplit(".", 1)[1])
    )
    cuda_states = [tensors[k] for k in cuda_keys]
    if cuda_states and device.type == "cuda" and len(cuda_states) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda_states)
    counts = tensors.get("partial.counts")
    return Position(
        epoch=int(document["position"]["epoch"]),
        batches_done=int(document["position"]["batches_done"]),
        step=int(document["position"]["step"]),
        shuffle_state=tensors["rng.shuffle"],
        history=list(document["history"]),
        partial=dict(document["partial"]),
        counts=None if counts is None else counts.to(device),
    )
