"""The pictures of docs/exploring.md: interpolation strips and code edits of a model trained on MNIST.

    python benchmarks/exploring_mnist.py --data-root ../shared/data

Trains the default recipe (conv → ema, K=512, D=64 → conv, gmm prior) on real MNIST for ``--epochs``
epochs (cached as ``--bundle``; reused when it exists), then writes under ``--assets``:

* ``exploring-strips.png``: four walks between held-out digits of different classes, the originals
  at both ends and ``pipe.interpolate`` between them;
* ``exploring-edit.png``: per row, image A, image B, and A's code grid with B's left half pasted in,
  decoded (``pipe.encode`` → edit → ``pipe.decode``);
* the ``vqtool report`` page of the bundle, beside the bundle (``mnist-report.html``).

It prints the held-out test MSE and, for each edit, the share of A's pixels that changed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

import vqtoolkit
from vqtoolkit._util.atomic import atomic_write
from vqtoolkit.data.images import grid_bytes
from vqtoolkit.reporting.report import write_report

#: (from, to) held-out classes of the strips and of the edits.
PAIRS = [(1, 7), (3, 8), (0, 6), (4, 9)]
STEPS = 8


def first_of(data: vqtoolkit.ImageDataset, label: int, skip: int = 0) -> torch.Tensor:
    return data.test_images[(data.test_labels == label).nonzero()[skip, 0]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--bundle", type=Path, default=Path("benchmarks/results/exploring/mnist.safetensors"))
    parser.add_argument("--assets", type=Path, default=Path("docs/assets"))
    args = parser.parse_args()
    torch.manual_seed(0)
    data = vqtoolkit.load_dataset("mnist", args.data_root)
    if args.bundle.exists():
        pipe = vqtoolkit.load(args.bundle)
    else:
        pipe = vqtoolkit.build(prior="gmm")
        pipe.fit(data, epochs=args.epochs, progress=True)
        args.bundle.parent.mkdir(parents=True, exist_ok=True)
        pipe.save(args.bundle)
    mse, epochs = pipe.info["metrics"]["test_mse"], pipe.info["epochs"]
    print(f"{data.describe()}; test mse {mse:.5f} after {epochs} epochs")

    rows = []
    for a, b in PAIRS:
        start, end = first_of(data, a), first_of(data, b)
        rows.append(torch.cat([start[None], pipe.interpolate(start, end, STEPS), end[None]]))
    atomic_write(args.assets / "exploring-strips.png", grid_bytes(torch.cat(rows), nrow=STEPS + 2, scale=2))

    edits = []
    for a, b in PAIRS:
        images = torch.stack([first_of(data, a, 1), first_of(data, b, 1)])
        grids = pipe.encode(images)
        edited = grids[0].clone()
        edited[:, : grids.shape[2] // 2] = grids[1][:, : grids.shape[2] // 2]  # B's left half into A
        before, after = pipe.decode(grids[:1]), pipe.decode(edited[None])
        changed = float(((before - after).abs() > 0.1).float().mean())
        print(f"{a} with the left half of {b}'s codes: {changed:.0%} of the pixels changed by more than 0.1")
        edits.append(torch.cat([images, after]))
    atomic_write(args.assets / "exploring-edit.png", grid_bytes(torch.cat(edits), nrow=3, scale=2))
    page = write_report(
        pipe, args.bundle.with_name(f"{args.bundle.stem}-report.html"), data, bundle=args.bundle
    )
    print(f"wrote {args.assets}/exploring-strips.png, {args.assets}/exploring-edit.png and {page}")


if __name__ == "__main__":
    main()
