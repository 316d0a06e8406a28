"""MaskGIT against the KV-cached AR transformer: time to sample, and (with ``--data-root``) MNIST scores.

Timing: 64 samples at 7×7 and 16×16 code grids from untrained networks of equal size (the
defaults of both: dim 96, 3 blocks of 4 heads, K = 512; maskgit at ``--steps``), best of
``--repeats``, one CPU thread each as the samplers use. Untrained weights cost the same time as
trained ones: every pass is the same arithmetic.

With ``--data-root`` it also trains a default MNIST stage 1 for ``--stage1-epochs`` epochs and
fits maskgit for ``--prior-epochs`` epochs on its codes (a short fit on a shared machine: say so
beside its figures), then prints the shipped sample scores over ``--samples`` samples
(:func:`~vqtoolkit.scoring.sample_quality.score_samples`, with the real-image ceilings) and the
inpainting accuracy: the top half of each test digit kept, the bottom half's codes redrawn, the
completion classified by the shipped classifier, beside the rate for the kept top half alone.

    python benchmarks/maskgit.py
    python benchmarks/maskgit.py --data-root ../shared/data --stage1-epochs 3 --prior-epochs 2
"""

from __future__ import annotations

import argparse
import time

import torch

import vqtoolkit
from vqtoolkit.components import registry
from vqtoolkit.data.streaming import as_tensor
from vqtoolkit.priors.editing import inpaint
from vqtoolkit.priors.neural.base import single_thread
from vqtoolkit.scoring.classifier import classify, dataset_classifier
from vqtoolkit.scoring.sample_quality import format_scores, score_samples

NET = {"dim": 96, "layers": 3, "heads": 4}


def ready(name: str, grid: tuple[int, int], **options: object) -> vqtoolkit.priors.Prior:
    """A prior of ``NET``'s size set up for ``grid`` by a one-step fit on random codes."""
    data = torch.randint(0, 512, (64, *grid), generator=torch.Generator().manual_seed(0))
    prior = registry.create(
        "prior", name, num_codes=512, clusters=None, epochs=1, batch_size=64, **NET, **options
    )
    return prior.fit(data, progress=False)


def seconds_per_image(prior: vqtoolkit.priors.Prior, repeats: int, n: int = 64) -> float:
    """Best wall-clock time of ``repeats`` draws of ``n`` samples, per image."""
    best = float("inf")
    with single_thread():
        for _ in range(repeats):
            start = time.perf_counter()
            prior.sample(n, generator=torch.Generator().manual_seed(0))
            best = min(best, time.perf_counter() - start)
    return best / n


def timing(steps: int, repeats: int) -> None:
    print(f"sampling 64 images, ms per image (dim {NET['dim']}, {NET['layers']} blocks, K = 512, 1 thread)")
    print("| grid | transformer (KV cache) | maskgit, steps " + str(steps) + " | speed-up |")
    print("| --- | --- | --- | --- |")
    for grid in ((7, 7), (16, 16)):
        ar = seconds_per_image(ready("transformer", grid), repeats)
        masked = seconds_per_image(ready("maskgit", grid, steps=steps), repeats)
        print(f"| {grid[0]}×{grid[1]} | {1e3 * ar:.2f} | {1e3 * masked:.2f} | {ar / masked:.1f}× |")


def mnist(root: str, stage1_epochs: int, prior_epochs: int, samples: int) -> None:
    data = vqtoolkit.load_dataset("mnist", root)
    pipe = vqtoolkit.build(prior=None, num_codes=data.default_num_codes)
    start = time.process_time()
    pipe.fit(data, epochs=stage1_epochs, progress=False)
    print(f"stage 1: {stage1_epochs} epochs, {time.process_time() - start:.0f} CPU-s")
    start = time.process_time()
    pipe.fit_prior(data, "maskgit", progress=False, epochs=prior_epochs)
    print(f"maskgit: {prior_epochs} epochs, {time.process_time() - start:.0f} CPU-s (a short fit)")
    print("\n".join(format_scores(score_samples(pipe, data, samples, progress=False))))
    net = dataset_classifier(data, progress=False)
    images, labels = as_tensor(data.test_images[:samples]), data.test_labels[:samples]
    bottom = torch.zeros(images.shape[-2:], dtype=torch.bool)
    bottom[images.shape[-2] // 2 :] = True
    completed = torch.cat([
        inpaint(pipe.model, pipe.prior, batch, bottom, generator=torch.Generator().manual_seed(0))
        for batch in images.split(250)
    ])  # fmt: skip
    for name, shown in (("completed", completed), ("top half alone", images.masked_fill(bottom, 0.0))):
        probs, _ = classify(net, shown)
        accuracy = float((probs.argmax(1) == labels).float().mean())
        print(f"inpainting, {name}: classified as the true digit {100 * accuracy:.1f} % of {len(images)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--stage1-epochs", type=int, default=3)
    parser.add_argument("--prior-epochs", type=int, default=2)
    parser.add_argument("--samples", type=int, default=1000)
    args = parser.parse_args()
    timing(args.steps, args.repeats)
    if args.data_root:
        mnist(args.data_root, args.stage1_epochs, args.prior_epochs, args.samples)


if __name__ == "__main__":
    main()
