"""Quantizers: all built on the straight-through core in :mod:`vqtoolkit.quantize.core`."""

from vqtoolkit.quantize.base import Quantizer, QuantizerOutput
from vqtoolkit.quantize.core import nearest_codes, straight_through, vq_losses

__all__ = ["Quantizer", "QuantizerOutput", "nearest_codes", "straight_through", "vq_losses"]
