"""Conformance checks of encoders and decoders: shapes, gradients, dtypes and devices."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from vqtoolkit.testing import common


@common._reports_crashes
def check_encoder(component: str | type, config: Mapping[str, Any] | None = None) -> None:
    """Verify an encoder: images ``(B, in_channels, H, W)`` → latents ``(B, dim, H/f, W/f)``."""
    cls, encoder = common._common("encoder", component, config)
    channels, dim, factor = common._positive_ints(cls, encoder, "in_channels", "dim", "downsample")
    x = torch.rand(2, channels, 4 * factor, 3 * factor, generator=torch.Generator().manual_seed(0))
    _check_map(cls, encoder, x, (2, dim, 4, 3))
    copy = common.bundle_round_trip("encoder", cls, encoder)
    if not torch.equal(copy.eval()(x), encoder.eval()(x)):
        raise common._fail(cls, "bundle round trip", "the restored encoder computes something else")


@common._reports_crashes
def check_decoder(component: str | type, config: Mapping[str, Any] | None = None) -> None:
    """Verify a decoder: latents ``(B, dim, h, w)`` → images ``(B, out_channels, h·f, w·f)``."""
    cls, decoder = common._common("decoder", component, config)
    channels, dim, factor = common._positive_ints(cls, decoder, "out_channels", "dim", "upsample")
    q = torch.randn(2, dim, 4, 3, generator=torch.Generator().manual_seed(0))
    _check_map(cls, decoder, q, (2, channels, 4 * factor, 3 * factor))
    copy = common.bundle_round_trip("decoder", cls, decoder)
    if not torch.equal(copy.eval()(q), decoder.eval()(q)):
        raise common._fail(cls, "bundle round trip", "the restored decoder computes something else")


def _check_map(cls: type, module: Any, x: Tensor, shape: tuple[int, ...]) -> None:
    module.train()
    x = x.clone().requires_grad_(True)
    out = module(x)
    if tuple(out.shape) != shape or not torch.isfinite(out).all():
        raise common._fail(
            cls, "shapes", f"input {tuple(x.shape)} gave {tuple(out.shape)}, expected {shape} (finite)"
        )
    common._check_gradients(cls, module, out, x)
    module.eval()
    with torch.no_grad():
        if not torch.equal(module(x), module(x)):
            raise common._fail(
                cls, "deterministic in eval mode", "two eval-mode calls on the same input differ"
            )
    common._check_dtypes_devices(cls, module, lambda m, t: m(t), x.detach())
