"""``fsq``: finite scalar quantization (Mentzer et al., 2023) - an implicit codebook, no auxiliary loss.

Each of the ``len(levels)`` channels is squashed into a bounded range by ``tanh`` and rounded to
one of ``levels[i]`` values; the code of a position is that grid point, and its index is the
mixed-radix number of its per-channel levels (channel 0 least significant). Every grid point is
a code, so ``num_codes = prod(levels)``, nothing can collapse, and there is nothing to learn: the
loss is zero. Rounding passes gradients straight through.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from vqtoolkit.errors import ConfigError
from vqtoolkit.quantize.base import Quantizer, QuantizerOutput
from vqtoolkit.quantize.core import from_flat, straight_through, to_flat


class FSQ(Quantizer):
    """Finite scalar quantizer over ``levels`` (e.g. ``(8, 5, 5, 5)``: 1000 codes in 4 dims).

    ``dim`` must equal ``len(levels)`` (the encoder's output channels); ``None`` takes it from the
    levels. ``eps`` widens the tanh range slightly so the extreme levels are reachable.
    """

    levels: Tensor
    basis: Tensor

    def __init__(
        self, levels: Sequence[int] = (8, 5, 5, 5), dim: int | None = None, eps: float = 1e-3
    ) -> None:
        levels = [int(level) for level in levels]
        if not levels or any(level < 2 for level in levels):
            raise ConfigError(
                f"fsq levels must be a non-empty list of integers >= 2, e.g. [8, 5, 5, 5]; got {levels}"
            )
        if dim is not None and dim != len(levels):
            raise ConfigError(
                f"fsq levels {levels} quantize {len(levels)} channels but dim={dim}: give the encoder "
                f"dim={len(levels)} (e.g. `--dim {len(levels)}` or build(dim={len(levels)})), or {dim} levels"
            )
        if not 0 <= eps < 1:
            raise ConfigError(f"fsq eps must lie in [0, 1); got {eps}")
        super().__init__()
        self.dim, self.num_codes, self.eps = len(levels), math.prod(levels), eps
        self.register_buffer("levels", torch.tensor(levels), persistent=False)
        basis = np.cumprod([1, *levels[:-1]], dtype=np.int64)  # as torch.cumprod, without a meta kernel
        self.register_buffer("basis", torch.tensor(basis), persistent=False)

    def bound(self, flat: Tensor) -> Tensor:
        """Squash rows ``(N, d)`` so rounding channel ``i`` gives one of ``levels[i]`` integers."""
        levels = self.levels.to(flat.dtype)
        half = (levels - 1) * (1 + self.eps) / 2
        offset = (self.levels % 2 == 0).to(flat.dtype) * 0.5
        shift = torch.atanh(offset / half)
        return torch.tanh(flat + shift) * half - offset

    def _half_width(self, dtype: torch.dtype) -> Tensor:
        return (self.levels // 2).to(dtype)

    def _codes_to_indices(self, grid: Tensor) -> Tensor:
        """Integer grid points (centred) ``(N, d)`` to indices ``(N,)``."""
        return ((grid.round().long() + self.levels // 2) * self.basis).sum(1)

    def _indices_to_codes(self, indices: Tensor, dtype: torch.dtype) -> Tensor:
        """Indices ``(N,)`` to normalised codes ``(N, d)`` in [-1, 1]."""
        digits = (indices.unsqueeze(1) // self.basis) % self.levels
        half = self._half_width(dtype)
        return (digits.to(dtype) - half) / half

    @property
    def codebook(self) -> Tensor:
        """Every implicit code ``(prod(levels), d)``, built on demand (it is never stored)."""
        return self._indices_to_codes(torch.arange(self.num_codes, device=self.levels.device), torch.float32)

    def nearest(self, flat: Tensor) -> Tensor:
        """Index of the grid point that ``bound(flat)`` rounds to: the nearest code after the squash."""
        with torch.no_grad():
            return self._codes_to_indices(self.bound(flat))

    def lookup(self, indices: Tensor) -> Tensor:
        """Grid points ``(B, d, *spatial)`` of ``indices`` (rebuilt from the mixed-radix digits)."""
        self.check_indices(indices)
        return from_flat(self._indices_to_codes(indices.reshape(-1), torch.float32), indices)

    def forward(self, z: Tensor) -> QuantizerOutput:
        """Round each squashed channel to its grid; gradients pass straight through; no loss."""
        flat = to_flat(z, self.dim)
        bounded = self.bound(flat)
        grid = straight_through(bounded, bounded.round())
        indices = self._codes_to_indices(grid.detach())
        quantized = grid / self._half_width(flat.dtype)
        indices = indices.reshape(z.shape[0], *z.shape[2:])
        return QuantizerOutput(
            quantized=from_flat(quantized, indices),
            indices=indices,
            loss=flat.new_zeros(()),
            counts=torch.bincount(indices.reshape(-1), minlength=self.num_codes),
        )
