"""Classifier-free guidance: condition dropout while fitting, guided sampling, likelihoods untouched."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import vqtoolkit
from vqtoolkit.cli import main
from vqtoolkit.components import registry
from vqtoolkit.errors import ConfigError
from vqtoolkit.priors.neural.base import DEFAULT_CONDITION_DROPOUT, DEFAULT_GUIDANCE
from vqtoolkit.testing import check_prior

NETWORK_PRIORS = ["pixelcnn", "transformer"]
SMALL = {"pixelcnn": {"channels": 16, "layers": 2}, "transformer": {"dim": 16, "layers": 1, "heads": 2}}


pytestmark = pytest.mark.usefixtures("one_thread")


def labelled_grids(n: int = 240, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """2×2 grids over codes 0..3 whose label ``y`` in {0, 1} makes code ``y`` likelier (40 % against 20 %)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2
    weights = torch.full((n, 4), 0.2)
    weights[torch.arange(n), labels] = 0.4
    codes = torch.multinomial(weights, 4, replacement=True, generator=g)
    return codes.reshape(n, 2, 2), labels


def fitted(name: str, **options) -> vqtoolkit.priors.base.IndexPrior:
    grids, labels = labelled_grids()
    prior = registry.create(
        "prior",
        name,
        num_codes=4,
        conditional=True,
        epochs=30,
        lr=1e-2,
        patience=30,
        **SMALL[name],
        **options,
    )
    return prior.fit(grids, labels=labels, progress=False)


@pytest.mark.parametrize("name", NETWORK_PRIORS)
def test_guidance_makes_samples_truer_to_their_label(name):
    prior = fitted(name, condition_dropout=0.3)

    def share_of_label_code(guidance: float) -> float:
        prior.guidance = guidance
        grids = prior.sample(2000, label=1, generator=torch.Generator().manual_seed(0))
        return float((grids == 1).float().mean())

    plain, guided = share_of_label_code(1.0), share_of_label_code(4.0)
    assert 0.3 < plain < 0.5  # the learned p(x | y = 1): code 1 about 40 % of the time
    assert guided > plain + 0.15  # guidance pushes further away from p(x): code 1 much likelier


@pytest.mark.parametrize("name", NETWORK_PRIORS)
def test_guidance_changes_samples_not_likelihoods(name):
    prior = fitted(name, condition_dropout=0.3)
    grids, _ = labelled_grids(20, seed=1)
    before = prior.log_prob(grids)
    at_default = prior.sample(50, generator=torch.Generator().manual_seed(0))
    prior.guidance = 3.0
    assert torch.allclose(prior.log_prob(grids), before)
    assert not torch.equal(prior.sample(50, generator=torch.Generator().manual_seed(0)), at_default)


def test_guidance_one_draws_exactly_the_plain_samples():
    """``guidance=1`` samples ``p(x | c)`` without the twin batch: the same draws as a plain call."""
    prior = fitted("pixelcnn", condition_dropout=0.3)
    prior.guidance = 1.0
    a = prior.sample(16, label=0, generator=torch.Generator().manual_seed(2))
    prior._guided = True  # the guided path, at guidance 1, must agree
    try:
        twins = torch.cat([torch.zeros(16, dtype=torch.long), torch.full((16,), 2)])
        b = prior._sample(32, twins, 1.0, torch.Generator().manual_seed(2))[:16]
    finally:
        prior._guided = False
    assert torch.equal(a, b)


@pytest.mark.parametrize("name", NETWORK_PRIORS)
def test_guided_priors_pass_the_conformance_kit(name):
    options = {**SMALL[name], "clusters": 2, "condition_dropout": 0.2, "guidance": 2.0}
    check_prior(registry.get_class("prior", name), options)


