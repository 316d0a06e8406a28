"""Every quantizer and codebook option on real MNIST, after the same training budget.

Trains the classic architecture (conv encoder/decoder, D = 64, batch 128) once per configuration
through vqtoolkit's own training loop, then prints one markdown table: test MSE,
codes used, perplexity, dead codes (all from counts over the whole test set) and train images/s.
Throughput is measured separately, interleaved round-robin over the configurations on the same
slice of data, so the machine's contention hits every configuration alike; its reference is the
tutorial model itself, the same architecture and loop with the tutorial's quantizer layer verbatim
(``tutorial_layer.py``). It also saves a codebook-usage histogram of the tutorial layer (``vq``)
against the default recipe and checks the targets. Results accumulate in ``--out``/quantizers.json,
so configurations can be run in separate sessions (each run times its labels against the tutorial
model again, in the same rounds). Every label trains with vqtoolkit's default schedule (Adam, peak
1e-2, warm-up + cosine) unless it sets ``lr=``/``lr_schedule=``/``start_at_mean=``; ``vq``,
vqtoolkit's version of the tutorial layer (same formulas, faster search), trains the tutorial's way
(Adam 1e-3, constant, decoder output starting at 0.5).

    python benchmarks/quantizers.py --data-root ../shared/data --epochs 5
    python benchmarks/quantizers.py --data-root ../shared/data --epochs 1 --only vq,ema
    python benchmarks/quantizers.py --epochs 0 --only vq,ema --rounds 9   # throughput again
    python benchmarks/quantizers.py --data-root ../shared/data --epochs 5 --threads 1 --rounds 1 \
        --batches 5 --only "ema min_usage=6 beta=0.1" --out /tmp/tuning   # any label of the same form
"""

from __future__ import annotations

import argparse
import ast
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from tutorial_layer import TutorialQuantizer  # benchmarks/ is on sys.path when run as a script

import vqtoolkit
from vqtoolkit.scoring import metrics
from vqtoolkit.training.loop import train_autoencoder

K, D = 512, 64
#: The configurations a default run compares. Any other is a label of the same form, given with
#: ``--only``: a registered quantizer, then its options and training options as ``key=value``
#: (``"ema min_usage=6 beta=0.1"``, ``"ema lr=4e-3"``, ``"fsq levels=[8,8,8]"``); see :func:`parse`.
DEFAULT_LABELS = (
    "vq",
    "ema",
    "vq ema=True",
    "vq kmeans_init=True",
    "vq revive_after=20",
    "vq cosine=True",
    "vq code_dim=8",
    "vq rotation_trick=True",
    "ema rotation_trick=True",
    "ema cosine=True",
    "ema code_dim=8",
    "residual num_stages=2 ema=True kmeans_init=True revive_after=20",
    "fsq levels=[8,8,8]",
)
#: ``train_autoencoder`` options a label may set; every other ``key=value`` is a quantizer option.
TRAINING_KEYS = ("lr", "lr_schedule", "start_at_mean")
#: The tutorial's own training (Adam 1e-3, constant, decoder output starting at 0.5): ``vq`` trains so.
TUTORIAL_TRAINING = {"lr": 1e-3, "lr_schedule": "constant", "start_at_mean": False}


