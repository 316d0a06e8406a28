"""Stage-1 training: one readable loop over an in-memory image tensor.

Read it top to bottom: settle the device and precision (and fail early on anything wrong), move the
model and the images there once, start a fresh decoder at the images' mean, then for each epoch
shuffle with a seeded generator, step Adam on ``mse(x̂, x) + quantizer loss`` (learning rate from
:mod:`vqtoolkit.schedule`), accumulate per-code counts over the whole epoch (for honest
perplexity), evaluate on the held-out images, log one JSON line and write a checkpoint. A checkpoint
holds everything to continue the run bit for bit (``resume=True``); the first Ctrl-C finishes the
current step, saves one and says how to resume. A NaN or infinite loss stops training with a hint.

Why it is fast on a CPU (docs/training.md has the measurements): the whole dataset is one tensor, so
a batch is one index operation with no per-image Python work, and the quantizer never builds an N×K
one-hot matrix (one ``addmm`` + ``argmin`` finds the codes, an embedding lookup fetches them).
"""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from vqtoolkit import checkpoint, distributed, metrics
from vqtoolkit.atomic import atomic_write
from vqtoolkit.devices import autocast, check_precision, resolve_device
from vqtoolkit.divergence import DivergenceGuard
from vqtoolkit.errors import TrainingError, TrainingInterrupted
from vqtoolkit.model import VQVAE
from vqtoolkit.schedule import DEFAULT_LR, DEFAULT_SCHEDULE, check_schedule, lr_at
from vqtoolkit.streaming import Images, as_tensor, image_batches

log = logging.getLogger(__name__)

EpochCallback = Callable[[dict[str, Any]], None]
#: ``on_step(step, values)``: the step's ``loss``, ``recon``, ``vq`` (detached tensors) and ``lr``.
StepCallback = Callable[[int, dict[str, Any]], None]
#: Training images whose mean the decoder's output starts at (:func:`calibrate_output_mean`).
CALIBRATION_IMAGES = 1024


@torch.inference_mode()
def evaluate_autoencoder(
    model: VQVAE, images: Images, *, batch_size: int = 1024, across_ranks: bool = False
) -> dict[str, float]:
    """Reconstruction MSE/PSNR and code usage of ``model`` on ``images``, counts over all of them.

    ``across_ranks=True`` (every process must call it): each process scores its share of ``images``
    and the counts and errors are summed, so the numbers are those of all images, found W times faster.
    """
    if across_ranks and distributed.is_distributed():
        share = images[distributed.rank() :: distributed.world_size()]
        counts, squared_error = code_counts(model, share, batch_size=batch_size, with_error=True)
        device = next(model.parameters()).device
        totals = torch.cat([counts.double(), torch.tensor([squared_error], dtype=torch.float64)]).to(device)
        distributed.all_reduce_sum_(totals)
        counts, squared_error = totals[:-1].round().long().cpu(), float(totals[-1])
    else:
        counts, squared_error = code_counts(model, images, batch_size=batch_size, with_error=True)
    mse = squared_error / images.numel()
    return {
        "mse": mse,
        "psnr": metrics.psnr(mse),
        "perplexity": metrics.perplexity(counts),
        "codes_used": metrics.codes_used(counts),
    }


