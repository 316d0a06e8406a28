"""Data-parallel scaling of stage 1: 1 process × 1 thread against 2 processes × 1 thread, same run.

Both train the same model (``conv`` → ``ema`` K=512, D=64 → ``conv``, vqtoolkit's defaults) on real
MNIST for the same epochs, from the same seed, with the same *global* batch (``--batch-size``; each of
the 2 processes takes half of every batch, so both runs take the same optimizer steps on the same
images and keep the same learning rate). Each configuration starts as fresh processes exactly as
torchrun starts them (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` ... in the environment, ``gloo`` on
CPU), one thread each. Images/s is the training loop's own figure for the last epoch (train images
over the wall-clock seconds of its steps, rank 0's clock; evaluation excluded); test MSE is on all
10 000 MNIST test images after the last epoch. vqtoolkit binds each of the 2 processes to its own
core (``vqtoolkit.runtime.distributed.pin_to_own_cores``); the table says which cores each process had, and
the 1-minute load average before and after each configuration says how busy the machine was.

Targets: ≥ 1.7× the images/s with 2 processes, and test MSE within 5 % of the single process.
Needs 2 free cores to mean anything: on a shared machine the ratio measures the neighbours. With
``--repeats R`` the two configurations alternate R times (1, 2, 1, 2, ...) and the speed-up is the
median images/s of each; every run is listed. Test MSE is the same in every repeat (same seed).
``--ceiling`` adds, in each repeat, the machine's own ceiling for 2 processes: two *independent*
processes (no process group, nothing synchronised), each bound to its own core like a 2-process
run and training on its half of the images at half the batch; their images/s are added up. The
2-process run can at best match it: what lies between the two is the cost of training together.

    python benchmarks/distributed_scaling.py --data-root ../shared/data --epochs 1 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import tempfile
from pathlib import Path
from typing import Any

import torch
import torch.multiprocessing as mp

SPEED_TARGET = 1.7
MSE_TOLERANCE = 0.05


def worker(rank: int, world: int, port: int, args: dict[str, Any], out: str, independent: bool) -> None:
    """One training process, set up as torchrun sets one up; each writes its history.

    ``independent``: no process group; bound to its own core as a rank would be, the process trains
    alone on its half of the images at half the batch.
    """
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE="1" if independent else str(world),
        LOCAL_WORLD_SIZE=str(world),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    torch.set_num_threads(1)
    import vqtoolkit
    from vqtoolkit.runtime.distributed import pin_to_own_cores
    from vqtoolkit.training.loop import train_autoencoder

    data = vqtoolkit.load_dataset("mnist", args["data_root"], seed=args["seed"])
    train = data.train_images[: args["train_images"]] if args["train_images"] else data.train_images
    batch_size = args["batch_size"]
    if independent:
        pin_to_own_cores()
        train, batch_size = train[rank::world], batch_size // world
    torch.manual_seed(args["seed"])
    pipe = vqtoolkit.build("conv", "ema", "conv", None, dim=64, num_codes=512)
    history = train_autoencoder(
        pipe.model,
        train,
        None if independent else data.test_images,
        epochs=args["epochs"],
        batch_size=batch_size,
        seed=args["seed"],
        progress=False,
        device="cpu",
    )
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    Path(f"{out}.{rank}").write_text(json.dumps({"history": history, "cores": cores}))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run(world: int, args: dict[str, Any], *, independent: bool = False) -> dict[str, Any]:
    """Train with ``world`` processes; the last epoch's record (rank 0's), each rank's cores, the load.

    ``independent`` processes report the sum of their images/s.
    """
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "history.json")
        mp.spawn(worker, args=(world, free_port(), args, out, independent), nprocs=world, join=True)
        reports = [json.loads(Path(f"{out}.{rank}").read_text()) for rank in range(world)]
    record = reports[0]["history"][-1]
    if independent:
        record = {**record, "images_per_s": sum(r["history"][-1]["images_per_s"] for r in reports)}
    return {
        "processes": world,
        "threads": 1,
        "independent": independent,
        **record,
        "cores": [report["cores"] for report in reports],
        "load_average": [load_before, os.getloadavg()[0]],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", default="../shared/data")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=128, help="global batch, split over the processes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--train-images", type=int, default=0, help="train on the first N images only (0: all 60 000)"
    )
    parser.add_argument("--repeats", type=int, default=1, help="alternate the two configurations R times")
    parser.add_argument(
        "--ceiling", action="store_true", help="also time 2 independent processes: the machine's ceiling"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = vars(parser.parse_args())

    runs = []
    for _ in range(args["repeats"]):
        runs += [run(1, args), run(2, args)]
        if args["ceiling"]:
            runs.append(run(2, args, independent=True))
    singles = [r for r in runs if r["processes"] == 1]
    doubles = [r for r in runs if r["processes"] == 2 and not r["independent"]]
    ceilings = [r for r in runs if r["independent"]]
    speedup = median_rate(doubles) / median_rate(singles)
    single, double = singles[0], doubles[0]
    mse_change = double["test_mse"] / single["test_mse"] - 1
    result = {
        "settings": args,
        "runs": runs,
        "speedup": speedup,
        "speedup_target": SPEED_TARGET,
        "speedup_met": speedup >= SPEED_TARGET,
        "test_mse_change": mse_change,
        "test_mse_tolerance": MSE_TOLERANCE,
        "test_mse_met": abs(mse_change) <= MSE_TOLERANCE,
        "ceiling_speedup": median_rate(ceilings) / median_rate(singles) if ceilings else None,
    }
    if args["json"]:
        print(json.dumps(result, indent=2))
        return
    print(f"MNIST, {args['epochs']} epoch(s), global batch {args['batch_size']}, seed {args['seed']}")
    verdict = {True: "met", False: "NOT met"}
    print(
        f"{'processes × threads':<22}{'images/s':>10}{'test MSE':>11}{'train s':>10}  {'cores':<12}load avg"
    )
    for r in runs:
        rate, seconds = r["images_per_s"], r["seconds"]
        mse = "–" if r["independent"] else f"{r['test_mse']:.5f}"
        cores = " ".join(",".join(map(str, c)) for c in r["cores"])
        load = "{:.1f} → {:.1f}".format(*r["load_average"])
        layout = f"{r['processes']} × {r['threads']}" + (" independent" if r["independent"] else "")
        print(f"{layout:<22}{rate:>10.0f}{mse:>11}{seconds:>10.1f}  {cores:<12}{load}")
    print(
        f"speed-up {speedup:.3f}× ({median_rate(doubles):.0f} / {median_rate(singles):.0f} median images/s; "
        f"target ≥ {SPEED_TARGET}×: {verdict[result['speedup_met']]}); "
        f"test MSE {mse_change:+.1%} (target within ±{MSE_TOLERANCE:.0%}: {verdict[result['test_mse_met']]})"
    )
    if ceilings:
        print(
            f"ceiling: 2 independent processes {median_rate(ceilings):.0f} images/s = "
            f"{result['ceiling_speedup']:.2f}× one process; 2 processes training together reach "
            f"{median_rate(doubles) / median_rate(ceilings):.0%} of it"
        )


def median_rate(runs: list[dict[str, Any]]) -> float:
    """The median images/s of ``runs`` (the figure itself for one run)."""
    return statistics.median(r["images_per_s"] for r in runs)


if __name__ == "__main__":
    main()
