"""Stage-2 checkpoints: a gradient-trained prior's fit saved every epoch, resumable, Ctrl-C safe.

:meth:`vqtoolkit.pipeline.Pipeline.fit_prior` hands a :class:`FitCheckpoint` to the prior (its
``fit_checkpoint`` attribute) when given a ``checkpoint_path``. A prior whose fit is a loop of
epochs (PixelCNN) then calls :meth:`FitCheckpoint.restore` before its first epoch,
:meth:`FitCheckpoint.save` after each one (weights, optimiser, learning-rate schedule, shuffling
generator, best-so-far weights and history), and checks :attr:`FitCheckpoint.stop_requested` after
each step: the first Ctrl-C stops the fit and :meth:`FitCheckpoint.interrupted` names the command
that resumes. A resumed fit continues bit for bit where the last finished epoch left it. The file
is safetensors plus JSON (no pickle), written atomically, like the stage-1 checkpoint.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as save_bytes
from torch import Tensor, nn

from vqtoolkit.atomic import atomic_write
from vqtoolkit.checkpoint import check_settings, load_optimizer_state, optimizer_state
from vqtoolkit.errors import CheckpointError, TrainingInterrupted

FORMAT = "vqtoolkit.prior-checkpoint"
METADATA_KEY = "vqtoolkit_prior_checkpoint"


@dataclass
class FitProgress:
    """Where a resumed fit stands: the next epoch, the best held-out score and weights, the history."""

    epoch: int = 1
    best_score: float = float("inf")
    best_weights: dict[str, Tensor] | None = None
    history: list[dict[str, Any]] | None = None


@dataclass
class FitCheckpoint:
    """The checkpoint file of one prior fit; ``resume`` continues from it when it exists."""

    path: Path
    resume: bool = False
    #: The Ctrl-C flag of :func:`vqtoolkit.train.stop_requests` while the fit runs.
    stop: Any = None

    def save(
        self,
        *,
        epoch: int,
        net: nn.Module,
        optimizer: torch.optim.Optimizer,
        schedule: Any,
        generator: torch.Generator,
        best_score: float,
        best_weights: dict[str, Tensor],
        history: list[dict[str, Any]],
        settings: dict[str, Any],
    ) -> None:
        """Write the state after ``epoch`` finished (atomically; rank 0 only under torchrun)."""
        from vqtoolkit import distributed

        if not distributed.is_main():
            return
        tensors = {f"net.{k}": v.detach().cpu().contiguous().clone() for k, v in net.state_dict().items()}
        tensors.update({f"best.{k}": v.detach().cpu().contiguous().clone() for k, v in best_weights.items()})
        optim_tensors, optim_document = optimizer_state(optimizer)
        tensors.update(optim_tensors)
        tensors["rng.shuffle"] = generator.get_state()
        document = {
            "format": FORMAT,
            "settings": settings,
            "epoch": epoch,
            "best_score": best_score,
            "history": history,
            "optimizer": optim_document,
            "schedule": schedule.state_dict(),
        }
        metadata = {METADATA_KEY: json.dumps(document, allow_nan=True)}
        atomic_write(self.path, save_bytes(tensors, metadata=metadata))

    def restore(
        self,
        *,
        net: nn.Module,
        optimizer: torch.optim.Optimizer,
        schedule: Any,
        generator: torch.Generator,
        settings: dict[str, Any],
    ) -> FitProgress:
        """Load the saved state into the given objects when resuming; a fresh fit starts at epoch 1."""
        if not self.resume or not self.path.is_file():
            return FitProgress()
        try:
            with safe_open(str(self.path), framework="pt") as f:
                document = json.loads((f.metadata() or {})[METADATA_KEY])
                tensors = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118 (not a dict)
        except (SafetensorError, OSError, ValueError, KeyError) as err:
            raise CheckpointError(
                f"{self.path} is not a readable prior checkpoint ({err!r}); delete it to refit the prior"
            ) from err
        if document.get("format") != FORMAT:
            raise CheckpointError(f"{self.path} is not a {FORMAT} file; delete it to refit the prior")
        check_settings(self.path, document["settings"], settings)
        device = next(net.parameters()).device
        net.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("net.")})
        load_optimizer_state(optimizer, tensors, document["optimizer"])
        schedule.load_state_dict(document["schedule"])
        generator.set_state(tensors["rng.shuffle"])
        best = {k[5:]: v.to(device) for k, v in tensors.items() if k.startswith("best.")}
        return FitProgress(document["epoch"] + 1, float(document["best_score"]), best, document["history"])

    @property
    def stop_requested(self) -> bool:
        """Whether Ctrl-C asked the fit to stop (set by the fit's caller, see ``stop``)."""
        return bool(self.stop is not None and self.stop.requested)

    def interrupted(self, epoch: int) -> TrainingInterrupted:
        """The error to raise when Ctrl-C stopped the fit during ``epoch``."""
        held = f"holds the {epoch - 1} finished epochs" if epoch > 1 else "will start the fit afresh"
        return TrainingInterrupted(
            f"prior fit interrupted in epoch {epoch}; the stage-1 model is kept and {self.path} {held}. "
            f"Run the same command with --resume to continue."
        )
