"""Stage-1 training: one readable loop over an in-memory (or streamed) image tensor.

:func:`train_autoencoder` reads top to bottom: :func:`prepare` settles the device and precision
(failing early on anything wrong) and moves the model and images there once; :func:`starting_point`
either restores a checkpoint or starts afresh at the images' mean; then each epoch
(:func:`train_epoch`) shuffles with a seeded generator and steps Adam on ``mse(x̂, x) + quantizer
loss`` (or the VQGAN recipe's, :mod:`vqtoolkit.training.objective`) at the rate of
:mod:`vqtoolkit.runtime.schedule`, counting codes over the whole epoch for an honest perplexity.
After each epoch the held-out images are scored, a JSON line is logged and a checkpoint is written
that continues the run bit for bit. The first Ctrl-C finishes the current step, saves one and says
how to resume; a NaN or infinite loss stops training with a hint.

The whole dataset is one tensor, so a batch is one index operation with no per-image Python work
(docs/training.md has the measurements).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from vqtoolkit._util.modes import eval_mode
from vqtoolkit.data.datasets import DEFAULT_BATCH_SIZE
from vqtoolkit.data.streaming import Images, as_tensor, image_batches
from vqtoolkit.errors import ConfigError, TrainingError, TrainingInterrupted
from vqtoolkit.model.vqvae import VQVAE
from vqtoolkit.runtime import distributed
from vqtoolkit.runtime.devices import autocast, check_precision, resolve_device
from vqtoolkit.runtime.schedule import lr_at
from vqtoolkit.runtime.step import AgreedStep
from vqtoolkit.runtime.stopping import StopFlag, stop_requests
from vqtoolkit.scoring import metrics
from vqtoolkit.storage import checkpoint
from vqtoolkit.training.config import TrainConfig
from vqtoolkit.training.divergence import DivergenceGuard
from vqtoolkit.training.evaluation import evaluate_autoencoder
from vqtoolkit.training.objective import Objective
from vqtoolkit.training.records import format_epoch, write_log

log = logging.getLogger(__name__)

EpochCallback = Callable[[dict[str, Any]], None]
#: ``on_step(step, values)``: the step's ``loss``, ``recon``, ``vq`` (detached tensors) and ``lr``.
StepCallback = Callable[[int, dict[str, Any]], None]
#: Training images whose mean the decoder's output starts at (:func:`calibrate_output_mean`).
CALIBRATION_IMAGES = 1024


def train_autoencoder(
    model: VQVAE,
    train_images: Images,
    test_images: Images | None = None,
    config: TrainConfig | None = None,
    *,
    on_epoch_end: EpochCallback | None = None,
    on_step: StepCallback | None = None,
    **options: Any,
) -> list[dict[str, Any]]:
    """Train ``model`` in place; returns one metrics dict per epoch (also passed to ``on_epoch_end``).

    ``config`` holds the options (:class:`~vqtoolkit.training.config.TrainConfig`); keyword ``options``
    replace its fields, so ``train_autoencoder(model, images, epochs=2, lr=1e-3)`` works too.
    ``on_step(step, values)`` is called after every optimizer step (e.g.
    :class:`~vqtoolkit.training.tensorboard.TensorBoardLogger`).

    Under ``torchrun`` (or any initialised process group) the model trains in
    ``DistributedDataParallel``: ``batch_size`` stays the *global* batch, each process takes its
    share of every batch (:func:`vqtoolkit.runtime.distributed.shard_batches`), metrics are summed over
    processes, and only rank 0 writes the checkpoint and log (every rank reads the checkpoint to
    resume). Ctrl-C or SIGTERM on any rank stops all of them after the same step. See docs/distributed.md.
    An epoch that diverged (:mod:`vqtoolkit.training.divergence`) raises
    :class:`~vqtoolkit.errors.TrainingDiverged` unless ``allow_divergence``.
    """
    config = TrainConfig.of(config, **options)
    if config.epochs is None:
        raise ConfigError("train_autoencoder needs epochs (>= 1)")
    run = prepare(model, train_images, test_images, config)
    start = starting_point(run)
    write_log(run.log_path, run.history)
    model.train()
    with stop_requests(enabled=config.checkpoint_path is not None) as stop:
        for epoch in range(start.epoch, run.epochs + 1):
            tally = start.tally if epoch == start.epoch else Tally.zero(run)
            record = train_epoch(run, epoch, tally, stop, on_step)
            if run.test_images is not None:
                scores = evaluate_autoencoder(model, run.test_images, across_ranks=True)
                record.update({f"test_{k}": v for k, v in scores.items()})
            run.guard.check(record, run.history, agree=distributed.any_rank)  # all ranks raise, or none
            run.history.append(record)
            run.save(epoch + 1, 0, run.generator.get_state())
            write_log(run.log_path, run.history)
            if run.progress:
                log.info(format_epoch(record, run.epochs))
            if on_epoch_end is not None:
                on_epoch_end(record)
    model.to(memory_format=torch.contiguous_format)  # channels-last is a training-time layout only
    model.eval()
    return run.history


@dataclass
class Run:
    """What every epoch of one run shares, settled by :func:`prepare` before the first step."""

    model: VQVAE
    network: torch.nn.Module  # the model, or its DDP wrapper across processes
    config: TrainConfig
    epochs: int
    batch_size: int  # the config's, or DEFAULT_BATCH_SIZE where it has none
    device: torch.device
    precision: str
    layout: torch.memory_format
    train_images: Images
    test_images: Images | None
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    stepper: AgreedStep  # backward, the agreement across ranks, the update
    objective: Objective  # the loss (and the VQGAN recipe's discriminator, when it is on)
    generator: torch.Generator  # shuffling, on the CPU: the same order on any device
    guard: DivergenceGuard
    progress: bool  # rank 0 shows progress and writes files; the others train quietly
    log_path: Path | None
    checkpoint_path: Path | None
    fingerprint: dict[str, Any]  # what a checkpoint must match to be resumed
    step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def total_steps(self) -> int:
        """Optimizer steps over all ``epochs`` (the learning-rate schedule's length)."""
        return self.epochs * distributed.batches_per_epoch(len(self.train_images), self.batch_size)

    def save(self, epoch: int, batches_done: int, shuffle_state: Tensor, tally: Tally | None = None) -> None:
        """Write the checkpoint of this run's current state (rank 0, and only with a checkpoint path)."""
        if self.checkpoint_path is None:
            return
        partial = {} if tally is None else tally.sums()
        counts = None if tally is None else tally.counts
        position = checkpoint.Position(
            epoch, batches_done, self.step, shuffle_state, self.history, partial, counts
        )
        checkpoint.save(
            self.checkpoint_path,
            model=self.model,
            optimizer=self.optimizer,
            scaler=self.scaler,
            position=position,
            fingerprint=self.fingerprint,
            discriminator=self.objective.trainable(),
        )


def prepare(model: VQVAE, train_images: Images, test_images: Images | None, config: TrainConfig) -> Run:
    """Check everything that can be wrong, then ready the model and images on the device, once.

    A fresh run (not resuming) starts the decoder's output at the images' mean first.
    """
    assert config.epochs is not None  # checked by the caller
    device = next(model.parameters()).device if config.device is None else resolve_device(config.device)
    device = distributed.init_from_env(device)  # joins torchrun's process group, if launched by it
    main = distributed.is_main()
    precision = check_precision(config.precision, device)
    model.check_images(as_tensor(train_images[:1]))
    if test_images is not None:
        model.check_images(as_tensor(test_images[:1]))
    layout = torch.channels_last if config.channels_last else torch.contiguous_format
    model.to(device)
    model.to(memory_format=layout)
    train_images = train_images.to(device=device, memory_format=layout)
    test_images = None if test_images is None else test_images.to(device=device, memory_format=layout)
    if config.start_at_mean and not config.resume:
        calibrate_output_mean(model, as_tensor(train_images[:CALIBRATION_IMAGES]).to(device))
    batch_size = DEFAULT_BATCH_SIZE if config.batch_size is None else config.batch_size
    objective = Objective(model, config, device, precision)
    fingerprint: dict[str, Any] = {}
    if config.checkpoint_path is not None:
        fingerprint = {
            "model": checkpoint.describe_model(model),
            "batch_size": batch_size,
            "lr": config.lr,
            "lr_schedule": config.lr_schedule,
            "seed": config.seed,
            "precision": precision,
            "train_images": list(train_images.shape),
            **objective.fingerprint(),  # empty for the plain loss: older checkpoints still resume
        }
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "16")  # float16 gradients underflow
    return Run(
        model=model,
        network=distributed.wrap(model, device),
        config=config,
        epochs=config.epochs,
        batch_size=batch_size,
        device=device,
        precision=precision,
        layout=layout,
        train_images=train_images,
        test_images=test_images,
        optimizer=optimizer,
        scaler=scaler,
        stepper=AgreedStep(optimizer, scaler),
        objective=objective,
        generator=torch.Generator().manual_seed(config.seed),
        guard=DivergenceGuard(train_images, test_images, lr=config.lr, allow=config.allow_divergence),
        progress=config.progress and main,
        log_path=config.log_path if main else None,
        checkpoint_path=config.checkpoint_path if main else None,
        fingerprint=fingerprint,
    )


