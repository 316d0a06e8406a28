"""``ema``: the codebook recipe that does not collapse, and vqtoolkit's default quantizer.

It is ``vq`` with the health options switched on: EMA codebook updates with Laplace smoothing,
k-means initialisation on the first batch and revival of codes unused for a few steps. Why these
defaults is told, with the runs behind them, in ``docs/quantizers.md``.
"""

from __future__ import annotations

from vqtoolkit.components.options import defaults
from vqtoolkit.quantize.vq import VectorQuantizer


class EMAQuantizer(VectorQuantizer):
    """A :class:`VectorQuantizer` whose defaults are the healthy-codebook recipe (every option stays open)."""

    preset = defaults(ema=True, decay=0.9, kmeans_init=True, revive_after=10, min_usage=5)
