"""The small objects many tests build: random grey images split like a dataset, and tiny pipelines."""

from __future__ import annotations

from typing import Any

import torch

import vqtoolkit
from vqtoolkit.components import registry
from vqtoolkit.data.datasets import ImageDataset


def tiny_data(seed: int = 0, *, random_labels: bool = False) -> ImageDataset:
    """48 random 28×28 grey images (32 to train, 16 held out) in 3 classes; a second or less to fit on."""
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(48, 1, 28, 28, generator=g)
    labels = torch.randint(0, 3, (48,), generator=g) if random_labels else torch.arange(48) % 3
    return ImageDataset("tiny", images[:32], labels[:32], images[32:], labels[32:], 3, 1)


def tiny_pipeline(
    prior: str | None = None, quantizer: str = "vq", *, num_codes: int = 8, dim: int = 4, **options: Any
) -> vqtoolkit.Pipeline:
    """An untrained pipeline of narrow conv parts; ``options`` go to ``build``."""
    takes = registry.takes("quantizer", quantizer, "num_codes")  # fsq, lfq, bsq: build() refuses it
    codes = {"num_codes": num_codes} if takes else {}
    return vqtoolkit.build(
        "conv",
        quantizer,
        "conv",
        prior,
        dim=dim,
        **codes,
        encoder_config={"hidden_channels": [8, 8]},
        decoder_config={"hidden_channels": [8, 8]},
        **options,
    )
