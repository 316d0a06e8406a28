"""``markov``: a smoothed bigram prior over code indices in raster order, as a vqtoolkit plugin.

Each code is predicted from the code before it in raster order (left to right, top to bottom),
interpolated with a per-position unigram so that rare contexts fall back on where the code sits::

    p(x_t | x_{t-1} = c) = λ_c · T[c, x_t] / n_c + (1 - λ_c) · U_t(x_t),   λ_c = n_c / (n_c + strength)
    U_t(x) = (count of x at position t + smoothing) / (N + K · smoothing)

``T`` counts transitions, ``n_c`` how often ``c`` was a context. Fitting is one ``bincount``, the
likelihood is exact (bits per code compare with any index prior) and sampling draws one position
at a time for all samples at once. Counts are buffers, so bundles store the fitted prior as tensors.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from vqtoolkit.component import check_positive
from vqtoolkit.errors import ConfigError, ShapeError
from vqtoolkit.priors.base import Prior

__all__ = ["MarkovPrior"]
__version__ = "0.1.0"

#: A dense K×K transition table above this many codes would need more than 64 MB.
MAX_CODES = 4096


class MarkovPrior(Prior):
    """Bigram prior over raster-ordered code indices, backed off to per-position code frequencies.

    ``smoothing`` is the additive pseudo-count of the per-position unigram; ``strength`` is how
    many observations of a context it takes before its own transitions get half the weight.
    ``grid_shape`` is learnt by ``fit`` (the index layout after the batch dimension).
    """

    space = "indices"
    has_likelihood = True

    def __init__(
        self,
        num_codes: int = 512,
        smoothing: float = 0.5,
        strength: float = 5.0,
        grid_shape: Sequence[int] | None = None,
    ) -> None:
        check_positive("num_codes", num_codes)
        if num_codes > MAX_CODES:
            raise ConfigError(
                f"the markov prior keeps a dense {num_codes}×{num_codes} transition table, too large above "
                f"{MAX_CODES} codes; use the categorical or pixelcnn prior for a codebook this size"
            )
        if smoothing <= 0 or strength <= 0:
            raise ConfigError(f"smoothing and strength must be > 0; got {smoothing} and {strength}")
        shape = None if grid_shape is None else [int(s) for s in grid_shape]
        super().__init__(num_codes=num_codes, smoothing=smoothing, strength=strength, grid_shape=shape)
        positions = 1 if shape is None else math.prod(shape)
        self.register_buffer("transitions", torch.zeros(num_codes, num_codes))
        self.register_buffer("position_counts", torch.zeros(positions, num_codes))

    def fit(self, data: Tensor, labels: Tensor | None = None, *, progress: bool = True) -> MarkovPrior:
        """Count transitions and per-position codes of indices ``(N, *grid)``."""
        k = self._config["num_codes"]
        if data.ndim < 2 or data.dtype != torch.long:
            raise ShapeError(
                f"the markov prior fits code indices (N, *grid) of dtype long; got "
                f"{tuple(data.shape)} {data.dtype}"
            )
        if data.numel() == 0 or int(data.min()) < 0 or int(data.max()) >= k:
            raise ShapeError(
                f"indices must lie in [0, {k}) (num_codes={k}); got an empty or out-of-range tensor"
            )
        flat = data.reshape(len(data), -1).cpu()
        positions = flat.shape[1]
        self._config["grid_shape"] = list(data.shape[1:])
        pairs = (flat[:, :-1] * k + flat[:, 1:]).reshape(-1)
        at = (torch.arange(positions) * k + flat).reshape(-1)
        device = self.transitions.device
        self.transitions = torch.bincount(pairs, minlength=k * k).reshape(k, k).float().to(device)
        self.position_counts = (
            torch.bincount(at, minlength=positions * k).reshape(positions, k).float().to(device)
        )
        self.fitted.fill_(True)
        return self

    def _unigram(self) -> Tensor:
        """``U_t`` for every position ``(P, K)``."""
        counts = self.position_counts + self._config["smoothing"]
        return counts / counts.sum(1, keepdim=True)

    def _next_probs(self, previous: Tensor, unigram_t: Tensor) -> Tensor:
        """``p(x_t | x_{t-1})`` ``(n, K)`` for contexts ``previous`` ``(n,)``."""
        rows = self.transitions[previous]
        seen = rows.sum(1, keepdim=True)
        weight = seen / (seen + self._config["strength"])
        return weight * rows / seen.clamp_min(1) + (1 - weight) * unigram_t

    def log_prob(self, data: Tensor, labels: Tensor | None = None) -> Tensor:
        """Exact log-likelihood in nats of each index grid ``(N, *grid)``."""
        self._check_grid(data)
        flat = data.reshape(len(data), -1).to(self.transitions.device)
        unigram = self._unigram()
        first = unigram[0, flat[:, 0]].log()
        if flat.shape[1] == 1:
            return first
        prev, nxt = flat[:, :-1], flat[:, 1:]
        rows = self.transitions[prev, nxt]
        seen = self.transitions.sum(1)[prev]
        weight = seen / (seen + self._config["strength"])
        positions = torch.arange(1, flat.shape[1], device=flat.device)
        p = weight * rows / seen.clamp_min(1) + (1 - weight) * unigram[positions, nxt]
        return first + p.log().sum(1)

    @torch.no_grad()
    def sample(
        self,
        n: int,
        *,
        label: int | None = None,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """``n`` index grids drawn position by position; ``temperature`` < 1 sharpens each step."""
        self.check_sample_args(n, label, temperature)
        unigram = self._unigram()
        out = torch.empty(n, unigram.shape[0], dtype=torch.long, device=unigram.device)
        probs = unigram[0].expand(n, -1)
        for t in range(unigram.shape[0]):
            if t:
                probs = self._next_probs(out[:, t - 1], unigram[t])
            if temperature != 1.0:
                probs = probs.pow(1.0 / temperature)
            out[:, t] = torch.multinomial(probs, 1, generator=generator).squeeze(1)
        return out.reshape(n, *self._config["grid_shape"])

    def _check_grid(self, data: Tensor) -> None:
        if not self.is_fitted:
            raise ConfigError("the markov prior is not fitted; call fit() first")
        grid = list(data.shape[1:])
        if grid != self._config["grid_shape"] or data.dtype != torch.long:
            raise ShapeError(
                f"the markov prior was fitted on index grids {self._config['grid_shape']}; got "
                f"{grid} {data.dtype}"
            )
