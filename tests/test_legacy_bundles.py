"""Bundles written by vqtoolkit 0.1 keep loading, and draw the very samples they drew then.

``tests/data/bundles-0.1`` was written by ``scripts/make_legacy_bundles.py`` at release 0.1.0 (before
the layout moved into subpackages); its ``expected.safetensors`` holds what each bundle sampled and
reconstructed then, from the same seeds.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import vqtoolkit

DATA = Path(__file__).parent / "data" / "bundles-0.1"
EXPECTED = load_file(DATA / "expected.safetensors")
NAMES = sorted(p.stem for p in DATA.glob("*.safetensors") if p.stem != "expected")


def test_every_legacy_case_is_here() -> None:
    assert NAMES == ["ema-categorical", "fsq-pixelcnn", "residual-transformer", "vq-gmm"]


@pytest.mark.parametrize("name", NAMES)
def test_legacy_bundle_draws_the_same_samples(name: str) -> None:
    pipe = vqtoolkit.load(DATA / f"{name}.safetensors")
    samples = pipe.sample(4, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(samples, EXPECTED[f"{name}.samples"], rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_legacy_bundle_reconstructs_the_same(name: str) -> None:
    pipe = vqtoolkit.load(DATA / f"{name}.safetensors")
    images = torch.rand(48, 1, 28, 28, generator=torch.Generator().manual_seed(0))[32:36]
    torch.testing.assert_close(
        pipe.reconstruct(images), EXPECTED[f"{name}.reconstructions"], rtol=0, atol=1e-6
    )
