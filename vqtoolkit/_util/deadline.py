"""A CPU-time bound on a block of code, for work whose size a stranger's file decides."""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Iterator

from vqtoolkit.errors import BundleError

#: Most CPU seconds a component may take to build on the meta device from a bundle's config.
BUILD_SECONDS = 10.0
#: CPU seconds between repeats of the refusal once the deadline has passed.
REPEAT_SECONDS = 0.05


@contextlib.contextmanager
def build_deadline(what: str, seconds: float | None = None) -> Iterator[None]:
    """Raise a :class:`BundleError` once the block has used ``seconds`` of CPU (:data:`BUILD_SECONDS`).

    Building on ``meta`` allocates nothing, but a config can still ask a constructor for absurd work
    (``num_stages: 10**9`` modules); this bounds it. The bound is the process's CPU time, not the
    wall clock, so a busy machine (or torch importing a submodule on first use) does not trip it.
    Once past the deadline the error is raised again every :data:`REPEAT_SECONDS` of CPU, because
    code inside the block may catch one (torch's decompositions fall back on an exception), and a
    block that still finishes late is refused on leaving it. POSIX main thread only (it uses
    ``SIGPROF``); elsewhere it does nothing. An outer deadline keeps running.
    """
    seconds = BUILD_SECONDS if seconds is None else seconds
    if not hasattr(signal, "setitimer") or threading.current_thread() is not threading.main_thread():
        yield
        return

    message = (
        f"building the {what} from its config took more than {seconds:g} s of CPU; the config asks for "
        f"more than any real component needs"
    )
    expired = False

    def expire(signum: int, frame: object) -> None:
        nonlocal expired
        expired = True
        signal.setitimer(signal.ITIMER_PROF, REPEAT_SECONDS)
        raise BundleError(message)

    start = time.process_time()
    previous = signal.signal(signal.SIGPROF, expire)
    outer, _ = signal.setitimer(signal.ITIMER_PROF, seconds)
    if outer and outer < seconds:
        signal.setitimer(signal.ITIMER_PROF, outer)
    try:
        yield
    finally:
        _disarm()
        signal.signal(signal.SIGPROF, previous)
        if outer:
            signal.setitimer(signal.ITIMER_PROF, max(outer - (time.process_time() - start), 1e-3))
    if expired:
        raise BundleError(message)


def _disarm() -> None:
    """Stop the timer, even when a last repeat of the refusal lands while doing so."""
    while True:
        try:
            signal.setitimer(signal.ITIMER_PROF, 0)
            return
        except BundleError:
            continue