@torch.inference_mode()
def code_counts(model: VQVAE, images: Images, *, batch_size: int = 1024, with_error: bool = False) -> Any:
    """How often each code is chosen for ``images`` (K,), and the summed squared error if asked."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    squared_error = 0.0
    counts = torch.zeros(model.quantizer.num_codes, dtype=torch.long, device=device)
    for batch in images.split(batch_size):
        batch = batch.to(device)
        out = model(batch)
        squared_error += float(F.mse_loss(out.reconstruction.float(), batch, reduction="sum"))
        counts += out.quantizer.counts
    model.train(was_training)
    return (counts.cpu(), squared_error) if with_error else counts.cpu()


def train_autoencoder(
    model: VQVAE,
    train_images: Images,
    test_images: Images | None = None,
    *,
    epochs: int,
    batch_size: int = 128,
    lr: float = DEFAULT_LR,
    lr_schedule: str = DEFAULT_SCHEDULE,
    start_at_mean: bool = True,
    seed: int = 0,
    progress: bool = True,
    on_epoch_end: EpochCallback | None = None,
    on_step: StepCallback | None = None,
    device: str | torch.device | None = None,
    precision: str = "32",
    channels_last: bool = False,
    checkpoint_path: str | Path | None = None,
    resume: bool = False,
    log_path: str | Path | None = None,
    allow_divergence: bool = False,
) -> list[dict[str, Any]]:
    """Train ``model`` in place; returns one metrics dict per epoch (also passed to ``on_epoch_end``).

    ``device`` is ``auto``/``cpu``/``cuda[:i]``/``mps`` (``None``: where the model already is);
    ``precision`` is ``32``, ``bf16`` or ``16`` (autocast; the code search stays float32).
    ``lr`` is Adam's peak rate and ``lr_schedule`` its curve (:mod:`vqtoolkit.schedule`): ``cosine``
    (warm-up, then down to zero at the last step of ``epochs``) or ``constant``. ``start_at_mean``
    shifts a fresh run's decoder output to the images' mean first (:func:`calibrate_output_mean`).
    ``checkpoint_path`` gets a checkpoint after every epoch; ``resume=True`` continues from it.
    ``log_path`` gets one JSON line per epoch; ``on_step`` is called after every optimizer step (e.g.
    :class:`~vqtoolkit.tensorboard.TensorBoardLogger`). ``channels_last`` stores images and weights NHWC (it
    measured slower for this small model on CPU, see docs/training.md; try it on a GPU with AMP).

    Under ``torchrun`` (or any initialised process group) the model trains in
    ``DistributedDataParallel``: ``batch_size`` stays the *global* batch, each process takes its
    share of every batch (:func:`vqtoolkit.distributed.shard_batches`), metrics are summed over
    processes, and only rank 0 writes the checkpoint and log (every rank reads the checkpoint to
    resume). Ctrl-C or SIGTERM on any rank stops all of them after the same step. See docs/distributed.md.
    An epoch that diverged (:mod:`vqtoolkit.divergence`) raises
    :class:`~vqtoolkit.errors.TrainingDiverged` unless ``allow_divergence``.
    """
    # -- settle everything that can be wrong before the first step -----------------------------------
    if epochs < 1 or batch_size < 1 or not 0 < lr < float("inf"):  # written so that NaN fails too
        raise TrainingError(f"need epochs >= 1, batch_size >= 1 and lr > 0; got {epochs}, {batch_size}, {lr}")
    check_schedule(lr_schedule)
    if resume and checkpoint_path is None:
        raise TrainingError("resume=True needs a checkpoint_path to resume from")
    device = next(model.parameters()).device if device is None else resolve_device(device)
    device = distributed.init_from_env(device)  # joins torchrun's process group, if launched by it
    main = distributed.is_main()  # rank 0 writes files and shows progress; the others train quietly
    progress = progress and main
    precision = check_precision(precision, device)
    model.check_images(as_tensor(train_images[:1]))
    if test_images is not None:
        model.check_images(as_tensor(test_images[:1]))
    layout = torch.channels_last if channels_last else torch.contiguous_format
    model.to(device)
    model.to(memory_format=layout)
    train_images = train_images.to(device=device, memory_format=layout)
    test_images = None if test_images is None else test_images.to(device=device, memory_format=layout)

    generator = torch.Generator().manual_seed(seed)  # shuffling on the CPU: the same order on any device
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "16")  # float16 gradients underflow
    settings = {
        "model": checkpoint.describe_model(model),
        "batch_size": batch_size,
        "lr": lr,
        "lr_schedule": lr_schedule,
        "seed": seed,
        "precision": precision,
        "train_images": list(train_images.shape),
    }
    save_checkpoint = checkpoint_writer(checkpoint_path if main else None, model, optimizer, scaler, settings)
    if resume and checkpoint_path is not None:  # resume without a path was refused above
        position = checkpoint.load(
            Path(checkpoint_path), model=model, optimizer=optimizer, scaler=scaler, settings=settings
        )
        if position.epoch - 1 > epochs:  # == epochs: stage 1 is done, the loop below is skipped
            raise TrainingError(
                f"{checkpoint_path} already holds {position.epoch - 1} trained epochs; ask for at least "
                f"{position.epoch - 1} (--epochs) to resume it"
            )
        generator.set_state(position.shuffle_state)
    else:
        position = checkpoint.Position(epoch=1, batches_done=0, step=0, shuffle_state=generator.get_state())
        if start_at_mean:
            calibrate_output_mean(model, as_tensor(train_images[:CALIBRATION_IMAGES]).to(device))
    history = position.history
    guard = DivergenceGuard(train_images, test_images, lr=lr, allow=allow_divergence)
    step = position.step
    total_steps = epochs * distributed.batches_per_epoch(len(train_images), batch_size)
    sum_dtype = torch.float32 if device.type == "mps" else torch.float64  # MPS has no float64
    log_path = log_path if main else None
    write_log(log_path, history)
    network = distributed.wrap(model, device)  # DDP across processes; the model itself in one

    # -- the loop ------------------------------------------------------------------------------------
    model.train()
    with stop_requests(enabled=checkpoint_path is not None) as stop:
        for epoch in range(position.epoch, epochs + 1):
            shuffle_state = generator.get_state()
            order = torch.randperm(len(train_images), generator=generator).to(device)
            batches = distributed.shard_batches(order, batch_size)  # all of them in one process
            resuming = epoch == position.epoch and position.batches_done > 0
            first = position.batches_done if resuming else 0
            # a checkpoint's partial sums are over all ranks: rank 0 resumes them, the others restart at 0
            partial = position.partial if resuming and main else {"recon": 0.0, "vq": 0.0, "seconds": 0.0}
            counts = (
                position.counts
                if resuming and main and position.counts is not None
                else torch.zeros(model.quantizer.num_codes, dtype=torch.long, device=device)
            )
            # running sums stay tensors (no sync per step) and restart from the saved values on resume,
            # so a resumed epoch adds in exactly the same order as an uninterrupted one
            recon_sum = torch.tensor(partial["recon"], dtype=sum_dtype, device=device)
            vq_sum = torch.tensor(partial["vq"], dtype=sum_dtype, device=device)
            started = time.perf_counter()
            bar = tqdm(
                range(first, len(batches)),
                desc=f"stage 1 · epoch {epoch}/{epochs}",
                unit="batch",
                initial=first,
                total=len(batches),
                disable=not progress,
                leave=False,
                dynamic_ncols=True,
            )
            # in memory: one index operation per batch; streamed: DataLoader workers read ahead
            for i, x in zip(bar, image_batches(train_images, batches[first:]), strict=True):
                x = x.to(device, non_blocking=True, memory_format=layout)
                with autocast(device, precision):
                    out = network(x)
                    recon_loss = F.mse_loss(out.reconstruction.float(), x)
                    loss = recon_loss + out.quantizer.loss.float()
                step += 1
                if not torch.isfinite(loss):
                    raise TrainingError(
                        f"loss became {float(loss.detach())} at step {step} (epoch {epoch}): lower "
                        f"the learning rate (--lr, now {lr}), check the images for NaN/Inf, "
                        f"or try a smaller --beta"
                    )
                optimizer.zero_grad(set_to_none=True)
                for group in optimizer.param_groups:
                    group["lr"] = lr_at(step - 1, total_steps, lr, lr_schedule)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                counts += out.quantizer.counts
                recon_sum += recon_loss.detach() * len(x)
                vq_sum += out.quantizer.loss.detach() * len(x)
                if on_step is not None:
                    losses = {
                        "loss": loss.detach(),
                        "recon": recon_loss.detach(),
                        "vq": out.quantizer.loss.detach(),
                    }
                    on_step(step, {**losses, "lr": optimizer.param_groups[0]["lr"]})
                if distributed.any_rank(stop.requested):  # Ctrl-C/SIGTERM: save, say how to go on
                    distributed.all_reduce_sum_(recon_sum, vq_sum, counts)
                    seconds = partial["seconds"] + time.perf_counter() - started
                    sums = {"recon": float(recon_sum), "vq": float(vq_sum), "seconds": seconds}
                    here = checkpoint.Position(epoch, i + 1, step, shuffle_state, history, sums, counts)
                    save_checkpoint(here)
                    distributed.barrier()  # the checkpoint is complete before any rank exits
                    raise TrainingInterrupted(
                        f"interrupted at epoch {epoch}, batch {i + 1}/{len(batches)}; checkpoint saved to "
                        f"{checkpoint_path}. Run the same command with --resume to continue."
                    )
            seconds = partial["seconds"] + time.perf_counter() - started
            distributed.all_reduce_sum_(recon_sum, vq_sum, counts)  # epoch metrics over every rank's share
            seen = sum(len(b) for b in batches) * distributed.world_size()  # len(train_images) in one process
            record: dict[str, Any] = {
                "epoch": epoch,
                "step": step,
                "train_recon": float(recon_sum) / seen,
                "train_vq": float(vq_sum) / seen,
                "train_perplexity": metrics.perplexity(counts),
                "train_codes_used": metrics.codes_used(counts),
                "train_dead_codes": metrics.dead_codes(counts),
                "seconds": seconds,
                "images_per_s": len(train_images) / max(seconds, 1e-9),
            }
            if test_images is not None:
                scores = evaluate_autoencoder(model, test_images, across_ranks=True)
                record.update({f"test_{k}": v for k, v in scores.items()})
            guard.check(record, history)
            history.append(record)
            save_checkpoint(checkpoint.Position(epoch + 1, 0, step, generator.get_state(), history))
            write_log(log_path, history)
            if progress:
                log.info(format_epoch(record, epochs))
            if on_epoch_end is not None:
                on_epoch_end(record)
    model.to(memory_format=torch.contiguous_format)  # channels-last is a training-time layout only
    model.eval()
    return history


@torch.no_grad()
def calibrate_output_mean(model: VQVAE, images: Tensor) -> None:
    """Shift the decoder's pre-sigmoid bias so its mean output per channel matches ``images``'.

    A fresh decoder outputs ~0.5 everywhere; on mostly-dark images (MNIST's mean is 0.13) the first
    Adam steps then drag every pixel down together, overshoot, and can leave the sigmoid saturated
    near 0 where it no longer learns: seen on MNIST even at the tutorial's 1e-3 (recovered) and fatal
    at higher rates. Starting at the mean removes that first push. On a trained model the shift is
    ~0. Decoders without :meth:`~vqtoolkit.decoders.base.Decoder.output_logit_bias` are left alone.
    """
    bias = model.decoder.output_logit_bias()
    if bias is None:
        return
    was_training = model.training
    model.eval()  # eval: the quantizer neither initialises nor updates its codebook here
    per_channel = (0, *range(2, images.ndim))
    output = model(images).reconstruction.float().mean(dim=per_channel)
    target = images.float().mean(dim=per_channel)
    bias += (torch.logit(target.clamp(1e-3, 1 - 1e-3)) - torch.logit(output.clamp(1e-3, 1 - 1e-3))).to(bias)
    model.train(was_training)


def checkpoint_writer(
    path: str | Path | None,
    model: VQVAE,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    settings: dict[str, Any],
) -> Callable[[checkpoint.Position], None]:
    """``save(position)`` writing this run's checkpoint, or a no-op without a ``path``."""

    def save(position: checkpoint.Position) -> None:
        if path is not None:
            checkpoint.save(
                Path(path),
                model=model,
                optimizer=optimizer,
                scaler=scaler,
                position=position,
                settings=settings,
            )

    return save


def write_log(path: str | Path | None, records: list[dict[str, Any]]) -> None:
    """Metrics as JSON lines (one per epoch), rewritten whole and atomically from the history so far."""
    if path is not None:
        atomic_write(Path(path), "".join(json.dumps(record) + "\n" for record in records).encode())


class _StopFlag:
    requested = False


#: Signals that ask training to stop cleanly: Ctrl-C, and SIGTERM (sent by torchrun, SLURM and kill).
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def stop_requests(*, enabled: bool) -> Iterator[_StopFlag]:
    """Turn the first Ctrl-C or SIGTERM into a request to stop cleanly.

    While active, the first signal only sets ``requested`` (the loop saves and stops after the step,
    on every rank at once under torchrun, which forwards the signal to each process); a second one
    interrupts at once. Signal handlers exist only in the main thread.
    """
    flag = _StopFlag()
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum: int, frame: Any) -> None:
        if flag.requested:
            raise KeyboardInterrupt
        flag.requested = True
        if distributed.is_main():
            name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
            log.warning(f"{name}: finishing this step and saving a checkpoint (press Ctrl-C to stop at once)")

    previous = {signum: signal.signal(signum, handler) for signum in STOP_SIGNALS}
    try:
        yield flag
    finally:
        for signum, before in previous.items():
            signal.signal(signum, before)


def format_epoch(record: dict[str, Any], epochs: int) -> str:
    """One human line per epoch."""
    line = (
        f"epoch {record['epoch']}/{epochs}  recon {record['train_recon']:.5f}  "
        f"vq {record['train_vq']:.5f}  perplexity {record['train_perplexity']:.1f}  "
        f"codes {record['train_codes_used']}  {record['images_per_s']:.0f} img/s"
    )
    if "test_mse" in record:
        line += (
            f"  | test mse {record['test_mse']:.5f}  perplexity {record['test_perplexity']:.1f}  "
            f"codes {record['test_codes_used']}"
        )
    return line
