"""Encoders: images ``(B, C, H, W)`` to channel-first latents ``(B, dim, H/f, W/f)``."""

from vqtoolkit.encoders.base import Encoder

__all__ = ["Encoder"]
