"""Scoring a stage-1 model: reconstruction error and code usage over a whole image set."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from vqtoolkit._util.modes import eval_mode
from vqtoolkit.data.streaming import Images
from vqtoolkit.model.vqvae import VQVAE
from vqtoolkit.runtime import distributed
from vqtoolkit.scoring import metrics


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
    device = next(model.parameters()).device
    squared_error = 0.0
    counts = torch.zeros(model.quantizer.num_codes, dtype=torch.long, device=device)
    with eval_mode(model):
        for batch in images.split(batch_size):
            batch = batch.to(device)
            out = model(batch)
            squared_error += float(F.mse_loss(out.reconstruction.float(), batch, reduction="sum"))
            counts += out.quantizer.counts
    return (counts.cpu(), squared_error) if with_error else counts.cpu()
