"""Training across processes with ``torch.distributed``: torchrun's group, ranks, sharding, reductions.

vqtoolkit builds on PyTorch's own engine: ``torchrun`` starts the processes and sets ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK`` and the rendezvous address; :func:`init_from_env` joins that group
(``nccl`` on CUDA, ``gloo`` otherwise, each CPU process bound to its own cores by
:func:`pin_to_own_cores`); :func:`wrap` puts a network in ``DistributedDataParallel`` so
gradients are averaged over processes; :func:`shard_batches` gives each process its share of every
batch. Every helper is the identity or a no-op without a process group, so single-process code pays
nothing and reads the same. docs/distributed.md explains what is synced and why.
"""

from __future__ import annotations

import atexit
import contextlib
import inspect
import json
import logging
import math
import os
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from safetensors.torch import load as load_bytes
from safetensors.torch import save as save_bytes
from torch import Tensor, nn

from vqtoolkit.errors import ConfigError
from vqtoolkit.runtime.collectives import all_reduce_sum_ as all_reduce_sum_  # re-exported
from vqtoolkit.runtime.collectives import broadcast_ as broadcast_  # re-exported
from vqtoolkit.runtime.collectives import is_distributed as is_distributed  # re-exported
from vqtoolkit.runtime.collectives import overlapped_sums as overlapped_sums  # re-exported

logger = logging.getLogger(__name__)
M = TypeVar("M", bound=nn.Module)


def world_size() -> int:
    """How many processes train together (1 without a process group)."""
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    """This process's rank: from the process group, else from torchrun's ``RANK`` (0 when neither is set).

    The environment counts before the group is joined, so rank 1 never starts writing files early.
    """
    return dist.get_rank() if is_distributed() else int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    """Whether this process is rank 0, the one that writes files and prints progress."""
    return rank() == 0


def init_from_env(device: torch.device) -> torch.device:
    """Join the process group that ``torchrun`` describes, if any; return the device this rank trains on.

    Does nothing unless ``WORLD_SIZE`` > 1 and no group is initialised yet (a caller's own
    ``init_process_group`` is respected). The backend follows the device: ``nccl`` for CUDA, ``gloo``
    for CPU. On CUDA each process takes GPU ``LOCAL_RANK``, so ``--device cuda`` (or ``auto``) under
    ``torchrun --nproc_per_node 4`` uses four GPUs; an explicit ``cuda:N`` is kept as given. On the
    CPU each process is first bound to its own cores (:func:`pin_to_own_cores`).
    """
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and dist.is_available() and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        # on CUDA, gloo stays beside nccl for CPU tensors (the CLI fits priors on the CPU)
        backend = "cpu:gloo,cuda:nccl" if device.type == "cuda" else "gloo"
        if device.type == "cpu":
            pin_to_own_cores()  # before the group starts, so gloo's threads inherit the cores
        try:
            dist.init_process_group(backend)
        except (ValueError, RuntimeError) as err:
            raise ConfigError(
                f"WORLD_SIZE={os.environ['WORLD_SIZE']} asks for distributed training but the {backend} "
                f"process group could not start ({err}); launch with torchrun, which sets RANK, "
                f"MASTER_ADDR and MASTER_PORT (docs/distributed.md)"
            ) from err
        atexit.register(_leave)
        logger.info("rank %d of %d joined the %s process group", rank(), world_size(), backend)
    if device.type == "cuda" and device.index is None and is_distributed():
        return torch.device("cuda", torch.cuda.current_device())
    return device


