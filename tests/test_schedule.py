"""The learning-rate curve: a linear warm-up to the peak, a cosine down to zero, or a constant."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vqtoolkit.runtime.schedule import WARMUP_FRACTION, lr_at


@given(total=st.integers(1, 5000), peak=st.floats(1e-5, 1.0))
def test_cosine_warms_up_then_decays_monotonically_to_zero(total: int, peak: float) -> None:
    rates = [lr_at(step, total, peak, "cosine") for step in range(total)]
    warmup = max(1, round(WARMUP_FRACTION * total))
    assert all(0 < r <= peak * (1 + 1e-12) for r in rates[:warmup])
    assert rates[warmup - 1] == pytest.approx(peak)
    assert rates[:warmup] == sorted(rates[:warmup])
    assert rates[warmup:] == sorted(rates[warmup:], reverse=True)
    if total > warmup:
        assert lr_at(total, total, peak, "cosine") == pytest.approx(0.0, abs=1e-12 * peak)


def test_cosine_is_half_way_down_half_way_through_the_decay() -> None:
    # 1000 steps: 50 warm-up steps, then 950 of cosine; step 50 + 475 is the midpoint
    assert lr_at(525, 1000, 0.01, "cosine") == pytest.approx(0.005)


@given(step=st.integers(0, 10_000), total=st.integers(1, 10_000))
def test_constant_is_the_peak_at_every_step(step: int, total: int) -> None:
    assert lr_at(step, total, 3e-3, "constant") == 3e-3
