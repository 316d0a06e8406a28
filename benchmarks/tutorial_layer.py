"""The classic VQ-VAE tutorial quantizer, as written there, for the benchmarks to compare against.

``TutorialLayer`` is the layer itself (``‖z‖² + ‖E‖² − 2 z·Eᵀ`` materialised, ``argmin``, ``E[idx]``,
both losses, the straight-through add). ``TutorialQuantizer`` puts it behind vqtoolkit's quantizer
interface, unchanged, so that it can be timed inside vqtoolkit's own training loop.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vqtoolkit.quantize import Quantizer, QuantizerOutput


class TutorialLayer(nn.Module):
    """The classic VQ-VAE tutorial quantizer, as written there."""

    def __init__(self, num_codes: int, dim: int, beta: float = 0.25) -> None:
        super().__init__()
        self.embedding = nn.Embedding(num_codes, dim)
        self.embedding.weight.data.uniform_(-1 / num_codes, 1 / num_codes)
        self.beta = beta

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(quantized, loss, indices)`` for channel-first ``z``."""
        z = z.permute(0, 2, 3, 1).contiguous()
        flat = z.view(-1, z.shape[-1])
        distances = (
            flat.pow(2).sum(1, keepdim=True)
            + self.embedding.weight.pow(2).sum(1)
            - 2 * flat @ self.embedding.weight.t()
        )
        indices = distances.argmin(1)
        quantized = self.embedding(indices).view(z.shape)
        loss = F.mse_loss(quantized, z.detach()) + self.beta * F.mse_loss(quantized.detach(), z)
        quantized = z + (quantized - z).detach()
        return quantized.permute(0, 3, 1, 2).contiguous(), loss, indices


class TutorialQuantizer(Quantizer):
    """:class:`TutorialLayer` behind vqtoolkit's quantizer interface (adds only a usage count)."""

    def __init__(self, num_codes: int = 512, dim: int = 64, beta: float = 0.25) -> None:
        super().__init__(num_codes=num_codes, dim=dim, beta=beta)
        self.num_codes, self.dim = num_codes, dim
        self.layer = TutorialLayer(num_codes, dim, beta)

    def forward(self, z: Tensor) -> QuantizerOutput:
        quantized, loss, indices = self.layer(z)
        counts = torch.bincount(indices, minlength=self.num_codes)
        return QuantizerOutput(quantized, indices.view(z.shape[0], *z.shape[2:]), loss, counts)
