"""The entropy penalty of lookup-free quantizers: each latent sure of its code, the batch using them all.

With codes ``c ∈ {−s, +s}^d`` and a temperature ``τ``, a latent row ``x`` is softly assigned
``q(c | x) = softmax_c(−‖x − c‖² / τ) = softmax_c(2 x·c / τ)`` (every code has the same norm).
MAGVIT-v2 (Yu et al., 2023) and BSQ (Zhao et al., 2024) penalise

    sample_weight · mean_x H(q(· | x))  −  batch_weight · H(mean_x q(· | x))

low per-sample entropy makes each decision confident, high batch entropy spreads the batch over
the codes. Both are computed without a K-wide tensor:

* ``q(· | x)`` factorises over the bits, ``q(bit i = 1 | x) = σ(4 s x_i / τ)``, so the per-sample
  entropy is exactly the sum of the bits' binary entropies: ``(N, d)`` memory.
* The batch-mean assignment does not factorise. The bits are split into groups of at most
  ``group_bits`` (:func:`group_sizes`, as the papers do); each group's mean assignment over its
  ``2^g`` sub-codes is exact, and the batch entropy is the sum of the groups' entropies:
  ``H(mean q)`` itself when there is one group (``d <= group_bits``), otherwise its upper bound
  (a joint entropy is at most the sum of its marginals'), which is maximal exactly when the joint
  is uniform. Memory is ``N · 2^g`` per group, whatever K is.

Under ``torch.distributed`` the batch is the global batch: the groups' summed assignments and the
row count travel in one all-reduce (:func:`global_sums`). Entropies are in nats.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

from vqtoolkit.runtime.collectives import all_reduce_sum_, is_distributed

#: Floor of a mean assignment inside ``log``: a sub-code no row gives any mass to keeps a finite gradient.
_LOG_FLOOR = 1e-12


@dataclass
class EntropyTerms:
    """The two entropies of a batch (nats): ``sample`` to keep low, ``batch`` to keep high."""

    sample: Tensor
    batch: Tensor


def group_sizes(bits: int, group_bits: int) -> list[int]:
    """Bits per group: ``bits`` split into as few near-equal groups of at most ``group_bits`` as fit.

    >>> group_sizes(18, 10)
    [9, 9]
    """
    groups = math.ceil(bits / group_bits)
    size, extra = divmod(bits, groups)
    return [size + 1] * extra + [size] * (groups - extra)


@functools.lru_cache(maxsize=32)
def _sign_table(bits: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """``(bits, 2^bits)``: column k holds code k's signs (bit i of k set: +1 in row i, else −1)."""
    codes = torch.arange(2**bits, device=device)
    set_bits = (codes.unsqueeze(0) >> torch.arange(bits, device=device).unsqueeze(1)) & 1
    return (set_bits * 2 - 1).to(dtype)


def global_sums(local: Tensor) -> Tensor:
    """``local`` summed over processes, with the gradient DDP's averaging needs (one collective).

    Every rank gets the global sum as its value; its gradient reaches only this rank's rows, scaled
    by the world size, so DDP's mean over ranks of the parameter gradients is the gradient of the
    global batch's entropy. One process: ``local`` itself.
    """
    if not is_distributed():
        return local
    total = local.detach().clone()
    all_reduce_sum_(total)
    scaled = local * dist.get_world_size()
    return scaled + (total - scaled).detach()


def entropy_terms(x: Tensor, scale: float, temperature: float, group_bits: int) -> EntropyTerms:
    """The per-sample and batch entropies of rows ``x`` ``(N, d)`` softly assigned to ``{−s, +s}^d``.

    Args:
        x: Latent rows (float32 or wider), the inputs to binarisation.
        scale: ``s``, the magnitude of every code coordinate.
        temperature: ``τ`` of the soft assignment ``softmax(−‖x − c‖² / τ)``.
        group_bits: The most bits per group of the batch entropy (exact up to this many bits).

    Returns:
        The mean per-sample entropy and the batch entropy (summed over groups), both scalars.
    """
    logits = x * (4 * scale / temperature)  # log-odds of each bit being set
    p = torch.sigmoid(logits)
    sample = (p * F.softplus(-logits) + (1 - p) * F.softplus(logits)).sum(1).mean()
    sums, start = [], 0
    for size in group_sizes(x.shape[1], group_bits):
        part = x[:, start : start + size]
        start += size
        assignment = (part @ _sign_table(size, x.device, x.dtype)).mul_(2 * scale / temperature).softmax(1)
        sums.append(assignment.sum(0))
    total = global_sums(torch.cat([*sums, x.new_full((1,), x.shape[0])]))
    mean = total[:-1] / total[-1]
    batch = -(mean * mean.clamp_min(_LOG_FLOOR).log()).sum()
    return EntropyTerms(sample=sample, batch=batch)
