"""The plugin guide's example prior as vqtoolkit 0.1 documented it, word for word.

Its constructor passes its options on to ``super().__init__(...)``, which 0.1 required and 0.2
deprecates; tests/test_old_style_plugin.py keeps it building, fitting, saving and loading.
"""

import math

import torch
import torch.nn.functional as F

from vqtoolkit.priors.base import Prior


class PositionPrior(Prior):
    """Independent per-position code frequencies, add-one smoothed: the smallest useful index prior."""

    has_likelihood = True

    def __init__(self, num_codes: int = 4, grid_shape: list[int] | None = None) -> None:
        super().__init__(num_codes=num_codes, grid_shape=grid_shape)
        positions = math.prod(grid_shape or [1])  # not a tensor op: must work on the meta device
        self.register_buffer("counts", torch.ones(positions, num_codes))

    def fit(self, data, labels=None, *, progress=True):
        self._config["grid_shape"] = list(data.shape[1:])  # config fixes the buffer's shape
        self.counts = 1 + F.one_hot(data.flatten(1), self._config["num_codes"]).sum(0).float()
        self.fitted.fill_(True)
        return self

    def sample(self, n, *, label=None, temperature=1.0, generator=None):
        self.check_sample_args(n, label, temperature)
        p = self.counts.pow(1 / temperature)
        drawn = torch.multinomial(p, n, replacement=True, generator=generator)
        return drawn.t().reshape(n, *self._config["grid_shape"])

    def log_prob(self, data, labels=None):
        log_p = (self.counts / self.counts.sum(1, keepdim=True)).log()
        return log_p.gather(1, data.flatten(1).t()).t().sum(1)
