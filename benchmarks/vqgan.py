"""The VQGAN recipe against the plain MSE stage 1 on MNIST, at the same K, grid and budget.

For each recipe it trains the default MNIST stage 1 (conv → ema, K=512, 7×7 grid) from the same
seed on the same images for the same epochs, then prints on all 10 000 test images: test MSE, PSNR,
codes used, perplexity, seconds per epoch and the Fréchet distance between the test images'
reconstructions and those same images in the shipped classifier's features
(:mod:`vqtoolkit.scoring.sample_quality`'s score; 0 for a perfect stage 1). The issue's targets
are a distance at most 0.5× the plain stage 1's with test MSE at most 20 % above it, and time per
epoch at most 1.6× the plain loop's.

    python benchmarks/vqgan.py                                  # 1 epoch on all 60 000 images
    python benchmarks/vqgan.py --epochs 15                      # the default digits budget
    python benchmarks/vqgan.py --train-images 10000 --adversarial-start 300   # a short check

MNIST's raw files are read from ``--data-root`` (``/work/shared/data`` holds them here).
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch

import vqtoolkit
from vqtoolkit.data.datasets import ImageDataset
from vqtoolkit.data.streaming import as_tensor
from vqtoolkit.reporting.runs import build_for
from vqtoolkit.scoring import metrics
from vqtoolkit.scoring.classifier import classify, dataset_classifier
from vqtoolkit.training.evaluation import evaluate_autoencoder


def subset(data: ImageDataset, n: int | None) -> ImageDataset:
    """``data`` with only its first ``n`` training images (all of them for ``None``)."""
    if n is None:
        return data
    return ImageDataset(
        data.name,
        data.train_images[:n],
        data.train_labels[:n],
        data.test_images,
        data.test_labels,
        data.num_classes,
        data.image_shape[0],
    )


@torch.inference_mode()
def reconstruct(pipe: vqtoolkit.Pipeline, images: torch.Tensor, batch: int = 1000) -> torch.Tensor:
    """The stage 1's reconstructions of ``images``."""
    pipe.model.eval()
    return torch.cat([pipe.model(x).reconstruction.float() for x in images.split(batch)])


def measure(
    data: ImageDataset, train: ImageDataset, args: argparse.Namespace, **recipe: Any
) -> dict[str, Any]:
    """Train one stage 1 with ``recipe``'s options and score it on every test image."""
    pipe = build_for(data, prior=None, seed=args.seed)
    started = time.perf_counter()
    pipe.fit_autoencoder(train, epochs=args.epochs, seed=args.seed, progress=args.progress, **recipe)
    elapsed = time.perf_counter() - started
    test = as_tensor(data.test_images)
    scores = evaluate_autoencoder(pipe.model, test)
    net = dataset_classifier(data, progress=args.progress)
    _, real = classify(net, test)
    _, rebuilt = classify(net, reconstruct(pipe, test))
    history = pipe.info["history"]
    return {
        "test_mse": scores["mse"],
        "psnr": scores["psnr"],
        "codes_used": scores["codes_used"],
        "perplexity": scores["perplexity"],
        "seconds_per_epoch": sum(r["seconds"] for r in history) / len(history),
        "wall_seconds": elapsed,
        "frechet": metrics.frechet_distance(rebuilt, real),
        "final_disc": history[-1].get("train_disc"),
        "final_lambda": history[-1].get("train_adaptive_weight"),
    }


def main() -> None:
    """Parse the budget, train both recipes, print one table and the ratios against the targets."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-root", default="/work/shared/data")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--train-images", type=int, default=None, help="first N training images only")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--adversarial-weight", type=float, default=0.1)
    parser.add_argument("--adversarial-start", type=int, default=0)
    parser.add_argument("--perceptual-weight", type=float, default=0.0)
    parser.add_argument("--discriminator-channels", type=int, default=None, help="[default: TrainConfig's]")
    parser.add_argument("--discriminator-layers", type=int, default=None, help="[default: TrainConfig's]")
    parser.add_argument("--reconstruction-loss", default="mse", choices=("mse", "l1"))
    parser.add_argument("--threads", type=int, default=None, help="torch threads [default: torch's]")
    parser.add_argument("--progress", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    data = vqtoolkit.load_dataset("mnist", args.data_root)
    train = subset(data, args.train_images)
    recipe = {
        "adversarial_weight": args.adversarial_weight,
        "adversarial_start": args.adversarial_start,
        "perceptual_weight": args.perceptual_weight,
        "reconstruction_loss": args.reconstruction_loss,
    }
    for name in ("discriminator_channels", "discriminator_layers"):
        if getattr(args, name) is not None:
            recipe[name] = getattr(args, name)
    rows = {"mse only": measure(data, train, args), "vqgan recipe": measure(data, train, args, **recipe)}
    print(
        f"MNIST stage 1 (conv → ema, K=512, 7×7), {args.epochs} epoch(s) on {len(train.train_images)} "
        f"training images, seed {args.seed}, {torch.get_num_threads()} threads; recipe: {recipe}"
    )
    columns = ("test_mse", "psnr", "codes_used", "perplexity", "seconds_per_epoch", "frechet")
    print("| stage 1 | " + " | ".join(columns) + " | final D loss | final λ |")
    print("|---" * (len(columns) + 3) + "|")
    for name, row in rows.items():
        cells = [f"{row[c]:.4g}" for c in columns]
        extra = [("-" if row[k] is None else f"{row[k]:.3g}") for k in ("final_disc", "final_lambda")]
        print(f"| {name} | " + " | ".join(cells + extra) + " |")
    plain, gan = rows["mse only"], rows["vqgan recipe"]
    print(
        f"ratios (recipe / plain): frechet {gan['frechet'] / plain['frechet']:.2f} (target <= 0.5), "
        f"test mse {gan['test_mse'] / plain['test_mse']:.2f} (target <= 1.2), "
        f"time per epoch {gan['seconds_per_epoch'] / plain['seconds_per_epoch']:.2f} (target <= 1.6)"
    )


if __name__ == "__main__":
    main()
