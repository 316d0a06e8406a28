"""``conv``: the classic VQ-VAE tutorial encoder, with configurable widths."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from vqtoolkit.components.options import Limit, bounds, widths
from vqtoolkit.encoders.base import Encoder


class ConvEncoder(Encoder):
    """Strided 4×4 convolutions (each halves H and W) with ReLU, then a 1×1 projection to ``dim``.

    With the defaults: ``Conv2d(1,32,4,2,1) → ReLU → Conv2d(32,64,4,2,1) → ReLU → Conv2d(64,dim,1)``,
    so 28×28 images become 7×7 latents.
    """

    limits = bounds(in_channels=Limit(1), dim=Limit(1))

    def __init__(
        self, in_channels: int = 1, dim: int = 64, hidden_channels: Sequence[int] = (32, 64)
    ) -> None:
        super().__init__()
        hidden = widths("hidden_channels", hidden_channels)
        self.in_channels, self.dim, self.downsample = in_channels, dim, 2 ** len(hidden)
        layers: list[nn.Module] = []
        for c_in, c_out in zip([in_channels, *hidden[:-1]], hidden, strict=True):
            layers += [nn.Conv2d(c_in, c_out, 4, 2, 1), nn.ReLU()]
        layers.append(nn.Conv2d(hidden[-1], dim, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        """Latents ``(B, dim, H/downsample, W/downsample)``."""
        return self.net(x)
