"""Clean stops: the first Ctrl-C or SIGTERM asks a training loop to save a checkpoint and stop."""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterator
from typing import Any

from vqtoolkit.runtime import distributed

log = logging.getLogger(__name__)


class StopFlag:
    """Set by the first Ctrl-C or SIGTERM while :func:`stop_requests` is active."""

    requested = False


#: Signals that ask training to stop cleanly: Ctrl-C, and SIGTERM (sent by torchrun, SLURM and kill).
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def stop_requests(*, enabled: bool) -> Iterator[StopFlag]:
    """Turn the first Ctrl-C or SIGTERM into a request to stop cleanly.

    While active, the first signal only sets ``requested`` (the loop saves and stops after the step,
    on every rank at once under torchrun, which forwards the signal to each process); a second one
    interrupts at once. Signal handlers exist only in the main thread.
    """
    flag = StopFlag()
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum: int, frame: Any) -> None:
        if flag.requested:
            raise KeyboardInterrupt
        flag.requested = True
        if distributed.is_main():
            name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
            log.warning(f"{name}: finishing this step and saving a checkpoint (press Ctrl-C to stop at once)")

    previous = {signum: signal.signal(signum, handler) for signum in STOP_SIGNALS}
    try:
        yield flag
    finally:
        for signum, before in previous.items():
            signal.signal(signum, before)
