"""Composition and two-stage training end to end on the embedded digits."""

from __future__ import annotations

import pytest
import torch

import vqtoolkit
from vqtoolkit.data.datasets import ImageDataset
from vqtoolkit.errors import ConfigError, ShapeError, TrainingError


def test_build_routes_shared_options() -> None:
    pipe = vqtoolkit.build(dim=8, num_codes=16, beta=0.5, in_channels=3)
    assert pipe.model.encoder.dim == pipe.model.quantizer.dim == pipe.model.decoder.dim == 8
    assert pipe.model.quantizer.num_codes == 16 and pipe.model.quantizer.beta == 0.5
    assert pipe.model.encoder.in_channels == pipe.model.decoder.out_channels == 3


def test_mismatched_components_fail_at_build_naming_both_sides() -> None:
    with pytest.raises(ShapeError, match=r"encoder 'conv' has dim=8 but quantizer 'ema' has dim=64"):
        vqtoolkit.build(encoder_config={"dim": 8})
    with pytest.raises(
        ShapeError, match=r"encoder 'conv' has downsample=8 but decoder 'conv' has upsample=4"
    ):
        vqtoolkit.build(encoder_config={"hidden_channels": [8, 8, 8]})


def test_wrong_image_shape_is_a_clear_error() -> None:
    pipe = vqtoolkit.build(dim=8, num_codes=16)
    with pytest.raises(ShapeError, match=r"encodes greyscale images \(1 channel\) but the images are RGB"):
        pipe.model.encode(torch.rand(2, 3, 28, 28))
    with pytest.raises(ShapeError, match=r"cannot be downsampled evenly.*factor 4"):
        pipe.model.encode(torch.rand(2, 1, 30, 30))


def test_two_stage_training_learns_and_samples(
    trained: vqtoolkit.Pipeline, small_digits: ImageDataset
) -> None:
    history = trained.info["history"]
    assert len(history) == 3
    assert history[-1]["train_recon"] < history[0]["train_recon"]
    mean_image = small_digits.train_images.mean(0)
    assert history[-1]["test_mse"] < float(((small_digits.test_images - mean_image) ** 2).mean())
    for record in history:  # epoch-level usage statistics are consistent
        assert 1 <= record["train_codes_used"] <= 32
        assert 1.0 <= record["train_perplexity"] <= record["train_codes_used"] + 1e-6
    images = trained.sample(6, generator=torch.Generator().manual_seed(1))
    assert images.shape == (6, 1, 28, 28)
    assert images.min() >= 0 and images.max() <= 1
    indices = trained.sample_indices(6, generator=torch.Generator().manual_seed(1))
    assert indices.shape == (6, 7, 7) and indices.dtype == torch.long


def test_sampling_is_deterministic_given_a_generator(trained: vqtoolkit.Pipeline) -> None:
    a = trained.sample(4, generator=torch.Generator().manual_seed(3))
    b = trained.sample(4, generator=torch.Generator().manual_seed(3))
    c = trained.sample(4, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_gmm_samples_snap_to_codes(trained: vqtoolkit.Pipeline) -> None:
    latents = trained.prior.sample(5, generator=torch.Generator().manual_seed(0))
    assert latents.shape == (5, 16, 7, 7)
    indices = trained.model.quantizer.quantize_indices(latents)
    flat = latents.permute(0, 2, 3, 1).reshape(-1, 16)
    brute = torch.cdist(flat, trained.model.quantizer.codebook.detach()).argmin(1)
    assert torch.equal(indices.reshape(-1), brute)


def test_evaluate_reports_metrics(trained: vqtoolkit.Pipeline, small_digits: ImageDataset) -> None:
    result = trained.evaluate(small_digits.test_images)
    assert result["mse"] == pytest.approx(trained.info["metrics"]["test_mse"], rel=1e-5)
    assert result["psnr"] > 0
    assert result["prior_bits_per_code"] is None  # the GMM's density is not over indices


def test_sampling_without_prior_says_how_to_fit_one(small_digits: ImageDataset) -> None:
    pipe = vqtoolkit.build(dim=8, num_codes=16, prior=None)
    with pytest.raises(ConfigError, match="fit-prior"):
        pipe.sample(2)


def test_nan_loss_stops_with_step_and_hint(small_digits: ImageDataset) -> None:
    bad = small_digits.train_images.clone()
    bad[70] = float("nan")  # in the second batch
    data = ImageDataset(
        "bad", bad, small_digits.train_labels, small_digits.test_images, small_digits.test_labels, 10, 1
    )
    pipe = vqtoolkit.build(dim=8, num_codes=16, prior=None)
    with pytest.raises(TrainingError, match=r"loss became nan at step \d+ \(epoch 1\).*--lr"):
        pipe.fit(data, epochs=1, batch_size=64, progress=False)


def test_save_load_round_trip_is_exact(
    trained: vqtoolkit.Pipeline, small_digits: ImageDataset, tmp_path
) -> None:
    path = trained.save(tmp_path / "model.safetensors")
    loaded = vqtoolkit.load(path)
    x = small_digits.test_images[:8]
    assert torch.equal(loaded.model.encode(x), trained.model.encode(x))
    assert torch.equal(loaded.reconstruct(x), trained.reconstruct(x))
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert torch.equal(loaded.sample(4, generator=g1), trained.sample(4, generator=g2))
    assert loaded.info["metrics"] == trained.info["metrics"]
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]  # no temp files left behind


def test_fit_takes_the_dataset_batch_size_unless_told(small_digits: ImageDataset) -> None:
    images, labels = small_digits.train_images[:96], small_digits.train_labels[:96]
    test_images, test_labels = small_digits.test_images[:16], small_digits.test_labels[:16]
    data = ImageDataset("small", images, labels, test_images, test_labels, 10, 1, default_batch_size=32)
    defaulted = vqtoolkit.build(dim=8, num_codes=16, prior=None)
    defaulted.fit(data, progress=False)
    assert defaulted.info["batch_size"] == 32 and defaulted.info["history"][-1]["step"] == 3  # 96 / 32
    told = vqtoolkit.build(dim=8, num_codes=16, prior=None)
    told.fit(data, batch_size=48, progress=False)
    assert told.info["batch_size"] == 48 and told.info["history"][-1]["step"] == 2
