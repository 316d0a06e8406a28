"""Seconds per training step of the trained priors by torch threads and precision (wall and CPU time).

The default ``threads`` and ``precision`` of the pixelcnn and transformer priors are chosen by this
measurement (bfloat16 only counts on a CPU that computes it natively: see ``native_bfloat16``). Steps
are timed on random codes of MNIST's shape (7×7 grids, K=512, the default batch of 64) with the
dropout ``dropout="auto"`` gives MNIST (none): timing does not depend on what the codes mean. CPU
time counts every thread, so on a shared machine a second thread that only spins shows up as CPU
seconds without saving wall seconds. ``--torch-attention`` times the transformer with the attention
kernel torch picks itself instead of the one the prior chooses (``attention_kernel``).

    python benchmarks/prior_threads.py --steps 30
    python benchmarks/prior_threads.py --threads 1 --precisions float32 bfloat16
    python benchmarks/prior_threads.py --priors transformer --precisions bfloat16 --torch-attention
"""

from __future__ import annotations

import argparse
import contextlib
import time

import torch

from vqtoolkit.components import registry
from vqtoolkit.priors import transformer
from vqtoolkit.priors.neural.base import auto_dropout, cross_entropy_loss
from vqtoolkit.priors.neural.loop import Precision, native_bfloat16, torch_threads, training_autocast


def time_steps(
    name: str, threads: int, precision: Precision, steps: int, grid: int, k: int, batch: int
) -> tuple[float, float]:
    """Median wall seconds and mean CPU seconds of one Adam step of a default ``name`` prior."""
    mnist_dropout = auto_dropout(60_000)
    prior = registry.create("prior", name, num_codes=k, grid_shape=[grid, grid], dropout=mnist_dropout)
    net = prior.net.train()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    codes = torch.randint(0, k, (batch, grid, grid))
    walls = []
    with torch_threads(threads):
        for step in range(steps + 3):  # 3 warm-up steps
            if step == 3:
                cpu_start = time.process_time()
            wall = time.perf_counter()
            with training_autocast(precision, codes.device):
                loss = cross_entropy_loss(net, codes, None)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if step >= 3:
                walls.append(time.perf_counter() - wall)
        cpu_total = time.process_time() - cpu_start
    walls.sort()
    return walls[len(walls) // 2], cpu_total / steps


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--priors", nargs="+", default=["pixelcnn", "transformer"])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--grid", type=int, default=7)
    parser.add_argument("--codes", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--precisions", nargs="+", default=["float32"], choices=["float32", "bfloat16"])
    parser.add_argument(
        "--torch-attention", action="store_true", help="Let torch pick the transformer's attention kernel."
    )
    args = parser.parse_args()
    if args.torch_attention:
        transformer.attention_kernel = lambda q: contextlib.nullcontext()
    print(
        f"{args.steps} steps, batch {args.batch_size} of {args.grid}×{args.grid} grids, K={args.codes}; "
        f"native bfloat16 on this CPU: {native_bfloat16(torch.device('cpu'))}; "
        f"attention kernel: {'torch' if args.torch_attention else 'the prior'}'s choice"
    )
    print("| prior | threads | precision | wall s/step (median) | CPU s/step |")
    print("|---|---|---|---|---|")
    for name in args.priors:
        for threads in args.threads:
            for precision in args.precisions:
                wall, cpu = time_steps(
                    name, threads, precision, args.steps, args.grid, args.codes, args.batch_size
                )
                print(f"| {name} | {threads} | {precision} | {wall:.3f} | {cpu:.3f} |")


if __name__ == "__main__":
    main()
