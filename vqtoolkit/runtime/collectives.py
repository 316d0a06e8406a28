"""Keeping codebooks identical across processes under ``torch.distributed``.

EMA statistics and usage counts are summed over every process before they update a codebook, and
anything drawn at random (k-means seeds, revived codes) is drawn on rank 0 and broadcast, so every
rank applies the same update and the codebooks never drift apart. Several tensors handed to one call
travel as one flat buffer, one collective per call rather than one per tensor: each collective is a
point where every process waits for the slowest, and the quantizer meets one on every training step.
Without an initialised process group every function is a no-op, so single-process code pays nothing.

A training step can also hide the quantizer's wait: inside :func:`overlapped_sums`, :func:`sum_then`
starts its collective at once and finishes it (and applies the update that needs it) when the block
ends, after the backward pass, so neither process idles mid-forward for the other. The update still
lands before the next forward uses the codebook, so the result is the same.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

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


@dataclass
class _Pending:
    """A sum started inside :func:`overlapped_sums`: its collectives, then the update waiting for it."""

    finishers: list[Callable[[], None]]  # each waits for one collective and copies its sums back
    then: Callable[[], None]

    def finish(self) -> None:
        """Wait for the sums, then apply the update that needs them."""
        for finisher in self.finishers:
            finisher()
        self.then()


_pending: list[_Pending] | None = None  # a list while inside ``overlapped_sums``


def sum_then(tensors: tuple[Tensor, ...], then: Callable[[], None]) -> None:
    """Sum ``tensors`` over processes in place, then call ``then`` (which uses the sums).

    Outside :func:`overlapped_sums` (or in one process) both happen now. Inside, the collective
    starts now and ``then`` runs when the block ends, so the wait overlaps the rest of the step.
    """
    if _pending is None or not is_distributed():
        all_reduce_sum_(*tensors)
        then()
        return
    finishers = _fused(tensors, lambda flat: dist.all_reduce(flat, op=dist.ReduceOp.SUM, async_op=True))
    _pending.append(_Pending(finishers, then))


@contextlib.contextmanager
def overlapped_sums() -> Iterator[None]:
    """Within the block, :func:`sum_then` updates wait for their sums until the block ends.

    A training step wraps forward and backward in it; every rank must run the same block (the
    sums are collectives). Updates run in the order they were asked for, also when the block raises.
    """
    global _pending
    if _pending is not None:  # nested: the outer block finishes everything
        yield
        return
    _pending = []
    try:
        yield
    finally:
        pending, _pending = _pending, None
        for item in pending:
            item.finish()


def broadcast_(*tensors: Tensor, src: int = 0) -> None:
    """Overwrite each tensor with rank ``src``'s copy, in place (one collective per dtype and device)."""
    if is_distributed():
        _fused(tensors, lambda flat: dist.broadcast(flat, src=src))


def _fused(
    tensors: tuple[Tensor, ...], collective: Callable[[Tensor], dist.Work | None]
) -> list[Callable[[], None]]:
    """Run ``collective`` on the tensors of each dtype and device packed into one flat buffer.

    A blocking ``collective`` is complete on return. An ``async_op`` one returns its work: each of
    the returned callables waits for one and copies the result back into the tensors.
    """
    groups: dict[tuple[torch.dtype, torch.device], list[Tensor]] = {}
    for tensor in tensors:
        groups.setdefault((tensor.dtype, tensor.device), []).append(tensor)
    return [_packed(group, collective) for group in groups.values()]


def _packed(group: list[Tensor], collective: Callable[[Tensor], dist.Work | None]) -> Callable[[], None]:
    """``collective`` on ``group`` packed into one flat buffer; the callable that finishes it."""
    alone = len(group) == 1 and group[0].is_contiguous()
    flat = group[0] if alone else torch.cat([t.reshape(-1) for t in group])  # nothing to pack alone
    work = collective(flat)

    def finish() -> None:
        if work is not None:
            work.wait()
        if not alone:
            for tensor, part in zip(group, flat.split([t.numel() for t in group]), strict=True):
                tensor.copy_(part.view_as(tensor))

    if work is None:  # blocking: done already, copy back now
        finish()
    return finish
