"""The markov prior: vqtoolkit's conformance kit, exact likelihoods, and what it learns."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from vqtoolkit_markov import MarkovPrior

import vqtoolkit
from vqtoolkit.errors import ConfigError, ShapeError
from vqtoolkit.testing import check_prior


def test_conforms_to_the_prior_contract() -> None:
    check_prior("markov", {"num_codes": 4})  # through the registry: the entry point works
    check_prior(MarkovPrior, {"num_codes": 3, "smoothing": 0.1, "strength": 1.0})


@settings(max_examples=25, deadline=None)
@given(k=st.integers(2, 3), n=st.integers(2, 20), seed=st.integers(0, 2**16), smoothing=st.floats(0.01, 5))
def test_likelihood_sums_to_one_over_every_grid(k: int, n: int, seed: int, smoothing: float) -> None:
    data = torch.randint(0, k, (n, 2, 3), generator=torch.Generator().manual_seed(seed))
    prior = MarkovPrior(k, smoothing=smoothing).fit(data, progress=False)
    grids = torch.cartesian_prod(*[torch.arange(k)] * 6).reshape(-1, 2, 3)
    assert float(torch.logsumexp(prior.log_prob(grids).double(), 0)) == pytest.approx(0, abs=1e-4)


def test_learns_a_deterministic_chain() -> None:
    """Data where each code is the previous plus one: the prior should find it nearly certain."""
    k, n = 16, 200
    start = torch.randint(0, k, (n, 1), generator=torch.Generator().manual_seed(0))
    data = (start + torch.arange(12)).remainder(k).reshape(n, 3, 4)
    prior = MarkovPrior(k, strength=1.0).fit(data, progress=False)
    bits = -prior.log_prob(data).mean() / math.log(2) / 12
    assert bits < 0.5  # a unigram model needs log2(16) = 4 bits per code here
    samples = prior.sample(50, generator=torch.Generator().manual_seed(1)).reshape(50, -1)
    follows = (samples[:, 1:] == (samples[:, :-1] + 1).remainder(k)).float().mean()
    assert follows > 0.9
    colder = prior.sample(50, temperature=0.3, generator=torch.Generator().manual_seed(1)).reshape(50, -1)
    assert (colder[:, 1:] == (colder[:, :-1] + 1).remainder(k)).float().mean() >= follows


def test_bad_input_is_refused_clearly() -> None:
    with pytest.raises(ConfigError, match="categorical or pixelcnn"):
        MarkovPrior(65536)
    with pytest.raises(ConfigError, match=r"smoothing must be > 0"):
        MarkovPrior(8, smoothing=0)
    with pytest.raises(ConfigError, match=r"strength must be > 0"):
        MarkovPrior(8, strength=-1.0)
    with pytest.raises(ConfigError, match=r"\[0, 8\)"):
        MarkovPrior(8).fit(torch.full((2, 3, 3), 8))
    with pytest.raises(ShapeError, match="integer dtype"):
        MarkovPrior(8).fit(torch.zeros(2, 3, 3))
    prior = MarkovPrior(8).fit(torch.zeros(2, 3, 3, dtype=torch.long))
    with pytest.raises(ShapeError, match="fitted on 3×3 code grids"):
        prior.log_prob(torch.zeros(2, 4, 4, dtype=torch.long))


def test_a_pipeline_with_the_markov_prior_round_trips_through_a_bundle(tmp_path) -> None:
    pipe = vqtoolkit.build(
        "conv",
        "vq",
        "conv",
        "markov",
        dim=4,
        num_codes=8,
        encoder_config={"hidden_channels": [4, 4]},
        decoder_config={"hidden_channels": [4, 4]},
    )
    images = torch.rand(20, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    data = vqtoolkit.ImageDataset("tiny", images[:16], torch.zeros(16), images[16:], torch.zeros(4), 1, 1)
    pipe.fit_prior(data, progress=False)
    loaded = vqtoolkit.load(pipe.save(tmp_path / "markov.safetensors"))
    assert loaded.prior.config["grid_shape"] == [7, 7]
    draw = [p.sample(3, generator=torch.Generator().manual_seed(0)) for p in (pipe, loaded)]
    assert torch.equal(*draw)
