"""Writing image batches to disk: PNG grids through torchvision, or raw ``.npy`` arrays."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from torch import Tensor
from torchvision.utils import save_image

from vqtoolkit.atomic import atomic_write


def save_grid(images: Tensor, path: str | Path, *, nrow: int | None = None) -> Path:
    """Save ``images`` ``(N, C, H, W)`` in [0, 1] as a PNG grid, or as an ``.npy`` array.

    The file appears complete or not at all (see :func:`vqtoolkit.atomic.atomic_write`).
    """
    path = Path(path)
    buffer = io.BytesIO()
    if path.suffix == ".npy":
        np.save(buffer, images.detach().cpu().numpy())
    else:
        rows = nrow or max(1, round(len(images) ** 0.5))
        save_image(images.detach().cpu().float(), buffer, format="png", nrow=rows, padding=2, pad_value=1.0)
    atomic_write(path, buffer.getvalue())
    return path
