"""``photos``: square crops of the two colour photographs scikit-learn ships (offline natural images).

:func:`sklearn.datasets.load_sample_images` holds ``china.jpg`` and ``flower.jpg``, each 427×640 RGB.
Each picture is cut at a vertical line: the left :data:`TRAIN_SHARE` of its columns is the training
region, the rest the test region, and a crop never crosses the line, so no test pixel was ever
trained on. Crops are ``image_size``² at the pictures' own resolution (nothing is resized): training
crops start every ``image_size // 4`` pixels (overlapping, about 5 700 crops at 32×32), test crops
every ``image_size // 2`` pixels (about 500 at 32×32). The crops have no labels.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from torch import Tensor

from vqtoolkit.errors import DataError

#: Share of each picture's columns (from the left) that training crops come from.
TRAIN_SHARE = 0.75


@functools.cache
def pictures() -> tuple[np.ndarray, ...]:
    """The sample photographs as read-only uint8 ``(H, W, 3)`` arrays (china, flower), decoded once."""
    from sklearn.datasets import load_sample_images

    images = tuple(load_sample_images().images)
    for image in images:
        image.flags.writeable = False
    return images


def crop_grid(region: Tensor, size: int, stride: int) -> Tensor:
    """Every ``size``² crop of ``region`` ``(3, H, W)`` whose corner lies on a ``stride`` grid.

    Args:
        region: One picture's region, float ``(3, H, W)``.
        size: Crop side in pixels.
        stride: Step between crop corners, both ways.

    Returns:
        ``(N, 3, size, size)`` crops, row by row.
    """
    patches = region.unfold(1, size, stride).unfold(2, size, stride)  # (3, rows, cols, size, size)
    return patches.permute(1, 2, 0, 3, 4).reshape(-1, 3, size, size).contiguous()


def split_crops(image_size: int = 32) -> tuple[Tensor, Tensor]:
    """Training and test crops ``(N, 3, S, S)`` in [0, 1], from disjoint regions of every picture.

    Args:
        image_size: Crop side in pixels.

    Returns:
        ``(train, test)``.

    Raises:
        DataError: ``image_size`` too small, or too large for the test region to hold a crop.
    """
    train, test = [], []
    for array in pictures():
        picture = torch.from_numpy(np.array(array)).permute(2, 0, 1).float().div_(255.0)
        cut = round(picture.shape[2] * TRAIN_SHARE)
        limit = min(picture.shape[1], picture.shape[2] - cut)
        if not 4 <= image_size <= limit:
            raise DataError(
                f"photos crops must be 4 to {limit} pixels (the test region of each picture is "
                f"{picture.shape[1]}×{picture.shape[2] - cut}); got --image-size {image_size}"
            )
        train.append(crop_grid(picture[:, :, :cut], image_size, max(1, image_size // 4)))
        test.append(crop_grid(picture[:, :, cut:], image_size, max(1, image_size // 2)))
    return torch.cat(train), torch.cat(test)
