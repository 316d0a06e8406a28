"""The one training loop of every gradient-trained index prior (pixelcnn, transformer, plugins).

:func:`fit_network` holds out a validation split of the code grids, trains with Adam on a
warm-up + cosine learning rate (a pure function of the step, :func:`vqtoolkit.runtime.schedule.lr_at`),
scores the held-out NLL after every epoch, stops after ``patience`` epochs without improvement and
leaves the network with its best epoch's weights. Under torch.distributed the network trains in
DDP, each process on its share of every batch. A checkpoint plugs in through :class:`FitHooks`.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from vqtoolkit.errors import TrainingInterrupted
from vqtoolkit.runtime import distributed
from vqtoolkit.runtime.schedule import lr_at
from vqtoolkit.runtime.step import AgreedStep
from vqtoolkit.runtime.threads import Threads, ThreadTuner, thread_candidates

logger = logging.getLogger(__name__)

#: ``(net, indices, labels) -> mean NLL in nats per code`` of a batch.
LossFn = Callable[[nn.Module, Tensor, "Tensor | None"], Tensor]

#: Training grids the default epoch budget aims for (``epochs=None``), within :data:`EPOCH_LIMITS`,
#: unless a prior sets its own (``NeuralIndexPrior.auto_grids``, sized to its cost per grid, as the
#: built-in priors do).
AUTO_GRIDS = 345_000
#: Fewest and most epochs of the default budget (early stopping may end a fit sooner).
EPOCH_LIMITS = (2, 10)
#: Arithmetic of the training steps: ``auto`` is bfloat16 where the device computes it natively
#: (CPUs with AVX-512 BF16 or AMX, CUDA GPUs that support it), float32 elsewhere.
Precision = Literal["auto", "float32", "bfloat16"]
#: Smallest and largest batch of the default (``batch_size=None``): about 1 % of the training grids,
#: so a small set still takes enough steps per epoch to learn in a few epochs.
BATCH_LIMITS = (32, 64)


@dataclass
class FitSettings:
    """Options every trained index prior shares (checked by the prior's ``limits``)."""

    epochs: int | None = None
    batch_size: int | None = None
    lr: float = 2e-3
    val_fraction: float = 0.05
    patience: int = 3
    seed: int = 0
    threads: Threads = "auto"
    #: Training grids the default budget aims for (``None``: :data:`AUTO_GRIDS`).
    auto_grids: int | None = None
    precision: Precision = "auto"

    def batch(self, rows: int) -> int:
        """Grids per batch: ``batch_size``, or about 1 % of ``rows`` within :data:`BATCH_LIMITS`."""
        if self.batch_size is not None:
            return self.batch_size
        low, high = BATCH_LIMITS
        return min(high, max(low, rows // 100))

    def budget(self, rows: int) -> int:
        """Epochs to train at most: ``epochs``, or about ``auto_grids`` grids of ``rows`` per epoch."""
        if self.epochs is not None:
            return self.epochs
        low, high = EPOCH_LIMITS
        return min(high, max(low, round((self.auto_grids or AUTO_GRIDS) / rows)))


@dataclass
class FitState:
    """The loop's state, handed to every hook: enough to checkpoint and resume a fit."""

    net: nn.Module
    optimizer: torch.optim.Optimizer
    #: Shuffles the training rows every epoch (seeded; restored on resume).
    generator: torch.Generator
    epochs: int
    steps_per_epoch: int
    epoch: int = 0
    step: int = 0
    best_bits: float = math.inf
    best_epoch: int = 0
    best_weights: dict[str, Tensor] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def epochs_without_improvement(self) -> int:
        """Epochs since the best held-out NLL."""
        return self.epoch - self.best_epoch


def shuffled_batches(train: Tensor, generator: torch.Generator, batch_size: int) -> Iterable[Tensor]:
    """The default batches: ``train``'s rows in a fresh random order, ``batch_size`` at a time.

    The order is the same on every process; under torch.distributed each gets its share of a batch.
    """
    order = train[torch.randperm(len(train), generator=generator).to(train.device)]
    return distributed.shard_batches(order, batch_size)


@dataclass
class FitHooks:
    """Where a checkpoint plugs into :func:`fit_network` (:meth:`FitCheckpoint.hooks`).

    * ``on_start(state)`` runs before the first epoch (restore: set ``epoch``, ``step``, weights and
      optimizer state); ``on_epoch_end(state)`` after each scored epoch (save);
    * ``stop_requested()`` is asked at every step (whether Ctrl-C was pressed); when it is true on any
      process, every process finishes the step and raises ``interrupted(state)``.
    """

    on_start: Callable[[FitState], None] | None = None
    on_epoch_end: Callable[[FitState], None] | None = None
    stop_requested: Callable[[], bool] = lambda: False
    interrupted: Callable[[FitState], Exception] = lambda state: TrainingInterrupted(
        f"prior fit interrupted in epoch {state.epoch}"
    )


def native_bfloat16(device: torch.device) -> bool:
    """Whether ``device`` computes bfloat16 matrix products in hardware (not emulated, which is slower)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":  # torch's own CPU-feature checks (private; absent from older releases)
        checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
        return any(getattr(torch.cpu, check, lambda: False)() for check in checks)
    return False


def training_autocast(precision: Precision, device: torch.device) -> torch.autocast:
    """Autocast for the forward pass of a training step: bfloat16 matrix products, or off.

    Only training steps use it: held-out scores, likelihoods and sampling stay in float32.
    """
    enabled = precision == "bfloat16" or (precision == "auto" and native_bfloat16(device))
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run the body with ``threads`` intra-op CPU threads (``None``: leave torch's setting)."""
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def step_threads(threads: Threads, device: torch.device) -> ThreadTuner | None:
    """The tuner that sets each training step's thread count for ``threads="auto"`` on a CPU, else ``None``.

    Its candidates run up to torch's current setting (under ``torchrun``: one per process).
    """
    if threads != "auto" or device.type != "cpu":
        return None
    return ThreadTuner(thread_candidates(torch.get_num_threads()))


def split_rows(n: int, val_fraction: float, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Held-out and training row indices: a seeded ``val_fraction`` (at least one row) held out."""
    order = torch.randperm(n, generator=generator)
    n_val = max(1, int(n * val_fraction))
    return order[:n_val], order[n_val:]


@torch.inference_mode()
def held_out_bits(
    net: nn.Module, loss: LossFn, data: Tensor, labels: Tensor | None, chunk: int = 1024
) -> float:
    """Mean NLL of ``data`` in bits per code (network in eval mode, in chunks of ``chunk`` grids)."""
    net.eval()
    nats = 0.0
    for start in range(0, len(data), chunk):
        part = data[start : start + chunk]
        part_labels = None if labels is None else labels[start : start + chunk]
        nats += float(loss(net, part, part_labels)) * part.numel()
    return nats / data.numel() / math.log(2)


def fit_network(
    net: nn.Module,
    loss: LossFn,
    data: Tensor,
    labels: Tensor | None,
    settings: FitSettings,
    *,
    name: str,
    progress: bool = True,
    hooks: FitHooks | None = None,
) -> FitState:
    """Train ``net`` on index grids ``data`` with early stopping; leaves it holding its best weights.

    Under torch.distributed every process calls this with all the grids: the batch size is the
    global batch, each process trains on its share in ``DistributedDataParallel``, and the held-out
    score (computed whole on every process) stops every process at the same epoch.
    """
    hooks = hooks or FitHooks()
    generator = torch.Generator().manual_seed(settings.seed)
    val, train = (rows.to(data.device) for rows in split_rows(len(data), settings.val_fraction, generator))
    batch_size = settings.batch(len(train))
    steps_per_epoch = distributed.batches_per_epoch(len(train), batch_size)
    optimizer = torch.optim.Adam(net.parameters(), lr=settings.lr)
    state = FitState(net, optimizer, generator, settings.budget(len(train)), steps_per_epoch)
    if hooks.on_start:
        hooks.on_start(state)
    model = distributed.wrap(net, data.device)
    progress = progress and distributed.is_main()
    total_steps = state.epochs * steps_per_epoch
    val_labels = None if labels is None else labels[val]
    tuner = step_threads(settings.threads, data.device)
    stepper = AgreedStep(optimizer)
    with torch_threads(None if settings.threads == "auto" else settings.threads):
        while state.epoch < state.epochs and state.epochs_without_improvement < settings.patience:
            state.epoch += 1
            model.train()
            batches = list(shuffled_batches(train, generator, batch_size))
            bar = tqdm(
                tuner.steps(batches) if tuner else batches,
                total=len(batches),
                desc=f"stage 2 · {name} epoch {state.epoch}/{state.epochs}",
                unit="batch",
                disable=not progress,
                leave=False,
                dynamic_ncols=True,
            )
            nats, seen = 0.0, 0
            for batch in bar:
                with training_autocast(settings.precision, data.device):
                    value = loss(model, data[batch], None if labels is None else labels[batch])
                lr = lr_at(state.step, total_steps, settings.lr, "cosine")
                stepper.backward(value, lr=lr, stop_requested=hooks.stop_requested())
                stopping = stepper.finish(
                    lambda shown: (
                        f"{name} loss became {shown} in epoch {state.epoch}: lower lr (now {settings.lr})"
                    )
                )
                state.step += 1
                nats += float(value.detach()) * len(batch)
                seen += len(batch)
                if stopping:  # every rank stops after the same step
                    raise hooks.interrupted(state)
            record = {
                "epoch": state.epoch,
                "train_bits_per_code": distributed.sum_over_ranks(nats)
                / max(1, seen * distributed.world_size())
                / math.log(2),
                "val_bits_per_code": held_out_bits(net, loss, data[val], val_labels),
                "threads": tuner.choice if tuner else torch.get_num_threads(),
            }
            state.history.append(record)
            if record["val_bits_per_code"] < state.best_bits:
                state.best_bits, state.best_epoch = record["val_bits_per_code"], state.epoch
                state.best_weights = copy.deepcopy(net.state_dict())
            if progress:
                logger.info(
                    f"{name} epoch {state.epoch}/{state.epochs}  train {record['train_bits_per_code']:.4f} "
                    f"bits/code  | held-out {record['val_bits_per_code']:.4f} bits/code"
                    f"  | {record['threads']} thread{'s' if record['threads'] > 1 else ''}"
                )
            if hooks.on_epoch_end:
                hooks.on_epoch_end(state)
    if state.epochs_without_improvement >= settings.patience and progress:
        logger.info(
            f"stopped early: held-out NLL best at epoch {state.best_epoch} "
            f"({state.best_bits:.4f} bits/code), no better for {settings.patience} epochs"
        )
    if state.best_weights:
        net.load_state_dict(state.best_weights)
    net.eval()
    return state
