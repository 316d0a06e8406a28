"""How many CPU threads a prior's training steps run on: ``threads="auto"`` times them and picks.

A second thread makes a quiet machine's training steps faster but a busy one's several times
slower, as the threads wait on each other whenever either is descheduled (docs/results.md,
"Threads"). No fixed count is right on both, so
:class:`ThreadTuner` measures: at the start of every epoch long enough to afford it, it times a few
steps at each candidate count (1, 2, 4, … up to torch's own setting) and trains the rest of the
epoch on the fastest. A fit too short to measure trains on one thread, as fixed seeds then give
identical fits.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Literal, TypeVar

import torch

Item = TypeVar("Item")

#: ``threads`` option values: a count, ``"auto"`` (:class:`ThreadTuner`), or ``None`` (torch's own).
Threads = int | Literal["auto"] | None
#: Timed steps per candidate count, after one untimed step that lets the count settle in.
PROBE_STEPS = 3
#: An epoch is measured only if it has this many times the steps the measurement takes.
PROBE_SHARE = 4


def thread_candidates(most: int) -> list[int]:
    """1, 2, 4, … below ``most``, then ``most``: the counts worth timing on ``most`` cores."""
    counts = [1]
    while counts[-1] * 2 < most:
        counts.append(counts[-1] * 2)
    return [*counts, most] if most > 1 else counts


class ThreadTuner:
    """Sets torch's thread count for every training step, choosing it by timing (see the module).

    ``choice`` is the count of the last epoch's steps after its measurement (1 until an epoch was
    measured). ``clock`` is swappable so tests can stage timings.
    """

    def __init__(self, candidates: Sequence[int], clock: Callable[[], float] = time.perf_counter) -> None:
        self.candidates = list(candidates)
        self.clock = clock
        self.choice = 1

    def steps(self, batches: Sequence[Item]) -> Iterator[Item]:
        """Yield ``batches`` one by one, each step run on the thread count this tuner sets.

        The body of the caller's loop is what is timed: from one ``yield`` to the next.
        """
        probe = [count for count in self.candidates for _ in range(PROBE_STEPS + 1)]
        if len(self.candidates) == 1 or len(batches) < PROBE_SHARE * len(probe):
            probe = []
        seconds: dict[int, list[float]] = {count: [] for count in self.candidates}
        for step, batch in enumerate(batches):
            measuring = step < len(probe)
            count = probe[step] if measuring else self.choice
            torch.set_num_threads(count)
            start = self.clock()
            yield batch
            if measuring and step > 0 and probe[step - 1] == count:  # each count's first step settles
                seconds[count].append(self.clock() - start)
            if step == len(probe) - 1:
                self.choice = min(self.candidates, key=lambda c: statistics.median(seconds[c]))
