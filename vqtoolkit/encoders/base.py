"""The encoder contract: what ``build()`` reads to wire and check components."""

from __future__ import annotations

from vqtoolkit.components.base import Component


class Encoder(Component):
    """Maps images ``(B, in_channels, H, W)`` to latents ``(B, dim, H/downsample, W/downsample)``."""

    kind = "encoder"
    in_channels: int
    dim: int
    downsample: int
