"""Stage-2 checkpoints: a gradient-trained prior's fit saved every epoch, resumable, Ctrl-C safe.

Stage 2 (:func:`vqtoolkit.stages.fit_prior`) passes a :class:`FitCheckpoint` to the prior's ``fit``
as its ``checkpoint`` argument when given a ``checkpoint_path``. A prior trained by
:func:`vqtoolkit.priors.neural.loop.fit_network` turns it into loop hooks (:meth:`FitCheckpoint.hooks`):
the saved state is restored before the first epoch, saved after each one (weights, optimiser, the
shuffling generator and torch's random state, best-so-far weights and history), and Ctrl-C is
checked after each step: the first Ctrl-C stops the fit and :meth:`FitCheckpoint.interrupted` names
the command that resumes. A resumed fit continues bit for bit where the last finished epoch left
it. The file is safetensors plus JSON (no pickle), written atomically, like the stage-1 checkpoint.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as save_bytes

from vqtoolkit._util.atomic import atomic_write
from vqtoolkit.errors import CheckpointError, TrainingInterrupted
from vqtoolkit.priors.neural.loop import FitHooks, FitState
from vqtoolkit.runtime import distributed
from vqtoolkit.storage.checkpoint import check_fingerprint, load_optimizer_state, optimizer_state

FORMAT = "vqtoolkit.prior-checkpoint"
METADATA_KEY = "vqtoolkit_prior_checkpoint"


@dataclass
class FitCheckpoint:
    """The checkpoint file of one prior fit; ``resume`` continues from it when it exists."""

    path: Path
    resume: bool = False
    #: The Ctrl-C flag of :func:`vqtoolkit.runtime.stopping.stop_requests` the fit runs under.
    stop: Any = None

    def hooks(self, fingerprint: dict[str, Any]) -> FitHooks:
        """The loop's hooks: restore before the first epoch, save after each, stop on Ctrl-C.

        Args:
            fingerprint: What the fit was started with; a resume with another is refused.

        Returns:
            Hooks for :func:`~vqtoolkit.priors.neural.loop.fit_network`.
        """
        return FitHooks(
            on_start=lambda state: self.restore(state, fingerprint),
            on_epoch_end=lambda state: self.save(state, fingerprint),
            stop_requested=lambda: self.stop_requested,
            interrupted=lambda state: self.interrupted(state.epoch),
        )

    def save(self, state: FitState, fingerprint: dict[str, Any]) -> None:
        """Write the state after ``state.epoch`` finished (atomically; rank 0 only under torchrun)."""
        if not distributed.is_main():
            return
        tensors = {
            f"net.{k}": v.detach().cpu().contiguous().clone() for k, v in state.net.state_dict().items()
        }
        tensors.update(
            {f"best.{k}": v.detach().cpu().contiguous().clone() for k, v in state.best_weights.items()}
        )
        optim_tensors, optim_document = optimizer_state(state.optimizer)
        tensors.update(optim_tensors)
        tensors["rng.shuffle"] = state.generator.get_state()
        tensors["rng.torch"] = torch.get_rng_state()  # dropout draws
        document = {
            "format": FORMAT,
            "settings": fingerprint,
            "epoch": state.epoch,
            "step": state.step,
            "best_score": state.best_bits,
            "best_epoch": state.best_epoch,
            "history": state.history,
            "optimizer": optim_document,
        }
        metadata = {METADATA_KEY: json.dumps(document, allow_nan=True)}
        atomic_write(self.path, save_bytes(tensors, metadata=metadata))

    def restore(self, state: FitState, fingerprint: dict[str, Any]) -> None:
        """Load the saved state into ``state`` when resuming; a fresh fit is left as it is."""
        if not self.resume or not self.path.is_file():
            return
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
        check_fingerprint(self.path, document["settings"], fingerprint)
        device = next(state.net.parameters()).device
        state.net.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("net.")})
        load_optimizer_state(state.optimizer, tensors, document["optimizer"])
        state.generator.set_state(tensors["rng.shuffle"])
        torch.set_rng_state(tensors["rng.torch"])
        state.best_weights = {k[5:]: v.to(device) for k, v in tensors.items() if k.startswith("best.")}
        state.epoch, state.step = int(document["epoch"]), int(document["step"])
        state.best_bits, state.best_epoch = float(document["best_score"]), int(document["best_epoch"])
        state.history = list(document["history"])

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
