"""``residual``: residual vector quantization (as in SoundStream / RQ-VAE) - R codebooks in a row.

Stage 1 quantizes ``z``; stage r quantizes what the stages before it left over, ``z − Σ_{j<r} q_j``;
the output is ``Σ_r q_r``. Each stage is a :class:`~vqtoolkit.quantize.vq.VectorQuantizer` with the
same options (EMA, k-means init, revival, cosine, code_dim), so every stage keeps its codebook
healthy. Indices are ``(B, R, *spatial)``; the output passes gradients straight through to ``z``.

**Tokens for priors.** :meth:`ResidualQuantizer.to_tokens` folds the R indices of a position into
one mixed-radix token ``Σ_r i_r·K^(R−1−r)`` (stage 1 most significant), so ``num_tokens = K^R``;
index priors then model one token per position. Keep ``K^R`` small enough for the prior (e.g. R = 2
stages of K = 32 give 1 024 tokens).
"""

from __future__ import annotations

from typing import Any, cast

import numpy as np
import torch
from einops import rearrange
from torch import Tensor, nn

from vqtoolkit._compat import positional_options
from vqtoolkit.components.options import Limit, bounds
from vqtoolkit.errors import ConfigError
from vqtoolkit.quantize.base import Quantizer, QuantizerOutput
from vqtoolkit.quantize.core import straight_through, to_flat
from vqtoolkit.quantize.vq import VectorQuantizer


class ResidualQuantizer(Quantizer):
    """``num_stages`` codebooks of ``num_codes`` codes each, applied to successive residuals.

    ``loss`` is the sum of the stages' losses, ``counts`` the sum of their per-code counts.

    Args:
        num_stages: Codebooks in a row.
        **stage_options: The options of every stage's :class:`VectorQuantizer` (``num_codes``,
            ``dim``, ``beta``, ``ema=True``, ...), with its defaults.

    Raises:
        ConfigError: ``rotation_trick``, which applies to single-stage quantizers only.
    """

    radix: Tensor
    options_to = VectorQuantizer
    limits = bounds(num_stages=Limit(1))

    @positional_options("num_codes", "dim", "beta", "num_stages")
    def __init__(self, num_stages: int = 2, **stage_options: Any) -> None:
        if stage_options.get("rotation_trick"):
            raise ConfigError(
                "rotation_trick applies to single-stage quantizers; residual passes gradients "
                "straight through to z"
            )
        super().__init__()
        self.stages = nn.ModuleList(VectorQuantizer(**stage_options) for _ in range(num_stages))
        first = self.vq_stages[0]
        self.num_codes, self.dim, self.num_stages = first.num_codes, first.dim, num_stages
        radix = np.power(self.num_codes, np.arange(num_stages - 1, -1, -1), dtype=np.int64)  # no meta kernel
        self.register_buffer("radix", torch.tensor(radix), persistent=False)

    @property
    def vq_stages(self) -> list[VectorQuantizer]:
        """The stages, typed (``nn.ModuleList`` hands out plain modules)."""
        return cast("list[VectorQuantizer]", list(self.stages))

    @property
    def codebook(self) -> Tensor:
        """Every stage's codes ``(R, K, D)``."""
        return torch.stack([stage.codebook for stage in self.vq_stages])

    @property
    def num_tokens(self) -> int:
        """Vocabulary of one folded token per position: ``num_codes ** num_stages``."""
        return self.num_codes**self.num_stages

    def to_tokens(self, indices: Tensor) -> Tensor:
        """Fold ``(B, R, *spatial)`` stage indices into one token per position (stage 0 most significant)."""
        self.check_indices(indices)
        return (indices * self.radix.view(1, -1, *[1] * (indices.ndim - 2))).sum(1)

    def from_tokens(self, tokens: Tensor) -> Tensor:
        """Unfold tokens back into ``(B, R, *spatial)`` stage indices."""
        return torch.stack([(tokens // r) % self.num_codes for r in self.radix.tolist()], dim=1)

    def check_indices(self, indices: Tensor) -> None:
        """The base range checks, plus the stage axis ``(B, R, *spatial)``."""
        super().check_indices(indices)
        if indices.ndim < 2 or indices.shape[1] != self.num_stages:
            raise ConfigError(
                f"residual indices must be (B, {self.num_stages}, *spatial); got {tuple(indices.shape)}"
            )

    def nearest(self, flat: Tensor) -> Tensor:
        """Indices ``(N, R)``: each stage's nearest code to what the stages before it left."""
        residual, out = flat, []
        for stage in self.vq_stages:
            idx = stage.nearest(residual)
            residual = residual - stage.codebook.detach()[idx].to(residual.dtype)
            out.append(idx)
        return torch.stack(out, 1)

    def quantize_indices(self, z: Tensor) -> Tensor:
        """Stage indices ``(B, R, *spatial)`` of channel-first latents (no losses)."""
        idx = self.nearest(to_flat(z, self.dim))
        return rearrange(idx.reshape(z.shape[0], *z.shape[2:], self.num_stages), "b ... r -> b r ...")

    def lookup(self, indices: Tensor) -> Tensor:
        """The sum of every stage's codes for ``(B, R, *spatial)`` indices."""
        self.check_indices(indices)
        return sum(stage.lookup(indices[:, r]) for r, stage in enumerate(self.vq_stages))  # type: ignore[return-value]

    def forward(self, z: Tensor) -> QuantizerOutput:
        """Quantize ``z``, then each stage the residual the stages before it left; losses add up."""
        residual, total = z, torch.zeros_like(z)
        outputs = []
        for stage in self.vq_stages:
            out = stage(residual)
            codes = out.quantized.detach()
            total = total + codes
            residual = residual - codes
            outputs.append(out)
        losses = {f"stage{r}_{k}": v for r, out in enumerate(outputs) for k, v in out.losses.items()}
        return QuantizerOutput(
            quantized=straight_through(z, total),
            indices=torch.stack([out.indices for out in outputs], 1),
            loss=torch.stack([out.loss for out in outputs]).sum(),
            counts=torch.stack([out.counts for out in outputs]).sum(0),
            losses=losses,
        )
