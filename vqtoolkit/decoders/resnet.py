"""``resnet``: the decoder mirroring :class:`~vqtoolkit.encoders.resnet.ResNetEncoder` (VQGAN/taming)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from vqtoolkit.components.options import Limit, bounds
from vqtoolkit.decoders.base import Decoder
from vqtoolkit.encoders import _blocks


class ResNetDecoder(Decoder):
    """The encoder run backwards: residual blocks per level, doubling H and W between levels, sigmoid.

    ``conv3×3(dim → widths[-1])``, the optional ``middle`` block, then for each level from the
    lowest resolution up ``blocks`` residual blocks and, between levels, nearest-neighbour ×2 and a
    3×3 convolution; then GroupNorm, SiLU, ``conv3×3(→ out_channels)`` and a sigmoid, so images come
    out in [0, 1]. ``widths`` is listed image side first, as for the encoder, so both halves take the
    same value; the upsampling factor is ``2 ** (len(widths) - 1)``.

    Args:
        out_channels: Image channels (3 for colour).
        **layout: The levels, the encoder's (:class:`~vqtoolkit.encoders._blocks.Layout`): ``dim``
            latent channels; ``widths`` channels of each level, image side first (2-5 levels);
            ``blocks`` residual blocks per level; ``groups`` GroupNorm groups (``gcd(width,
            groups)`` at each width); ``middle`` one more residual block at the lowest resolution,
            after the input convolution.
    """

    options_to = _blocks.Layout
    limits = bounds(out_channels=Limit(1))

    def __init__(self, out_channels: int = 3, **layout: Any) -> None:
        super().__init__()
        shape = _blocks.Layout(**layout)
        levels = shape.levels[::-1]  # lowest resolution first
        self.out_channels, self.dim, self.upsample = out_channels, shape.dim, shape.factor
        layers: list[nn.Module] = [nn.Conv2d(shape.dim, levels[0], 3, padding=1)]
        if shape.middle:
            layers += _blocks.stack(levels[0], levels[0], 1, shape.groups)
        layers += _blocks.levels(levels, shape.blocks, shape.groups, _blocks.Upsample)
        layers += [*_blocks.head(levels[-1], out_channels, shape.groups), nn.Sigmoid()]
        self.net = nn.Sequential(*layers)

    def forward(self, q: Tensor) -> Tensor:
        """Latents ``(B, dim, h, w)`` to images ``(B, out_channels, h·upsample, w·upsample)`` in [0, 1]."""
        return self.net(q)

    def output_logit_bias(self) -> Tensor | None:
        """The output convolution's bias, the one right before the sigmoid (see ``Decoder``)."""
        last: nn.Conv2d = self.net[-2]  # type: ignore[assignment]
        bias: torch.Tensor | None = last.bias
        return bias
