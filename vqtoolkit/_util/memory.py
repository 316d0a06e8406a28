"""Refusing work that cannot fit in memory before it is tried, with a message that says what to shrink.

Without these checks an absurd size (a codebook of 10¹² codes, images of 100 000² pixels) ends in a
raw allocator error or, worse, the kernel's out-of-memory killer. The estimate is compared with the
memory the operating system reports as available.
"""

from __future__ import annotations

import os

from vqtoolkit.errors import ConfigError


def available_bytes() -> int | None:
    """Memory available to a new allocation (``MemAvailable`` on Linux), or ``None`` where unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):  # not on this platform
        return None


def human_bytes(n: float) -> str:
    """``1.5 GB``-style sizes (powers of 1000)."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} PB"


def check_fits(what: str, nbytes: float, fix: str) -> None:
    """Raise a :class:`ConfigError` if ``nbytes`` for ``what`` exceed the memory available now."""
    available = available_bytes()
    if available is not None and nbytes > available:
        raise ConfigError(
            f"{what} needs about {human_bytes(nbytes)} of memory but {human_bytes(available)} is available; "
            f"{fix}"
        )