def _leave() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def pin_to_own_cores() -> set[int] | None:
    """Bind this process to its own share of the cores it may use; return them (``None``: left alone).

    Processes that meet in a collective on every step run at the pace of the slowest. Unbound, the
    scheduler tends to wake a process on the core of the process that woke it, so two training
    processes keep landing on one core while the other idles: measured, that cost two processes ×
    one thread most of their speed-up (docs/distributed.md). The local processes of one ``torchrun``
    inherit the same cores (the machine's, or the set ``taskset``, a container or SLURM gave it);
    local rank ``r`` of ``n`` takes the ``r``-th of ``n`` equal, contiguous slices of them. Nothing
    is changed with fewer cores than local processes, where the OS has no affinity API, or when
    ``VQTOOLKIT_BIND_CORES=0`` (processes bound one by one by a wrapper of your own).
    """
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if local_world < 2 or not 0 <= local_rank < local_world or not hasattr(os, "sched_setaffinity"):
        return None
    if os.environ.get("VQTOOLKIT_BIND_CORES", "1") == "0":
        return None
    cores = sorted(os.sched_getaffinity(0))
    per_process = len(cores) // local_world
    if per_process < 1:
        return None
    mine = set(cores[local_rank * per_process : (local_rank + 1) * per_process])
    try:  # every thread already started, not only this one
        threads = [int(thread) for thread in os.listdir("/proc/self/task")]
    except OSError:
        threads = [0]  # no /proc: this thread (the ones it starts inherit the binding)
    for thread in threads:
        with contextlib.suppress(OSError):  # a thread that ended meanwhile
            os.sched_setaffinity(thread, mine)
    logger.debug("local rank %d of %d bound to cores %s", local_rank, local_world, sorted(mine))
    return mine


def barrier() -> None:
    """Wait until every process gets here (a no-op in one process)."""
    if is_distributed():
        dist.barrier()


def _scalar_device() -> torch.device:
    """Where small control tensors go: the CPU, unless the group is NCCL alone (CUDA tensors only)."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def any_rank(flag: bool) -> bool:
    """Whether ``flag`` is true on any process: how all ranks agree to stop at the same step."""
    return any_ranks(flag)[0]


def any_ranks(*flags: bool) -> tuple[bool, ...]:
    """Each of ``flags`` or-ed over every process, in one collective (a training step pays one wait).

    E.g. ``diverged, stop = any_ranks(not finite, stop_requested)``: every rank gets the same
    answers, so all raise, stop or go on together instead of one leaving the others in a collective.
    """
    return Agreement(*flags).result()


class Agreement:
    """Flags or-ed over every process by one collective started now and read by :meth:`result`.

    Started before work that does not depend on the answer (a backward pass), the wait for the
    slowest process overlaps that work instead of adding to it. In one process, the flags themselves.
    """

    def __init__(self, *flags: bool) -> None:
        self._flags = torch.tensor([float(f) for f in flags])
        self._work = None
        if is_distributed():
            self._flags = self._flags.to(_scalar_device())
            self._work = dist.all_reduce(self._flags, op=dist.ReduceOp.MAX, async_op=True)

    def result(self) -> tuple[bool, ...]:
        """The or-ed flags, the same on every process (waits for the collective once)."""
        if self._work is not None:
            self._work.wait()
            self._work = None
        return tuple(bool(v) for v in self._flags.tolist())


def sum_over_ranks(value: float) -> float:
    """``value`` summed over every process (itself in one process)."""
    if not is_distributed():
        return value
    t = torch.tensor(value, dtype=torch.float64, device=_scalar_device())
    dist.all_reduce(t)
    return float(t.item())


# -- sharding ----------------------------------------------------------------------------------------
def local_batch_size(batch_size: int) -> int:
    """Each process's share of a global batch: ``batch_size`` split over the processes, rounded up."""
    return math.ceil(batch_size / world_size())


def shard_batches(order: Tensor, batch_size: int) -> list[Tensor]:
    """This process's batches of an epoch in ``order`` (one seeded permutation, the same on every rank).

    ``DistributedSampler``'s split, batch by batch: ``order`` is padded by repeating its head to a
    multiple of the world size, and process ``r`` takes entries ``r, r + W, r + 2W, ...``. With
    ``batch_size / W`` rows per process, global batch ``i`` is exactly ``order[i·B:(i+1)·B]``, the
    batch one process would train on: ``W`` processes take the same steps on the same data as one,
    their averaged gradients differing only by rounding. A ``batch_size`` that ``W`` does not divide
    is rounded up to the next multiple.
    """
    world = world_size()
    if world > 1:
        pad = -len(order) % world
        if pad:
            order = torch.cat([order, order.repeat(math.ceil(pad / len(order)))[:pad]])
        order = order[rank() :: world]
    return list(order.split(local_batch_size(batch_size)))


