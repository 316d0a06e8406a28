"""Keeping codebooks identical across processes under ``torch.distributed``.

EMA statistics and usage counts are summed over every process before they update a codebook, and
anything drawn at random (k-means seeds, revived codes) is drawn on rank 0 and broadcast, so every
rank applies the same update and the codebooks never drift apart. Several tensors handed to one call
travel as one flat buffer, one collective per call rather than one per tensor: each collective is a
point where every process waits for the slowest, and the quantizer meets one on every training step.
Without an initialised process group every function is a no-op, so single-process code pays nothing.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.distributed as dist
from torch import Tensor


def is_distributed() -> bool:
    """Whether a process group with more than one process is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_reduce_sum_(*tensors: Tensor) -> None:
    """Sum each tensor over all processes, in place (one collective per dtype and device)."""
    if is_distributed():
        _fused(tensors, lambda flat: dist.all_reduce(flat, op=dist.ReduceOp.SUM))


def broadcast_(*tensors: Tensor, src: int = 0) -> None:
    """Overwrite each tensor with rank ``src``'s copy, in place (one collective per dtype and device)."""
    if is_distributed():
        _fused(tensors, lambda flat: dist.broadcast(flat, src=src))


def _fused(tensors: tuple[Tensor, ...], collective: Callable[[Tensor], object]) -> None:
    """Run ``collective`` on the tensors of each dtype and device packed into one flat buffer."""
    groups: dict[tuple[torch.dtype, torch.device], list[Tensor]] = {}
    for tensor in tensors:
        groups.setdefault((tensor.dtype, tensor.device), []).append(tensor)
    for group in groups.values():
        if len(group) == 1 and group[0].is_contiguous():
            collective(group[0])  # nothing to pack
            continue
        flat = torch.cat([t.reshape(-1) for t in group])
        collective(flat)
        for tensor, part in zip(group, flat.split([t.numel() for t in group]), strict=True):
            tensor.copy_(part.view_as(tensor))