def test_guidance_needs_a_network_trained_without_its_condition():
    with pytest.raises(ConfigError, match="condition_dropout > 0"):
        registry.create("prior", "pixelcnn", num_codes=4, clusters=2, condition_dropout=0, guidance=2.0)
    with pytest.raises(ConfigError, match="clusters=k or conditional=True"):
        registry.create("prior", "pixelcnn", num_codes=4, clusters=None, condition_dropout=0.1)
    with pytest.raises(ConfigError, match="condition_dropout"):
        registry.create("prior", "transformer", num_codes=4, clusters=2, condition_dropout=1.0)


@pytest.mark.parametrize(
    ("options", "dropout", "guidance"),
    [
        ({"conditional": True}, DEFAULT_CONDITION_DROPOUT, DEFAULT_GUIDANCE),
        ({"clusters": 4}, DEFAULT_CONDITION_DROPOUT, "the class's"),
        ({"clusters": 4, "condition_dropout": 0}, 0, 1),
        ({"clusters": None}, 0, 1),
    ],
)
def test_priors_with_a_condition_are_guided_by_default(options, dropout, guidance):
    for name in NETWORK_PRIORS:
        prior = registry.create("prior", name, num_codes=4, **options)
        expected = prior.default_cluster_guidance if guidance == "the class's" else guidance
        assert (prior.config["condition_dropout"], prior.config["guidance"]) == (dropout, expected)


@pytest.fixture(scope="module")
def guided_bundle(tmp_path_factory) -> Path:
    """A digits bundle whose (tiny) conditional PixelCNN was fitted with condition dropout."""
    data = vqtoolkit.load_dataset("digits")
    pipe = vqtoolkit.build("conv", "vq", "conv", num_codes=16, prior=None)
    pipe.fit_autoencoder(data, epochs=1, progress=False)
    pipe.fit_prior(data, "pixelcnn", conditional=True, epochs=1, channels=8, progress=False)
    return pipe.save(tmp_path_factory.mktemp("guided") / "m.safetensors")


def test_a_guided_prior_round_trips_through_a_bundle(guided_bundle):
    loaded = vqtoolkit.load(guided_bundle)
    assert loaded.prior.guidance == DEFAULT_GUIDANCE  # a label's guidance
    assert loaded.prior.config["condition_dropout"] == DEFAULT_CONDITION_DROPOUT
    again = vqtoolkit.load(guided_bundle)
    draw = lambda p: p.sample(4, label=3, generator=torch.Generator().manual_seed(0))  # noqa: E731
    assert torch.equal(draw(loaded), draw(again))


def test_the_cli_sets_guidance_for_sample_and_refuses_it_where_there_is_none(guided_bundle, tmp_path):
    runner = CliRunner()

    def sample(*extra: str) -> np.ndarray:
        out = tmp_path / f"s{len(list(tmp_path.iterdir()))}.npy"
        args = ["sample", str(guided_bundle), "-n", "6", "--label", "2", "-o", str(out), *extra]
        result = runner.invoke(main, args)
        assert result.exit_code == 0, result.output
        return np.load(out)

    assert np.array_equal(sample(), sample("--guidance", str(DEFAULT_GUIDANCE)))  # the bundle's value
    assert not np.array_equal(sample(), sample("--guidance", "4"))

    plain = vqtoolkit.load(guided_bundle)
    plain.prior = None
    stage1 = plain.save(tmp_path / "stage1.safetensors")
    result = runner.invoke(main, ["sample", str(stage1), "--guidance", "2", "-o", str(tmp_path / "x.png")])
    assert result.exit_code == 1 and "--guidance steers a network prior" in result.output
    result = runner.invoke(main, ["sample", str(guided_bundle), "--guidance", "nan"])
    assert result.exit_code == 2 and "not a finite number" in result.output


def test_guidance_set_on_a_prior_without_condition_dropout_is_refused():
    prior = registry.create("prior", "pixelcnn", num_codes=4, clusters=2, condition_dropout=0)
    with pytest.raises(ConfigError, match="fitted without condition_dropout"):
        prior.guidance = 2.0
    prior.guidance = 1.0  # always allowed
