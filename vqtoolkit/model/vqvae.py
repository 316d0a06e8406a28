"""``VQVAE``: encoder + quantizer + decoder, the stage-1 autoencoder."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from vqtoolkit.components.base import component_name
from vqtoolkit.decoders.base import Decoder
from vqtoolkit.encoders.base import Encoder
from vqtoolkit.errors import ShapeError
from vqtoolkit.quantize.base import Quantizer, QuantizerOutput


@dataclass
class VQVAEOutput:
    """``reconstruction`` of the input and the quantizer's output (indices, loss, counts)."""

    reconstruction: Tensor
    quantizer: QuantizerOutput


def check_wiring(encoder: Encoder, quantizer: Quantizer, decoder: Decoder) -> None:
    """Raise a :class:`ShapeError` naming both sides of any mismatch between components."""

    def label(c: Any) -> str:
        return f"{c.kind} {component_name(c)!r}"

    same_dim = f"pass the quantizer's dim to every component, build(dim={getattr(quantizer, 'dim', None)})"
    pairs = [
        (encoder, "dim", quantizer, "dim", same_dim),
        (quantizer, "dim", decoder, "dim", same_dim),
        (encoder, "in_channels", decoder, "out_channels", "the decoder must output the images' channels"),
        (encoder, "downsample", decoder, "upsample", "give them the same number of stages"),
    ]
    for a, a_attr, b, b_attr, fix in pairs:
        va, vb = getattr(a, a_attr, None), getattr(b, b_attr, None)
        if va is not None and vb is not None and va != vb:
            raise ShapeError(f"{label(a)} has {a_attr}={va} but {label(b)} has {b_attr}={vb}: {fix}")


def _channels(count: int) -> str:
    """``"greyscale images (1 channel)"``, ``"RGB images (3 channels)"``: what a channel count means."""
    kind = {1: "greyscale ", 3: "RGB "}.get(count, "")
    return f"{kind}images ({count} channel{'s' if count != 1 else ''})"


def _convert(count: int) -> str:
    """How to give a model images of ``count`` channels."""
    if count == 1:
        return "convert them to greyscale (PIL: image.convert('L'); tensors: x.mean(1, keepdim=True))"
    if count == 3:
        return "convert them to RGB (PIL: image.convert('RGB'); tensors: x.expand(-1, 3, -1, -1))"
    return f"give it images of {count} channels, or train a model on these"


class VQVAE(nn.Module):
    """The autoencoder of stage 1. Components are any registered encoder, quantizer and decoder.

    Components that do not fit together (see :func:`check_wiring`) raise a :class:`ShapeError` here.
    """

    def __init__(self, encoder: Encoder, quantizer: Quantizer, decoder: Decoder) -> None:
        check_wiring(encoder, quantizer, decoder)
        super().__init__()
        self.encoder, self.quantizer, self.decoder = encoder, quantizer, decoder

    @property
    def in_channels(self) -> int:
        """Image channels the encoder takes."""
        return int(self.encoder.in_channels)

    def check_images(self, x: Tensor) -> None:
        """Raise a :class:`ShapeError` for images this model cannot encode, saying why."""
        if x.ndim != 4:
            raise ShapeError(f"expected images (B, {self.in_channels}, H, W); got shape {tuple(x.shape)}")
        self.check_image_shape(tuple(x.shape[1:]))

    def check_image_shape(self, shape: tuple[int, ...]) -> None:
        """Raise a :class:`ShapeError` unless this model encodes images of ``shape`` ``(C, H, W)``.

        Args:
            shape: One image's channels, height and width.

        Raises:
            ShapeError: Greyscale images for a colour model or the reverse (other channel counts
                too), or a height or width the encoder's downsampling factor does not divide.
        """
        channels, height, width = shape
        if channels != self.in_channels:
            raise ShapeError(
                f"this model encodes {_channels(self.in_channels)} but the images are "
                f"{_channels(channels)}; {_convert(self.in_channels)}"
            )
        factor = int(getattr(self.encoder, "downsample", 1))
        if height % factor or width % factor:
            near = max(factor, height // factor * factor)
            raise ShapeError(
                f"images of size {height}×{width} cannot be downsampled evenly by the encoder's factor "
                f"{factor}; resize them to a multiple of {factor} (e.g. {near}×{near})"
            )

    def encode_latents(self, x: Tensor) -> Tensor:
        """Continuous encoder output ``z`` ``(B, D, h, w)``."""
        self.check_images(x)
        return self.encoder(x)

    def encode(self, x: Tensor) -> Tensor:
        """Code indices ``(B, h, w)`` (or the quantizer's index layout) for images ``x``."""
        return self.quantizer.quantize_indices(self.encode_latents(x))

    def encode_tokens(self, x: Tensor) -> Tensor:
        """One token per latent position ``(B, h, w)``: what index priors model (``Quantizer.to_tokens``)."""
        return self.quantizer.to_tokens(self.encode(x))

    def decode(self, quantized: Tensor) -> Tensor:
        """Images from quantized latents."""
        return self.decoder(quantized)

    def decode_indices(self, indices: Tensor) -> Tensor:
        """Images from code indices."""
        return self.decoder(self.quantizer.lookup(indices))

    def forward(self, x: Tensor) -> VQVAEOutput:
        """Encode, quantize (straight-through) and decode ``x``, for training."""
        out = self.quantizer(self.encode_latents(x))
        return VQVAEOutput(self.decoder(out.quantized), out)

    @torch.inference_mode()
    def reconstruct(self, x: Tensor) -> Tensor:
        """Encode, quantize and decode ``x`` without tracking gradients."""
        return self.forward(x).reconstruction

    def interpolate(self, a: Tensor, b: Tensor, steps: int) -> Tensor:
        """Images ``(steps, C, H, W)`` along the straight line between the latents of ``a`` and ``b``.

        ``a`` and ``b`` are single images ``(1, C, H, W)``; each point on the line is snapped to its
        nearest codes and decoded, so the ends are their reconstructions.
        """
        za, zb = self.encode_latents(a), self.encode_latents(b)
        t = torch.linspace(0, 1, steps, device=za.device).view(-1, 1, 1, 1)
        return self.decode_indices(self.quantizer.quantize_indices((1 - t) * za + t * zb))
