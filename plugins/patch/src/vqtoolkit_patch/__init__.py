"""``resnet``: the encoder and decoder of the VQ-VAE paper (van den Oord et al., 2017), as a vqtoolkit plugin.

"The encoder consists of 2 strided convolutional layers with stride 2 and window size 4 × 4,
followed by two residual 3 × 3 blocks (implemented as ReLU, 3x3 conv, ReLU, 1x1 conv), all having
256 hidden units. The decoder similarly has two residual 3 × 3 blocks, followed by two transposed
convolutions with stride 2 and window size 4 × 4." Widths, block count and stage count are options;
the defaults are sized for 28×28 digits.
"""

from __future__ import annotations

import itertools

from torch import Tensor, nn

from vqtoolkit.components.options import Limit, bounds
from vqtoolkit.decoders.base import Decoder
from vqtoolkit.encoders.base import Encoder

__all__ = ["ResNetDecoder", "ResNetEncoder", "ResidualStack"]
__version__ = "0.1.0"


class ResidualStack(nn.Module):
    """``blocks`` residual blocks ``x + conv1x1(relu(conv3x3(relu(x))))``, then a ReLU."""

    def __init__(self, channels: int, hidden: int, blocks: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            nn.Sequential(
                nn.ReLU(),
                nn.Conv2d(channels, hidden, 3, padding=1),
                nn.ReLU(),
                nn.Conv2d(hidden, channels, 1),
            )
            for _ in range(blocks)
        )

    def forward(self, x: Tensor) -> Tensor:
        """Each block adds its output to its input; a ReLU at the end."""
        for block in self.blocks:
            x = x + block(x)
        return nn.functional.relu(x)


#: Both halves take the same sizes: at least 1 of each, and any number of residual blocks.
LIMITS = bounds(dim=Limit(1), hidden=Limit(1), res_hidden=Limit(1), res_blocks=Limit(0), stages=Limit(1))


class ResNetEncoder(Encoder):
    """The paper's encoder: strided convolutions, then residual blocks.

    ``stages`` strided 4×4 convolutions (each halves H and W), a 3×3 convolution, a residual stack,
    and a 1×1 projection to ``dim``.
    """

    limits = bounds(in_channels=Limit(1), **LIMITS)

    def __init__(
        self,
        in_channels: int = 1,
        dim: int = 64,
        hidden: int = 128,
        res_hidden: int = 32,
        res_blocks: int = 2,
        stages: int = 2,
    ) -> None:
        super().__init__()
        self.in_channels, self.dim, self.downsample = in_channels, dim, 2**stages
        widths = [in_channels] + [max(hidden // 2 ** (stages - 1 - i), 1) for i in range(stages)]
        layers: list[nn.Module] = []
        for c_in, c_out in itertools.pairwise(widths):
            layers += [nn.Conv2d(c_in, c_out, 4, 2, 1), nn.ReLU()]
        layers += [
            nn.Conv2d(widths[-1], hidden, 3, padding=1),
            ResidualStack(hidden, res_hidden, res_blocks),
            nn.Conv2d(hidden, dim, 1),
        ]
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        """Images ``(B, in_channels, H, W)`` to latents ``(B, dim, H/downsample, W/downsample)``."""
        return self.net(x)


class ResNetDecoder(Decoder):
    """The paper's decoder: residual blocks, then transposed convolutions.

    A 3×3 convolution from ``dim``, a residual stack, then ``stages`` 4×4 transposed convolutions
    (each doubles H and W) ending in a sigmoid, so images come out in [0, 1].
    """

    limits = bounds(out_channels=Limit(1), **LIMITS)

    def __init__(
        self,
        out_channels: int = 1,
        dim: int = 64,
        hidden: int = 128,
        res_hidden: int = 32,
        res_blocks: int = 2,
        stages: int = 2,
    ) -> None:
        super().__init__()
        self.out_channels, self.dim, self.upsample = out_channels, dim, 2**stages
        widths = [max(hidden // 2**i, 1) for i in range(stages)] + [out_channels]
        layers: list[nn.Module] = [
            nn.Conv2d(dim, hidden, 3, padding=1),
            ResidualStack(hidden, res_hidden, res_blocks),
        ]
        for i, (c_in, c_out) in enumerate(itertools.pairwise(widths)):
            layers.append(nn.ConvTranspose2d(c_in, c_out, 4, 2, 1))
            layers.append(nn.ReLU() if i < stages - 1 else nn.Sigmoid())
        self.net = nn.Sequential(*layers)

    def forward(self, q: Tensor) -> Tensor:
        """Latents ``(B, dim, h, w)`` to images ``(B, out_channels, h·upsample, w·upsample)``."""
        return self.net(q)

    def output_logit_bias(self) -> Tensor | None:
        """The last transposed convolution's bias, right before the sigmoid (see ``Decoder``)."""
        last: nn.ConvTranspose2d = self.net[-2]  # type: ignore[assignment]
        return last.bias
