"""What every quantizer offers: the contract plugins implement and the pipeline relies on."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from vqtoolkit import metrics
from vqtoolkit.component import Component
from vqtoolkit.errors import ConfigError
from vqtoolkit.quantize.core import from_flat, to_flat


@dataclass
class QuantizerOutput:
    """Result of ``quantizer(z)``.

    ``quantized`` has z's shape and passes gradients straight through to z; ``indices`` is
    ``(B, *spatial)`` long; ``loss`` is the scalar auxiliary loss to add to the training loss;
    ``counts`` holds per-code usage ``(K,)`` in this batch, to be summed over an epoch.
    """

    quantized: Tensor
    indices: Tensor
    loss: Tensor
    counts: Tensor
    losses: dict[str, Tensor] = field(default_factory=dict)

    @property
    def perplexity(self) -> float:
        """Perplexity of this batch's code usage (prefer epoch counts, see :mod:`metrics`)."""
        return metrics.perplexity(self.counts)

    @property
    def codes_used(self) -> int:
        """Distinct codes chosen in this batch."""
        return metrics.codes_used(self.counts)


class Quantizer(Component):
    """Base class of quantizers: ``forward(z) -> QuantizerOutput`` on channel-first ``z``.

    Subclasses set ``num_codes`` and ``dim`` and implement ``codebook``, ``nearest`` and
    ``forward``; ``lookup`` and ``quantize_indices`` follow from those.
    """

    kind = "quantizer"
    num_codes: int
    dim: int

    def __init__(self, **config: object) -> None:
        super().__init__(**config)

    @property
    def codebook(self) -> Tensor:
        """The code vectors ``(K, D)``."""
        raise NotImplementedError

    def nearest(self, flat: Tensor) -> Tensor:
        """Index of the nearest code for each row of ``flat`` ``(N, D)``."""
        raise NotImplementedError

    def lookup(self, indices: Tensor) -> Tensor:
        """Channel-first code vectors ``(B, D, *spatial)`` for ``indices`` ``(B, *spatial)``."""
        if indices.dtype not in (torch.int64, torch.int32) or indices.ndim < 1:
            raise ConfigError(f"indices must be an integer tensor (B, *spatial); got {indices.dtype}")
        if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= self.num_codes):
            raise ConfigError(
                f"indices must lie in [0, {self.num_codes}); got range "
                f"[{int(indices.min())}, {int(indices.max())}]"
            )
        return from_flat(self.codebook[indices.reshape(-1)], indices)

    @torch.no_grad()
    def quantize_indices(self, z: Tensor) -> Tensor:
        """Indices ``(B, *spatial)`` of the nearest codes of channel-first latents (no losses)."""
        return self.nearest(to_flat(z, self.dim)).reshape(z.shape[0], *z.shape[2:])

