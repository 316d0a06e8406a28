"""Datasets as in-memory tensors.

``digits`` (embedded, offline default); ``shapes`` (procedural RGB scenes, :mod:`vqtoolkit.data.shapes`)
and ``photos`` (crops of scikit-learn's sample photographs, :mod:`vqtoolkit.data.photos`), both
offline; ``mnist``, ``fashion-mnist`` and ``cifar10`` through torchvision, offline from a ``root``;
``folder``, any directory of images, resized.

Images are float32 ``(N, C, H, W)`` in [0, 1]; keeping them as one tensor makes a batch a single
index operation instead of per-sample Python work. A folder too large for memory is streamed
instead (:mod:`vqtoolkit.data.streaming`): read batch by batch from the files by ``DataLoader`` workers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from vqtoolkit._util.memory import check_fits
from vqtoolkit.data.streaming import (
    Images,
    StreamedImages,
    all_grey,
    default_workers,
    read_image,
    should_stream,
)
from vqtoolkit.data.streaming import to_tensor as pictures_to_tensor
from vqtoolkit.errors import DataError

if TYPE_CHECKING:  # torchvision's datasets are imported lazily: they are slow to import
    from torchvision.datasets import MNIST

#: The stage-1 batch where neither the caller nor the dataset chooses one.
DEFAULT_BATCH_SIZE = 128


@dataclass
class ImageDataset:
    """Train and held-out test images with integer labels."""

    name: str
    #: A tensor, or :class:`~vqtoolkit.data.streaming.StreamedImages` for a folder read on demand.
    train_images: Images
    train_labels: Tensor
    test_images: Images
    test_labels: Tensor
    num_classes: int
    #: Stage-1 epochs that give a good model on this dataset (the CLI's default).
    default_epochs: int
    #: Codebook size the CLI uses unless told: small data gives a prior too few examples per code.
    default_num_codes: int = 512
    #: Stage-1 batch unless told: a small dataset takes more, smaller steps per epoch.
    default_batch_size: int = DEFAULT_BATCH_SIZE
    #: Class names by label index, where the dataset has them (report rows, docs).
    classes: tuple[str, ...] | None = None
    #: Registered encoder and decoder the CLI uses unless told. ``conv`` for every built-in dataset:
    #: it keeps a CPU build within minutes; ``resnet`` costs 5-9× per epoch (docs/training.md).
    default_autoencoder: str = "conv"

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one image."""
        c, h, w = self.train_images.shape[1:]
        return int(c), int(h), int(w)

    def describe(self) -> str:
        """One line for logs: name, sizes and shape.

        Returns:
            E.g. ``digits: 1438 train / 359 test images, 1×28×28``.
        """
        c, h, w = self.image_shape
        return (
            f"{self.name}: {len(self.train_images)} train / {len(self.test_images)} test images, {c}×{h}×{w}"
        )


def load_digits(root: str | Path | None = None, *, test_fraction: float = 0.2, seed: int = 0) -> ImageDataset:
    """scikit-learn's bundled 8×8 digits, upsampled to 28×28 so MNIST architectures apply unchanged."""
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    images = torch.from_numpy(bunch.images).float().div_(16.0).unsqueeze(1)
    images = F.interpolate(images, size=(28, 28), mode="bilinear", align_corners=False).clamp_(0, 1)
    labels = torch.from_numpy(bunch.target).long()
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
    n_test = round(len(images) * test_fraction)
    test, train = order[:n_test], order[n_test:]
    return ImageDataset(
        "digits",
        images[train],
        labels[train],
        images[test],
        labels[test],
        10,
        default_epochs=15,
        default_num_codes=64,
        default_batch_size=32,
    )


def load_shapes(
    root: str | Path | None = None, *, seed: int = 0, image_size: int = 32, label: str = "shape"
) -> ImageDataset:
    """Procedural RGB scenes (:mod:`vqtoolkit.data.shapes`), labelled by the main object's ``label``.

    Args:
        root: Unused (nothing is read); accepted like every loader's.
        seed: Picks the scenes; train and test are disjoint draws of its stream.
        image_size: Side in pixels (32 by default; 64 works as well).
        label: ``"shape"`` (4 classes) or ``"colour"`` (6).

    Returns:
        10 000 training and 1 000 test scenes.
    """
    from vqtoolkit.data import shapes

    scenes = shapes.generate(shapes.TRAIN_SCENES + shapes.TEST_SCENES, image_size=image_size, seed=seed)
    labels = shapes.labels_of(scenes, label)
    cut = shapes.TRAIN_SCENES
    return ImageDataset(
        "shapes" if label == "shape" else f"shapes-{label}",
        scenes.images[:cut],
        labels[:cut],
        scenes.images[cut:],
        labels[cut:],
        shapes.LABELS[label],
        default_epochs=20,  # about 4 s an epoch with the conv stage 1 on 2 CPU cores
        default_num_codes=256,
        default_batch_size=64,
        classes=shapes.class_names(label),
    )


