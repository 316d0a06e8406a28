"""Decoders: channel-first latents ``(B, dim, h, w)`` to images ``(B, C, h·f, w·f)``."""

from vqtoolkit.decoders.base import Decoder

__all__ = ["Decoder"]
