"""``ema``: the codebook recipe that does not collapse, and vqtoolkit's default quantizer.

It is :class:`~vqtoolkit.quantize.vq.VectorQuantizer` with the health options switched on: EMA
codebook updates with Laplace smoothing, k-means initialisation on the first batch and revival of
codes unused for a few steps. The defaults below are the measured recipe of ``docs/quantizers.md``.
"""

from __future__ import annotations

from vqtoolkit.quantize.core import DEFAULT_CHUNK_BYTES
from vqtoolkit.quantize.vq import VectorQuantizer


class EMAQuantizer(VectorQuantizer):
    """A :class:`VectorQuantizer` whose defaults are the healthy-codebook recipe (every option stays open)."""

    def __init__(
        self,
        num_codes: int = 512,
        dim: int = 64,
        beta: float = 0.25,
        ema: bool = True,
        decay: float = 0.9,
        eps: float = 1e-5,
        kmeans_init: bool = True,
        kmeans_iters: int = 10,
        revive_after: int | None = 10,
        cosine: bool = False,
        code_dim: int | None = None,
        rotation_trick: bool = False,
        min_usage: int = 5,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    ) -> None:
        super().__init__(
            num_codes=num_codes,
            dim=dim,
            beta=beta,
            ema=ema,
            decay=decay,
            eps=eps,
            kmeans_init=kmeans_init,
            kmeans_iters=kmeans_iters,
            revive_after=revive_after,
            cosine=cosine,
            code_dim=code_dim,
            rotation_trick=rotation_trick,
            min_usage=min_usage,
            chunk_bytes=chunk_bytes,
        )
