"""TensorBoard logging: the documented tags come back through TensorBoard's own event reader."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

import vqtoolkit
from vqtoolkit.data.datasets import ImageDataset
from vqtoolkit.errors import ConfigError

pytest.importorskip("tensorboard", reason='needs pip install "vqtoolkit[tensorboard]" (in the dev extra)')
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

STEP_TAGS = {"step/loss", "step/recon", "step/vq", "step/lr"}
EPOCH_TAGS = {"epoch/train_recon", "epoch/train_vq", "epoch/train_perplexity", "epoch/train_codes_used"}
EPOCH_TAGS |= {"epoch/test_mse", "epoch/test_psnr", "epoch/test_perplexity", "epoch/test_codes_used"}


def events(log_dir: Path) -> EventAccumulator:
    accumulator = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "images": 0, "histograms": 0})
    accumulator.Reload()
    return accumulator


def test_fit_with_log_dir_writes_the_documented_tags(small_digits: ImageDataset, tmp_path: Path) -> None:
    torch.manual_seed(0)
    pipe = vqtoolkit.build("conv", "vq", "conv", "categorical", dim=8, num_codes=16)
    s = small_digits
    data = ImageDataset(
        "digits", s.train_images[:256], s.train_labels[:256], s.test_images, s.test_labels, 10, 1
    )
    pipe.fit(data, epochs=2, batch_size=32, progress=False, log_dir=tmp_path / "runs")
    found = events(tmp_path / "runs")
    tags = found.Tags()
    assert set(tags["scalars"]) >= STEP_TAGS | EPOCH_TAGS
    assert "epoch/epoch" not in tags["scalars"] and "epoch/step" not in tags["scalars"]
    assert {"images/reconstructions", "images/samples"} <= set(tags["images"])
    assert "codebook/usage" in tags["histograms"]
    steps = [e.step for e in found.Scalars("step/loss")]
    assert steps[0] == 1 and steps[-1] <= 16 and steps == sorted(steps) and len(steps) >= 2
    mse = found.Scalars("epoch/test_mse")
    assert [e.step for e in mse] == [1, 2]
    assert [e.value for e in mse] == pytest.approx([r["test_mse"] for r in pipe.info["history"]], rel=1e-6)
    assert [e.step for e in found.Images("images/reconstructions")] == [1, 2]
    assert found.Images("images/samples")[0].width > 100
    usage = found.Histograms("codebook/usage")[-1].histogram_value
    assert usage.num == len(data.test_images) * 49  # one count per code position of every held-out image
    assert len(usage.bucket) == 16


def test_missing_tensorboard_names_the_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    pipe = vqtoolkit.build(prior=None, dim=8, num_codes=16)
    data = vqtoolkit.load_dataset("digits")
    with pytest.raises(ConfigError, match=r'pip install "vqtoolkit\[tensorboard\]"'):
        pipe.fit_autoencoder(data, epochs=1, progress=False, log_dir=tmp_path)


def test_cli_log_tensorboard_writes_events_beside_the_jsonl_log(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from vqtoolkit.cli import main

    bundle, runs = tmp_path / "m.safetensors", tmp_path / "runs"
    args = ["train", "--epochs", "1", "--num-codes", "16", "--dim", "8", "-o", str(bundle), "--quiet"]
    result = CliRunner().invoke(main, [*args, "--log", "tensorboard", str(runs)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "m-metrics.jsonl").read_text().count("\n") == 1  # the default log stays
    tags = events(runs).Tags()
    assert {"step/loss", "epoch/test_mse"} <= set(tags["scalars"]) and "codebook/usage" in tags["histograms"]
    result = CliRunner().invoke(main, [*args, "--log", "wandb", str(runs)])
    assert result.exit_code == 2 and "'wandb' is not 'tensorboard'" in result.output
