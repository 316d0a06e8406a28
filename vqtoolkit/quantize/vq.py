"""``vq``: the classic VQ-VAE quantizer (van den Oord et al., 2017) on the shared STE core."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vqtoolkit.errors import ConfigError
from vqtoolkit.component import check_positive
from vqtoolkit.quantize.base import Quantizer, QuantizerOutput
from vqtoolkit.quantize.core import (
    DEFAULT_CHUNK_BYTES,
    from_flat,
    nearest_codes,
    straight_through,
    to_flat,
    vq_losses,
)


class VectorQuantizer(Quantizer):
    """Codebook ``nn.Embedding(num_codes, dim)`` trained by the codebook loss.

    ``loss = mse(q, sg[z]) + beta * mse(sg[q], z)``; the output passes gradients straight
    through. ``chunk_bytes`` bounds the memory of the nearest-code search.
    """

    def __init__(
        self,
        num_codes: int = 512,
        dim: int = 64,
        beta: float = 0.25,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    ) -> None:
        check_positive("num_codes", num_codes)
        check_positive("dim", dim)
        check_positive("chunk_bytes", chunk_bytes)
        if beta < 0:
            raise ConfigError(f"beta (commitment weight) must be >= 0; got {beta}")
        super().__init__(num_codes=num_codes, dim=dim, beta=beta, chunk_bytes=chunk_bytes)
        self.num_codes, self.dim, self.beta, self.chunk_bytes = num_codes, dim, beta, chunk_bytes
        self.embedding = nn.Embedding(num_codes, dim)
        nn.init.uniform_(self.embedding.weight, -1.0 / num_codes, 1.0 / num_codes)

    @property
    def codebook(self) -> Tensor:
        return self.embedding.weight

    def nearest(self, flat: Tensor) -> Tensor:
        return nearest_codes(flat, self.codebook.detach(), chunk_bytes=self.chunk_bytes)

    def forward(self, z: Tensor) -> QuantizerOutput:
        flat = to_flat(z, self.dim)
        indices = self.nearest(flat)
        codes = F.embedding(indices, self.codebook)
        codebook_loss, commitment_loss = vq_losses(flat, codes)
        indices = indices.reshape(z.shape[0], *z.shape[2:])
        return QuantizerOutput(
            quantized=from_flat(straight_through(flat, codes), indices),
            indices=indices,
            loss=codebook_loss + self.beta * commitment_loss,
            counts=torch.bincount(indices.reshape(-1), minlength=self.num_codes),
            losses={"codebook": codebook_loss, "commitment": commitment_loss},
        )
