"""``conv``: the classic VQ-VAE tutorial decoder, mirroring :class:`~vqtoolkit.encoders.conv.ConvEncoder`."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from torch import Tensor, nn

from vqtoolkit.components.options import Limit, bounds, widths
from vqtoolkit.decoders.base import Decoder


class ConvDecoder(Decoder):
    """A 1×1 transposed projection from ``dim``, then 4×4 stride-2 transposed convolutions, sigmoid.

    With the defaults: ``ConvT(dim,64,1) → ReLU → ConvT(64,32,4,2,1) → ReLU → ConvT(32,1,4,2,1) →
    Sigmoid``, so 7×7 latents become 28×28 images in [0, 1].
    """

    limits = bounds(out_channels=Limit(1), dim=Limit(1))

    def __init__(
        self, out_channels: int = 1, dim: int = 64, hidden_channels: Sequence[int] = (64, 32)
    ) -> None:
        super().__init__()
        hidden = widths("hidden_channels", hidden_channels)
        self.out_channels, self.dim, self.upsample = out_channels, dim, 2 ** len(hidden)
        layers: list[nn.Module] = [nn.ConvTranspose2d(dim, hidden[0], 1), nn.ReLU()]
        for c_in, c_out in itertools.pairwise(hidden):
            layers += [nn.ConvTranspose2d(c_in, c_out, 4, 2, 1), nn.ReLU()]
        layers += [nn.ConvTranspose2d(hidden[-1], out_channels, 4, 2, 1), nn.Sigmoid()]
        self.net = nn.Sequential(*layers)

    def forward(self, q: Tensor) -> Tensor:
        """Images ``(B, out_channels, h·upsample, w·upsample)`` in [0, 1]."""
        return self.net(q)

    def output_logit_bias(self) -> Tensor | None:
        """The last transposed convolution's bias, the one right before the sigmoid."""
        last: nn.ConvTranspose2d = self.net[-2]  # type: ignore[assignment]
        return last.bias
