"""Atomic file writes: a file appears complete or not at all, never half-written.

The temporary file of a write is named ``.NAME.PID.RANDOM.tmp`` beside ``NAME``. A writer killed
mid-write (``kill -9``, power loss) leaves it behind; the next write to ``NAME`` sweeps such
leftovers: those whose writer's PID is no longer running, and any older than :data:`STALE_SECONDS`
(a PID may be reused, and files from before temporary names carried one have none).
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import tempfile
import time
from pathlib import Path

#: Age after which a temporary file of an interrupted write is swept whatever its PID says.
STALE_SECONDS = 24 * 3600


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, fsync, then rename over ``path``.

    A crash or interruption at any point leaves the previous ``path`` intact (POSIX ``rename`` is
    atomic within a directory); the directory is fsynced too, so the rename itself survives power loss.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep_leftovers(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    try:
        if os.name == "posix":  # mkstemp makes 0600 files; give the mode a plain open() would
            os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if os.name == "posix":
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def check_writable(path: Path) -> None:
    """Raise a :class:`~vqtoolkit.errors.ConfigError` unless a file can be written at ``path``.

    Called before long work, so a bad ``-o`` fails in a second rather than after training: a parent
    that is a file, a folder that cannot be created, or one where no file can be created (checked
    by creating and removing a temporary file, which also catches read-only mounts and root-owned
    folders that permission bits alone would not reveal).
    """
    from vqtoolkit.errors import ConfigError

    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"cannot write {path}: it is a folder; give a file name, e.g. {path / 'out'}")
    for parent in path.parents:
        if parent.exists() and not parent.is_dir():
            raise ConfigError(f"cannot write {path}: {parent} is a file, not a folder")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path.parent):
            pass
    except OSError as err:
        raise ConfigError(f"cannot write {path}: {err.strerror or err}; choose another -o") from err


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _running(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except PermissionError:  # it does, and belongs to someone else
        return True
    except (ProcessLookupError, OverflowError):
        return False
    return True


def sweep_leftovers(path: Path) -> list[Path]:
    """Delete the temporary files that interrupted writes of ``path`` left; returns what was deleted.

    One whose writer is still running, and younger than :data:`STALE_SECONDS`, is left alone.
    """
    pattern = re.compile(rf"^\.{re.escape(path.name)}\.(?:(\d+)\.)?[^.]+\.tmp$")
    swept = []
    now = time.time()
    for candidate in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        match = pattern.match(candidate.name)
        if match is None:
            continue
        pid = match.group(1)
        with contextlib.suppress(OSError):
            old = now - candidate.stat().st_mtime > STALE_SECONDS
            if old or (pid is not None and int(pid) != os.getpid() and not _running(int(pid))):
                candidate.unlink()
                swept.append(candidate)
    return swept
