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

from vqtoolkit.components.options import Limit, bounds
from vqtoolkit.errors import ConfigError
from vqtoolkit.priors import IndexPrior

__all__ = ["MarkovPrior"]
__version__ = "0.2.0"

#: A dense K×K transition table above this many codes would need more than 64 MB.
MAX_CODES = 4096


class MarkovPrior(IndexPrior):
    """Bigram prior over raster-ordered code indices, backed off to per-position code frequencies.

    ``smoothing`` is the additive pseudo-count of the per-position unigram; ``strength`` is how
    many observations of a context it takes before its own transitions get half the weight.
    ``grid_shape`` is learnt by ``fit``. :class:`~vqtoolkit.priors.IndexPrior` checks the indices,
    labels and grid shape, so this class only counts, scores and draws.
    """

    limits = bounds(smoothing=Limit(0, low_open=True), strength=Limit(0, low_open=True))

    def __init__(
        self,
        num_codes: int = 512,
        smoothing: float = 0.5,
        strength: float = 50.0,
        grid_shape: Sequence[int] | None = None,
    ) -> None:
        if num_codes > MAX_CODES:
            raise ConfigError(
                f"the markov prior keeps a dense {num_codes}×{num_codes} transition table, too large above "
                f"{MAX_CODES} codes; use the categorical or pixelcnn prior for a codebook this size"
            )
        super().__init__(num_codes=num_codes, grid_shape=grid_shape)
        self.smoothing, self.strength = smoothing, strength
        positions = 1 if grid_shape is None else math.prod(grid_shape)
        self.register_buffer("transitions", torch.zeros(num_codes, num_codes))
        self.register_buffer("position_counts", torch.zeros(positions, num_codes))

    def _fit(self, data: Tensor, labels: Tensor | None, *, progress: bool) -> None:
        """Count transitions and per-position codes of index grids ``(N, H, W)``: two ``bincount`` s."""
        k = self.num_codes
        flat = data.reshape(len(data), -1).long().cpu()
        positions = flat.shape[1]
        pairs = (flat[:, :-1] * k + flat[:, 1:]).reshape(-1)
        at = (torch.arange(positions) * k + flat).reshape(-1)
        device = self.transitions.device
        self.transitions = torch.bincount(pairs, minlength=k * k).reshape(k, k).float().to(device)
        self.position_counts = (
            torch.bincount(at, minlength=positions * k).reshape(positions, k).float().to(device)
        )

    def _unigram(self) -> Tensor:
        """``U_t`` for every position ``(P, K)``."""
        counts = self.position_counts + self.smoothing
        return counts / counts.sum(1, keepdim=True)

    def _bigram(self) -> tuple[Tensor, Tensor]:
        """``(λ_c · T[c] / n_c, 1 - λ_c)`` for every context ``c``: ``(K, K)`` and ``(K,)``.

        ``p(x_t | x_{t-1} = c) = mixed[c, x_t] + backoff[c] · U_t(x_t)``.
        """
        seen = self.transitions.sum(1)
        weight = seen / (seen + self.strength)
        return self.transitions * (weight / seen.clamp_min(1)).unsqueeze(1), 1 - weight

    def _log_likelihood(self, data: Tensor, labels: Tensor | None) -> Tensor:
        """Exact log-likelihood in nats of each index grid ``(N, H, W)``."""
        flat = data.reshape(len(data), -1).long().to(self.transitions.device)
        unigram = self._unigram()
        mixed, backoff = self._bigram()
        prev, nxt = flat[:, :-1], flat[:, 1:]
        positions = torch.arange(1, flat.shape[1], device=flat.device)
        p = mixed[prev, nxt] + backoff[prev] * unigram[positions, nxt]
        return unigram[0, flat[:, 0]].log() + p.log().sum(1)

    @torch.no_grad()
    def _sample(
        self, n: int, labels: Tensor | None, temperature: float, generator: torch.Generator | None
    ) -> Tensor:
        """``n`` index grids drawn position by position; ``temperature`` < 1 sharpens each step."""
        unigram = self._unigram()
        mixed, backoff = self._bigram()
        out = torch.empty(n, unigram.shape[0], dtype=torch.long, device=unigram.device)
        probs = unigram[0].expand(n, -1)
        for t in range(unigram.shape[0]):
            if t:
                previous = out[:, t - 1]
                probs = mixed[previous] + backoff[previous].unsqueeze(1) * unigram[t]
            if temperature != 1.0:
                probs = probs.pow(1.0 / temperature)
            out[:, t] = torch.multinomial(probs, 1, generator=generator).squeeze(1)
        return out.reshape(n, *self.grid_shape)
