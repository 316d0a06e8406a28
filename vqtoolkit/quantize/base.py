"""What every quantizer offers: the contract plugins implement and the pipeline relies on."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from vqtoolkit.components.base import Component
from vqtoolkit.components.options import Limit, bounds
from vqtoolkit.errors import ConfigError
from vqtoolkit.quantize.core import from_flat, to_flat
from vqtoolkit.scoring import metrics


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

    @property
    def dead_codes(self) -> int:
        """Codes not chosen in this batch (sum ``counts`` over an epoch for the epoch's figure)."""
        return metrics.dead_codes(self.counts)


class Quantizer(Component):
    """Base class of quantizers: ``forward(z) -> QuantizerOutput`` on channel-first ``z``.

    Subclasses set ``num_codes`` and ``dim`` and implement ``codebook``, ``nearest`` and
    ``forward``; ``lookup`` and ``quantize_indices`` follow from those.

    **Tokens for priors.** Index priors model one token per latent position from a vocabulary of
    ``num_tokens``. For one-codebook quantizers (``vq``, ``ema``, ``fsq``) a token *is* the index
    and ``num_tokens == num_codes``; a quantizer whose indices carry more than one number per
    position (``residual``: ``(B, R, *spatial)``) overrides :meth:`to_tokens` / :meth:`from_tokens`
    and ``num_tokens`` to fold them into one token and back.
    """

    kind = "quantizer"
    limits = bounds(num_codes=Limit(1), dim=Limit(1))
    num_codes: int
    dim: int

    @property
    def codebook(self) -> Tensor:
        """The code vectors ``(K, D)``."""
        raise NotImplementedError

    def nearest(self, flat: Tensor) -> Tensor:
        """Index of the nearest code for each row of ``flat`` ``(N, D)``."""
        raise NotImplementedError

    def check_indices(self, indices: Tensor) -> None:
        """Raise a :class:`ConfigError` unless ``indices`` are integers in ``[0, num_codes)``."""
        if indices.dtype not in (torch.int64, torch.int32) or indices.ndim < 1:
            raise ConfigError(f"indices must be an integer tensor (B, *spatial); got {indices.dtype}")
        if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= self.num_codes):
            raise ConfigError(
                f"indices must lie in [0, {self.num_codes}); got range "
                f"[{int(indices.min())}, {int(indices.max())}]"
            )

    def lookup(self, indices: Tensor) -> Tensor:
        """Channel-first code vectors ``(B, D, *spatial)`` for ``indices`` ``(B, *spatial)``."""
        self.check_indices(indices)
        return from_flat(self.codebook[indices.reshape(-1)], indices)

    @property
    def num_tokens(self) -> int:
        """Vocabulary size of :meth:`to_tokens` (what an index prior's ``num_codes`` must be)."""
        return self.num_codes

    def to_tokens(self, indices: Tensor) -> Tensor:
        """One token per position ``(B, *spatial)`` in ``[0, num_tokens)`` from this quantizer's indices."""
        return indices

    def from_tokens(self, tokens: Tensor) -> Tensor:
        """The inverse of :meth:`to_tokens`: indices that :meth:`lookup` accepts."""
        return tokens

    @torch.no_grad()
    def quantize_indices(self, z: Tensor) -> Tensor:
        """Indices ``(B, *spatial)`` of the nearest codes of channel-first latents (no losses)."""
        return self.nearest(to_flat(z, self.dim)).reshape(z.shape[0], *z.shape[2:])
