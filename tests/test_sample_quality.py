"""Sample-quality scores: the metric functions, the cached dataset classifier and score_samples."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.linalg
import torch

from vqtoolkit.data.datasets import load_digits
from vqtoolkit.scoring import classifier, metrics
from vqtoolkit.scoring.sample_quality import CEILING_SUBSETS, format_scores, score_samples

# -- the metric functions ----------------------------------------------------------------------


def test_classifier_score_is_the_number_of_classes_for_confident_even_predictions_and_1_for_none():
    confident = torch.eye(4).repeat(5, 1)
    assert metrics.classifier_score(confident) == pytest.approx(4.0)
    assert metrics.classifier_score(torch.full((20, 4), 0.25)) == pytest.approx(1.0)
    one_class = torch.zeros(20, 4)
    one_class[:, 2] = 1
    assert metrics.classifier_score(one_class) == pytest.approx(1.0)


def test_frechet_distance_matches_the_scipy_sqrtm_formula():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(300, 6, generator=g) @ torch.randn(6, 6, generator=g)
    b = torch.randn(200, 6, generator=g) * 2 + 1
    mu_a, mu_b = a.double().mean(0).numpy(), b.double().mean(0).numpy()
    cov_a, cov_b = np.cov(a.double().numpy().T), np.cov(b.double().numpy().T)
    expected = ((mu_a - mu_b) ** 2).sum() + np.trace(
        cov_a + cov_b - 2 * scipy.linalg.sqrtm(cov_a @ cov_b).real
    )
    assert metrics.frechet_distance(a, b) == pytest.approx(expected, rel=1e-6)


def test_frechet_distance_is_zero_for_one_set_and_the_squared_shift_for_a_shifted_copy():
    a = torch.randn(50, 80)  # fewer vectors than dimensions: singular covariances stay finite
    assert metrics.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    assert metrics.frechet_distance(a, a + 0.5) == pytest.approx(80 * 0.25, rel=1e-6)


def test_label_accuracy_counts_the_argmax():
    probs = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    assert metrics.label_accuracy(probs, torch.tensor([0, 1, 1])) == pytest.approx(2 / 3)


# -- the classifier and its cache --------------------------------------------------------------


@pytest.fixture(scope="module")
def digits():
    return load_digits()


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        path = tmp_path_factory.mktemp("cache")
        mp.setenv("VQTOOLKIT_CACHE", str(path))
        mp.setattr(classifier, "EPOCHS", (2, 10))  # a quicker judge: the tests compare with its own ceiling
        yield path


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("VQTOOLKIT_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert classifier.cache_dir() == tmp_path / "vqtoolkit"
    monkeypatch.setenv("VQTOOLKIT_CACHE", str(tmp_path / "mine"))
    assert classifier.cache_dir() == tmp_path / "mine"


def test_dataset_key_changes_with_the_content(digits):
    changed = replace(digits, train_labels=digits.train_labels.roll(1))
    assert classifier.dataset_key(digits) == classifier.dataset_key(load_digits())
    assert classifier.dataset_key(digits) != classifier.dataset_key(changed)
    assert classifier.dataset_key(digits).startswith("digits-")


def test_the_classifier_is_trained_once_then_loaded_from_the_cache(digits, cache):
    first = classifier.dataset_classifier(digits, progress=False)
    files = list((cache / "classifiers").glob("digits-*.safetensors"))
    assert len(files) == 1
    stamp = files[0].stat().st_mtime_ns
    second = classifier.dataset_classifier(digits, progress=False)
    assert files[0].stat().st_mtime_ns == stamp
    for (name, a), (_, b) in zip(first.state_dict().items(), second.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    probs, features = classifier.classify(second, digits.test_images)
    assert features.shape == (len(digits.test_images), classifier.FEATURES)
    assert metrics.label_accuracy(probs, digits.test_labels) > 0.9


def test_an_unreadable_cache_file_is_retrained_over(digits, cache, tmp_path, monkeypatch):
    monkeypatch.setenv("VQTOOLKIT_CACHE", str(tmp_path))
    path = tmp_path / "classifiers" / f"{classifier.dataset_key(digits)}.safetensors"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a safetensors file")
    monkeypatch.setattr(classifier, "train_classifier", lambda data, progress: classifier.Classifier(1, 10))
    classifier.dataset_classifier(digits, progress=False)
    assert path.read_bytes() != b"not a safetensors file"


# -- scoring samples ---------------------------------------------------------------------------


class ImageSampler:
    """A pipeline stand-in whose "samples" come from a fixed pool: real images, or noise."""

    def __init__(self, images, labels=None, *, conditional=False):
        self.images, self.labels = images, labels
        self.prior = SimpleNamespace(conditional=conditional)
        self.info = {"image_shape": list(images.shape[1:])}

    def sample(self, n, *, label=None, temperature=1.0, generator=None):
        pool = self.images if label is None else self.images[self.labels == label]
        return pool[torch.randint(len(pool), (n,), generator=generator)]

    def reconstruct(self, images):
        return images  # a perfect stage 1


def test_real_images_score_near_the_ceiling_and_noise_scores_badly(digits, cache):
    real = score_samples(ImageSampler(digits.test_images), digits, 300, progress=False)
    noise = score_samples(ImageSampler(torch.rand(300, 1, 28, 28)), digits, 300, progress=False)
    ceiling = real["classifier_score"]["real_train"]
    assert ceiling > 6.0
    assert real["classifier_score"]["samples"] > 0.9 * ceiling
    assert noise["classifier_score"]["samples"] < 0.3 * ceiling
    assert real["frechet"]["samples"] < 1.3 * real["frechet"]["real_train"]
    assert noise["frechet"]["samples"] > 5 * real["frechet"]["real_train"]
    assert real["frechet"]["reconstructions"] == pytest.approx(real["frechet"]["real_train"])
    assert real["label_accuracy"]["samples"] is None  # unconditional: no label asked for
    assert "label accuracy" not in "\n".join(format_scores(real))


def test_the_frechet_ceiling_comes_with_its_spread_over_random_real_sets(digits, cache):
    scores = score_samples(ImageSampler(digits.test_images), digits, 200, progress=False)
    subsets = scores["frechet"]["real_train_subsets"]
    assert len(subsets) == CEILING_SUBSETS and subsets[0] == scores["frechet"]["real_train"]
    assert len(set(subsets)) == CEILING_SUBSETS  # different images, different distances
    low, high = min(subsets), max(subsets)
    line = format_scores(scores)[-1]
    assert f"{CEILING_SUBSETS} random sets of 200 real training images are {low:.4g} to {high:.4g}" in line


def test_label_accuracy_counts_samples_of_the_requested_class(digits, cache):
    right = ImageSampler(digits.test_images, digits.test_labels, conditional=True)
    wrong = ImageSampler(digits.test_images, (digits.test_labels + 1) % 10, conditional=True)
    scored_right = score_samples(right, digits, 200, progress=False)["label_accuracy"]
    scored_wrong = score_samples(wrong, digits, 200, progress=False)["label_accuracy"]
    assert scored_right["samples"] > 0.9 and scored_right["real_test"] > 0.9
    assert scored_wrong["samples"] < 0.1


def test_an_unlabelled_dataset_cannot_be_scored(digits, tmp_path, monkeypatch):
    from vqtoolkit.errors import DataError

    monkeypatch.setenv("VQTOOLKIT_CACHE", str(tmp_path))
    one_class = replace(digits, num_classes=1, train_labels=torch.zeros_like(digits.train_labels))
    with pytest.raises(DataError, match="labelled dataset"):
        classifier.dataset_classifier(one_class, progress=False)


def test_cli_eval_scores_samples_beside_the_ceilings(digits, cache, tmp_path):
    import json

    from click.testing import CliRunner

    import vqtoolkit
    from vqtoolkit.cli import main

    pipe = vqtoolkit.build("conv", "vq", "conv", None, dim=8, num_codes=16)
    pipe.info.update(dataset="digits", seed=0, image_shape=[1, 28, 28])
    pipe.fit_prior(digits, "categorical", conditional=True, progress=False)
    bundle = pipe.save(tmp_path / "cond.safetensors")
    runner = CliRunner()
    result = runner.invoke(main, ["eval", str(bundle), "--samples", "40", "--json"])
    assert result.exit_code == 0, result.output
    scores = json.loads(result.output)["sample_quality"]
    assert scores["num_samples"] == 40 and 1 <= scores["classifier_score"]["samples"] <= 10
    assert scores["label_accuracy"]["samples"] is not None and scores["frechet"]["real_train"] > 0
    text = runner.invoke(main, ["eval", str(bundle), "--samples", "40"])
    assert text.exit_code == 0, text.output
    assert "classifier score" in text.output and "label accuracy" in text.output


def test_scores_say_which_guidance_drew_the_samples(digits, cache):
    guided = ImageSampler(digits.test_images)
    guided.prior.guidance = 2.0
    scores = score_samples(guided, digits, 50, progress=False)
    assert scores["guidance"] == 2.0
    assert "(temperature 1, guidance 2) against real images" in format_scores(scores)[0]
    unguided = score_samples(ImageSampler(digits.test_images), digits, 50, progress=False)
    assert unguided["guidance"] is None and "(temperature 1) against" in format_scores(unguided)[0]
