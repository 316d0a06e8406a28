"""Codebook health: the small pieces that keep every code in use.

* :func:`kmeans` - a vectorised Lloyd's k-means on the first batch, so codes start where the data is;
* :func:`ema_update_` - the exponential-moving-average codebook update (van den Oord et al., 2017,
  appendix; Sonnet's ``VectorQuantizerEMA``) with Laplace smoothing of the cluster sizes;
* :func:`smoothed_sizes` - that smoothing on its own.

Dead-code revival and the bookkeeping around these live in the quantizer that uses them
(:class:`vqtoolkit.quantize.vq.VectorQuantizer`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from vqtoolkit.quantize.core import nearest_codes


@torch.no_grad()
def kmeans(x: Tensor, k: int, iters: int, *, chunk_bytes: int) -> tuple[Tensor, Tensor]:
    """``(centres (k, D), sizes (k,))`` of ``iters`` Lloyd steps on rows ``x`` ``(N, D)``.

    Starts from ``k`` random rows (with replacement when ``N < k``); a centre that loses all its
    points keeps its place. ``iters = 0`` just returns the random rows, sizes one each.
    """
    n = x.shape[0]
    pick = torch.randperm(n, device=x.device)[:k] if n >= k else torch.randint(n, (k,), device=x.device)
    centres = x[pick].clone()
    sizes = torch.ones(k, dtype=x.dtype, device=x.device)
    for _ in range(iters):
        assign = nearest_codes(x, centres, chunk_bytes=chunk_bytes)
        sizes = torch.bincount(assign, minlength=k).to(x.dtype)
        sums = torch.zeros_like(centres).index_add_(0, assign, x)
        centres = torch.where(sizes[:, None] > 0, sums / sizes.clamp_min(1)[:, None], centres)
    return centres, sizes


def smoothed_sizes(cluster_size: Tensor, eps: float) -> Tensor:
    """Laplace-smoothed cluster sizes ``(n_k + ε) / (n + Kε) · n``: never zero, same total ``n``."""
    total = cluster_size.sum()
    return (cluster_size + eps) / (total + cluster_size.numel() * eps) * total


@torch.no_grad()
def ema_update_(
    weight: Tensor,
    cluster_size: Tensor,
    embed_sum: Tensor,
    counts: Tensor,
    sums: Tensor,
    *,
    decay: float,
    eps: float,
) -> None:
    """One EMA step of the codebook, in place.

    ``size ← γ·size + (1−γ)·counts``, ``sum ← γ·sum + (1−γ)·sums``, ``weight ← sum / smoothed(size)``.
    ``counts`` ``(K,)`` and ``sums`` ``(K, D)`` are this step's per-code assignment counts and vector
    sums (already summed over processes).
    """
    cluster_size.lerp_(counts, 1 - decay)
    embed_sum.lerp_(sums, 1 - decay)
    weight.copy_(embed_sum / smoothed_sizes(cluster_size, eps).unsqueeze(1))
