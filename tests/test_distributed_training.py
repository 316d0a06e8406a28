"""Both stages under torch.distributed: 2 gloo processes on CPU, launched like torchrun launches them.

Each worker gets torchrun's environment variables (RANK, WORLD_SIZE, MASTER_ADDR, ...) and nothing
else: vqtoolkit joins the process group by itself. Checked: weights, codebooks and priors identical on
both ranks, metrics reduced over ranks, only rank 0 writes, and a run stopped by SIGTERM on rank 1
resumes to exactly the weights of an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file
from test_distributed import free_port

import vqtoolkit
from vqtoolkit.data.datasets import ImageDataset
from vqtoolkit.errors import TrainingInterrupted

pytestmark = pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")

#: Stage-1 epochs: one for the full run, two where a run is stopped in the second and resumed.
EPOCHS = {"full": 1, "uninterrupted": 2, "interrupt": 2, "resume": 2}
#: Metrics read from each rank's own clock.
CLOCK = {"seconds", "images_per_s"}


def tiny_digits() -> ImageDataset:
    digits = vqtoolkit.load_dataset("digits")
    return ImageDataset(
        "digits",
        digits.train_images[:190],  # not a multiple of the batch or of 2 processes: padding is exercised
        digits.train_labels[:190],
        digits.test_images[:63],
        digits.test_labels[:63],
        10,
        1,
    )


def tiny_pipeline() -> vqtoolkit.Pipeline:
    torch.manual_seed(0)
    return vqtoolkit.build(
        "conv",
        "ema",
        "conv",
        "pixelcnn",
        dim=8,
        num_codes=16,
        encoder_config={"hidden_channels": [8, 8]},
        quantizer_config={"revive_after": 2},  # k-means init (the default) and revival within a few steps
        decoder_config={"hidden_channels": [8, 8]},
        prior_config={"epochs": 1, "channels": 8, "layers": 3, "batch_size": 32},
    )


def set_torchrun_environment(rank: int, port: int) -> None:
    """What torchrun gives each of 2 processes on one machine (and one thread each)."""
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE="2",
        LOCAL_WORLD_SIZE="2",
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    torch.set_num_threads(1)


def worker(rank: int, port: int, tmp: str, scenario: str) -> None:
    """One process of a 2-process run, set up as torchrun sets one up."""
    set_torchrun_environment(rank, port)
    data, pipe = tiny_digits(), tiny_pipeline()
    # "full" gives each rank its own paths, so a rank that writes shows up; the others share one
    # (interrupt and resume: every rank reads the same checkpoint)
    out = Path(tmp) / {"full": f"out-rank{rank}", "uninterrupted": "baseline"}.get(scenario, "run")
    stop_on_rank_1 = scenario == "interrupt" and rank == 1

    def on_epoch_end(record: dict[str, Any]) -> None:
        if stop_on_rank_1 and record["epoch"] == 1:
            os.kill(os.getpid(), signal.SIGTERM)  # as torchrun or SLURM would send it

    report: dict[str, Any] = {}
    try:
        pipe.fit_autoencoder(
            data,
            epochs=EPOCHS[scenario],
            batch_size=32,
            progress=False,
            device="cpu",
            checkpoint_path=out / "model-checkpoint.safetensors",
            log_path=out / "model-metrics.jsonl",
            resume=scenario == "resume",
            on_epoch_end=on_epoch_end,
        )
    except TrainingInterrupted as err:
        report["interrupted"] = str(err)
    else:
        report["history"] = pipe.info["history"]
        report["cores"] = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
        state = {f"model.{k}": v for k, v in pipe.model.state_dict().items()}
        if scenario == "full":
            pipe.fit_prior(data, progress=False)
            state.update({f"pixelcnn.{k}": v for k, v in pipe.prior.state_dict().items()})
            pipe.save(out / "model.safetensors")
            pipe.fit_prior(data, "gmm", progress=False, n_components=3, pca_dim=4, max_fit_samples=101)
            state.update({f"gmm.{k}": v for k, v in pipe.prior.state_dict().items()})
            report["gmm_config"] = pipe.prior.config
        state = {k: v.contiguous() for k, v in state.items()}
        save_file(state, f"{tmp}/{scenario}-state-rank{rank}.safetensors")
    finally:
        dist.destroy_process_group()
    Path(f"{tmp}/{scenario}-report-rank{rank}.json").write_text(json.dumps(report))


def launch(tmp: Path, scenario: str) -> list[dict[str, Any]]:
    mp.spawn(worker, args=(free_port(), str(tmp), scenario), nprocs=2, join=True)
    return [json.loads((tmp / f"{scenario}-report-rank{r}.json").read_text()) for r in (0, 1)]


def states(tmp: Path, scenario: str) -> list[dict[str, torch.Tensor]]:
    return [load_file(tmp / f"{scenario}-state-rank{r}.safetensors") for r in (0, 1)]


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_two_processes_train_both_stages_identically_and_only_rank_0_writes(tmp_path: Path) -> None:
    reports = launch(tmp_path, "full")
    rank0, rank1 = states(tmp_path, "full")
    assert_same(rank0, rank1)  # weights, EMA codebook statistics, pixelcnn and the broadcast gmm
    assert any(k.startswith("pixelcnn.") for k in rank0) and any(k.startswith("gmm.") for k in rank0)
    clockless = [[{k: v for k, v in r.items() if k not in CLOCK} for r in rep["history"]] for rep in reports]
    assert clockless[0] == clockless[1]  # metrics are reduced over ranks, not each rank's share
    assert reports[0]["gmm_config"] == reports[1]["gmm_config"]
    record = reports[0]["history"][-1]
    assert record["train_codes_used"] > 1 and record["test_mse"] < 0.2
    if hasattr(os, "sched_getaffinity") and len(os.sched_getaffinity(0)) >= 2:
        assert not set(reports[0]["cores"]) & set(reports[1]["cores"])  # each rank on its own cores

    written = tmp_path / "out-rank0"
    assert {p.name for p in written.iterdir()} == {
        "model.safetensors",
        "model-checkpoint.safetensors",
        "model-metrics.jsonl",
    }
    assert not (tmp_path / "out-rank1").exists()  # rank 1 was given its own paths and wrote nothing
    assert len((written / "model-metrics.jsonl").read_text().splitlines()) == EPOCHS["full"]

    pipe = vqtoolkit.load(written / "model.safetensors")
    assert pipe.sample(2, generator=torch.Generator().manual_seed(0)).shape == (2, 1, 28, 28)


@pytest.mark.slow  # three 2-process launches: about a minute on a busy 2-core machine
def test_a_run_stopped_on_one_rank_stops_on_all_and_resumes_exactly(tmp_path: Path) -> None:
    launch(tmp_path, "uninterrupted")
    reports = launch(tmp_path, "interrupt")  # SIGTERM to rank 1 alone, after epoch 1
    assert all("Run the same command with --resume" in r["interrupted"] for r in reports)
    assert "epoch 2, batch 1/" in reports[0]["interrupted"]
    launch(tmp_path, "resume")
    resumed0, resumed1 = states(tmp_path, "resume")
    assert_same(resumed0, resumed1)
    assert_same(resumed0, states(tmp_path, "uninterrupted")[0])


def cli_worker(rank: int, port: int, tmp: str) -> None:
    """``vqtool build`` in one process of a 2-process launch, its stdout and stderr captured per rank."""
    import contextlib
    import io

    from vqtoolkit.cli import main

    set_torchrun_environment(rank, port)
    out, err = io.StringIO(), io.StringIO()
    args = ["build", "--prior", "gmm", "--epochs", "1", "--num-codes", "16", "--dim", "8", "--device", "cpu"]
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        main([*args, "-o", f"{tmp}/cli/model.safetensors"], standalone_mode=False)
    Path(f"{tmp}/stdout-rank{rank}.txt").write_text(out.getvalue())
    Path(f"{tmp}/stderr-rank{rank}.txt").write_text(err.getvalue())


@pytest.mark.slow  # the CLI end to end on the digits, two processes: about half a minute
def test_vqtool_build_under_two_processes_writes_one_set_of_files(tmp_path: Path) -> None:
    mp.spawn(cli_worker, args=(free_port(), str(tmp_path)), nprocs=2, join=True)
    assert "test mse" in (tmp_path / "stdout-rank0.txt").read_text()
    assert (tmp_path / "stdout-rank1.txt").read_text() == ""
    assert "conv → ema" in (tmp_path / "stderr-rank0.txt").read_text()  # what the run trains
    assert "conv → ema" not in (tmp_path / "stderr-rank1.txt").read_text()  # said once, by rank 0
    names = {p.name for p in (tmp_path / "cli").iterdir()}
    assert names == {
        f"model{suffix}"
        for suffix in (
            ".safetensors",
            "-checkpoint.safetensors",
            "-metrics.jsonl",
            "-reconstructions.png",
            "-training.png",
            "-codes.png",
            "-samples.png",
            "-report.html",
        )
    }
    pipe = vqtoolkit.load(tmp_path / "cli" / "model.safetensors")
    assert pipe.info["world_size"] == 2
    assert pipe.sample(2, generator=torch.Generator().manual_seed(0)).shape == (2, 1, 28, 28)
