"""The decoder contract: what ``build()`` reads to wire and check components."""

from __future__ import annotations

from vqtoolkit.component import Component


class Decoder(Component):
    """Maps latents ``(B, dim, h, w)`` to images ``(B, out_channels, h·upsample, w·upsample)``."""

    kind = "decoder"
    out_channels: int
    dim: int
    upsample: int
