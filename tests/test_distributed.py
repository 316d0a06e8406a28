"""Codebooks stay identical across processes: 2 CPU processes with the gloo backend."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

from vqtoolkit.components import registry
from vqtoolkit.runtime.collectives import overlapped_sums

OPTIONS = {"num_codes": 16, "dim": 3, "ema": True, "kmeans_init": True, "revive_after": 2, "decay": 0.8}
#: Plain EMA (nothing random after construction): two half-batches must equal one whole batch.
PLAIN = {"num_codes": 16, "dim": 3, "ema": True, "kmeans_init": False, "revive_after": None, "decay": 0.8}
STEPS = 6


def batches(rank: int) -> list[torch.Tensor]:
    """Different data on each rank (and a far-away cluster so some codes die and are revived)."""
    g = torch.Generator().manual_seed(100 + rank)
    return [torch.randn(2, 3, 4, 4, generator=g) + (8.0 if step % 3 == 2 else 0.0) for step in range(STEPS)]


def worker(rank: int, port: int, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        runs = (("full", OPTIONS, False), ("plain", PLAIN, False), ("overlapped", OPTIONS, True))
        for label, options, overlapped in runs:
            torch.manual_seed(0)  # the same initial weights, as DDP would broadcast them
            q = registry.create("quantizer", "ema", **options).train()
            torch.manual_seed(rank)  # different RNG streams: agreement must come from the broadcasts
            for step, z in enumerate(batches(rank)):
                with overlapped_sums() if overlapped else contextlib.nullcontext():
                    before = q.embedding.weight.clone()
                    q(z)
                    if overlapped and step > 0:  # (step 0 seeds the codebook by k-means at once)
                        kept = q.unused_steps > 0  # codes neither revived in this forward nor used since
                        assert torch.equal(q.embedding.weight[kept], before[kept]), "the update waits"
            state = {k: v.contiguous() for k, v in q.state_dict().items()}
            save_file(state, f"{out}/{label}-rank{rank}.safetensors")
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")
def test_two_ranks_end_with_identical_codebooks(tmp_path: Path) -> None:
    mp.spawn(worker, args=(free_port(), str(tmp_path)), nprocs=2, join=True)
    rank0, rank1 = (load_file(tmp_path / f"full-rank{r}.safetensors") for r in (0, 1))
    assert rank0.keys() == rank1.keys()
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), key
    assert int(rank0["unused_steps"].max()) <= OPTIONS["revive_after"]

    # Overlapping the sums with the rest of a step defers the update but does not change it.
    overlapped = load_file(tmp_path / "overlapped-rank0.safetensors")
    for key in rank0:
        assert torch.equal(overlapped[key], rank0[key]), key

    # Plain EMA over two half-batches equals one process seeing the whole batch.
    rank0 = load_file(tmp_path / "plain-rank0.safetensors")
    torch.manual_seed(0)
    single = registry.create("quantizer", "ema", **PLAIN).train()
    for z0, z1 in zip(batches(0), batches(1), strict=True):
        single(torch.cat([z0, z1]))
    assert torch.allclose(rank0["embedding.weight"], single.embedding.weight, atol=1e-5)


@pytest.mark.parametrize(
    ("allowed", "local_rank", "switch", "expected"),
    [
        (set(range(8)), 1, "1", {4, 5, 6, 7}),  # rank 1 of 2 takes the second half
        ({0, 1, 2}, 1, "1", {1}),  # a core left over stays unused
        ({4, 5, 6, 7}, 0, "1", {4, 5}),  # torchrun under taskset -c 4-7: its cores are split
        ({4, 5, 6, 7}, 0, "0", None),  # VQTOOLKIT_BIND_CORES=0: left alone
        ({0}, 0, "1", None),  # fewer cores than processes
    ],
)
def test_each_local_process_is_bound_to_its_own_cores(
    monkeypatch: pytest.MonkeyPatch,
    allowed: set[int],
    local_rank: int,
    switch: str,
    expected: set[int] | None,
) -> None:
    from vqtoolkit.runtime import distributed

    bound: dict[int, set[int]] = {}
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", str(local_rank))
    monkeypatch.setenv("VQTOOLKIT_BIND_CORES", switch)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(allowed), raising=False)
    monkeypatch.setattr(
        os, "sched_setaffinity", lambda pid, cores: bound.update({pid: set(cores)}), raising=False
    )
    assert distributed.pin_to_own_cores() == expected
    if expected is None:
        assert bound == {}
    else:  # every thread of the process, not only the calling one
        assert len(bound) >= threading.active_count() and all(cores == expected for cores in bound.values())
