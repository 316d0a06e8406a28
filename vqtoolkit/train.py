"""Stage-1 training: one readable loop over an in-memory image tensor.

Each epoch shuffles with a seeded generator, steps Adam on ``mse(x̂, x) + quantizer loss``,
accumulates per-code counts over the whole epoch (for honest perplexity) and evaluates on the
held-out images. A NaN or infinite loss stops training with the step number and a hint.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from vqtoolkit import metrics
from vqtoolkit.errors import TrainingError
from vqtoolkit.model import VQVAE

EpochCallback = Callable[[dict[str, Any]], None]


@torch.inference_mode()
def evaluate_autoencoder(model: VQVAE, images: Tensor, *, batch_size: int = 1024) -> dict[str, float]:
    """Reconstruction MSE/PSNR and code usage of ``model`` on ``images``, counts over all of them."""
    was_training = model.training
    model.eval()
    squared_error = 0.0
    counts = torch.zeros(model.quantizer.num_codes, dtype=torch.long, device=images.device)
    for batch in images.split(batch_size):
        out = model(batch)
        squared_error += float(F.mse_loss(out.reconstruction, batch, reduction="sum"))
        counts += out.quantizer.counts
    model.train(was_training)
    mse = squared_error / images.numel()
    return {
        "mse": mse,
        "psnr": metrics.psnr(mse),
        "perplexity": metrics.perplexity(counts),
        "codes_used": metrics.codes_used(counts),
    }


def train_autoencoder(
    model: VQVAE,
    train_images: Tensor,
    test_images: Tensor | None = None,
    *,
    epochs: int,
    batch_size: int = 128,
    lr: float = 1e-3,
    seed: int = 0,
    progress: bool = True,
    on_epoch_end: EpochCallback | None = None,
) -> list[dict[str, Any]]:
    """Train ``model`` in place; returns one metrics dict per epoch (also passed to ``on_epoch_end``)."""
    if epochs < 1 or batch_size < 1 or lr <= 0:
        raise TrainingError(f"need epochs >= 1, batch_size >= 1 and lr > 0; got {epochs}, {batch_size}, {lr}")
    model.check_images(train_images[:1])
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    history: list[dict[str, Any]] = []
    step = 0
    model.train()
    for epoch in range(1, epochs + 1):
        order = torch.randperm(len(train_images), generator=generator).to(train_images.device)
        counts = torch.zeros(model.quantizer.num_codes, dtype=torch.long, device=train_images.device)
        recon_sum = vq_sum = 0.0
        bar = tqdm(order.split(batch_size), desc=f"stage 1 · epoch {epoch}/{epochs}", unit="batch",
                   disable=not progress, leave=False, dynamic_ncols=True)
        for batch_index in bar:
            x = train_images[batch_index]
            out = model(x)
            recon_loss = F.mse_loss(out.reconstruction, x)
            loss = recon_loss + out.quantizer.loss
            step += 1
            if not torch.isfinite(loss):
                raise TrainingError(
                    f"loss became {float(loss.detach())} at step {step} (epoch {epoch}): lower the learning "
                    f"rate (--lr, now {lr}), check the images for NaN/Inf, or try --beta smaller"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            counts += out.quantizer.counts
            recon_sum += float(recon_loss.detach()) * len(x)
            vq_sum += float(out.quantizer.loss.detach()) * len(x)
        record: dict[str, Any] = {
            "epoch": epoch,
            "step": step,
            "train_recon": recon_sum / len(train_images),
            "train_vq": vq_sum / len(train_images),
            "train_perplexity": metrics.perplexity(counts),
            "train_codes_used": metrics.codes_used(counts),
        }
        if test_images is not None:
            record.update({f"test_{k}": v for k, v in evaluate_autoencoder(model, test_images).items()})
        history.append(record)
        if progress:
            tqdm.write(format_epoch(record, epochs))
        if on_epoch_end is not None:
            on_epoch_end(record)
    model.eval()
    return history


def format_epoch(record: dict[str, Any], epochs: int) -> str:
    """One human line per epoch."""
    line = (f"epoch {record['epoch']}/{epochs}  recon {record['train_recon']:.5f}  "
            f"vq {record['train_vq']:.5f}  perplexity {record['train_perplexity']:.1f}  "
            f"codes {record['train_codes_used']}")
    if "test_mse" in record:
        line += f"  | test mse {record['test_mse']:.5f}  perplexity {record['test_perplexity']:.1f}  codes {record['test_codes_used']}"
    return line
