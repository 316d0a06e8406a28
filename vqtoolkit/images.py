"""Writing image batches to disk: PNG grids through torchvision, or raw ``.npy`` arrays."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image
from torch import Tensor
from torchvision.utils import make_grid

from vqtoolkit.atomic import atomic_write


def grid_png(images: Tensor, *, nrow: int | None = None, scale: int = 1, padding: int = 2) -> bytes:
    """PNG bytes of ``images`` ``(N, C, H, W)`` in [0, 1] tiled ``nrow`` per row on white.

    ``scale`` enlarges every pixel to a ``scale``×``scale`` block (nearest neighbour), so small
    images stay sharp where they are shown bigger.
    """
    rows = nrow or max(1, round(len(images) ** 0.5))
    grid = make_grid(images.detach().cpu().float(), nrow=rows, padding=padding, pad_value=1.0)
    array = (grid.clamp(0, 1) * 255 + 0.5).byte().permute(1, 2, 0).numpy()
    picture = Image.fromarray(array[..., 0] if array.shape[2] == 1 else array)
    if scale > 1:
        picture = picture.resize((picture.width * scale, picture.height * scale), Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    picture.save(buffer, format="png")
    return buffer.getvalue()


def save_grid(images: Tensor, path: str | Path, *, nrow: int | None = None) -> Path:
    """Save ``images`` ``(N, C, H, W)`` in [0, 1] as a PNG grid, or as an ``.npy`` array.

    The file appears complete or not at all (see :func:`vqtoolkit.atomic.atomic_write`).
    """
    path = Path(path)
    if path.suffix == ".npy":
        buffer = io.BytesIO()
        np.save(buffer, images.detach().cpu().numpy())
        data = buffer.getvalue()
    else:
        data = grid_png(images, nrow=nrow)
    atomic_write(path, data)
    return path
