"""Lookup-free quantizers (``lfq``, ``bsq``): speed and memory against K; MNIST beside ``ema`` and ``fsq``.

Prints the targets of the lookup-free issue, each part on its own:

* ``speed``: forward + backward time of the quantizer alone at K = 2^10 and 2^16 (a batch of 128
  7×7 latents of width 64, projections to the bits, training mode with the entropy penalty);
  target: 2^16 within 2× of 2^10.
* ``memory``: the extra memory of one such step at K = 2^18 (and 2^10 for scale), each measured
  in a fresh process after a warm-up step (peak resident-set growth sampled every 0.5 ms on CPU,
  ``max_memory_allocated`` on CUDA); target < 256 MB.
* ``mnist``: the classic conv architecture trained on real MNIST through vqtoolkit's own loop at
  K = 2^10 and 2^16 (``fsq``: 1 000 and 64 000, the nearest level lists), then test MSE, codes
  used, perplexity (over the test images) and training time. Targets: >= 90 % of the codes used at
  2^10, perplexity at 2^16 >= 10× that at 2^10.

    python benchmarks/lookup_free.py --parts speed,memory
    python benchmarks/lookup_free.py --parts mnist --data-root ../shared/data --epochs 1 --train-size 6000
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
from typing import Any

import torch

import vqtoolkit
from vqtoolkit.components import registry
from vqtoolkit.training.loop import train_autoencoder

#: Latent batch of the speed and memory parts: 128 images of MNIST's 7×7 grid, width 64.
BATCH, WIDTH, GRID = 128, 64, 7
#: MNIST configurations by bits per position: (label, quantizer, shared build options, quantizer options).
MNIST = {
    10: [
        ("ema", "ema", {"num_codes": 2**10, "dim": 64}, {}),
        ("fsq [8,5,5,5]", "fsq", {}, {"levels": [8, 5, 5, 5]}),
        ("lfq bits=10", "lfq", {}, {"bits": 10}),
        ("bsq bits=10", "bsq", {}, {"bits": 10}),
    ],
    16: [
        ("fsq [8,8,8,5,5,5]", "fsq", {}, {"levels": [8, 8, 8, 5, 5, 5]}),
        ("lfq bits=16", "lfq", {}, {"bits": 16}),
        ("bsq bits=16", "bsq", {}, {"bits": 16}),
        ("ema", "ema", {"num_codes": 2**16, "dim": 64}, {}),  # last: its search and k-means are slow
    ],
}


def step(quantizer: torch.nn.Module, z: torch.Tensor) -> None:
    """One training forward and backward of the quantizer alone."""
    out = quantizer(z)
    (out.loss + out.quantized.square().mean()).backward()


def speed(names: list[str], device: torch.device, reps: int) -> None:
    print(f"forward+backward, {BATCH}×{WIDTH}×{GRID}×{GRID} latents, {device}, median of {reps}:")
    z = torch.randn(BATCH, WIDTH, GRID, GRID, device=device, requires_grad=True)
    for name in names:
        times = {}
        for bits in (10, 16):
            quantizer = registry.create("quantizer", name, bits=bits, dim=WIDTH).to(device).train()
            step(quantizer, z)  # warm-up
            runs = []
            for _ in range(reps):
                if device.type == "cuda":
                    torch.cuda.synchronize()
                start = time.perf_counter()
                step(quantizer, z)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                runs.append(time.perf_counter() - start)
            times[bits] = statistics.median(runs)
        ratio = times[16] / times[10]
        verdict = "met" if ratio <= 2 else "NOT met"
        print(
            f"  {name}: K=2^10 {times[10] * 1e3:.1f} ms, K=2^16 {times[16] * 1e3:.1f} ms, "
            f"ratio {ratio:.2f} (target <= 2: {verdict})"
        )


def measure_memory(name: str, bits: int, device: str) -> int:
    """Extra bytes of one training step (run in a fresh process by :func:`memory`)."""
    dev = torch.device(device)
    quantizer = registry.create("quantizer", name, bits=bits, dim=WIDTH).to(dev).train()
    z = torch.randn(BATCH, WIDTH, GRID, GRID, device=dev, requires_grad=True)
    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        step(quantizer, z)
        torch.cuda.synchronize()
        return int(torch.cuda.max_memory_allocated() - base)
    # CPU: sample the resident set while the step runs; the parent set MALLOC_MMAP_THRESHOLD_ so
    # every large block is its own mapping, resident while alive and returned when freed
    step(quantizer, z)  # warm-up: one-off allocations (thread pools, caches) are not the step's
    base, peak, done = resident(), [0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], resident())
            time.sleep(0.0005)

    sampler = threading.Thread(target=sample)
    sampler.start()
    step(quantizer, z)
    done.set()
    sampler.join()
    return max(0, max(peak[0], resident()) - base)


def resident() -> int:
    """Bytes resident in memory now (Linux ``/proc/self/statm``)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