def load_photos(root: str | Path | None = None, *, seed: int = 0, image_size: int = 32) -> ImageDataset:
    """Crops of scikit-learn's sample photographs, train and test from disjoint regions.

    See :mod:`vqtoolkit.data.photos` for where the crops come from. Unlabelled: every label is 0.

    Args:
        root: Unused (the photographs ship with scikit-learn).
        seed: Unused (the crops are a fixed grid); accepted like every loader's.
        image_size: Crop side in pixels.

    Returns:
        The crops, one class.
    """
    from vqtoolkit.data.photos import split_crops

    train, test = split_crops(image_size)
    return ImageDataset(
        "photos",
        train,
        torch.zeros(len(train), dtype=torch.long),
        test,
        torch.zeros(len(test), dtype=torch.long),
        1,
        default_epochs=30,  # 90 steps an epoch: about 2 s with the conv stage 1 on 2 CPU cores
        default_num_codes=512,
        default_batch_size=64,
    )


def _open_splits(
    cls: Any, name: str, root: str | Path | None, folder: Path, expected: str
) -> tuple[Any, Any]:
    """The train and test splits of torchvision dataset ``cls`` under ``root/folder``; never downloads."""
    if root is None:
        raise DataError(f"the {name} dataset needs --data-root pointing at a folder that holds {folder}/")
    try:
        return cls(str(root), train=True, download=False), cls(str(root), train=False, download=False)
    except RuntimeError as err:  # missing files, or (cifar10) a file whose checksum is wrong
        raise DataError(
            f"{name} not found (or a file is corrupt) under {Path(root).resolve()}: expected "
            f"{Path(root) / folder} to hold {expected}. Nothing is downloaded; copy the files there "
            f"or point --data-root elsewhere."
        ) from err


def _load_idx(cls: type[MNIST], name: str, root: str | Path | None, default_epochs: int) -> ImageDataset:
    """An MNIST-format torchvision dataset (``root/<ClassName>/raw/*-ubyte``); never downloads."""
    expected = ", ".join(f.replace(".gz", "") for f, _ in cls.resources) + " (or the .gz files)"
    train, test = _open_splits(cls, name, root, Path(cls.__name__) / "raw", expected)

    def to_tensor(ds: Any) -> Tensor:
        return ds.data.float().div_(255.0).unsqueeze(1)

    return ImageDataset(
        name, to_tensor(train), train.targets.long(), to_tensor(test), test.targets.long(), 10, default_epochs
    )


def load_mnist(root: str | Path | None = None, *, seed: int = 0) -> ImageDataset:
    """MNIST from ``root`` in torchvision's layout (``root/MNIST/raw/*-ubyte``); never downloads."""
    from torchvision.datasets import MNIST

    return _load_idx(MNIST, "mnist", root, 5)


def load_fashion_mnist(root: str | Path | None = None, *, seed: int = 0) -> ImageDataset:
    """Fashion-MNIST from ``root`` in torchvision's layout (``root/FashionMNIST/raw/*-ubyte``)."""
    from torchvision.datasets import FashionMNIST

    return _load_idx(FashionMNIST, "fashion-mnist", root, 10)


def load_cifar10(root: str | Path | None = None, *, seed: int = 0) -> ImageDataset:
    """CIFAR-10 (3×32×32) from ``root/cifar-10-batches-py`` as torchvision lays it out; never downloads.

    torchvision verifies each file's MD5 before reading it, so only the genuine batches are opened.
    """
    from torchvision.datasets import CIFAR10

    files = [f for f, _ in CIFAR10.train_list + CIFAR10.test_list] + [CIFAR10.meta["filename"]]
    expected = f"{', '.join(files)} (the 'python version' archive, extracted)"
    train, test = _open_splits(CIFAR10, "cifar10", root, Path(CIFAR10.base_folder), expected)

    def to_tensor(ds: Any) -> Tensor:
        return torch.from_numpy(ds.data).permute(0, 3, 1, 2).float().div_(255.0).contiguous()

    return ImageDataset(
        "cifar10",
        to_tensor(train),
        torch.tensor(train.targets).long(),
        to_tensor(test),
        torch.tensor(test.targets).long(),
        10,
        20,
    )


