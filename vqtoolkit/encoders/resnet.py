"""``resnet``: a residual encoder for real and colour images, in the layout of the VQGAN/taming tokenizers."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from vqtoolkit.components.options import Limit, bounds
from vqtoolkit.encoders import _blocks
from vqtoolkit.encoders.base import Encoder


class ResNetEncoder(Encoder):
    """Residual blocks (GroupNorm, SiLU, 3×3 convolutions) per level, halving H and W between levels.

    ``conv3×3(in_channels → widths[0])``, then for each level ``blocks`` residual blocks at that
    level's width and, between levels, a stride-2 convolution; optionally a ``middle`` residual
    block at the bottom; then GroupNorm, SiLU and ``conv3×3(→ dim)``. With ``L = len(widths)`` levels
    the downsampling factor is ``f = 2 ** (L - 1)``: the defaults ``[16, 32, 32]`` take 32×32 images
    to 8×8 latents (f = 4); ``[16, 32, 32, 64]`` gives f = 8. The defaults are sized for a CPU
    (docs/training.md compares widths); the taming f = 16 tokenizer is
    ``widths=[128, 128, 256, 256, 512], blocks=2, middle=True`` (for a GPU).

    Args:
        in_channels: Image channels (3 for colour).
        **layout: The levels, shared with the decoder (:class:`~vqtoolkit.encoders._blocks.Layout`):
            ``dim`` latent channels, the quantizer's code dimension; ``widths`` channels of each
            level, image side first (2-5 levels); ``blocks`` residual blocks per level; ``groups``
            GroupNorm groups (``gcd(width, groups)`` at each width, so any width works); ``middle``
            one more residual block at the lowest resolution, before the output head.
    """

    options_to = _blocks.Layout
    limits = bounds(in_channels=Limit(1))

    def __init__(self, in_channels: int = 3, **layout: Any) -> None:
        super().__init__()
        shape = _blocks.Layout(**layout)
        levels = shape.levels
        self.in_channels, self.dim, self.downsample = in_channels, shape.dim, shape.factor
        layers: list[nn.Module] = [nn.Conv2d(in_channels, levels[0], 3, padding=1)]
        layers += _blocks.levels(levels, shape.blocks, shape.groups, _blocks.Downsample)
        if shape.middle:
            layers += _blocks.stack(levels[-1], levels[-1], 1, shape.groups)
        layers += _blocks.head(levels[-1], shape.dim, shape.groups)
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        """Images ``(B, in_channels, H, W)`` to latents ``(B, dim, H/downsample, W/downsample)``."""
        return self.net(x)
