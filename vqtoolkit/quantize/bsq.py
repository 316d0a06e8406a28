"""``bsq``: binary spherical quantization (Zhao et al., 2024) - binarise on the unit sphere.

The latent ``x`` of a position is projected onto the unit sphere, ``u = x / ‖x‖``, and quantized
to ``sign(u) / √bits``: a corner of the cube inscribed in that sphere, so every code has norm 1 and
the quantization error ``‖u − q‖`` is bounded whatever the encoder's scale. The index is the bit
pattern of the signs, as in ``lfq``; the output passes gradients straight through to ``u`` (so the
gradient reaching ``x`` is the normalisation's Jacobian applied to the identity, as in the paper),
and the entropy penalty is computed on ``u`` with codes ``±1/√bits``. What is shared with ``lfq``
is told in :mod:`vqtoolkit.quantize._binary`.
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor

from vqtoolkit.components.options import defaults
from vqtoolkit.quantize._binary import BinaryQuantizer


class BSQ(BinaryQuantizer):
    """Binary spherical quantizer: codes ``{−1, +1}^bits / √bits``; options in :class:`BinaryQuantizer`.

    Its latents and codes are ``√bits`` times smaller per channel than ``lfq``'s, so its default
    temperature is smaller too (0.01: at 10 bits the penalty's log-odds are ``lfq``'s at 0.1).
    """

    preset = defaults(temperature=0.01)

    @property
    def scale(self) -> float:
        """Codes are ``±1/√bits`` in each bit (unit norm)."""
        return 1 / math.sqrt(self.bits)

    def binarised(self, x: Tensor) -> Tensor:
        """``x / ‖x‖`` (a zero row stays zero, and takes bit 0 everywhere)."""
        return F.normalize(x, dim=1)
