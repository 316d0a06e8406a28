"""A wall-clock bound on a block of code, for work whose size a stranger's file decides."""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Iterator

from vqtoolkit.errors import BundleError

#: Longest a component may take to build on the meta device from a bundle's config (seconds).
BUILD_SECONDS = 10.0


@contextlib.contextmanager
def build_deadline(what: str, seconds: float | None = None) -> Iterator[None]:
    """Raise a :class:`BundleError` if the block runs longer than ``seconds`` (default :data:`BUILD_SECONDS`).

    Building on ``meta`` allocates nothing, but a config can still ask a constructor for absurd work
    (``num_stages: 10**9`` modules); this bounds it. POSIX main thread only (it uses ``SIGALRM``);
    elsewhere it does nothing. An outer alarm keeps running.
    """
    seconds = BUILD_SECONDS if seconds is None else seconds
    if not hasattr(signal, "setitimer") or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum: int, frame: object) -> None:
        raise BundleError(
            f"building the {what} from its config took more than {seconds:g} s; the config asks for "
            f"more than any real component needs"
        )

    start = time.monotonic()
    previous = signal.signal(signal.SIGALRM, expire)
    outer, _ = signal.setitimer(signal.ITIMER_REAL, seconds)
    if outer and outer < seconds:
        signal.setitimer(signal.ITIMER_REAL, outer)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if outer:
            signal.setitimer(signal.ITIMER_REAL, max(outer - (time.monotonic() - start), 1e-3))
