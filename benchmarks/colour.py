"""Colour images, offline: build time and sample scores on ``shapes``, rate against JPEG on ``photos``.

What it prints (the colour issue's figures, where this half of the work can measure them):

* **shapes**: wall time of ``vqtool build --data shapes`` (both stages; the median over ``--runs``),
  then ``vqtool eval --samples N``'s table: classifier score and Fréchet distance of the samples
  beside real images (their spread over random sets too), factor (label) accuracy of a conditional
  prior, each against the issue's target (0.9 × real score, 2 × real distance, 90 %).
* **photos**: stage-1 training time of ``vqtool build --data photos`` (the per-epoch seconds the
  bundle records), then on the held-out crops: bits per pixel (the prior's held-out bits per
  code × codes per image ÷ pixels), the raw rate (log2 K per code) and reconstruction PSNR/SSIM;
  beside them Pillow's JPEG at the highest quality whose bits per pixel are no more than the
  model's. JPEG's header (~600 bytes) would swamp one 32×32 crop, so all test crops are tiled into
  one mosaic (crops on 16-pixel boundaries, so 8×8 blocks and 4:2:0 macroblocks never straddle two
  crops; a short last row is padded with mid-grey, whose bytes are charged to JPEG) and encoded once:
  bits per pixel = file bits ÷ real crop pixels. SSIM is pytorch-msssim's (11×11 Gaussian window),
  PSNR is 10·log10(1 / MSE over all test pixels), the same for both codecs.

Each build is the CLI's own, with its defaults unless ``--epochs`` or ``--extra`` say otherwise,
in a fresh process; bundles go under ``--out`` (``--reuse`` scores bundles already there).

    pip install -e ".[benchmarks]"     # pytorch-msssim
    python benchmarks/colour.py                                   # defaults: pixelcnn, transformer
    python benchmarks/colour.py --epochs 5 --samples 500 --out /tmp/colour   # a small budget
"""

from __future__ import annotations

import argparse
import io
import json
import math
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

import vqtoolkit
from vqtoolkit.data.streaming import as_tensor
from vqtoolkit.scoring import metrics
from vqtoolkit.scoring.sample_quality import format_scores, score_samples

#: Crops per mosaic row for JPEG.
MOSAIC_COLUMNS = 16
#: The issue's targets: sample score ≥ 0.9 × real, Fréchet ≤ 2 × real, factor accuracy ≥ 90 %.
TARGETS = {"classifier_score": 0.9, "frechet": 2.0, "label_accuracy": 0.9}


def build(
    dataset: str, prior: str, out: Path, args: argparse.Namespace, extra: list[str]
) -> tuple[Path, float]:
    """Run ``vqtool build`` in a fresh process; the bundle and its wall seconds."""
    bundle = out / f"{dataset}.safetensors"
    command = [
        sys.executable,
        "-m",
        "vqtoolkit",
        "build",
        "--data",
        dataset,
        "--prior",
        prior,
        "-o",
        str(bundle),
    ]
    command += ["-q", "--seed", str(args.seed), *extra]
    if args.epochs:
        command += ["--epochs", str(args.epochs)]
    if args.reuse and bundle.exists():
        return bundle, float("nan")
    start = time.perf_counter()
    subprocess.run(command, check=True)
    return bundle, time.perf_counter() - start


def shapes_figures(args: argparse.Namespace) -> dict[str, Any]:
    """Build time and sample scores on ``shapes``."""
    extra = ["--conditional"] if args.conditional else []
    times = []
    for _ in range(args.runs):
        bundle, seconds = build("shapes", args.shapes_prior, args.out, args, extra)
        times.append(seconds)
    pipe = vqtoolkit.load(bundle)
    data = pipe.dataset()
    scores = score_samples(pipe, data, args.samples, seed=args.seed, progress=False)
    print(
        f"\n## shapes ({data.describe()}; prior {args.shapes_prior}"
        + (", conditional)" if args.conditional else ")")
    )
    print(f"build (both stages) wall seconds: {fmt_times(times)}")
    print(
        f"stage 1: {stage1_seconds(pipe):.0f} s over {pipe.info.get('epochs')} epochs; "
        f"test psnr {pipe.info['metrics']['test_psnr']:.2f} dB"
    )
    print("\n".join(format_scores(scores)))
    for key, bound in TARGETS.items():
        row = scores[key]
        if row["samples"] is None:
            continue
        if key == "label_accuracy":
            figure, verdict = row["samples"], row["samples"] >= bound
            print(f"target {key}: samples {figure:.3f} >= {bound}: {'met' if verdict else 'NOT met'}")
        else:
            ratio = row["samples"] / row["real_train"]
            verdict = ratio >= bound if key == "classifier_score" else ratio <= bound
            sign = ">=" if key == "classifier_score" else "<="
            print(f"target {key}: samples/real {ratio:.3f} {sign} {bound}: {'met' if verdict else 'NOT met'}")
    return {"build_seconds": times, "scores": scores}


def stage1_seconds(pipe: vqtoolkit.Pipeline) -> float:
    """Stage-1 training seconds the bundle records (the sum of its epochs')."""
    return float(sum(record.get("seconds", 0.0) for record in pipe.info.get("history") or []))


def fmt_times(times: list[float]) -> str:
    real = [t for t in times if math.isfinite(t)]
    if not real:
        return "n/a (reused bundle)"
    each = ", ".join(f"{t:.0f}" for t in real)
    return f"median {statistics.median(real):.0f} over {len(real)} run(s) ({each})"


