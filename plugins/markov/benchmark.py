"""Held-out bits per code of the markov prior against its back-off alone, on a trained bundle's codes.

    python plugins/markov/benchmark.py BUNDLE [--data-root ROOT] [--threads N]

Encodes the bundle's dataset (train and test split) with its frozen stage-1 model, fits each prior on
the train codes and prints bits per code on the test codes, fit time and sampling time. Rows:
uniform (log2 K), the per-position unigram alone (strength → ∞) and the markov prior at a few strengths.
"""

from __future__ import annotations

import argparse
import math
import time

import torch
from vqtoolkit_markov import MarkovPrior

import vqtoolkit
from vqtoolkit.scoring.metrics import bits_per_code


def main() -> None:
    """Print the table for the bundle given on the command line."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("bundle")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    pipe = vqtoolkit.load(args.bundle)
    data = vqtoolkit.load_dataset(pipe.info["dataset"], args.data_root, seed=pipe.info.get("seed", 0))
    train = pipe.prior_inputs(data.train_images, space="indices")
    test = pipe.prior_inputs(data.test_images, space="indices")
    k = pipe.model.quantizer.num_codes
    print(
        f"{pipe.info['dataset']}: {len(train)} train / {len(test)} test code grids "
        f"{tuple(train.shape[1:])}, K={k}"
    )
    print(f"{'prior':<34} {'test bits/code':>14} {'fit s':>7} {'sample 64 s':>11}")
    print(f"{'uniform':<34} {math.log2(k):>14.3f} {'-':>7} {'-':>11}")
    rows = [("per-position unigram (strength=1e12)", 1e12)] + [
        (f"markov strength={s:g}", s) for s in (5, 25, 50, 100)
    ]
    for label, strength in rows:
        start = time.perf_counter()
        prior = MarkovPrior(k, strength=strength).fit(train, progress=False)
        fit_s = time.perf_counter() - start
        start = time.perf_counter()
        prior.sample(64, generator=torch.Generator().manual_seed(0))
        sample_s = time.perf_counter() - start
        bits = bits_per_code(float(-prior.log_prob(test).sum()), test.numel())
        print(f"{label:<34} {bits:>14.3f} {fit_s:>7.3f} {sample_s:>11.3f}")


if __name__ == "__main__":
    main()
