"""Keeping codebooks identical across processes under ``torch.distributed``.

EMA statistics and usage counts are summed over every process before they update a codebook, and
anything drawn at random (k-means seeds, revived codes) is drawn on rank 0 and broadcast, so every
rank applies the same update and the codebooks never drift apart. Without an initialised process
group every function is a no-op, so single-process code pays nothing.
"""

from __future__ import annotations

import torch.distributed as dist
from torch import Tensor


def is_distributed() -> bool:
    """Whether a process group with more than one process is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_reduce_sum_(*tensors: Tensor) -> None:
    """Sum each tensor over all processes, in place."""
    if is_distributed():
        for tensor in tensors:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)


def broadcast_(*tensors: Tensor, src: int = 0) -> None:
    """Overwrite each tensor with rank ``src``'s copy, in place."""
    if is_distributed():
        for tensor in tensors:
            dist.broadcast(tensor, src=src)