@dataclass
class Tally:
    """One epoch's running sums: kept as tensors (no sync per step), saved in a mid-epoch checkpoint."""

    recon: Tensor
    vq: Tensor
    counts: Tensor
    extra: dict[str, Tensor]  # the objective's own sums (:meth:`Objective.sum_names`)
    seconds: float = 0.0  # time spent on this epoch before the run was interrupted
    batches_done: int = 0

    @classmethod
    def zero(cls, run: Run) -> Tally:
        """An epoch not yet started."""
        dtype = torch.float32 if run.device.type == "mps" else torch.float64  # MPS has no float64
        counts = torch.zeros(run.model.quantizer.num_codes, dtype=torch.long, device=run.device)
        return cls(
            recon=torch.zeros((), dtype=dtype, device=run.device),
            vq=torch.zeros((), dtype=dtype, device=run.device),
            counts=counts,
            extra={k: torch.zeros((), dtype=dtype, device=run.device) for k in run.objective.sum_names()},
        )

    def sums(self) -> dict[str, float]:
        """The sums as a checkpoint stores them."""
        extra = {k: float(v) for k, v in self.extra.items()}
        return {"recon": float(self.recon), "vq": float(self.vq), "seconds": self.seconds, **extra}


@dataclass
class Start:
    """Where the loop begins: the first epoch and what of it is already done."""

    epoch: int
    tally: Tally


