"""Devices and mixed precision: pick a device by name, check it exists, and say what it can do.

Every check runs before training starts, so a typo or a missing GPU costs a one-line error rather
than a crash at the first batch.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from vqtoolkit.errors import ConfigError

DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("32", "bf16", "16")
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "16": torch.float16}


def mps_available() -> bool:
    """Whether Apple's Metal backend is usable in this process."""
    return bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available()


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """``auto`` → the best available (cuda, then mps, then cpu); a named device must exist."""
    if isinstance(name, torch.device):
        name = str(name)
    kind = name.split(":", 1)[0]
    if kind not in DEVICES:
        raise ConfigError(f"unknown device {name!r}; choose one of {', '.join(DEVICES)} (e.g. cuda:1)")
    if kind == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if mps_available() else "cpu")
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                "--device cuda was requested but CUDA is not available (no GPU visible, or a CPU-only "
                "torch build); use --device auto or --device cpu"
            )
        device = torch.device(name)
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(
                f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) are visible "
                f"(cuda:0 to cuda:{torch.cuda.device_count() - 1})"
            )
        return device
    if kind == "mps" and not mps_available():
        raise ConfigError(
            "--device mps was requested but the MPS backend is not available; use --device auto or cpu"
        )
    return torch.device(name)


def supported_precisions(device: torch.device) -> tuple[str, ...]:
    """The ``--precision`` values ``device`` can train with."""
    if device.type == "cuda":
        return ("32", "bf16", "16") if torch.cuda.is_bf16_supported() else ("32", "16")
    if device.type == "mps":
        return ("32", "16")
    return ("32", "bf16")


def check_precision(precision: str, device: torch.device) -> str:
    """Return ``precision`` if ``device`` supports it, else raise naming what it does support."""
    precision = str(precision)
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    supported = supported_precisions(device)
    if precision not in supported:
        raise ConfigError(
            f"--precision {precision} is not supported on {device.type}; it supports {', '.join(supported)}"
            + (" (float16 autocast needs a GPU; use bf16 on CPU)" if precision == "16" else "")
        )
    return precision


@contextlib.contextmanager
def autocast(device: torch.device, precision: str) -> Iterator[None]:
    """Mixed precision for the forward pass (a no-op at ``"32"``).

    The quantizer's distance search promotes to float32 itself (``search.search_dtype``), so the chosen
    codes differ from full precision only by the encoder's own rounding.
    """
    if precision == "32":
        yield
        return
    with torch.autocast(device_type=device.type, dtype=AUTOCAST_DTYPES[precision]):
        yield
