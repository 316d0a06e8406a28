"""``categorical``: an independent categorical distribution over codes at every grid position.

The simplest index prior and the baseline every other one must beat: ``p(x) = Π_p p_p(x_p)``
with ``p_p`` the smoothed code frequencies at position ``p`` (one table per class when
``conditional``). Fitting is one ``bincount``; it ignores how positions depend on each other, so
its samples are noisy collages, but its bits per code say how much a spatial model (PixelCNN) adds.
"""

from __future__ import annotations

from typing import Any

import torch
from einops import rearrange
from torch import Tensor

from vqtoolkit.components.options import Limit, bounds
from vqtoolkit.priors.clustered import ClusteredIndexPrior


class CategoricalPrior(ClusteredIndexPrior):
    """Per-position code frequencies with additive (Laplace) ``smoothing``.

    ``log_probs`` holds ``log p(code | class, position)`` as a ``(classes, H·W, K)`` buffer;
    ``smoothing`` pseudo-counts keep codes never seen at a position possible (finite NLL).
    """

    log_probs: Tensor
    limits = bounds(smoothing=Limit(0, low_open=True))

    def __init__(
        self,
        num_codes: int = 512,
        smoothing: float = 0.5,
        **options: Any,
    ) -> None:
        super().__init__(num_codes=num_codes, **options)
        grid_shape = self._config["grid_shape"]
        positions = 1 if grid_shape is None else int(grid_shape[0]) * int(grid_shape[1])
        self.register_buffer("log_probs", torch.zeros(len(self.class_log_prior), positions, num_codes))

    def _fit(self, data: Tensor, labels: Tensor | None, *, progress: bool) -> None:
        classes, k = len(self.class_log_prior), self.num_codes
        flat = rearrange(data, "n h w -> n (h w)").long()
        positions = flat.shape[1]
        group = torch.zeros(len(flat), 1, dtype=torch.long) if labels is None else labels[:, None].cpu()
        # one bincount over (class, position, code) cells: no loop over samples or positions
        cell = (group * positions + torch.arange(positions)) * k + flat.cpu()
        counts = torch.bincount(cell.reshape(-1), minlength=classes * positions * k).reshape(
            classes, positions, k
        )
        counts = counts.double() + self._config["smoothing"]
        self.log_probs = (counts / counts.sum(-1, keepdim=True)).log().float().to(self.class_log_prior.device)

    def _table(self, labels: Tensor | None, n: int) -> Tensor:
        """``(n, H·W, K)`` log-probabilities for each grid's class."""
        which = torch.zeros(n, dtype=torch.long, device=self.log_probs.device) if labels is None else labels
        return self.log_probs[which.to(self.log_probs.device)]

    def _log_likelihood(self, data: Tensor, labels: Tensor | None) -> Tensor:
        flat = rearrange(data, "n h w -> n (h w)").long().to(self.log_probs.device)
        return self._table(labels, len(flat)).gather(-1, flat[..., None]).squeeze(-1).sum(-1)

    @torch.inference_mode()
    def _sample(
        self, n: int, labels: Tensor | None, temperature: float, generator: torch.Generator | None
    ) -> Tensor:
        probs = torch.softmax(self._table(labels, n) / temperature, dim=-1)
        drawn = torch.multinomial(probs.reshape(-1, self.num_codes), 1, generator=generator)
        h, w = self.grid_shape
        return drawn.reshape(n, h, w)