def starting_point(run: Run) -> Start:
    """Restore the checkpoint when resuming, else start at the first epoch.

    A checkpoint's partial sums are over all ranks: rank 0 resumes them, the others restart at 0,
    so a resumed epoch adds in exactly the same order as an uninterrupted one.
    """
    config = run.config
    tally = Tally.zero(run)
    if not config.resume:
        return Start(1, tally)
    assert config.checkpoint_path is not None  # TrainConfig refuses resume without one
    position = checkpoint.load(
        config.checkpoint_path,
        model=run.model,
        optimizer=run.optimizer,
        scaler=run.scaler,
        fingerprint=run.fingerprint,
        discriminator=run.objective.trainable(),
    )
    if position.epoch - 1 > run.epochs:  # == epochs: stage 1 is done, the loop is skipped
        raise TrainingError(
            f"{config.checkpoint_path} already holds {position.epoch - 1} trained epochs; ask for at least "
            f"{position.epoch - 1} (--epochs) to resume it"
        )
    run.generator.set_state(position.shuffle_state)
    run.step, run.history = position.step, position.history
    tally.batches_done = position.batches_done
    if position.batches_done > 0 and distributed.is_main():
        tally.recon.fill_(position.partial["recon"])
        tally.vq.fill_(position.partial["vq"])
        tally.seconds = position.partial["seconds"]
        for name, value in tally.extra.items():
            value.fill_(position.partial[name])
        if position.counts is not None:
            tally.counts = position.counts
    return Start(position.epoch, tally)


