"""Which image file formats a path's suffix asks for (no torch, no Pillow: checked before any work)."""

from __future__ import annotations

from pathlib import Path

from vqtoolkit.errors import ConfigError

#: File suffix → what is written: a Pillow image format, or ``npy`` for the raw array.
FORMATS = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".npy": "npy"}


def check_image_path(path: str | Path) -> str:
    """The format ``path``'s suffix asks for.

    Args:
        path: An output file.

    Returns:
        A Pillow format name, or ``npy``.

    Raises:
        ConfigError: The suffix is none of :data:`FORMATS`.
    """
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise ConfigError(
            f"cannot tell how to write {path}: the suffix {suffix or '(none)'!r} is not one of "
            f"{', '.join(FORMATS)}; e.g. -o samples.png"
        )
    return FORMATS[suffix]
