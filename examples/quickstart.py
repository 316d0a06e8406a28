"""Quickstart: train a VQ-VAE (EMA codebook) and its GMM prior on the embedded digits, sample, save, reload.

    python examples/quickstart.py            # the dataset's 15 epochs (batches of 32): ~30 s of CPU time
    VQTOOLKIT_EXAMPLE_FAST=1 python examples/quickstart.py   # one epoch: a smoke test (the test suite's)

Writes ``quickstart-out/model.safetensors`` and ``quickstart-out/samples.png`` in the current directory.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

import vqtoolkit
from vqtoolkit.data.images import save_grid

FAST = os.environ.get("VQTOOLKIT_EXAMPLE_FAST") == "1"


def main() -> None:
    torch.manual_seed(0)
    out = Path("quickstart-out")

    # 1. Data: 1 797 scikit-learn digits upsampled to 28×28, split into train and held-out test.
    data = vqtoolkit.load_dataset("digits")
    print(data.describe())

    # 2. Compose registered components by name; shared options go to every component that takes them.
    pipe = vqtoolkit.build(
        encoder="conv", quantizer="ema", decoder="conv", prior="gmm", dim=64, num_codes=512
    )

    # 3. Stage 1 trains the autoencoder, stage 2 fits the prior on its latents.
    pipe.fit(data, epochs=1 if FAST else None, progress=not FAST)
    metrics = pipe.info["metrics"]
    print(f"test mse {metrics['test_mse']:.5f}, codes used {metrics['test_codes_used']}/512")

    # 4. Sample new images from the prior and save them as a grid.
    images = pipe.sample(64, generator=torch.Generator().manual_seed(0))
    save_grid(images, out / "samples.png")

    # 5. One .safetensors file holds both stages; loading validates it first and never unpickles.
    bundle = pipe.save(out / "model.safetensors")
    same = vqtoolkit.load(bundle)
    again = same.sample(64, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(images, again), "a reloaded bundle must sample the same images"
    print(f"wrote {bundle} and {out / 'samples.png'}")


if __name__ == "__main__":
    main()
