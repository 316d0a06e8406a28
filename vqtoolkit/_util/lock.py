"""One writer per output: a lock file beside a run's output, held for the whole run.

Two runs writing ``runs/m.safetensors`` would interleave their metrics logs and leave whichever
bundle, checkpoint and plots finished last. :func:`output_lock` takes an exclusive ``flock`` on
``runs/.m.safetensors.lock`` and writes its PID there; a second run is refused with that PID. The
kernel drops a ``flock`` when its process dies however it dies (``kill -9`` included), so a lock
left by a killed run is stale by construction: the next run takes it over and says so.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path

from vqtoolkit.errors import VQToolkitError

try:
    import fcntl
except ImportError:  # Windows: no flock; runs are not locked there
    fcntl = None  # type: ignore[assignment]

logger = logging.getLogger(__name__)


class OutputLockedError(VQToolkitError, RuntimeError):
    """Another live run holds the lock of this output."""


def lock_path(output: str | Path) -> Path:
    """The lock file of ``output``: ``DIR/.NAME.lock``."""
    output = Path(output)
    return output.with_name(f".{output.name}.lock")


def _holder(path: Path) -> str:
    try:
        return path.read_text().strip() or "unknown"
    except OSError:
        return "unknown"


@contextlib.contextmanager
def output_lock(output: str | Path) -> Iterator[Path]:
    """Hold the lock of ``output`` for the ``with`` block; raise :class:`OutputLockedError` if taken."""
    path = lock_path(output)
    if fcntl is None:
        yield path
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise OutputLockedError(
                f"another run (PID {_holder(path)}) is writing {output}; wait for it to finish, stop it, "
                f"or choose another output (-o)"
            ) from None
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:  # not a file that its previous holder removed while we waited to lock it
            break
        os.close(fd)
    try:
        previous = os.read(fd, 64).decode(errors="replace").strip()
        if previous:
            logger.warning("took over the lock of %s left by a run that ended (PID %s)", output, previous)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield path
    finally:
        path.unlink(missing_ok=True)
        os.close(fd)
