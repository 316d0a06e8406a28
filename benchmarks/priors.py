"""Compare the priors on one dataset: held-out bits/code, sample scores, fit time, time to sample 64.

Stage 1 is the default recipe (``build(prior=None)``: conv encoder, ``ema`` quantizer with the
dataset's default K, conv decoder, the dataset's default epochs), trained once and cached as a
bundle (``--stage1``). Every prior is then fitted on the same frozen codes, scored with
``Pipeline.prior_nll`` (the function ``vqtool eval`` uses) and with
:func:`vqtoolkit.scoring.sample_quality.score_samples` (the scores of ``vqtool eval --samples``: classifier
score, Fréchet distance to the test split, label accuracy of conditional priors), each beside the
same figure for real training images. Each prior's grid is saved under ``--assets``.

    python benchmarks/priors.py --data digits
    python benchmarks/priors.py --data mnist --data-root ../shared/data

Times are wall-clock on this machine, noisy when it is shared: sampling is timed as the best of
``--repeats`` runs; fit CPU time (all threads) is printed too.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path
from typing import Any

import torch

import vqtoolkit
from vqtoolkit.components import registry
from vqtoolkit.data.images import save_grid
from vqtoolkit.priors.clustered import LIKELIHOOD_CLUSTERS
from vqtoolkit.scoring import metrics
from vqtoolkit.scoring.sample_quality import score_samples
from vqtoolkit.stages import fit_inputs_taken

#: Benchmark row → (registered prior, options).
PRIORS: dict[str, tuple[str, dict[str, Any]]] = {
    "categorical": ("categorical", {}),
    "gmm": ("gmm", {}),
    "pixelcnn": ("pixelcnn", {}),
    "pixelcnn-conditional": ("pixelcnn", {"conditional": True}),
    "pixelcnn-no-clusters": ("pixelcnn", {"clusters": None}),
    "pixelcnn-16-clusters": ("pixelcnn", {"clusters": 16}),
    "transformer": ("transformer", {}),
    "transformer-conditional": ("transformer", {"conditional": True}),
    "transformer-no-clusters": ("transformer", {"clusters": None}),
    "maskgit": ("maskgit", {}),
}


def stage1(path: Path, data: vqtoolkit.ImageDataset, epochs: int | None, seed: int) -> vqtoolkit.Pipeline:
    """The cached default-recipe stage 1, trained here if ``path`` does not exist yet."""
    if path.exists():
        return vqtoolkit.load(path)
    pipe = vqtoolkit.build(prior=None, num_codes=data.default_num_codes)
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


#: Test grids on which a clustered prior's bound is checked against the exact sum over every cluster.
EXACT_CHECK_ROWS = 500


@torch.inference_mode()
def exact_check(pipe: vqtoolkit.Pipeline, images: torch.Tensor) -> dict[str, float]:
    """A many-cluster prior's bits per code on the first :data:`EXACT_CHECK_ROWS` test images, twice.

    ``bound`` is ``log_prob``'s (``Pipeline.prior_nll``'s) sum over the clusters nearest each grid,
    ``exact`` the sum over every cluster (one network pass per cluster): the gap is what the bound
    costs.
    """
    codes = pipe.prior_inputs(images[:EXACT_CHECK_ROWS], space="indices")
    scale = codes.numel() * math.log(2)
    exact = -float(torch.logsumexp(pipe.prior.log_joint(codes), 0).sum()) / scale
    return {"rows": len(codes), "bound": -float(pipe.prior.log_prob(codes).sum()) / scale, "exact": exact}


def fmt(value: float | None, digits: int = 3) -> str:
    """A table cell: the value, or a dash where there is none."""
    return "–" if value is None else f"{value:.{digits}f}"


#: The sample figures of the table, with their decimals.
FIGURES = (("classifier_score", 2), ("frechet", 2), ("label_accuracy", 3))


def score_cell(row: dict[str, Any], figure: str, digits: int) -> str:
    """A sample figure of a row, followed by the same network's unguided figure where it was guided."""
    value = fmt(row["quality"][figure]["samples"], digits)
    unguided = (row.get("unguided_quality") or {}).get(figure, {}).get("samples")
    return value if unguided is None else f"{value} ({fmt(unguided, digits)} unguided)"


