"""Compare the priors on real MNIST: held-out NLL (bits/code), fit time, time to sample 64 images.

Stage 1 is the default recipe (``build(prior=None)``: conv encoder, ``ema`` quantizer with K=512,
conv decoder, MNIST's default epochs), trained once and cached as a bundle (``--stage1``). Every
prior is then fitted on the same frozen codes, scored with ``Pipeline.prior_nll`` (the function
``vqtool eval`` uses) and sampled with a fixed seed; each prior's grid is saved under ``--assets``.

    python benchmarks/priors.py --data-root ../shared/data

Targets: pixelcnn NLL clearly below categorical's, categorical below log2(K); pixelcnn samples 64
images in under 1 s; gmm fits in under 30 s. Times are wall-clock on this machine, noisy when it is
shared: sampling is timed as the best of ``--repeats`` runs.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import torch

import vqtoolkit
from vqtoolkit import metrics, registry
from vqtoolkit.images import save_grid

#: Benchmark row → (registered prior, options).
PRIORS: dict[str, tuple[str, dict[str, Any]]] = {
    "categorical": ("categorical", {}),
    "gmm": ("gmm", {}),
    "pixelcnn": ("pixelcnn", {}),
    "pixelcnn-conditional": ("pixelcnn", {"conditional": True}),
}


def stage1(path: Path, data: vqtoolkit.ImageDataset, epochs: int | None, seed: int) -> vqtoolkit.Pipeline:
    """The cached default-recipe stage 1, trained here if ``path`` does not exist yet."""
    if path.exists():
        return vqtoolkit.load(path)
    pipe = vqtoolkit.build(prior=None)
    pipe.fit(data, epochs=epochs, seed=seed)
    pipe.save(path)
    return pipe


def time_sampling(
    pipe: vqtoolkit.Pipeline, repeats: int, label: int | None = None
) -> tuple[float, torch.Tensor]:
    """Best wall time of ``repeats`` end-to-end draws of 64 images (prior → codes → decoder)."""
    best, images = math.inf, None
    for _ in range(repeats):
        start = time.perf_counter()
        images = pipe.sample(64, label=label, generator=torch.Generator().manual_seed(0))
        best = min(best, time.perf_counter() - start)
    return best, images


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-root", default="../shared/data")
    parser.add_argument("--stage1", type=Path, default=Path("runs/priors-stage1-mnist.safetensors"))
    parser.add_argument("--stage1-epochs", type=int, default=None, help="[default: the dataset's default]")
    parser.add_argument("--priors", nargs="+", default=list(PRIORS), choices=list(PRIORS))
    parser.add_argument("--assets", type=Path, default=Path("docs/assets"))
    parser.add_argument(
        "--threads", type=int, default=1, help="torch intra-op threads (1 is steadiest when shared)"
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="Also write the rows here.")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    data = vqtoolkit.load_dataset("mnist", args.data_root, seed=args.seed)
    pipe = stage1(args.stage1, data, args.stage1_epochs, args.seed)
    k = pipe.model.quantizer.num_codes
    start = time.perf_counter()
    inputs = {space: pipe.prior_inputs(data.train_images, space=space) for space in ("indices", "latents")}
    encode_s = time.perf_counter() - start
    usage = metrics.codes_used(torch.bincount(inputs["indices"].reshape(-1), minlength=k))
    print(
        f"stage 1: {args.stage1} (K={k}, {usage} codes used on train; encoding train set {encode_s:.1f} s); "
        f"threads={args.threads}"
    )
    print(f"reference: log2(K) = {math.log2(k):.3f} bits/code, log2(codes used) = {math.log2(usage):.3f}")

    rows = []
    args.assets.mkdir(parents=True, exist_ok=True)
    for name in args.priors:
        prior_name, options = PRIORS[name]
        if registry.get_class("prior", prior_name).space == "indices":
            options = {"num_codes": k, **options}
        prior = registry.create("prior", prior_name, **options)
        start = time.perf_counter()
        prior.fit(inputs[prior.space], labels=data.train_labels, progress=True)
        fit_s = time.perf_counter() - start
        pipe.prior = prior
        nll = pipe.prior_nll(data.test_images)
        given_label = pipe.prior_nll(data.test_images, data.test_labels) if prior.conditional else None
        sample_s, images = time_sampling(pipe, args.repeats)
        save_grid(images, args.assets / f"priors-{name}.png", nrow=8)
        if prior.conditional:  # one row per digit 0-9
            rows_of_digits = [
                pipe.sample(8, label=d, generator=torch.Generator().manual_seed(d)) for d in range(10)
            ]
            save_grid(torch.cat(rows_of_digits), args.assets / f"priors-{name}-by-label.png", nrow=8)
        rows.append(
            {
                "prior": name,
                "test_bits_per_code": nll,
                "test_bits_per_code_given_label": given_label,
                "fit_s": fit_s,
                "sample64_s": sample_s,
            }
        )
        print(json.dumps(rows[-1]))

    print("\n| prior | held-out NLL (bits/code) | fit time (s) | sample 64 images (s) |")
    print("|---|---|---|---|")
    for row in rows:
        nll = (
            "n/a (density over continuous latents)"
            if row["test_bits_per_code"] is None
            else (
                f"{row['test_bits_per_code']:.3f}"
                + (
                    f" ({row['test_bits_per_code_given_label']:.3f} given the label)"
                    if row["test_bits_per_code_given_label"] is not None
                    else ""
                )
            )
        )
        print(f"| {row['prior']} | {nll} | {row['fit_s']:.1f} | {row['sample64_s']:.3f} |")
    print(f"| (uniform over K={k}) | {math.log2(k):.3f} | | |")
    if args.json:
        args.json.write_text(json.dumps({"codes_used": usage, "num_codes": k, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
