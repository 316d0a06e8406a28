"""Stage 1 on colour images: the built-in ``resnet`` encoder/decoder against the tutorial ``conv`` pair.

Both train on ``shapes`` (procedural 32×32 RGB scenes, no download) with every default of
``vqtool build --data shapes`` except the autoencoder: the dataset's batch size, the ``ema``
quantizer at its K, Adam on the cosine schedule. Printed per autoencoder: parameters, the median
seconds per epoch over ``--epochs`` epochs on ``--train`` training scenes (and that time scaled to
the full 10 000), and test MSE / PSNR after those epochs. Runs alternate (conv, resnet, conv, ...)
over ``--rounds`` so a shared machine's load hits both alike; medians are quoted. The figures in
docs/training.md (one round each, on a busy shared machine, so the seconds are rough):

    python benchmarks/resnet_stage1.py --train 2000 --epochs 4 --threads 1 --resnet-widths 32,64,64
    python benchmarks/resnet_stage1.py --train 2000 --epochs 4 --threads 1 --lr 0.002
"""

from __future__ import annotations

import argparse
import statistics

import torch

import vqtoolkit
from vqtoolkit.data.datasets import ImageDataset, load_dataset
from vqtoolkit.training.config import TrainConfig


def subset(data: ImageDataset, train: int) -> ImageDataset:
    """The first ``train`` training scenes and the whole test set."""
    return ImageDataset(
        data.name,
        data.train_images[:train],
        data.train_labels[:train],
        data.test_images,
        data.test_labels,
        data.num_classes,
        data.default_epochs,
        data.default_num_codes,
        data.default_batch_size,
    )


def one_run(
    autoencoder: str, widths: list[int] | None, data: ImageDataset, epochs: int, seed: int, lr: float | None
) -> dict:
    config = {} if widths is None else {"widths": widths}
    pipe = vqtoolkit.build(
        autoencoder,
        "ema",
        autoencoder,
        None,
        in_channels=3,
        num_codes=data.default_num_codes,
        seed=seed,
        encoder_config=config,
        decoder_config=config,
    )
    params = sum(p.numel() for p in pipe.model.parameters())
    rate = {} if lr is None else {"lr": lr}
    config = TrainConfig(epochs=epochs, batch_size=data.default_batch_size, seed=seed, progress=False, **rate)
    pipe.fit_autoencoder(data, config)
    metrics = pipe.info["metrics"]
    return {
        "params": params,
        "epoch_s": statistics.median(epoch["seconds"] for epoch in pipe.info["history"]),
        "mse": metrics["test_mse"],
        "psnr": metrics["test_psnr"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=2000, help="training scenes (the full set is 10 000)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--lr", type=float, default=None, help="Adam's peak rate [default: the CLI's]")
    parser.add_argument("--only", choices=["conv", "resnet"], default=None, help="time one pair only")
    parser.add_argument(
        "--resnet-widths",
        type=lambda text: [int(w) for w in text.split(",")],
        action="append",
        default=[],
        help="also time resnet at these widths (e.g. 16,32,32); repeatable",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = subset(load_dataset("shapes", image_size=args.image_size), args.train)
    print(
        f"{data.describe()}; batch {data.default_batch_size}, K={data.default_num_codes}, "
        f"{args.epochs} epochs"
    )
    setups = {name: (name, None) for name in ("conv", "resnet") if args.only in (None, name)}
    setups.update({f"resnet {w}": ("resnet", w) for w in args.resnet_widths})
    runs: dict[str, list[dict]] = {name: [] for name in setups}
    for seed in range(args.rounds):
        for name, (autoencoder, widths) in setups.items():
            runs[name].append(one_run(autoencoder, widths, data, args.epochs, seed, args.lr))
    full = 10_000 / args.train
    for name, results in runs.items():
        epoch = statistics.median(r["epoch_s"] for r in results)
        mse = statistics.median(r["mse"] for r in results)
        psnr = statistics.median(r["psnr"] for r in results)
        print(
            f"{name:<20} {int(results[0]['params']):>8} params  {epoch:7.1f} s/epoch "
            f"({epoch * full:7.1f} s per full 10 000-scene epoch)  test mse {mse:.5f}  psnr {psnr:.2f} dB"
        )


if __name__ == "__main__":
    main()
