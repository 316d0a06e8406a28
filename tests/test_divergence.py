"""A finite but diverged stage-1 run fails clearly, and writes no bundle unless asked to."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import vqtoolkit
from vqtoolkit.cli import main
from vqtoolkit.data.datasets import ImageDataset
from vqtoolkit.errors import TrainingDiverged
from vqtoolkit.training.divergence import DivergenceGuard, variance

DIVERGING = ["train", "--quantizer", "fsq", "--dim", "4", "--lr", "1e6", "--lr-schedule", "constant"]


def test_a_diverging_run_fails_and_writes_no_bundle(tmp_path: Path) -> None:
    out = tmp_path / "m.safetensors"
    result = CliRunner().invoke(main, [*DIVERGING, "--epochs", "1", "--quiet", "-o", str(out)])
    assert result.exit_code == 1, result.output
    assert (
        "diverged in epoch 1" in result.output and "worse than predicting the images' mean" in result.output
    )
    assert "--lr" in result.output and "--allow-divergence" in result.output
    assert not out.exists()


def test_allow_divergence_keeps_the_run(small_digits) -> None:
    def train(**options):
        pipe = vqtoolkit.build("conv", "fsq", "conv", None, dim=4)
        options = dict(epochs=1, batch_size=64, lr=1e6, lr_schedule="constant", progress=False, **options)
        d = small_digits
        data = ImageDataset(
            "digits",
            d.train_images[:256],
            d.train_labels[:256],
            d.test_images[:64],
            d.test_labels[:64],
            10,
            1,
        )
        return pipe.fit_autoencoder(data, **options)

    with pytest.raises(TrainingDiverged, match="worse than predicting"):
        train()
    assert len(train(allow_divergence=True)) == 1


def test_loss_growth_beyond_the_first_epoch_is_divergence() -> None:
    images = torch.rand(64, 1, 4, 4)
    guard = DivergenceGuard(images, None, lr=1.0)
    first = {"epoch": 1, "train_recon": 0.01, "train_vq": 0.01}
    healthy = {"epoch": 2, "train_recon": 0.01, "train_vq": 0.5}
    exploded = {"epoch": 3, "train_recon": 0.01, "train_vq": 5.0}
    guard.check(healthy, [first])
    with pytest.raises(TrainingDiverged, match=r"grew from 0\.02 in epoch 1 to 5\.01"):
        guard.check(exploded, [first, healthy])
    DivergenceGuard(images, None, lr=1.0, allow=True).check(exploded, [first])  # logged, not raised


def test_variance_is_the_mse_of_predicting_the_mean() -> None:
    images = torch.rand(5000, 1, 3, 3, generator=torch.Generator().manual_seed(0))
    assert variance(images) == pytest.approx(float(((images - images.mean()) ** 2).mean()), rel=1e-6)
