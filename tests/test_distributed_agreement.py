"""Ranks agree on failures: a NaN loss (either stage) or a diverged epoch on one rank stops every rank.

Two gloo processes on CPU. Without the agreement the rank that fails raises alone and the other
waits in its next collective (DDP's gradient all-reduce, or the next epoch), which the group's
timeout turns into a different error here instead of a hang.
"""

from __future__ import annotations

import json
import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from test_distributed import free_port

import vqtoolkit
from vqtoolkit.errors import TrainingError
from vqtoolkit.priors.neural.loop import FitSettings, fit_network
from vqtoolkit.runtime import distributed
from vqtoolkit.training.divergence import DivergenceGuard
from vqtoolkit.training.loop import train_autoencoder

pytestmark = pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")

FIRST = {"epoch": 1, "train_recon": 0.01, "train_vq": 0.01}
HEALTHY = {"epoch": 2, "train_recon": 0.01, "train_vq": 0.02}
EXPLODED = {"epoch": 2, "train_recon": 0.01, "train_vq": 5.0}


def outcome(call: Any) -> str:
    """``ok`` or the class name and message of what ``call()`` raised."""
    try:
        call()
    except (TrainingError, RuntimeError) as err:
        return f"{type(err).__name__}: {err}"
    return "ok"


def fit_prior_network(*, poisoned: bool) -> None:
    """A stage-2 fit whose loss is NaN where ``poisoned`` (one rank)."""
    net = torch.nn.Embedding(4, 1)
    scale = float("nan") if poisoned else 1.0

    def loss(model: torch.nn.Module, grids: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        return model(grids).square().mean() * scale

    settings = FitSettings(epochs=1, batch_size=8)
    fit_network(net, loss, torch.randint(4, (64, 2, 2)), None, settings, name="toy", progress=False)


def worker(rank: int, port: int, out: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE="2")
    torch.set_num_threads(1)
    init = f"tcp://127.0.0.1:{port}"
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2, timeout=timedelta(seconds=60))
    try:
        report = {"any_ranks": list(distributed.any_ranks(rank == 1, False, True))}
        guard = DivergenceGuard(torch.rand(64, 1, 4, 4), None, lr=1.0)
        report["guard_healthy"] = outcome(lambda: guard.check(HEALTHY, [FIRST], agree=distributed.any_rank))
        report["guard_one_rank"] = outcome(
            lambda: guard.check(EXPLODED if rank == 1 else HEALTHY, [FIRST], agree=distributed.any_rank)
        )
        images = vqtoolkit.load_dataset("digits").train_images[:128].clone()
        if rank == 1:
            images[:] = float("nan")  # every batch of rank 1 alone gives a NaN loss
        torch.manual_seed(0)
        model = vqtoolkit.build("conv", "ema", "conv", None, dim=8, num_codes=16).model
        options = {"epochs": 1, "batch_size": 32, "progress": False, "device": "cpu"}
        report["nan_on_one_rank"] = outcome(lambda: train_autoencoder(model, images, **options))
        report["prior_nan_on_one_rank"] = outcome(lambda: fit_prior_network(poisoned=rank == 1))
    finally:
        dist.destroy_process_group()
    Path(f"{out}/rank{rank}.json").write_text(json.dumps(report))


def test_every_rank_raises_when_one_rank_fails(tmp_path: Path) -> None:
    mp.spawn(worker, args=(free_port(), str(tmp_path)), nprocs=2, join=True)
    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    for report in reports:
        assert report["any_ranks"] == [True, False, True]
        assert report["guard_healthy"] == "ok"
        assert report["guard_one_rank"].startswith("TrainingDiverged: training diverged in epoch 2")
        assert report["nan_on_one_rank"].startswith("TrainingError: loss became")
        assert "at step 1 (epoch 1)" in report["nan_on_one_rank"]
        assert report["prior_nan_on_one_rank"].startswith("TrainingError: toy loss became")
    assert "grew from" in reports[1]["guard_one_rank"]  # the rank that saw it says what it saw
    assert "another process" in reports[0]["guard_one_rank"]
    assert "loss became nan" in reports[1]["nan_on_one_rank"]
    assert "non-finite on another rank" in reports[0]["nan_on_one_rank"]