def parse(label: str) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """A label's quantizer, its options and training options.

    ``"ema min_usage=6 lr=4e-3"`` → ``("ema", {"min_usage": 6}, {"lr": 0.004})``.
    """
    name, *pairs = label.split()
    options: dict[str, Any] = {}
    training: dict[str, Any] = dict(TUTORIAL_TRAINING) if label == "vq" else {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep:
            raise SystemExit(f"label {label!r}: {pair!r} is not key=value")
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = text  # a bare word: a string option such as lr_schedule=constant
        (training if key in TRAINING_KEYS else options)[key] = value
    return name, options, training


#: The speed reference in the throughput rounds: the tutorial's own layer in the same loop.
TUTORIAL = "tutorial layer"
TARGETS = {"mse": 0.0020, "used_fraction": 0.99, "perplexity": 250.0}


def make_model(label: str, seed: int) -> vqtoolkit.VQVAE:
    name, options, _ = parse(label)
    torch.manual_seed(seed)
    shared = {} if name == "fsq" else {"num_codes": K, "dim": D}  # fsq's dim is len(levels)
    return vqtoolkit.build(
        "conv", name, "conv", None, in_channels=1, quantizer_config=options, **shared
    ).model


def tutorial_model() -> vqtoolkit.VQVAE:
    """The classic architecture with the tutorial's own quantizer layer, verbatim (the speed reference)."""
    model = make_model("vq", 0)
    model.quantizer = TutorialQuantizer(num_codes=K, dim=D)
    return model


def throughput(labels: list[str], images: torch.Tensor, rounds: int, batches: int) -> dict[str, float]:
    """Median train images/s per configuration, timed round-robin on the same ``batches`` batches.

    The :data:`TUTORIAL` entry is the tutorial model itself: the same architecture and loop with the
    tutorial's quantizer layer verbatim.
    """
    chunk = images[: 128 * batches]
    models = {label: make_model(label, 0) for label in labels} | {TUTORIAL: tutorial_model()}
    for model in models.values():  # warm-up: allocator, k-means init, first-step costs
        train_autoencoder(model, chunk[:256], epochs=1, progress=False)
    rates: dict[str, list[float]] = {label: [] for label in models}
    for _ in range(rounds):
        for label in models:
            start = time.perf_counter()
            train_autoencoder(models[label], chunk, epochs=1, progress=False)
            rates[label].append(len(chunk) / (time.perf_counter() - start))
    return {label: statistics.median(r) for label, r in rates.items()}


def train_once(label: str, seed: int, train: torch.Tensor, test: torch.Tensor, epochs: int) -> dict[str, Any]:
    """One training run of ``label`` from ``seed`` (weights and shuffling) and its test-set figures."""
    model = make_model(label, seed)
    start = time.perf_counter()
    history = train_autoencoder(
        model, train, test, epochs=epochs, seed=seed, progress=False, **parse(label)[2]
    )
    wall = time.perf_counter() - start
    counts = test_counts(model, test)
    return {
        "seed": seed,
        "mse": history[-1]["test_mse"],
        "codes_used": history[-1]["test_codes_used"],
        "num_codes": model.quantizer.num_codes,
        "perplexity": history[-1]["test_perplexity"],
        "dead_codes": metrics.dead_codes(counts),
        "wall_s": wall,
        "history": history,
        "test_counts": counts.tolist(),
    }


@torch.inference_mode()
def test_counts(model: vqtoolkit.VQVAE, images: torch.Tensor) -> torch.Tensor:
    model.eval()
    return sum(model(batch).quantizer.counts for batch in images.split(1024))  # type: ignore[return-value]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-root", default="../shared/data")
    parser.add_argument("--epochs", type=int, default=5, help="0: only re-measure throughput")
    parser.add_argument("--only", default=None, help="comma-separated labels (default: all)")
    parser.add_argument("--train-size", type=int, default=None, help="first N training images (default: all)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seeds", type=int, default=1, help="runs per label (seeds 0..N-1), averaged")
    parser.add_argument("--rounds", type=int, default=3, help="throughput rounds")
    parser.add_argument("--batches", type=int, default=40, help="batches per throughput round")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--plot", type=Path, default=Path("docs/assets/codebook-usage.png"))
    parser.add_argument("--report", action="store_true", help="only print the table of stored results")
    args = parser.parse_args()
    store = args.out / "quantizers.json"
    if args.report:
        report(json.loads(store.read_text()), args.plot)
        return
    torch.set_num_threads(args.threads)
    labels = list(DEFAULT_LABELS) if args.only is None else args.only.split(",")
    data = vqtoolkit.load_dataset("mnist", args.data_root)
    print(
        f"{data.describe()}; {args.epochs} epochs, batch 128, {torch.get_num_threads()} threads", flush=True
    )

    # Throughput: the tutorial model is timed in the same interleaved rounds as every label.
    train_images = data.train_images[: args.train_size]
    rates = throughput(labels, train_images, args.rounds, args.batches)
    print(
        "throughput (images/s, interleaved): " + ", ".join(f"{k} {v:.0f}" for k, v in rates.items()),
        flush=True,
    )
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict[str, Any]] = json.loads(store.read_text()) if store.exists() else {}
    if args.epochs == 0:  # throughput only: refresh the stored rates, measured in this one run
        for label in labels:
            results[label].update(images_per_s=rates[label], images_per_s_tutorial_same_run=rates[TUTORIAL])
        store.write_text(json.dumps(results, indent=1))
        report(results, args.plot)
        return
    for label in labels:
        runs = [
            train_once(label, seed, train_images, data.test_images, args.epochs) for seed in range(args.seeds)
        ]
        results[label] = {
            "epochs": args.epochs,
            "train_images": len(train_images),
            "training": parse(label)[2],
            "seeds": args.seeds,
            "mse": statistics.mean(r["mse"] for r in runs),
            "codes_used": min(r["codes_used"] for r in runs),
            "num_codes": runs[0]["num_codes"],
            "perplexity": statistics.mean(r["perplexity"] for r in runs),
            "images_per_s": rates[label],
            "images_per_s_tutorial_same_run": rates[TUTORIAL],
            "runs": runs,
            "test_counts": runs[0]["test_counts"],
        }
        store.write_text(json.dumps(results, indent=1))
        print(
            f"{label}: mse {results[label]['mse']:.5f}  codes {results[label]['codes_used']}/"
            f"{runs[0]['num_codes']}  perplexity {results[label]['perplexity']:.1f}  "
            f"{rates[label]:.0f} img/s  (mean of {args.seeds} seeds: "
            + ", ".join(f"{r['mse']:.5f}/{r['perplexity']:.0f}" for r in runs)
            + ")",
            flush=True,
        )
    report(results, args.plot)