def mosaic(crops: Tensor) -> tuple[np.ndarray, int]:
    """Test crops tiled row by row into one uint8 ``(H, W, 3)`` picture, and how many are real."""
    n, _, size, _ = crops.shape
    rows = math.ceil(n / MOSAIC_COLUMNS)
    padded = torch.full((rows * MOSAIC_COLUMNS, 3, size, size), 0.5)
    padded[:n] = crops
    grid = padded.view(rows, MOSAIC_COLUMNS, 3, size, size).permute(0, 3, 1, 4, 2)
    pixels = (grid.reshape(rows * size, MOSAIC_COLUMNS * size, 3) * 255 + 0.5).clamp(0, 255).byte()
    return pixels.numpy(), n


def unmosaic(picture: np.ndarray, n: int, size: int) -> Tensor:
    """The inverse of :func:`mosaic`: the first ``n`` crops ``(n, 3, size, size)`` in [0, 1]."""
    rows = picture.shape[0] // size
    tiles = torch.from_numpy(np.array(picture)).float().div(255.0)
    tiles = tiles.view(rows, size, MOSAIC_COLUMNS, size, 3).permute(0, 2, 4, 1, 3).reshape(-1, 3, size, size)
    return tiles[:n]


def quality_figures(rebuilt: Tensor, originals: Tensor) -> tuple[float, float]:
    """PSNR (over all pixels) and mean SSIM of ``rebuilt`` against ``originals``."""
    from pytorch_msssim import ssim

    psnr = metrics.psnr(metrics.mse(rebuilt, originals))
    return psnr, float(ssim(rebuilt, originals, data_range=1.0, size_average=True))


def jpeg_at(crops: Tensor, max_bpp: float) -> dict[str, Any] | None:
    """Pillow JPEG of the test mosaic at the highest quality with at most ``max_bpp`` bits per pixel."""
    picture, n = mosaic(crops)
    pixels = n * crops.shape[2] * crops.shape[3]
    best = None
    for quality in range(1, 96):
        buffer = io.BytesIO()
        Image.fromarray(picture, "RGB").save(buffer, format="JPEG", quality=quality)
        bpp = 8 * buffer.tell() / pixels
        if bpp > max_bpp:
            break
        best = (quality, bpp, buffer.getvalue())
    if best is None:
        return None
    quality, bpp, data = best
    decoded = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    psnr, ssim = quality_figures(unmosaic(decoded, n, crops.shape[2]), crops)
    return {"quality": quality, "bpp": bpp, "psnr": psnr, "ssim": ssim, "bytes": len(data)}


def photos_figures(args: argparse.Namespace) -> dict[str, Any]:
    """Stage-1 time, bits per pixel and reconstruction quality on ``photos`` against JPEG."""
    bundle, seconds = build("photos", args.photos_prior, args.out, args, [])
    pipe = vqtoolkit.load(bundle)
    data = pipe.dataset()
    crops = as_tensor(data.test_images)
    with torch.inference_mode():
        rebuilt = torch.cat([pipe.reconstruct(batch).cpu() for batch in crops.split(256)]).clamp(0, 1)
    psnr, ssim = quality_figures(rebuilt, crops)
    positions = math.prod(pipe.grid_shape() or (0,))
    pixels = crops.shape[2] * crops.shape[3]
    bits = pipe.prior_metrics(crops).get("prior_bits_per_code")
    raw = math.log2(pipe.model.quantizer.num_codes) * positions / pixels
    bpp = None if bits is None else bits * positions / pixels
    print(f"\n## photos ({data.describe()}; prior {args.photos_prior})")
    print(
        f"build wall seconds {fmt_times([seconds])}; "
        f"stage 1 {stage1_seconds(pipe):.0f} s over {pipe.info.get('epochs')} epochs"
    )
    print(f"codes per crop {positions} (grid {pipe.grid_shape()}), K = {pipe.model.quantizer.num_codes}")
    print(f"{'':<28}{'bits/pixel':>11}{'PSNR dB':>9}{'SSIM':>7}")
    rows: dict[str, Any] = {"model": {"bpp": bpp, "raw_bpp": raw, "psnr": psnr, "ssim": ssim}}
    rate = f"{bpp:>11.3f}" if bpp is not None else f"{'n/a':>11}"
    print(f"{'vqtoolkit (prior rate)':<28}{rate}{psnr:>9.2f}{ssim:>7.3f}")
    print(f"{'vqtoolkit (raw log2 K)':<28}{raw:>11.3f}{psnr:>9.2f}{ssim:>7.3f}")
    for name, budget in (("prior rate", bpp), ("raw rate", raw)):
        if budget is None:
            continue
        jpeg = jpeg_at(crops, budget)
        rows[f"jpeg_at_{name.replace(' ', '_')}"] = jpeg
        if jpeg is None:
            print(f"{'JPEG ≤ ' + name:<28}{'no quality is that small':>27}")
        else:
            title = f"JPEG q={jpeg['quality']} ≤ {name}"
            print(f"{title:<28}{jpeg['bpp']:>11.3f}{jpeg['psnr']:>9.2f}{jpeg['ssim']:>7.3f}")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/colour"))
    parser.add_argument("--epochs", type=int, default=None, help="stage-1 epochs [default: per dataset]")
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=1, help="shapes builds to time (the median is quoted)")
    parser.add_argument("--shapes-prior", default="pixelcnn")
    parser.add_argument("--conditional", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--photos-prior", default="transformer")
    parser.add_argument("--only", choices=("shapes", "photos"), default=None)
    parser.add_argument("--reuse", action="store_true", help="score bundles already under --out")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; "
        f"stage-1 epochs {args.epochs or 'per dataset'}"
    )
    results: dict[str, Any] = {}
    if args.only in (None, "shapes"):
        results["shapes"] = shapes_figures(args)
    if args.only in (None, "photos"):
        results["photos"] = photos_figures(args)
    (args.out / "colour.json").write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
