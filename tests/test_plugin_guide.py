"""A prior written from docs/plugins.md alone: the guide says enough to pass the kit.

Every decision below cites the guide's answer it follows, so a change to the contract that the guide
does not follow breaks this test.
"""

from __future__ import annotations

import logging
import math

import pytest
import torch

import vqtoolkit
from vqtoolkit.components.options import Limit, bounds
from vqtoolkit.errors import ConfigError, ShapeError
from vqtoolkit.priors.base import Prior
from vqtoolkit.testing import check_prior

log = logging.getLogger(__name__)  # "progress": lines through logging, never print


class UnigramPrior(Prior):
    """Every position draws from one shared code frequency table (add-one smoothed)."""

    # "space": the default is "indices"; "has_likelihood": True because log_prob is exact.
    has_likelihood = True
    limits = bounds(num_codes=Limit(1))  # "a number outside its bounds ... declare once"

    def __init__(self, num_codes: int = 4, grid_shape: list[int] | None = None) -> None:
        super().__init__()  # "call super().__init__()": the base records config itself
        # "the fitted buffer": registered by Prior.__init__, so not here
        self.register_buffer("log_p", torch.full((num_codes,), -math.log(num_codes)))

    def _check(self, data: torch.Tensor) -> None:
        if data.ndim != 3 or data.is_floating_point():  # wrong rank or dtype: ShapeError
            raise ShapeError(f"expected integer code grids (N, H, W); got {data.dtype} {tuple(data.shape)}")
        if data.numel() and (int(data.min()) < 0 or int(data.max()) >= self.config["num_codes"]):
            raise ConfigError("codes out of range: was this prior fitted for another codebook?")

    def fit(self, data, labels=None, *, progress=True):
        # "what fit receives": long (N, H, W) on the model's device; labels ignored (unconditional)
        self._check(data)
        self._config["grid_shape"] = list(data.shape[1:])  # "config or self._config": write _config
        counts = torch.bincount(data.reshape(-1), minlength=self.config["num_codes"]).double() + 1
        self.log_p = (counts / counts.sum()).log().float()
        if progress:
            log.info("unigram prior fitted on %d grids", len(data))
        self.fitted.fill_(True)
        return self

    def sample(self, n, *, label=None, temperature=1.0, generator=None):
        self.check_sample_args(n, label, temperature)  # refuses unfitted, n < 1, T <= 0, and a label
        probs = (self.log_p / temperature).softmax(0)  # "temperature must change the draw"
        h, w = self.config["grid_shape"]
        draws = torch.multinomial(probs, n * h * w, replacement=True, generator=generator)
        return draws.reshape(n, h, w)

    def log_prob(self, data, labels=None):
        if not self.is_fitted:
            raise ConfigError("UnigramPrior is not fitted; call fit() first")  # before fit: ConfigError
        self._check(data)
        return self.log_p[data].sum((1, 2))  # "(N,), nats, summed over positions"


def test_a_prior_written_from_the_guide_passes_the_kit() -> None:
    check_prior(UnigramPrior, {"num_codes": 4})


def test_its_options_are_recorded_and_checked_as_the_guide_says() -> None:
    assert UnigramPrior(3).config == {"num_codes": 3, "grid_shape": None}
    with pytest.raises(ConfigError, match="num_codes must be >= 1"):
        UnigramPrior(0)
    with pytest.raises(ConfigError, match="did you mean 'num_codes'"):
        UnigramPrior(num_code=3)
    with pytest.raises(ConfigError, match="is not of type int"):
        UnigramPrior("3")


def test_it_works_in_a_pipeline_as_the_guide_shows(small_digits) -> None:
    pipe = vqtoolkit.build(prior=None, dim=4, num_codes=8)
    pipe.fit_autoencoder(small_digits, epochs=1, batch_size=256, progress=False)
    pipe.fit_prior(small_digits, UnigramPrior(num_codes=8), progress=False)
    assert pipe.prior.is_fitted
    bits = pipe.prior_nll(small_digits.test_images)
    assert 0 < bits <= math.log2(8) + 1e-6
    assert pipe.sample(3, generator=torch.Generator().manual_seed(0)).shape == (3, 1, 28, 28)
    with pytest.raises(ConfigError, match="unconditional"):
        pipe.sample(2, label=1)
