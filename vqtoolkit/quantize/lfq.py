"""``lfq``: lookup-free quantization (MAGVIT-v2, Yu et al., 2023) - each channel quantized to its sign.

A position's ``bits`` channels become the corner ``sign(x) ∈ {−1, +1}^bits`` of a cube, and its
index is the bit pattern: ``K = 2^bits`` codes (2^16 - 2^18 in recent tokenizers) with no codebook
to store, search or keep alive. The sign is exactly the nearest corner by squared L2, the output
passes gradients straight through to ``x`` (the identity without projections), and the entropy
penalty keeps the batch spread over the codes. What is shared with ``bsq`` (bits, projections,
the penalty, float32 decisions) is told in :mod:`vqtoolkit.quantize._binary`.
"""

from __future__ import annotations

from torch import Tensor

from vqtoolkit.components.options import defaults
from vqtoolkit.quantize._binary import BinaryQuantizer


class LFQ(BinaryQuantizer):
    """Lookup-free quantizer: codes ``{−1, +1}^bits``; options in :class:`BinaryQuantizer`.

    Its batch entropy weighs 0.3 by default, not 0.1: at 0.1 a channel's sign can settle for good,
    since a saturated soft assignment gives the penalty no gradient, and every such bit halves the
    codes in use (docs/quantizers.md).
    """

    preset = defaults(batch_entropy_weight=0.3)

    @property
    def scale(self) -> float:
        """Codes are ``±1`` in each bit."""
        return 1.0

    def binarised(self, x: Tensor) -> Tensor:
        """The latent itself: its signs are the bits."""
        return x
