"""The VQGAN recipe in stage 1: losses, adaptive weight, the plain path untouched, resume, bf16, CLI."""

from __future__ import annotations

import json
import logging
import signal
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from factories import tiny_data, tiny_pipeline
from safetensors import safe_open
from test_training import fail_on_call, metrics_only, run, same_weights, tiny_model

import vqtoolkit
from vqtoolkit.cli import main, recipe
from vqtoolkit.errors import ConfigError, TrainingInterrupted
from vqtoolkit.reporting import plots
from vqtoolkit.training import config as config_module
from vqtoolkit.training.config import TrainConfig
from vqtoolkit.training.discriminator import (
    ADAPTIVE_WEIGHT_MAX,
    PatchDiscriminator,
    adaptive_weight,
    discriminator_loss,
    generator_loss,
)
from vqtoolkit.training.objective import Objective
from vqtoolkit.training.perceptual import perceptual_loss

#: A discriminator small enough for 8×8 images and many runs per test.
RECIPE = {
    "adversarial_weight": 0.5,
    "adversarial_start": 2,
    "discriminator_layers": 1,
    "discriminator_channels": 4,
}


def tensors_of(path: Path) -> dict[str, torch.Tensor]:
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (a safetensors handle)


def test_adaptive_weight_is_the_ratio_of_the_gradient_norms_on_the_last_layer_clamped() -> None:
    w = torch.tensor([1.0, 2.0], requires_grad=True)
    rec = (w * torch.tensor([3.0, 4.0])).sum()  # gradient (3, 4): norm 5
    gan = (w * torch.tensor([0.6, 0.8])).sum()  # gradient norm 1
    assert adaptive_weight(rec, gan, w).item() == pytest.approx(5 / (1 + 1e-4))
    flat = (w * 0).sum()  # a GAN gradient of 0: λ would be 5e4, clamped
    assert adaptive_weight(rec, flat, w).item() == ADAPTIVE_WEIGHT_MAX
    assert not adaptive_weight(rec, gan, w).requires_grad


def test_hinge_and_non_saturating_losses() -> None:
    real, fake = torch.tensor([2.0, 0.5]), torch.tensor([-2.0, 0.0])
    # hinge: relu(1 - real) = (0, 0.5), relu(1 + fake) = (0, 1)
    assert discriminator_loss(real, fake, "hinge").item() == pytest.approx(0.5 * (0.25 + 0.5))
    assert generator_loss(fake, "hinge").item() == pytest.approx(1.0)
    bce = 0.5 * (F.softplus(-real).mean() + F.softplus(fake).mean())
    assert discriminator_loss(real, fake, "non-saturating").item() == pytest.approx(bce.item())
    assert generator_loss(fake, "non-saturating").item() == pytest.approx(F.softplus(-fake).mean().item())


def test_the_patch_discriminator_scores_patches() -> None:
    logits = PatchDiscriminator(1, layers=2, channels=4, spectral_norm=True)(torch.rand(3, 1, 28, 28))
    assert logits.shape == (3, 1, 5, 5)
    with pytest.raises(ConfigError, match="discriminator_layers"):
        PatchDiscriminator(1, layers=0)


def test_weight_0_builds_no_discriminator_and_keeps_the_old_loss(images: Any, tmp_path: Path) -> None:
    model = tiny_model()
    objective = Objective(model, TrainConfig(), torch.device("cpu"), "32")
    assert objective.discriminator is None and objective.plain
    assert objective.sum_names() == () and objective.fingerprint() == {} and objective.trainable() is None
    x = images[0][:4]
    x_hat = model(x).reconstruction
    terms = objective.generator(x, x_hat, step=10**6)
    assert terms.loss is terms.mse and terms.logged == {}  # mse(x̂, x) itself, nothing added
    assert torch.equal(terms.mse, F.mse_loss(x_hat.float(), x))
    ckpt = tmp_path / "plain.safetensors"
    history = run(tiny_model(), images, epochs=1, checkpoint_path=ckpt)
    assert not any(k.startswith(("train_gan", "train_disc", "train_l1")) for k in history[0])
    assert not any(k.startswith("discriminator.") for k in tensors_of(ckpt))


@pytest.fixture(scope="module")
def images() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.rand(80, 1, 8, 8, generator=g), torch.rand(20, 1, 8, 8, generator=g)


def test_ctrl_c_with_the_recipe_resumes_bit_for_bit(images: Any, tmp_path: Path) -> None:
    reference_ckpt = tmp_path / "reference.safetensors"
    reference = tiny_model()
    expected = run(reference, images, epochs=2, checkpoint_path=reference_ckpt, **RECIPE)
    assert expected[0]["train_gan"] is not None and expected[0]["train_disc"] > 0

    interrupted = tiny_model()
    fail_on_call(interrupted, 1 + 5 + 1 + 2, lambda: signal.raise_signal(signal.SIGINT))  # epoch 2, batch 2
    ckpt = tmp_path / "ckpt.safetensors"
    with pytest.raises(TrainingInterrupted):
        run(interrupted, images, epochs=2, checkpoint_path=ckpt, **RECIPE)
    assert any(k.startswith("discriminator.optimizer.") for k in tensors_of(ckpt))
    resumed = tiny_model(seed=5)
    history = run(resumed, images, epochs=2, checkpoint_path=ckpt, resume=True, **RECIPE)
    assert metrics_only(history) == metrics_only(expected)  # GAN and discriminator losses and λ too
    assert same_weights(resumed, reference)
    ours, theirs = tensors_of(ckpt), tensors_of(reference_ckpt)
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs if k.startswith("discriminator."))


