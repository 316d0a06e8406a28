"""What ``lfq`` and ``bsq`` share: one bit per latent channel, the code index is the bit pattern.

There is no codebook tensor: the codes are the corners ``{−s, +s}^bits`` of a cube, ``K = 2^bits``,
and the nearest corner of a latent is its sign pattern, so nothing is searched and nothing is
stored. Channel ``i`` is bit ``i`` of the index (channel 0 least significant, as in ``fsq``: the
same signs give ``fsq`` with ``levels=[2] * bits`` the same index). A latent of exactly 0 takes
bit 0 (code ``−s``), the lower index, as the contract's "ties to the lowest index" asks.

``codebook`` and ``lookup`` rebuild codes from the bits on request; the forward pass never builds
a K-wide tensor (the entropy penalty's memory is bounded too, see :mod:`._entropy`). With
``dim != bits``, linear projections ``dim → bits`` and ``bits → dim`` fit any encoder width and the
codes live in the encoder's space as ``project_out(corner)``.

The input projection, the decisions and the penalty run in float32 (or wider), with autocast
switched off around them, so bfloat16 training never flips a bit by rounding; the output
projection runs under autocast like the rest of the network.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vqtoolkit.components.options import Limit, bounds
from vqtoolkit.quantize._entropy import entropy_terms
from vqtoolkit.quantize.base import Quantizer, QuantizerOutput
from vqtoolkit.quantize.core import from_flat, straight_through, to_flat

#: The most bits: per-code usage counts (``K`` of them) are kept for every epoch's statistics.
MAX_BITS = 24


class BinaryQuantizer(Quantizer):
    """Sign quantization of ``bits`` channels (base of :class:`~vqtoolkit.quantize.lfq.LFQ` and BSQ).

    ``loss = beta · mse(u, sg[c]) + sample_entropy_weight · H_sample
    + batch_entropy_weight · (bits · ln 2 − H_batch)``, where ``u`` is the latent being binarised
    and ``c`` its code (``bits · ln 2`` is the most ``H_batch`` can be, so the loss stays >= 0).
    The entropies (see :mod:`vqtoolkit.quantize._entropy`) are computed in training mode only
    (they shape training; an eval forward reports the commitment term alone).

    Args:
        bits: Bits per position (``num_codes = 2^bits``); ``None`` takes ``dim`` (or 10 without it).
        dim: The encoder's channels; ``None`` is ``bits``. Otherwise linear projections fit it.
        beta: Weight of the commitment term.
        sample_entropy_weight: Weight of the mean per-sample entropy (kept low).
        batch_entropy_weight: Weight of the batch entropy (kept high, so the batch uses many codes).
        temperature: ``τ`` of the soft assignment ``softmax(−‖u − c‖² / τ)`` of the penalty.
        group_bits: The most bits per group of the batch entropy: exact up to this many bits,
            summed over groups above (memory ``N · 2^group_bits``, whatever K).

    Raises:
        ConfigError: An option is out of range (``bits`` in ``[1, 24]``).
    """

    limits = bounds(
        bits=Limit(1, MAX_BITS),
        beta=Limit(0),
        sample_entropy_weight=Limit(0),
        batch_entropy_weight=Limit(0),
        temperature=Limit(0, low_open=True),
        group_bits=Limit(1, 16),
    )
    bit_values: Tensor
    project_in: nn.Linear | None
    project_out: nn.Linear | None

    def __init__(
        self,
        bits: int | None = None,
        dim: int | None = None,
        beta: float = 0.25,
        sample_entropy_weight: float = 0.1,
        batch_entropy_weight: float = 0.1,
        temperature: float = 0.1,
        group_bits: int = 10,
    ) -> None:
        super().__init__()
        self.bits = bits if bits is not None else dim if dim is not None else 10
        self.dim = dim if dim is not None else self.bits
        self.num_codes = 2**self.bits
        self.beta, self.temperature, self.group_bits = beta, temperature, group_bits
        self.sample_entropy_weight, self.batch_entropy_weight = sample_entropy_weight, batch_entropy_weight
        projected = self.dim != self.bits
        self.project_in = nn.Linear(self.dim, self.bits) if projected else None
        self.project_out = nn.Linear(self.bits, self.dim) if projected else None
        self.register_buffer("bit_values", torch.tensor([1 << i for i in range(self.bits)]), persistent=False)

    # -- what lfq and bsq define ---------------------------------------------------------------
    @property
    def scale(self) -> float:
        """``s``: every code coordinate is ``±s``."""
        raise NotImplementedError

    def binarised(self, x: Tensor) -> Tensor:
        """The latent whose signs are the bits (``x`` itself for LFQ, ``x/‖x‖`` for BSQ)."""
        raise NotImplementedError

    # -- bits, codes and indices -------------------------------------------------------------
    def _latent(self, flat: Tensor) -> Tensor:
        """Rows ``(N, dim)`` to the binarised latent ``(N, bits)``, in float32 or wider."""
        with torch.autocast(device_type=flat.device.type, enabled=False):
            x = flat.to(torch.promote_types(flat.dtype, torch.float32))
            if self.project_in is not None:
                x = self.project_in(x.to(self.project_in.weight.dtype))
            return self.binarised(x)

    def _corners(self, indices: Tensor, dtype: torch.dtype) -> Tensor:
        """Indices ``(N,)`` to their corners ``(N, bits)`` of ``±s``."""
        set_bits = (indices.unsqueeze(1) & self.bit_values) != 0
        scale = torch.tensor(self.scale, dtype=dtype, device=indices.device)
        return torch.where(set_bits, scale, -scale)

    def _to_dim(self, corners: Tensor) -> Tensor:
        return self.project_out(corners) if self.project_out is not None else corners

    def _indices(self, positive: Tensor) -> Tensor:
        """Bit patterns ``(N, bits)`` (``True``: bit set) to indices ``(N,)``."""
        return (positive.long() * self.bit_values).sum(1)

    @property
    def codebook(self) -> Tensor:
        """Every code ``(2^bits, dim)``, built from the bits on request (never stored)."""
        all_codes = torch.arange(self.num_codes, device=self.bit_values.device)
        return self._to_dim(self._corners(all_codes, torch.float32))

    def nearest(self, flat: Tensor) -> Tensor:
        """The sign pattern of each row (after the projection): its nearest corner, as an index."""
        with torch.no_grad():
            return self._indices(self._latent(flat) > 0)

    def lookup(self, indices: Tensor) -> Tensor:
        """Codes ``(B, dim, *spatial)`` of ``indices`` ``(B, *spatial)``, rebuilt from their bits."""
        self.check_indices(indices)
        corners = self._corners(indices.reshape(-1).long(), torch.float32)
        return from_flat(self._to_dim(corners), indices)

    # -- forward ----------------------------------------------------------------------------
    def forward(self, z: Tensor) -> QuantizerOutput:
        """Binarise; the estimator passes gradients straight through to the binarised latent."""
        flat = to_flat(z, self.dim)
        u = self._latent(flat)
        with torch.autocast(device_type=u.device.type, enabled=False):
            positive = u > 0
            scale = u.new_tensor(self.scale)
            corners = torch.where(positive, scale, -scale)
            commitment = F.mse_loss(u, corners)
            loss = self.beta * commitment
            losses = {"commitment": commitment}
            if self.training and (self.sample_entropy_weight or self.batch_entropy_weight):
                terms = entropy_terms(u, self.scale, self.temperature, self.group_bits)
                deficit = self.bits * math.log(2) - terms.batch  # >= 0: the loss stays non-negative
                loss = loss + self.sample_entropy_weight * terms.sample + self.batch_entropy_weight * deficit
                losses.update(sample_entropy=terms.sample, batch_entropy=terms.batch)
            quantized = straight_through(u, corners)
        indices = self._indices(positive)
        grid = indices.reshape(z.shape[0], *z.shape[2:])
        return QuantizerOutput(
            quantized=from_flat(self._to_dim(quantized).to(z.dtype), grid),
            indices=grid,
            loss=loss,
            counts=torch.bincount(indices, minlength=self.num_codes),
            losses=losses,
        )
