"""The residual building blocks the ``resnet`` encoder and decoder share (the VQGAN/taming layout).

A :class:`ResBlock` is ``x + conv(SiLU(norm(conv(SiLU(norm(x))))))`` with GroupNorm, and a 1×1
convolution on the skip path where the width changes; :class:`Downsample` and :class:`Upsample`
halve and double H and W. The options both halves take, and their limits, are declared here once
(:class:`Layout`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch.nn.functional as F
from torch import Tensor, nn

from vqtoolkit.components.options import Limit, bounds
from vqtoolkit.components.options import widths as checked_widths
from vqtoolkit.errors import ConfigError

#: Levels allowed: 2 to 5, so the downsampling factor 2 ** (levels - 1) is 2, 4, 8 or 16.
LEVELS = range(2, 6)


@dataclass(frozen=True)
class Layout:
    """The options the encoder and the decoder share: the ``**layout`` of both constructors.

    Both halves name it as their ``options_to``, so its fields are their options, checked and
    recorded in their ``config`` like options of their own.

    Args:
        dim: Latent channels, the quantizer's code dimension.
        widths: Channels of each level, image side first (2-5 levels), for both halves.
        blocks: Residual blocks per level.
        groups: GroupNorm groups (``gcd(width, groups)`` at each width, so any width works).
        middle: Add one residual block at the lowest resolution, beside the latents.
    """

    #: The options' bounds, the same for the encoder and the decoder.
    limits: ClassVar[Mapping[str, Limit]] = bounds(dim=Limit(1), blocks=Limit(1), groups=Limit(1))

    dim: int = 64
    widths: Sequence[int] = (16, 32, 32)
    blocks: int = 1
    groups: int = 8
    middle: bool = False

    @property
    def levels(self) -> list[int]:
        """The checked per-level widths, image side first (see :func:`level_widths`)."""
        return level_widths(self.widths)

    @property
    def factor(self) -> int:
        """How much H and W shrink from image to latents: ``2 ** (levels - 1)``."""
        return 2 ** (len(self.levels) - 1)


def level_widths(values: Sequence[int]) -> list[int]:
    """``values`` as the per-level widths, refused unless there are 2-5 levels of positive widths.

    Args:
        values: Channels of each level, image side first.

    Returns:
        The widths as a list of ints.

    Raises:
        ConfigError: Too few or too many levels, or a width below 1.
    """
    out = checked_widths("widths", values)
    if len(out) not in LEVELS:
        raise ConfigError(
            f"widths lists one width per level and the factor is 2 ** (levels - 1), so it needs 2-5 "
            f"levels (f = 2, 4, 8 or 16); got {len(out)}: {out}"
        )
    if min(out) < 1:
        raise ConfigError(f"widths must all be >= 1; got {out}")
    return out


def norm(channels: int, groups: int) -> nn.GroupNorm:
    """GroupNorm with ``gcd(channels, groups)`` groups, so any width can be normalised."""
    return nn.GroupNorm(math.gcd(channels, groups), channels, eps=1e-6)


class ResBlock(nn.Module):
    """Pre-activation residual block: two (GroupNorm, SiLU, 3×3 conv) steps plus the skip path."""

    def __init__(self, c_in: int, c_out: int, groups: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            norm(c_in, groups),
            nn.SiLU(),
            nn.Conv2d(c_in, c_out, 3, padding=1),
            norm(c_out, groups),
            nn.SiLU(),
            nn.Conv2d(c_out, c_out, 3, padding=1),
        )
        self.skip = nn.Identity() if c_in == c_out else nn.Conv2d(c_in, c_out, 1)

    def forward(self, x: Tensor) -> Tensor:
        """``skip(x) + body(x)``, same H and W."""
        return self.skip(x) + self.body(x)


class Downsample(nn.Module):
    """A stride-2 3×3 convolution: H and W halve (even sizes)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, H, W)`` → ``(B, C, H/2, W/2)``."""
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest-neighbour ×2, then a 3×3 convolution (no checkerboard from transposed convolutions)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, h, w)`` → ``(B, C, 2h, 2w)``."""
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


def stack(c_in: int, c_out: int, blocks: int, groups: int) -> list[nn.Module]:
    """``blocks`` residual blocks going from ``c_in`` to ``c_out`` channels (the first changes width)."""
    return [ResBlock(c_in if i == 0 else c_out, c_out, groups) for i in range(blocks)]


def levels(
    widths: Sequence[int], blocks: int, groups: int, between: Callable[[int], nn.Module]
) -> list[nn.Module]:
    """``blocks`` residual blocks per level at each of ``widths`` in turn, ``between(width)`` between levels.

    The encoder passes :class:`Downsample` and its widths image side first; the decoder passes
    :class:`Upsample` and the widths lowest resolution first.
    """
    layers: list[nn.Module] = []
    for i, width in enumerate(widths):
        layers += stack(widths[max(i - 1, 0)], width, blocks, groups)
        if i < len(widths) - 1:
            layers.append(between(width))
    return layers


def head(channels: int, c_out: int, groups: int) -> list[nn.Module]:
    """The taming output head: GroupNorm, SiLU and a 3×3 convolution to ``c_out`` channels."""
    return [norm(channels, groups), nn.SiLU(), nn.Conv2d(channels, c_out, 3, padding=1)]