def train_epoch(
    run: Run, epoch: int, tally: Tally, stop: StopFlag, on_step: StepCallback | None
) -> dict[str, Any]:
    """One pass over the shuffled images (from ``tally.batches_done`` on); returns the epoch's metrics."""
    shuffle_state = run.generator.get_state()
    order = torch.randperm(len(run.train_images), generator=run.generator).to(run.device)
    batches = distributed.shard_batches(order, run.batch_size)  # all of them in one process
    first = tally.batches_done
    started = time.perf_counter()
    bar = tqdm(
        range(first, len(batches)),
        desc=f"stage 1 · epoch {epoch}/{run.epochs}",
        unit="batch",
        initial=first,
        total=len(batches),
        disable=not run.progress,
        leave=False,
        dynamic_ncols=True,
    )
    # in memory: one index operation per batch; streamed: DataLoader workers read ahead
    for i, x in zip(bar, image_batches(run.train_images, batches[first:]), strict=True):
        x = x.to(run.device, non_blocking=True, memory_format=run.layout)
        stopping = train_step(run, x, epoch, tally, stop, on_step)
        if stopping:  # Ctrl-C/SIGTERM on any rank: save, say how to go on
            distributed.all_reduce_sum_(tally.recon, tally.vq, tally.counts, *tally.extra.values())
            tally.seconds += time.perf_counter() - started
            run.save(epoch, i + 1, shuffle_state, tally)
            distributed.barrier()  # the checkpoint is complete before any rank exits
            raise TrainingInterrupted(
                f"interrupted at epoch {epoch}, batch {i + 1}/{len(batches)}; checkpoint saved to "
                f"{run.config.checkpoint_path}. Run the same command with --resume to continue."
            )
    seconds = tally.seconds + time.perf_counter() - started
    distributed.all_reduce_sum_(tally.recon, tally.vq, tally.counts, *tally.extra.values())  # all ranks
    seen = sum(len(b) for b in batches) * distributed.world_size()  # len(train_images) in one process
    return {
        "epoch": epoch,
        "step": run.step,
        "train_recon": float(tally.recon) / seen,
        "train_vq": float(tally.vq) / seen,
        "train_perplexity": metrics.perplexity(tally.counts),
        "train_codes_used": metrics.codes_used(tally.counts),
        "train_dead_codes": metrics.dead_codes(tally.counts),
        **run.objective.summary(tally.extra, seen, epoch),
        "seconds": seconds,
        "images_per_s": len(run.train_images) / max(seconds, 1e-9),
    }


def train_step(
    run: Run, x: Tensor, epoch: int, tally: Tally, stop: StopFlag, on_step: StepCallback | None
) -> bool:
    """One Adam step on the objective's loss + the quantizer's at the schedule's rate; adds to ``tally``.

    Returns whether any rank was asked to stop (``stop``): agreed over ranks in the same collective as
    the check for a non-finite loss, so every rank raises or stops after the same step.
    """
    # across processes the quantizer's codebook sums and the flags below travel while the
    # backward pass runs; the codebook update lands when the block ends (before the next step)
    with distributed.overlapped_sums():
        with autocast(run.device, run.precision):
            out = run.network(x)
            terms = run.objective.generator(x, out.reconstruction, run.step)
            loss, recon_loss = terms.loss + out.quantizer.loss.float(), terms.mse
        run.step += 1
        lr = lr_at(run.step - 1, run.total_steps, run.config.lr, run.config.lr_schedule)
        run.stepper.backward(loss, lr=lr, stop_requested=stop.requested)
    stopping = run.stepper.finish(
        lambda value: (
            f"loss became {value} at step {run.step} (epoch {epoch}): lower the learning rate "
            f"(--lr, now {run.config.lr}), check the images for NaN/Inf, or try a smaller --beta"
        )
    )
    logged = run.objective.after_step(
        x, out.reconstruction, terms, tally.extra, step=run.step - 1, total=run.total_steps
    )
    tally.counts += out.quantizer.counts
    tally.recon += recon_loss.detach() * len(x)
    tally.vq += out.quantizer.loss.detach() * len(x)
    if on_step is not None:
        losses = {"loss": loss.detach(), "recon": recon_loss.detach(), "vq": out.quantizer.loss.detach()}
        on_step(run.step, {**losses, **logged, "lr": run.optimizer.param_groups[0]["lr"]})
    return stopping


@torch.no_grad()
def calibrate_output_mean(model: VQVAE, images: Tensor) -> None:
    """Shift the decoder's pre-sigmoid bias so its mean output per channel matches ``images``'.

    A fresh decoder outputs ~0.5 everywhere; on mostly-dark images (MNIST's mean is 0.13) the first
    Adam steps then drag every pixel down together, overshoot, and can leave the sigmoid saturated
    near 0 where it no longer learns (docs/training.md). Starting at the mean removes that first
    push. On a trained model the shift is ~0. Decoders without
    :meth:`~vqtoolkit.decoders.base.Decoder.output_logit_bias` are left alone.
    """
    bias = model.decoder.output_logit_bias()
    if bias is None:
        return
    per_channel = (0, *range(2, images.ndim))
    with eval_mode(model):  # eval: the quantizer neither initialises nor updates its codebook here
        output = model(images).reconstruction.float().mean(dim=per_channel)
    target = images.float().mean(dim=per_channel)
    bias += (torch.logit(target.clamp(1e-3, 1 - 1e-3)) - torch.logit(output.clamp(1e-3, 1 - 1e-3))).to(bias)