def memory(names: list[str], device: torch.device) -> None:
    print(f"extra memory of one training step, {BATCH}×{WIDTH}×{GRID}×{GRID} latents, fresh process each:")
    for name in names:
        figures = {}
        for bits in (10, 18):
            command = [sys.executable, __file__, "--measure-memory", name, str(bits), str(device)]
            env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
            result = subprocess.run(command, capture_output=True, text=True, check=True, env=env)
            figures[bits] = int(result.stdout)
        verdict = "met" if figures[18] < 256 * 2**20 else "NOT met"
        print(
            f"  {name}: K=2^10 {figures[10] / 2**20:.1f} MB, K=2^18 {figures[18] / 2**20:.1f} MB "
            f"(target < 256 MB: {verdict})"
        )


def mnist(args: argparse.Namespace, device: torch.device) -> None:
    data = vqtoolkit.load_dataset("mnist", args.data_root)
    train, test = data.train_images[: args.train_size], data.test_images[: args.test_size]
    print(
        f"MNIST: {len(train)} train / {len(test)} test images, {args.epochs} epoch(s), batch 128, "
        f"seed {args.seed}, {device}, {torch.get_num_threads()} threads"
    )
    print("| bits | quantizer | K | test MSE | codes used | perplexity | train s/epoch |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    results: dict[int, dict[str, dict[str, Any]]] = {}
    for bits in args.bits:
        results[bits] = {}
        for label, name, shared, options in MNIST[bits]:
            if name not in args.mnist_quantizers:
                continue
            torch.manual_seed(args.seed)
            model = vqtoolkit.build(
                "conv", name, "conv", None, in_channels=1, quantizer_config=options, **shared
            ).model
            start = time.perf_counter()
            history = train_autoencoder(
                model, train, test, epochs=args.epochs, seed=args.seed, progress=False, device=device
            )
            per_epoch = (time.perf_counter() - start) / args.epochs
            last, k = history[-1], model.quantizer.num_codes
            results[bits][name] = row = {
                "mse": last["test_mse"],
                "used": last["test_codes_used"],
                "k": k,
                "perplexity": last["test_perplexity"],
            }
            print(
                f"| {bits} | `{label}` | {k} | {row['mse']:.5f} | {row['used']} ({row['used'] / k:.1%}) | "
                f"{row['perplexity']:.1f} | {per_epoch:.0f} |",
                flush=True,
            )
    for name in ("lfq", "bsq"):
        if 10 in results and name in results[10]:
            used = results[10][name]["used"] / results[10][name]["k"]
            verdict = "met" if used >= 0.9 else "NOT met"
            print(f"  {name}: codes used at 2^10 {used:.1%} (target >= 90 %: {verdict})")
        if {10, 16} <= results.keys() and name in results[10]:
            ratio = results[16][name]["perplexity"] / results[10][name]["perplexity"]
            verdict = "met" if ratio >= 10 else "NOT met"
            print(f"  {name}: perplexity 2^16 / 2^10 = {ratio:.1f} (target >= 10: {verdict})")
    print(json.dumps(results))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--parts", default="speed,memory,mnist", help="comma-separated: speed, memory, mnist")
    parser.add_argument("--quantizers", default="lfq,bsq", help="speed and memory parts")
    parser.add_argument(
        "--mnist-quantizers", default="ema,fsq,lfq,bsq", help="mnist part: the rows to train, by quantizer"
    )
    parser.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--data-root", default="../shared/data")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--train-size", type=int, default=None, help="first N training images (default: all)")
    parser.add_argument("--test-size", type=int, default=None, help="first N test images (default: all)")
    parser.add_argument("--bits", default="10,16", help="MNIST bit rates to run: 10, 16 or both")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--measure-memory", nargs=3, metavar=("NAME", "BITS", "DEVICE"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.measure_memory:
        name, bits, device_name = args.measure_memory
        print(measure_memory(name, int(bits), device_name))
        return
    args.bits = [int(b) for b in args.bits.split(",")]
    args.mnist_quantizers = args.mnist_quantizers.split(",")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    names = args.quantizers.split(",")
    parts = args.parts.split(",")
    if "speed" in parts:
        speed(names, device, args.reps)
    if "memory" in parts:
        memory(names, device)
    if "mnist" in parts:
        mnist(args, device)


if __name__ == "__main__":
    main()
