"""Codebook health: the tutorial layer (``vq``) against the default recipe (``ema``) and its options.

    python examples/codebook_health.py            # 20 epochs each on the embedded digits: ~20 s
    VQTOOLKIT_EXAMPLE_FAST=1 python examples/codebook_health.py   # one epoch: a smoke test (the test suite's)

Trains the same conv encoder and decoder around three quantizers with a 256-code codebook and prints
held-out reconstruction MSE, how many codes the test set uses and their perplexity. The tutorial
layer trains its codes by the codebook loss alone, so codes far from the encoder's outputs are never
chosen and never move; ``ema`` (EMA updates, k-means initialisation, dead-code revival) keeps them
all in use. Every option is a constructor argument, passed here through ``quantizer_config``.
"""

from __future__ import annotations

import os

import torch

import vqtoolkit

FAST = os.environ.get("VQTOOLKIT_EXAMPLE_FAST") == "1"
NUM_CODES = 256

#: label -> (registered quantizer, its options)
RECIPES = {
    "vq (the tutorial layer)": ("vq", {}),
    "ema (the default)": ("ema", {}),
    "ema, cosine codes": ("ema", {"cosine": True}),
}


def main() -> None:
    data = vqtoolkit.load_dataset("digits")
    print(f"{data.describe()}; K = {NUM_CODES}")
    print(f"{'quantizer':26s} {'test mse':>9s} {'codes used':>11s} {'perplexity':>11s}")
    for label, (name, options) in RECIPES.items():
        torch.manual_seed(0)
        pipe = vqtoolkit.build(
            "conv", name, "conv", prior=None, num_codes=NUM_CODES, quantizer_config=options
        )
        pipe.fit_autoencoder(data, epochs=1 if FAST else 20, progress=False)
        result = pipe.evaluate(data.test_images)
        used = f"{result['codes_used']}/{NUM_CODES}"
        print(f"{label:26s} {result['mse']:9.5f} {used:>11s} {result['perplexity']:11.1f}")


if __name__ == "__main__":
    main()
