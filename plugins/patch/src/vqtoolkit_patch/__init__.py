"""``patch``: a patch-embedding encoder and a pixel-shuffle decoder, as a vqtoolkit plugin.

What a plugin can add beyond the built-ins: the built-in ``conv`` and ``resnet`` halve H and W per
stage, so their downsampling factor is a power of two. Here one ``patch × patch`` convolution with
stride ``patch`` cuts the image into non-overlapping patches (the patch embedding of ViT and
MLP-Mixer), so any factor works: ``patch=7`` takes 28×28 digits to a 4×4 grid of codes. Residual
per-patch MLPs (1×1 convolutions) follow; the decoder maps each code back to a patch's pixels and
rearranges them with ``PixelShuffle``.
"""

from __future__ import annotations

from torch import Tensor, nn

from vqtoolkit.components.options import Limit, bounds
from vqtoolkit.decoders.base import Decoder
from vqtoolkit.encoders.base import Encoder

__all__ = ["PatchDecoder", "PatchEncoder", "PatchMLP"]
__version__ = "0.2.0"


class PatchMLP(nn.Module):
    """``blocks`` residual per-position MLPs ``x + conv1x1(GELU(conv1x1(x)))``."""

    def __init__(self, channels: int, blocks: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(channels, 2 * channels, 1), nn.GELU(), nn.Conv2d(2 * channels, channels, 1)
            )
            for _ in range(blocks)
        )

    def forward(self, x: Tensor) -> Tensor:
        """Each block adds its output to its input; H and W unchanged."""
        for block in self.blocks:
            x = x + block(x)
        return x


#: Both halves take the same sizes.
LIMITS = bounds(dim=Limit(1), patch=Limit(1), hidden=Limit(1), blocks=Limit(0))


class PatchEncoder(Encoder):
    """Patch embedding, residual per-patch MLPs, then a 1×1 projection to ``dim``.

    Args:
        in_channels: Image channels.
        dim: Latent channels, the quantizer's code dimension.
        patch: Patch side, the downsampling factor (any whole number; H and W must be multiples).
        hidden: Channels of the patch embedding and the MLPs.
        blocks: Residual MLP blocks.
    """

    limits = bounds(in_channels=Limit(1), **LIMITS)

    def __init__(
        self, in_channels: int = 1, dim: int = 64, patch: int = 4, hidden: int = 128, blocks: int = 2
    ) -> None:
        super().__init__()
        self.in_channels, self.dim, self.downsample = in_channels, dim, patch
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, hidden, patch, stride=patch),
            PatchMLP(hidden, blocks),
            nn.Conv2d(hidden, dim, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        """Images ``(B, in_channels, H, W)`` to latents ``(B, dim, H/patch, W/patch)``."""
        return self.net(x)


class PatchDecoder(Decoder):
    """A 1×1 projection from ``dim``, residual per-patch MLPs, each code to a patch, then a sigmoid.

    Args:
        out_channels: Image channels.
        dim: Latent channels, the quantizer's code dimension.
        patch: Patch side, the upsampling factor.
        hidden: Channels of the MLPs.
        blocks: Residual MLP blocks.
    """

    limits = bounds(out_channels=Limit(1), **LIMITS)

    def __init__(
        self, out_channels: int = 1, dim: int = 64, patch: int = 4, hidden: int = 128, blocks: int = 2
    ) -> None:
        super().__init__()
        self.out_channels, self.dim, self.upsample = out_channels, dim, patch
        self.net = nn.Sequential(
            nn.Conv2d(dim, hidden, 1),
            PatchMLP(hidden, blocks),
            nn.Conv2d(hidden, out_channels * patch * patch, 1),
            nn.PixelShuffle(patch),
            nn.Sigmoid(),
        )

    def forward(self, q: Tensor) -> Tensor:
        """Latents ``(B, dim, h, w)`` to images ``(B, out_channels, h·patch, w·patch)`` in [0, 1]."""
        return self.net(q)

    def output_logit_bias(self) -> Tensor | None:
        """None: the pixel shuffle spreads each output channel's bias over patch² positions."""
        return None
