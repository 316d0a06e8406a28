"""Writing image batches to disk: PNG grids through torchvision, or raw ``.npy`` arrays."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
from torch import Tensor
from torchvision.utils import save_image


def save_grid(images: Tensor, path: str | Path, *, nrow: int | None = None) -> Path:
    """Save ``images`` ``(N, C, H, W)`` in [0, 1] as a PNG grid, or as an ``.npy`` array.

    The file appears complete or not at all (written beside, then renamed).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        if path.suffix == ".npy":
            np.save(tmp, images.detach().cpu().numpy())
        else:
            rows = nrow or max(1, round(len(images) ** 0.5))
            save_image(images.detach().cpu().float(), tmp, nrow=rows, padding=2, pad_value=1.0)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
