"""``VQVAE``: encoder + quantizer + decoder, the stage-1 autoencoder."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from vqtoolkit.decoders.base import Decoder
from vqtoolkit.encoders.base import Encoder
from vqtoolkit.errors import ShapeError
from vqtoolkit.quantize.base import Quantizer, QuantizerOutput


@dataclass
class VQVAEOutput:
    """``reconstruction`` of the input and the quantizer's output (indices, loss, counts)."""

    reconstruction: Tensor
    quantizer: QuantizerOutput


class VQVAE(nn.Module):
    """The autoencoder of stage 1. Components are any registered encoder, quantizer and decoder."""

    def __init__(self, encoder: Encoder, quantizer: Quantizer, decoder: Decoder) -> None:
        super().__init__()
        self.encoder, self.quantizer, self.decoder = encoder, quantizer, decoder

    @property
    def in_channels(self) -> int:
        """Image channels the encoder takes."""
        return int(self.encoder.in_channels)

    def check_images(self, x: Tensor) -> None:
        """Raise a :class:`ShapeError` for images this model cannot encode, saying why."""
        factor = int(getattr(self.encoder, "downsample", 1))
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ShapeError(
                f"expected images (B, {self.in_channels}, H, W); got shape {tuple(x.shape)}"
            )
        if x.shape[2] % factor or x.shape[3] % factor:
            raise ShapeError(
                f"images of size {x.shape[2]}×{x.shape[3]} cannot be downsampled evenly by the "
                f"encoder's factor {factor}; resize them to a multiple of {factor}"
            )

    def encode_latents(self, x: Tensor) -> Tensor:
        """Continuous encoder output ``z`` ``(B, D, h, w)``."""
        self.check_images(x)
        return self.encoder(x)

    def encode(self, x: Tensor) -> Tensor:
        """Code indices ``(B, h, w)`` (or the quantizer's index layout) for images ``x``."""
        return self.quantizer.quantize_indices(self.encode_latents(x))

    def encode_tokens(self, x: Tensor) -> Tensor:
        """One token per latent position ``(B, h, w)``, what index priors model (see ``Quantizer.to_tokens``)."""
        return self.quantizer.to_tokens(self.encode(x))

    def decode(self, quantized: Tensor) -> Tensor:
        """Images from quantized latents."""
        return self.decoder(quantized)

    def decode_indices(self, indices: Tensor) -> Tensor:
        """Images from code indices."""
        return self.decoder(self.quantizer.lookup(indices))

    def forward(self, x: Tensor) -> VQVAEOutput:
        out = self.quantizer(self.encode_latents(x))
        return VQVAEOutput(self.decoder(out.quantized), out)

    @torch.inference_mode()
    def reconstruct(self, x: Tensor) -> Tensor:
        """Encode, quantize and decode ``x`` without tracking gradients."""
        return self.forward(x).reconstruction
