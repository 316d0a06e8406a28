"""Learning-rate schedules for stage-1 training, as a pure function of the step.

The rate is computed from the global step alone, so a resumed run (which restores the step from its
checkpoint) continues on exactly the same curve with no scheduler state to save. ``cosine`` is the
default: a short linear warm-up, then a half cosine down to zero at the last step; it lets the
default recipe train at a peak rate of 1e-2 (docs/training.md has the measurements).
"""

from __future__ import annotations

import math

from vqtoolkit.errors import ConfigError

#: Adam's peak learning rate for stage 1 (with the ``cosine`` schedule; measured in docs/quantizers.md).
DEFAULT_LR = 1e-2
#: The schedule ``train_autoencoder``, ``Pipeline.fit`` and ``vqtool build/train`` use by default.
DEFAULT_SCHEDULE = "cosine"
#: Share of the steps spent warming up linearly from ~0 to the peak rate (``cosine`` only).
WARMUP_FRACTION = 0.05
SCHEDULES = ("cosine", "constant")


def check_schedule(name: str) -> str:
    """``name`` if it is a known schedule, else a ConfigError listing the known ones."""
    if name not in SCHEDULES:
        raise ConfigError(f"unknown learning-rate schedule {name!r}; choose one of {', '.join(SCHEDULES)}")
    return name


def lr_at(step: int, total_steps: int, peak: float, schedule: str) -> float:
    """The learning rate for 0-based ``step`` of a run of ``total_steps`` steps."""
    if schedule == "constant":
        return peak
    warmup = max(1, round(WARMUP_FRACTION * total_steps))
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
    return peak * 0.5 * (1.0 + math.cos(math.pi * progress))
