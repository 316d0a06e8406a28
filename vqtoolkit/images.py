"""Writing image batches to disk: PNG or JPEG grids through torchvision, or raw ``.npy`` arrays.

The file name's suffix decides the format; an unknown suffix is refused before any work is done.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from torch import Tensor
from torchvision.utils import save_image

from vqtoolkit.atomic import atomic_write
from vqtoolkit.errors import ConfigError

#: File suffix → what is written: a Pillow image format, or ``npy`` for the raw array.
FORMATS = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".npy": "npy"}


def check_image_path(path: str | Path) -> str:
    """The format ``path``'s suffix asks for; a :class:`ConfigError` for any other suffix."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise ConfigError(
            f"cannot tell how to write {path}: the suffix {suffix or '(none)'!r} is not one of "
            f"{', '.join(FORMATS)}; e.g. -o samples.png"
        )
    return FORMATS[suffix]


def save_grid(images: Tensor, path: str | Path, *, nrow: int | None = None) -> Path:
    """Save ``images`` ``(N, C, H, W)`` in [0, 1] as a ``.png``/``.jpg`` grid, or as an ``.npy`` array.

    The suffix decides the format (:func:`check_image_path`). The file appears complete or not at
    all (see :func:`vqtoolkit.atomic.atomic_write`).
    """
    path = Path(path)
    kind = check_image_path(path)
    buffer = io.BytesIO()
    if kind == "npy":
        np.save(buffer, images.detach().cpu().numpy())
    else:
        rows = nrow or max(1, round(len(images) ** 0.5))
        save_image(images.detach().cpu().float(), buffer, format=kind, nrow=rows, padding=2, pad_value=1.0)
    atomic_write(path, buffer.getvalue())
    return path