def test_a_plain_checkpoint_does_not_resume_with_the_recipe(images: Any, tmp_path: Path) -> None:
    ckpt = tmp_path / "plain.safetensors"
    run(tiny_model(), images, epochs=1, checkpoint_path=ckpt)
    with pytest.raises(vqtoolkit.errors.CheckpointError, match="objective"):
        run(tiny_model(), images, epochs=2, checkpoint_path=ckpt, resume=True, **RECIPE)


def test_l1_perceptual_and_non_saturating_in_bf16(images: Any) -> None:
    pytest.importorskip(
        "pytorch_msssim",
        reason='the SSIM loss needs the perceptual extra: pip install "vqtoolkit[perceptual]"',
    )
    history = run(
        tiny_model(),
        images,
        epochs=1,
        precision="bf16",
        reconstruction_loss="l1",
        perceptual_weight=0.1,
        adversarial_loss="non-saturating",
        discriminator_spectral_norm=True,
        **RECIPE,
    )
    record = history[0]
    for key in ("train_l1", "train_perceptual", "train_gan", "train_disc", "train_adaptive_weight"):
        assert torch.isfinite(torch.tensor(record[key])), key


def test_perceptual_features_need_no_download() -> None:
    with pytest.raises(ConfigError, match=r"perceptual_features .*nothing is downloaded"):
        TrainConfig(perceptual_weight=1.0, perceptual_features="/no/such/vgg16.pth")
    TrainConfig(perceptual_features="/no/such/vgg16.pth")  # unused (weight 0): not checked


def test_the_weight_free_ssim_loss_is_zero_on_equal_images() -> None:
    pytest.importorskip(
        "pytorch_msssim",
        reason='the SSIM loss needs the perceptual extra: pip install "vqtoolkit[perceptual]"',
    )
    ssim = perceptual_loss("ssim", torch.device("cpu"))
    x = torch.rand(2, 1, 8, 8)
    assert ssim(x, x).item() == pytest.approx(0.0, abs=1e-5) and ssim(1 - x, x).item() > 0.5


def test_a_collapse_is_a_warning_with_the_fix(caplog: pytest.LogCaptureFixture) -> None:
    objective = Objective(tiny_model(), TrainConfig(**RECIPE), torch.device("cpu"), "32")
    sums = {k: torch.zeros((), dtype=torch.float64) for k in objective.sum_names()}
    sums.update(gan_steps=torch.tensor(5.0), disc_steps=torch.tensor(5.0), disc=torch.tensor(1e-5))
    with caplog.at_level(logging.WARNING):
        record = objective.summary(sums, seen=80, epoch=3)
    assert record["train_disc"] == pytest.approx(2e-6)
    assert "GAN collapse in epoch 3" in caplog.text and "--discriminator-lr" in caplog.text
    caplog.clear()
    sums.update(disc=torch.tensor(2.0), adaptive_weight=torch.tensor(5e4), clamped=torch.tensor(5.0))
    with caplog.at_level(logging.WARNING):
        objective.summary(sums, seen=80, epoch=4)
    assert "at its clamp" in caplog.text


def test_the_bundle_holds_no_discriminator(tmp_path: Path) -> None:
    pipe = tiny_pipeline()
    pipe.fit_autoencoder(tiny_data(), epochs=1, batch_size=16, progress=False, adversarial_weight=0.1)
    assert pipe.info["history"][0]["train_disc"] > 0
    pipe.save(tmp_path / "m.safetensors")
    assert not any("discriminator" in k for k in tensors_of(tmp_path / "m.safetensors"))


def test_cli_choices_match_the_config() -> None:
    assert recipe.RECONSTRUCTION_LOSSES == config_module.RECONSTRUCTION_LOSSES
    assert recipe.ADVERSARIAL_LOSSES == config_module.ADVERSARIAL_LOSSES


@pytest.mark.slow  # the CLI end to end with plots: about 25 s on a busy 2-core machine
def test_cli_trains_with_the_recipe_and_the_curves_show_both_losses(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / "m.safetensors"
    args = ["train", "--epochs", "1", "--num-codes", "16", "--dim", "8", "--batch-size", "256"]
    args += ["--image-size", "8", "--device", "cpu", "-o", str(out), "--json"]
    args += ["--adversarial-weight", "0.1", "--adversarial-start", "1", "--discriminator-layers", "1"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    record = json.loads(result.output)["history"][0]
    assert record["train_gan"] is not None and record["train_disc"] > 0
    history = vqtoolkit.load(out).info["history"]
    titles = [ax.get_title() for ax in plots.curves_figure(history, columns=2).axes if ax.get_visible()]
    assert "adversarial losses" in titles and "adaptive weight λ" in titles
    bad = CliRunner().invoke(main, [*args, "--adversarial-loss", "wasserstein"])
    assert bad.exit_code == 2 and "wasserstein" in bad.output
