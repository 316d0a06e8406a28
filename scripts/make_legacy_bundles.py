"""Writes tests/data/bundles-0.1/: small bundles made by vqtoolkit 0.1.0 and the samples they drew.

Run once with the release whose bundles should keep loading; tests/test_legacy_bundles.py then checks
that today's code loads each bundle and draws the same samples from the same seed.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

import vqtoolkit
from vqtoolkit.data.datasets import ImageDataset

OUT = Path(__file__).resolve().parents[1] / "tests" / "data" / "bundles-0.1"

CASES = {
    "vq-gmm": ("vq", "gmm", {"n_components": 2, "pca_dim": 4}),
    "ema-categorical": ("ema", "categorical", {}),
    "fsq-pixelcnn": ("fsq", "pixelcnn", {"epochs": 1, "channels": 8, "layers": 3, "batch_size": 16}),
    "residual-transformer": (
        "residual",
        "transformer",
        {"epochs": 1, "dim": 16, "layers": 1, "heads": 2, "batch_size": 16},
    ),
}


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(0)
    images, labels = torch.rand(48, 1, 28, 28, generator=g), torch.arange(48) % 3
    data = ImageDataset("tiny", images[:32], labels[:32], images[32:], labels[32:], 3, 1)
    expected = {}
    for name, (quantizer, prior, prior_config) in CASES.items():
        torch.manual_seed(0)
        pipe = vqtoolkit.build(
            "conv",
            quantizer,
            "conv",
            None,
            dim=4,
            **({} if quantizer == "fsq" else {"num_codes": 8}),
            encoder_config={"hidden_channels": [8, 8]},
            decoder_config={"hidden_channels": [8, 8]},
        )
        pipe.fit_prior(data, prior, progress=False, **prior_config)
        pipe.save(OUT / f"{name}.safetensors")
        expected[f"{name}.samples"] = pipe.sample(4, generator=torch.Generator().manual_seed(1))
        expected[f"{name}.reconstructions"] = pipe.reconstruct(images[32:36])
    save_file({k: v.contiguous() for k, v in expected.items()}, OUT / "expected.safetensors")


if __name__ == "__main__":
    main()
