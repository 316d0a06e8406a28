"""Datasets as in-memory tensors: ``digits`` (embedded, offline default) and ``mnist``.

Images are float32 ``(N, C, H, W)`` in [0, 1]; keeping them as one tensor makes a batch a single
index operation instead of per-sample Python work.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from vqtoolkit.errors import DataError


@dataclass
class ImageDataset:
    """Train and held-out test images with integer labels."""

    name: str
    train_images: Tensor
    train_labels: Tensor
    test_images: Tensor
    test_labels: Tensor
    num_classes: int
    #: Stage-1 epochs that give a good model on this dataset (the CLI's default).
    default_epochs: int

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one image."""
        c, h, w = self.train_images.shape[1:]
        return int(c), int(h), int(w)

    def describe(self) -> str:
        """One line for logs: name, sizes and shape."""
        c, h, w = self.image_shape
        return f"{self.name}: {len(self.train_images)} train / {len(self.test_images)} test images, {c}×{h}×{w}"


def load_digits(root: str | Path | None = None, *, test_fraction: float = 0.2, seed: int = 0) -> ImageDataset:
    """scikit-learn's bundled 8×8 digits, upsampled to 28×28 so MNIST architectures apply unchanged."""
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    images = torch.from_numpy(bunch.images).float().div_(16.0).unsqueeze(1)
    images = F.interpolate(images, size=(28, 28), mode="bilinear", align_corners=False).clamp_(0, 1)
    labels = torch.from_numpy(bunch.target).long()
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
    n_test = int(round(len(images) * test_fraction))
    test, train = order[:n_test], order[n_test:]
    return ImageDataset("digits", images[train], labels[train], images[test], labels[test], 10, 40)


def load_mnist(root: str | Path | None = None, *, seed: int = 0) -> ImageDataset:
    """MNIST from ``root`` in torchvision's layout (``root/MNIST/raw/*-ubyte``); never downloads."""
    from torchvision.datasets import MNIST

    if root is None:
        raise DataError("the mnist dataset needs --data-root pointing at a folder that holds MNIST/raw/")
    try:
        train = MNIST(str(root), train=True, download=False)
        test = MNIST(str(root), train=False, download=False)
    except RuntimeError as err:
        expected = ", ".join(f for f, _ in MNIST.resources)
        raise DataError(
            f"MNIST not found under {Path(root).resolve()}: expected {Path(root) / 'MNIST' / 'raw'} "
            f"to hold {expected.replace('.gz', '')} (or the .gz files). Nothing is downloaded; "
            f"copy the files there or point --data-root elsewhere."
        ) from err

    def to_tensor(ds: MNIST) -> Tensor:
        return ds.data.float().div_(255.0).unsqueeze(1)

    return ImageDataset(
        "mnist", to_tensor(train), train.targets.long(), to_tensor(test), test.targets.long(), 10, 5
    )


DATASETS: dict[str, Callable[..., ImageDataset]] = {"digits": load_digits, "mnist": load_mnist}


def load_dataset(name: str = "digits", root: str | Path | None = None, *, seed: int = 0) -> ImageDataset:
    """Load a dataset by name (``digits`` needs no files; the others read ``root``)."""
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; available: {', '.join(DATASETS)}")
    return DATASETS[name](root, seed=seed)
