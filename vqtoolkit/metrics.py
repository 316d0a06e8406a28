"""Metrics on one scale for every component: reconstruction, code usage and prior likelihood.

Code-usage metrics take per-code *counts* accumulated over a whole epoch or test set, never a
mean of per-batch values: a per-batch perplexity depends on the batch size and misleads.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def perplexity(counts: Tensor) -> float:
    """``exp(H(p))`` of the code distribution given by per-code ``counts`` (K,)."""
    total = counts.sum()
    if total == 0:
        return 0.0
    p = counts.double() / total
    return float(torch.exp(-(p * torch.log(p.clamp_min(1e-30))).sum()))


def codes_used(counts: Tensor) -> int:
    """How many codes were chosen at least once."""
    return int((counts > 0).sum())


def dead_codes(counts: Tensor) -> int:
    """How many codes were never chosen."""
    return int((counts == 0).sum())


def mse(reconstruction: Tensor, target: Tensor) -> float:
    """Mean squared error over every pixel."""
    return float(F.mse_loss(reconstruction.float(), target.float()))


def psnr(mean_squared_error: float, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB for images in ``[0, data_range]``."""
    if mean_squared_error <= 0:
        return math.inf
    return 10.0 * math.log10(data_range**2 / mean_squared_error)


def bits_per_code(total_nll_nats: float, num_codes_scored: int) -> float:
    """Negative log-likelihood in bits per code position, the scale every index prior reports."""
    return total_nll_nats / (num_codes_scored * math.log(2))
