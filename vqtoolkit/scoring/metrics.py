"""Metrics on one scale for every component: reconstruction, code usage, prior likelihood, samples.

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
    """How many codes were never chosen in ``counts`` (of a batch, an epoch or a test set)."""
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


def classifier_score(probs: Tensor) -> float:
    """``exp(E_x[KL(p(y|x) || p(y))])`` of class probabilities ``(N, classes)`` (Inception-score analogue).

    High when every image is classified confidently and the classes are used evenly; at most the
    number of classes, 1 for images that all look alike or that the classifier cannot place.
    """
    p = probs.double().clamp_min(1e-12)
    marginal = p.mean(0, keepdim=True)
    kl = (p * (p.log() - marginal.log())).sum(1)
    return float(kl.mean().exp())


def _sqrtm_psd(matrix: Tensor) -> Tensor:
    """Symmetric square root of a symmetric positive semi-definite matrix (negative round-off clipped)."""
    values, vectors = torch.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * values.clamp_min(0).sqrt()) @ vectors.T


def frechet_distance(features_a: Tensor, features_b: Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets ``(N, D)`` and ``(M, D)``.

    ``|μa − μb|² + tr Σa + tr Σb − 2 tr (Σa^½ Σb Σa^½)^½`` in float64, with both square roots taken
    by symmetric eigendecompositions, so it stays real and non-negative for singular covariances.
    """
    a, b = features_a.double(), features_b.double()
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"the Fréchet distance needs at least 2 vectors per set; got {len(a)} and {len(b)}")
    mean_a, mean_b = a.mean(0), b.mean(0)
    cov_a, cov_b = torch.cov(a.T).reshape(a.shape[1], -1), torch.cov(b.T).reshape(b.shape[1], -1)
    root_a = _sqrtm_psd(cov_a)
    cross = torch.linalg.eigvalsh(root_a @ cov_b @ root_a).clamp_min(0).sqrt().sum()
    distance = (mean_a - mean_b).square().sum() + cov_a.trace() + cov_b.trace() - 2 * cross
    return max(0.0, float(distance))


def label_accuracy(probs: Tensor, labels: Tensor) -> float:
    """Share of images whose most likely class is the one in ``labels``."""
    return float((probs.argmax(1) == labels.to(probs.device)).double().mean())