def load_folder(
    root: str | Path | None = None,
    *,
    seed: int = 0,
    image_size: int = 32,
    test_fraction: float = 0.1,
    stream: bool | None = None,
    workers: int | None = None,
) -> ImageDataset:
    """Every image under ``root``, resized to ``image_size``² and split into train/test by ``seed``.

    Images in class sub-folders (``root/cat/1.png``, torchvision's ImageFolder layout) get those
    classes as labels; images directly in ``root`` get label 0. All-greyscale folders load as one
    channel, anything else as RGB. ``stream=True`` leaves the images on disk, to be read batch by
    batch by ``workers`` ``DataLoader`` processes; ``None`` streams when they would not fit
    comfortably in memory (:func:`~vqtoolkit.data.streaming.should_stream`). Same pixels either way.
    """
    from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

    if root is None:
        raise DataError("the folder dataset needs --data-root pointing at a directory of images")
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"--data-root {root} is not a directory; point it at a folder of images")
    try:
        classes, class_to_idx = find_classes(str(root))
        samples = make_dataset(str(root), class_to_idx, extensions=IMG_EXTENSIONS)
    except FileNotFoundError:  # no class sub-folders (or all empty): the images sit in root itself
        classes, samples = (
            ["images"],
            [(str(p), 0) for p in sorted(root.iterdir()) if p.suffix.lower() in IMG_EXTENSIONS],
        )
    if len(samples) < 2:
        raise DataError(
            f"found {len(samples)} image(s) under {root}; the folder dataset needs at least 2 files with "
            f"extensions {', '.join(IMG_EXTENSIONS)}, either in {root} or in class sub-folders of it"
        )
    paths = [path for path, _ in samples]
    images: Images
    if stream if stream is not None else should_stream(len(paths), image_size):
        channels = 1 if all_grey(paths) else 3
        images = StreamedImages(
            paths, image_size=image_size, channels=channels, workers=workers or default_workers()
        )
    else:
        pictures, grey = [], True
        reading = tqdm(paths, desc="reading images", unit="image", disable=len(paths) < 2000, leave=False)
        for path in reading:
            picture, is_grey = read_image(path, image_size)
            pictures.append(picture)
            grey &= is_grey
        images = pictures_to_tensor(np.stack(pictures), 1 if grey else 3)
    labels = torch.tensor([label for _, label in samples], dtype=torch.long)
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
    n_test = min(len(images) - 1, max(1, round(len(images) * test_fraction)))
    test, train = order[:n_test], order[n_test:]
    return ImageDataset(
        f"folder:{root.name}",
        images[train],
        labels[train],
        images[test],
        labels[test],
        max(1, len(classes)),
        20,
    )


DATASETS: dict[str, Callable[..., ImageDataset]] = {
    "digits": load_digits,
    "mnist": load_mnist,
    "fashion-mnist": load_fashion_mnist,
    "cifar10": load_cifar10,
    "folder": load_folder,
    "shapes": load_shapes,
    "photos": load_photos,
}

#: Datasets made at the asked image size rather than resized to it.
GENERATED = ("shapes", "photos")


def load_dataset(
    name: str = "digits",
    root: str | Path | None = None,
    *,
    seed: int = 0,
    image_size: int | None = None,
    stream: bool | None = None,
) -> ImageDataset:
    """Load a dataset by name (``digits``, ``shapes`` and ``photos`` need no files; the others read ``root``).

    Args:
        name: One of :data:`DATASETS`; ``folder:<name>``, the name a folder dataset records in a
            bundle, reads ``root`` as ``folder`` does.
        root: The folder holding the dataset's files (for ``folder``: the images).
        seed: The train/test split (and the generated datasets' draws).
        image_size: Resize every image to this square size (``folder`` defaults to 32); ``shapes``
            draws its scenes and ``photos`` cuts its crops at that size instead (32 by default).
        stream: ``folder`` only: read the images from disk batch by batch instead of into memory;
            ``None`` decides by size (:func:`load_folder`).

    Returns:
        The dataset, with its train and test splits.

    Raises:
        DataError: An unknown name, files missing under ``root``, a bad ``image_size``, or
            ``stream`` for a dataset read into memory.
        ConfigError: Resized images that would not fit in memory.
    """
    if name.startswith("folder:"):  # what a folder dataset calls itself, so a bundle records it
        name = "folder"
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; available: {', '.join(DATASETS)}")
    if image_size is not None and image_size < 1:
        raise DataError(f"image_size must be >= 1; got {image_size}")
    if name == "folder":
        return load_folder(root, seed=seed, image_size=image_size or 32, stream=stream)
    if stream:
        raise DataError(f"only --data folder streams from disk; {name} is read into memory (drop --stream)")
    if name in GENERATED:
        return DATASETS[name](root, seed=seed, image_size=image_size or 32)
    data = DATASETS[name](root, seed=seed)
    if image_size is not None and data.image_shape[1:] != (image_size, image_size):
        images = len(data.train_images) + len(data.test_images)
        check_fits(
            f"{images} images resized to {image_size}×{image_size}",
            images * data.image_shape[0] * image_size**2 * 4 * 2,  # float32, plus the resize's copy
            "choose a smaller --image-size (image_size=)",
        )
        for split in ("train_images", "test_images"):
            resized = F.interpolate(
                getattr(data, split),
                size=(image_size, image_size),
                mode="bilinear",
                antialias=True,
                align_corners=False,
            )
            setattr(data, split, resized.clamp_(0, 1))
    return data
