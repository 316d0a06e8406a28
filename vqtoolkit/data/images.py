"""Image files in and out: PNG or JPEG grids, raw ``.npy`` arrays, one image read for a model.

The file name's suffix decides the format; an unknown suffix is refused before any work is done.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from vqtoolkit._util.atomic import atomic_write
from vqtoolkit._util.image_formats import check_image_path
from vqtoolkit.errors import DataError


def tile(images: Tensor, *, nrow: int = 8, padding: int = 2, pad_value: float = 0.0) -> Tensor:
    """``images`` side by side in one picture, laid out as torchvision's ``make_grid`` does.

    Grey images come out RGB and one image alone unpadded, as there; torchvision is not imported
    (importing it imports ``torch._dynamo``, which is slow).

    Args:
        images: The images, ``(N, C, H, W)``.
        nrow: Images per row.
        padding: Pixels between images and around the grid.
        pad_value: The value of those pixels.

    Returns:
        The grid, 3 channels for grey images, else ``C``.
    """
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)
    if len(images) == 1:
        return images[0].clone()
    count, channels, height, width = images.shape
    columns = min(nrow, count)
    rows = -(-count // columns)
    step_y, step_x = height + padding, width + padding
    grid = images.new_full((channels, rows * step_y + padding, columns * step_x + padding), pad_value)
    for k, image in enumerate(images):
        y, x = divmod(k, columns)
        grid[:, y * step_y + padding : (y + 1) * step_y, x * step_x + padding : (x + 1) * step_x] = image
    return grid


def grid_bytes(
    images: Tensor,
    *,
    nrow: int | None = None,
    scale: int = 1,
    padding: int = 2,
    image_format: str = "png",
    sections: int = 1,
) -> bytes:
    """Image bytes (PNG unless ``image_format`` says otherwise) of ``images`` ``(N, C, H, W)`` in [0, 1].

    Tiled ``nrow`` per row on white. ``sections`` > 1 splits the images into that many equal runs
    (e.g. originals, then reconstructions), each starting a new row, with a wider white gap between
    them. ``scale`` enlarges every pixel to a ``scale``×``scale`` block (nearest neighbour), so small
    images stay sharp where they are shown bigger.
    """
    rows = nrow or max(1, round(len(images) ** 0.5))
    images = images.detach().cpu().float()
    parts = [tile(part, nrow=rows, padding=padding, pad_value=1.0) for part in images.chunk(sections)]
    gap = torch.ones(parts[0].shape[0], 3 * padding, parts[0].shape[2])
    grid = torch.cat([piece for part in parts for piece in (gap, part)][1:], dim=1)
    array = (grid.clamp(0, 1) * 255 + 0.5).byte().permute(1, 2, 0).numpy()
    picture = Image.fromarray(array[..., 0] if array.shape[2] == 1 else array)
    if scale > 1:
        picture = picture.resize((picture.width * scale, picture.height * scale), Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    picture.save(buffer, format=image_format)
    return buffer.getvalue()


def save_grid(images: Tensor, path: str | Path, *, nrow: int | None = None, sections: int = 1) -> Path:
    """Save ``images`` ``(N, C, H, W)`` in [0, 1] as a ``.png``/``.jpg`` grid, or as an ``.npy`` array.

    The suffix decides the format (``.png``, ``.jpg``/``.jpeg`` or ``.npy``); ``sections`` as in
    :func:`grid_bytes`.
    The file appears complete or not at all (see :func:`vqtoolkit._util.atomic.atomic_write`).
    """
    path = Path(path)
    kind = check_image_path(path)
    if kind == "npy":
        buffer = io.BytesIO()
        np.save(buffer, images.detach().cpu().numpy())
        data = buffer.getvalue()
    else:
        data = grid_bytes(images, nrow=nrow, image_format=kind, sections=sections)
    atomic_write(path, data)
    return path


def load_image(path: str | Path, shape: tuple[int, int, int] | list[int]) -> Tensor:
    """One image file as a ``(C, H, W)`` tensor in [0, 1] for a model of images ``shape``.

    Converted to greyscale (``C == 1``) or RGB (``C == 3``) and resized (bilinear) to ``H×W``.
    """
    channels, height, width = (int(v) for v in shape)
    if channels not in (1, 3):
        raise DataError(f"can read image files for 1- or 3-channel models; this one takes {channels}")
    try:
        with Image.open(path) as picture:
            picture = picture.convert("L" if channels == 1 else "RGB").resize(
                (width, height), Image.Resampling.BILINEAR
            )
    except FileNotFoundError as err:
        raise DataError(f"no image file at {path}") from err
    except (UnidentifiedImageError, OSError) as err:
        raise DataError(f"cannot read {path} as an image: {err}") from err
    array = np.asarray(picture, dtype=np.float32) / 255.0
    tensor = torch.from_numpy(array)
    return tensor[None] if channels == 1 else tensor.permute(2, 0, 1).contiguous()