def batches_per_epoch(n: int, batch_size: int) -> int:
    """Optimizer steps in one epoch of ``n`` rows (the same on every process)."""
    return math.ceil(math.ceil(n / world_size()) / local_batch_size(batch_size))


def gather_rows(rows: Tensor, n: int, *, to_all: bool) -> Tensor | None:
    """Put back together ``n`` rows of which process ``r`` computed rows ``r, r + W, ...``, in order.

    ``to_all=False`` gathers to rank 0 only (the others get ``None``), so only one process holds
    the whole; ``to_all=True`` gives every process the whole. In one process, ``rows`` itself.
    """
    if not is_distributed():
        return rows
    world = world_size()
    per_rank = math.ceil(n / world)
    padded = torch.zeros(per_rank, *rows.shape[1:], dtype=rows.dtype, device=rows.device)
    padded[: len(rows)] = rows
    if to_all:
        parts = [torch.empty_like(padded) for _ in range(world)]
        dist.all_gather(parts, padded)
    else:
        parts = [torch.empty_like(padded) for _ in range(world)] if is_main() else []
        dist.gather(padded, parts if is_main() else None, dst=0)
        if not is_main():
            return None
    # rank r held rows r, r + W, ...: interleave the parts back into the original order
    return torch.stack(parts, dim=1).flatten(0, 1)[:n]


# -- networks ---------------------------------------------------------------------------------------
def wrap(module: nn.Module, device: torch.device) -> nn.Module:
    """``module`` in ``DistributedDataParallel`` when processes train together, else ``module`` itself.

    DDP copies rank 0's weights to every process and averages gradients during ``backward``. Buffers
    are not broadcast on each step: the quantizers keep their codebook statistics identical themselves
    (:mod:`vqtoolkit.runtime.collectives`), and tests check that they do. Gradients are views into
    DDP's communication buckets (``gradient_as_bucket_view``): no copy in and out of them each step.
    """
    if not is_distributed():
        return module
    from torch.nn.parallel import DistributedDataParallel

    # A 1×1 convolution's gradient can differ from its bucket view in strides along size-1 dims
    # only (the same memory layout); DDP then warns on the first backward. Nothing is wrong.
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
    device_ids = [device.index] if device.type == "cuda" else None
    # ``forward_sync_buffers`` replaced ``broadcast_buffers`` in torch 2.14; both still sync at init
    newer = "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
    no_sync: dict[str, Any] = {"forward_sync_buffers" if newer else "broadcast_buffers": False}
    return DistributedDataParallel(module, device_ids=device_ids, gradient_as_bucket_view=True, **no_sync)


def broadcast_module(module: M, rebuild: Callable[[dict[str, object]], M]) -> M:
    """Rank 0's ``module`` on every process: how a model fitted on rank 0 alone (e.g. gmm) is shared.

    Rank 0 sends its ``config`` and ``state_dict`` as one safetensors payload (no pickle); the others
    build a fresh module with ``rebuild(config)`` (shapes follow the config) and load the state.
    """
    if not is_distributed():
        return module
    device = next(iter(module.state_dict().values()), torch.empty(0)).device
    comm = _scalar_device()
    if is_main():
        state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
        config = json.dumps(getattr(module, "config", {}))
        payload = torch.frombuffer(
            bytearray(save_bytes(state, metadata={"config": config})), dtype=torch.uint8
        )
        size = torch.tensor([len(payload)], device=comm)
    else:
        size = torch.zeros(1, dtype=torch.long, device=comm)
    dist.broadcast(size, src=0)
    buffer = payload.to(comm) if is_main() else torch.empty(int(size.item()), dtype=torch.uint8, device=comm)
    dist.broadcast(buffer, src=0)
    if is_main():
        return module
    data = buffer.cpu().numpy().tobytes()
    fresh = rebuild(json.loads(_metadata(data)["config"]))
    fresh.load_state_dict(load_bytes(data))
    return fresh.to(device)


def _metadata(data: bytes) -> dict[str, str]:
    """The metadata of a safetensors payload: its JSON header, after the 8-byte header length."""
    header_len = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + header_len])
    return dict(header.get("__metadata__", {}))