def report(results: dict[str, dict[str, Any]], plot: Path) -> None:
    """The markdown table of every stored result, the target check and the usage histogram."""
    print(
        "\n| quantizer and options | epochs × train images | test MSE | codes used | perplexity "
        "| train images/s | × tutorial (same run) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for label in sorted(
        results, key=lambda x: DEFAULT_LABELS.index(x) if x in DEFAULT_LABELS else len(DEFAULT_LABELS)
    ):
        r = results[label]
        training = r.get("training", {})
        recipe = (
            f" (Adam {training['lr']:g}, {training['lr_schedule']}"
            f"{', output from 0.5' if training.get('start_at_mean') is False else ''})"
            if "lr_schedule" in training
            else ""
        )
        print(
            f"| `{label}`{recipe} | {r['epochs']} × {r['train_images']} | {spread(r, 'mse', '.5f')} "
            f"| {r['codes_used']}/{r['num_codes']} | {spread(r, 'perplexity', '.1f')} "
            f"| {r['images_per_s']:.0f} "
            f"| {r['images_per_s'] / r['images_per_s_tutorial_same_run']:.2f} |"
        )
    if {"vq", "ema"} <= set(results):
        d = results["ema"]
        speed = d["images_per_s"] / d["images_per_s_tutorial_same_run"]
        checks = {
            f"test MSE {d['mse']:.5f} <= {TARGETS['mse']}": d["mse"] <= TARGETS["mse"],
            f"codes used {d['codes_used']}/{K} >= 99%": d["codes_used"] >= TARGETS["used_fraction"] * K,
            f"perplexity {d['perplexity']:.1f} >= {TARGETS['perplexity']}": d["perplexity"]
            >= TARGETS["perplexity"],
            f"images/s {speed:.2f}x the tutorial layer's in the same run (>= 1)": speed >= 1.0,
            f"within 5 epochs ({d['epochs']})": d["epochs"] <= 5,
        }
        print(f"\ndefault recipe (`ema`, mean of {d.get('seeds', 1)} seed(s)) vs targets:")
        for text, ok in checks.items():
            print(f"  [{'ok' if ok else 'MISSED'}] {text}")
        plot_usage(torch.tensor(results["vq"]["test_counts"]), torch.tensor(d["test_counts"]), plot)
        print(f"usage histogram: {plot}")


def spread(result: dict[str, Any], key: str, fmt: str) -> str:
    """``mean`` or, over several seeds, ``mean (min-max)``."""
    values = [run[key] for run in result.get("runs", [])]
    text = format(result[key], fmt)
    return text if len(values) < 2 else f"{text} ({format(min(values), fmt)}-{format(max(values), fmt)})"


def plot_usage(tutorial: torch.Tensor, default: torch.Tensor, path: Path) -> None:
    """Per-code share of the test set, codes sorted by use, tutorial layer vs default recipe."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.2), dpi=120)
    for counts, name in ((tutorial, "vq (tutorial layer)"), (default, "ema (default recipe)")):
        share = (counts.double() / counts.sum()).sort(descending=True).values * 100
        ax.bar(
            range(len(share)),
            share.numpy(),
            width=1.0,
            alpha=0.6,
            label=f"{name}: {metrics.codes_used(counts)} codes, perplexity {metrics.perplexity(counts):.0f}",
        )
    ax.axhline(100 / K, color="k", lw=0.8, ls="--", label="uniform (1/K)")
    ax.set(
        xlabel="code rank (sorted by use)",
        ylabel="% of test positions",
        yscale="log",
        title=f"MNIST test-set code usage, K = {K}",
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)


if __name__ == "__main__":
    main()
