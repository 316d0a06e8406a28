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

    Args:
        encoder: Images to latents.
        quantizer: Latents to codes.
        decoder: Quantized latents to images.

    Raises:
        ShapeError: Components that do not fit together (see :func:`check_wiring`).
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
        """Refuse images this model cannot encode, saying why.

        Args:
            x: Images ``(B, C, H, W)``.

        Raises:
            ShapeError: Not a 4-D batch, or images of the wrong channels or size (:meth:`check_image_shape`).
        """
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
        """The encoder's continuous output.

        Args:
            x: Images ``(B, C, H, W)``.

        Returns:
            Latents ``z`` ``(B, D, h, w)``.

        Raises:
            ShapeError: Images this model cannot encode.
        """
        self.check_images(x)
        return self.encoder(x)

    def encode(self, x: Tensor) -> Tensor:
        """The codes of images ``x``.

        Args:
            x: Images ``(B, C, H, W)``.

        Returns:
            Code indices ``(B, h, w)`` (or the quantizer's index layout).

        Raises:
            ShapeError: Images this model cannot encode.
        """
        return self.quantizer.quantize_indices(self.encode_latents(x))

    def encode_tokens(self, x: Tensor) -> Tensor:
        """What index priors model: one token per latent position (``Quantizer.to_tokens``).

        Args:
            x: Images ``(B, C, H, W)``.

        Returns:
            Tokens ``(B, h, w)``.

        Raises:
            ShapeError: Images this model cannot encode.
        """
        return self.quantizer.to_tokens(self.encode(x))

    def decode(self, quantized: Tensor) -> Tensor:
        """Images from quantized latents.

        Args:
            quantized: Quantized latents ``(B, D, h, w)``.

        Returns:
            Images ``(B, C, H, W)``.
        """
        return self.decoder(quantized)

    def decode_indices(self, indices: Tensor) -> Tensor:
        """Images from code indices.

        Args:
            indices: Indices in the quantizer's layout, as :meth:`encode` returns them.

        Returns:
            Images ``(B, C, H, W)``.
        """
        return self.decoder(self.quantizer.lookup(indices))

    def forward(self, x: Tensor) -> VQVAEOutput:
        """Encode, quantize (straight-through) and decode ``x``, for training.

        Args:
            x: Images ``(B, C, H, W)``.

        Returns:
            The reconstruction and the quantizer's output (codes, loss, counts).

        Raises:
            ShapeError: Images this model cannot encode.
        """
        out = self.quantizer(self.encode_latents(x))
        return VQVAEOutput(self.decoder(out.quantized), out)

    @torch.inference_mode()
    def reconstruct(self, x: Tensor) -> Tensor:
        """Encode, quantize and decode ``x`` without tracking gradients.

        Args:
            x: Images ``(B, C, H, W)``.

        Returns:
            Reconstructions, same shape.

        Raises:
            ShapeError: Images this model cannot encode.
        """
        return self.forward(x).reconstruction

    def interpolate(self, a: Tensor, b: Tensor, steps: int) -> Tensor:
        """Images along the straight line between the latents of ``a`` and ``b``.

        Each point on the line is snapped to its nearest codes and decoded, so the ends are the two
        images' reconstructions.

        Args:
            a: One image ``(1, C, H, W)``.
            b: Another, likewise.
            steps: Points on the line, both ends included.

        Returns:
            Images ``(steps, C, H, W)``.

        Raises:
            ShapeError: Images this model cannot encode.
        """
        za, zb = self.encode_latents(a), self.encode_latents(b)
        t = torch.linspace(0, 1, steps, device=za.device).view(-1, 1, 1, 1)
        return self.decode_indices(self.quantizer.quantize_indices((1 - t) * za + t * zb))
