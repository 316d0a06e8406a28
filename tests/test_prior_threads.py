"""``threads="auto"``: a prior's training steps run on the thread count measured fastest."""

from __future__ import annotations

import pytest
import torch

from vqtoolkit.components import registry
from vqtoolkit.runtime import threads as threads_module
from vqtoolkit.runtime.threads import PROBE_SHARE, PROBE_STEPS, ThreadTuner, thread_candidates


class FakeClock:
    """A clock that moves only when a test's step body moves it."""

    now = 0.0

    def __call__(self) -> float:
        return self.now


def run_epoch(tuner: ThreadTuner, steps: int, seconds) -> list[int]:
    """Run ``steps`` steps, each lasting ``seconds(threads, step)``; the thread count each ran on."""
    used = []
    for step, _ in enumerate(tuner.steps(list(range(steps)))):
        used.append(torch.get_num_threads())
        tuner.clock.now += seconds(used[-1], step)
    return used


def per_count(table):
    return lambda threads, step: table[threads]


@pytest.fixture(autouse=True)
def _restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_candidates_double_up_to_the_cores():
    assert thread_candidates(1) == [1]
    assert thread_candidates(2) == [1, 2]
    assert thread_candidates(6) == [1, 2, 4, 6]
    assert thread_candidates(8) == [1, 2, 4, 8]


@pytest.mark.parametrize(("seconds", "fastest"), [({1: 0.3, 2: 0.1}, 2), ({1: 0.3, 2: 0.9}, 1)])
def test_the_tuner_trains_the_rest_of_the_epoch_on_the_fastest_count(seconds, fastest):
    tuner = ThreadTuner([1, 2], clock=FakeClock())
    probe = 2 * (PROBE_STEPS + 1)
    used = run_epoch(tuner, 100, per_count(seconds))
    assert used[:probe] == [1] * (PROBE_STEPS + 1) + [2] * (PROBE_STEPS + 1)  # each count timed in turn
    assert set(used[probe:]) == {fastest} and tuner.choice == fastest


def test_a_slow_first_step_of_each_count_is_not_held_against_it():
    first_on_two = PROBE_STEPS + 1  # spinning up the second thread
    tuner = ThreadTuner([1, 2], clock=FakeClock())
    run_epoch(tuner, 100, lambda threads, step: 10.0 if step == first_on_two else {1: 0.3, 2: 0.1}[threads])
    assert tuner.choice == 2


def test_one_slow_step_does_not_decide():
    tuner = ThreadTuner([1, 2], clock=FakeClock())
    slow_second_step_on_two = PROBE_STEPS + 2
    run_epoch(
        tuner,
        100,
        lambda threads, step: 10.0 if step == slow_second_step_on_two else {1: 0.3, 2: 0.1}[threads],
    )
    assert tuner.choice == 2  # the median of each count's steps


def test_the_tuner_measures_again_every_epoch():
    tuner = ThreadTuner([1, 2], clock=FakeClock())
    run_epoch(tuner, 100, per_count({1: 0.3, 2: 0.1}))
    assert run_epoch(tuner, 100, per_count({1: 0.3, 2: 0.9}))[-1] == 1  # the machine got busy


def test_an_epoch_too_short_to_measure_runs_on_one_thread():
    tuner = ThreadTuner([1, 2], clock=FakeClock())
    assert set(run_epoch(tuner, PROBE_SHARE * 2 * (PROBE_STEPS + 1) - 1, per_count({1: 0.3, 2: 0.1}))) == {1}


def fit_transformer(threads, grids: int = 16):
    prior = registry.create(
        "prior",
        "transformer",
        num_codes=5,
        dim=8,
        layers=1,
        heads=1,
        epochs=1,
        clusters=None,
        threads=threads,
        batch_size=1,
    )
    prior.fit(torch.randint(0, 5, (grids, 3, 3), generator=torch.Generator().manual_seed(0)), progress=False)
    return prior


def test_fits_on_auto_threads_record_the_count_and_leave_torchs_setting(monkeypatch):
    torch.set_num_threads(2)
    monkeypatch.setattr(threads_module, "PROBE_SHARE", 1)
    prior = fit_transformer("auto", grids=64)  # 60 steps: measured
    assert prior.history[-1]["threads"] in (1, 2)
    assert torch.get_num_threads() == 2


def test_a_fixed_thread_count_is_used_as_given():
    torch.set_num_threads(2)
    assert fit_transformer(1).history[-1]["threads"] == 1
    assert fit_transformer(None).history[-1]["threads"] == 2
    assert torch.get_num_threads() == 2


def test_small_auto_fits_are_identical_for_a_seed():
    torch.set_num_threads(2)
    a, b = fit_transformer("auto"), fit_transformer("auto")
    assert a.history[-1]["threads"] == 1
    assert all(
        torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )


def test_thread_option_errors_name_the_choices():
    from vqtoolkit.errors import ConfigError

    with pytest.raises(ConfigError, match="threads"):
        registry.create("prior", "pixelcnn", num_codes=5, threads="many")
    with pytest.raises(ConfigError, match="threads"):
        registry.create("prior", "pixelcnn", num_codes=5, threads=0)