def table(rows: list[dict[str, Any]], real: dict[str, Any], k: int) -> list[str]:
    """The markdown table of every prior, with the real-image ceiling and the uniform reference."""
    lines = [
        "| prior | held-out NLL (bits/code) | classifier score | Fréchet to test | label accuracy "
        "| fit time (s) (CPU s, epochs) | sample 64 (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        nll = (
            "n/a (continuous latents)"
            if row["test_bits_per_code"] is None
            else f"{row['test_bits_per_code']:.3f}"
            + (
                f" ({row['test_bits_per_code_given_label']:.3f} given the label)"
                if row["test_bits_per_code_given_label"] is not None
                else ""
            )
            + (
                f" (first {row['exact_check']['rows']}: {row['exact_check']['bound']:.3f}, "
                f"{row['exact_check']['exact']:.3f} over every cluster)"
                if row.get("exact_check") is not None
                else ""
            )
        )
        epochs = f", {row['epochs']} epochs" if row.get("epochs") else ""
        guided = row.get("unguided_quality") is not None
        name = f"`{row['prior']}` (guidance {row['guidance']:g})" if guided else f"`{row['prior']}`"
        cells = [score_cell(row, figure, digits) for figure, digits in FIGURES]
        lines.append(
            f"| {name} | {nll} | {' | '.join(cells)} "
            f"| {row['fit_s']:.1f} ({row['fit_cpu_s']:.1f} CPU{epochs}) | {row['sample64_s']:.3f} |"
        )
    lines.append(
        f"| stage-1 reconstructions of the same training images | "
        f"| {fmt(real['classifier_score']['reconstructions'], 2)} "
        f"| {fmt(real['frechet']['reconstructions'], 2)} "
        f"| {fmt(real['label_accuracy']['reconstructions'])} | | |"
    )
    subsets = real["frechet"].get("real_train_subsets") or []
    spread = (
        f" ({min(subsets):.2f} to {max(subsets):.2f} over {len(subsets)} random sets)"
        if len(subsets) > 1
        else ""
    )
    lines.append(
        f"| real training images (ceiling) | | {fmt(real['classifier_score']['real_train'], 2)} "
        f"| {fmt(real['frechet']['real_train'], 2)}{spread} "
        f"| {fmt(real['label_accuracy']['real_train'])} | | |"
    )
    lines.append(f"| uniform over K = {k} (reference) | {math.log2(k):.3f} | | | | | |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", default="mnist", choices=["digits", "mnist", "fashion-mnist"])
    parser.add_argument("--data-root", default="../shared/data")
    parser.add_argument(
        "--stage1", type=Path, default=None, help="[default: runs/priors-stage1-DATA.safetensors]"
    )
    parser.add_argument("--stage1-epochs", type=int, default=None, help="[default: the dataset's default]")
    parser.add_argument("--priors", nargs="+", default=list(PRIORS), choices=list(PRIORS))
    parser.add_argument(
        "--prior-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="Extra option for the trained priors (pixelcnn, transformer), e.g. epochs=3; JSON values.",
    )
    parser.add_argument("--samples", type=int, default=1000, help="Samples scored per prior.")
    parser.add_argument("--assets", type=Path, default=Path("docs/assets"))
    parser.add_argument(
        "--threads", type=int, default=1, help="torch intra-op threads (1 is steadiest when shared)"
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="Also write the rows here.")
    parser.add_argument(
        "--merge",
        type=Path,
        nargs="+",
        default=None,
        help="Print one table from the --json files of earlier runs (priors fitted in parallel) and exit.",
    )
    args = parser.parse_args()
    if args.merge:
        runs = [json.loads(path.read_text()) for path in args.merge]
        rows = [row for run in runs for row in run["rows"]]
        print("\n".join(table(rows, rows[-1]["quality"], runs[0]["num_codes"])))
        return

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    extra = {key: json.loads(value) for key, _, value in (o.partition("=") for o in args.prior_option)}
    data = vqtoolkit.load_dataset(args.data, args.data_root, seed=args.seed)
    stage1_path = args.stage1 or Path(f"runs/priors-stage1-{args.data}.safetensors")
    pipe = stage1(stage1_path, data, args.stage1_epochs, args.seed)
    k = pipe.model.quantizer.num_codes
    start = time.perf_counter()
    inputs = {space: pipe.prior_inputs(data.train_images, space=space) for space in ("indices", "latents")}
    encode_s = time.perf_counter() - start
    usage = metrics.codes_used(torch.bincount(inputs["indices"].reshape(-1), minlength=k))
    print(
        f"stage 1: {stage1_path} (K={k}, {usage} codes used on train; encoding train set {encode_s:.1f} s); "
        f"threads={args.threads}"
    )
    print(f"reference: log2(K) = {math.log2(k):.3f} bits/code, log2(codes used) = {math.log2(usage):.3f}")

    rows = []
    args.assets.mkdir(parents=True, exist_ok=True)
    for name in args.priors:
        prior_name, options = PRIORS[name]
        cls = registry.get_class("prior", prior_name)
        if cls.space == "indices":
            options = {"num_codes": k, **options}
        if prior_name in ("pixelcnn", "transformer"):
            options = {**options, **extra}
        if options.get("conditional"):
            options["num_classes"] = data.num_classes
        prior = registry.create("prior", prior_name, **options)
        start, cpu = time.perf_counter(), time.process_time()
        clustered = getattr(prior, "clustered", False)
        # as stage 2 does: what the prior's fit asks for, here the code vectors clusters group grids by
        offered = fit_inputs_taken(prior, code_vectors=pipe.code_vectors())
        prior.fit(inputs[prior.space], labels=data.train_labels, progress=True, **offered)
        fit_s, fit_cpu_s = time.perf_counter() - start, time.process_time() - cpu
        pipe.prior = prior
        nll = pipe.prior_nll(data.test_images)
        checked = clustered and prior.clusters > LIKELIHOOD_CLUSTERS  # else the likelihood is exact
        check = exact_check(pipe, data.test_images) if checked else None
        given_label = pipe.prior_nll(data.test_images, data.test_labels) if prior.conditional else None
        sample_s, images = time_sampling(pipe, args.repeats)
        quality = score_samples(pipe, data, args.samples, seed=args.seed)
        unguided = None
        if getattr(prior, "guidance", 1) != 1:  # the same network without guidance
            guidance, prior.guidance = prior.guidance, 1.0
            unguided = score_samples(pipe, data, args.samples, seed=args.seed)
            prior.guidance = guidance
        stem = f"priors-{args.data}-{name}"
        if not prior.conditional:
            save_grid(images, args.assets / f"{stem}.png", nrow=8)
        else:  # one row per class
            rows_of_classes = [
                pipe.sample(8, label=d, generator=torch.Generator().manual_seed(d))
                for d in range(data.num_classes)
            ]
            save_grid(torch.cat(rows_of_classes), args.assets / f"{stem}-by-label.png", nrow=8)
        rows.append(
            {
                "prior": name,
                "test_bits_per_code": nll,
                "test_bits_per_code_given_label": given_label,
                "exact_check": check,
                "fit_s": fit_s,
                "fit_cpu_s": fit_cpu_s,
                "epochs": len(getattr(prior, "history", []) or []) or None,
                "sample64_s": sample_s,
                "guidance": getattr(prior, "guidance", None),
                "quality": quality,
                "unguided_quality": unguided,
            }
        )
        print(json.dumps(rows[-1]), f"load average {os.getloadavg()[0]:.1f}", flush=True)
        if args.json:  # after every prior: a long run that stops keeps what it measured
            args.json.write_text(json.dumps({"codes_used": usage, "num_codes": k, "rows": rows}, indent=2))

    print()
    print("\n".join(table(rows, rows[-1]["quality"], k)))


if __name__ == "__main__":
    main()
