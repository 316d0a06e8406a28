"""Datasets from tiny synthetic files in each on-disk layout; nothing is downloaded."""

from __future__ import annotations

import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import vqtoolkit
from vqtoolkit.data.datasets import load_dataset
from vqtoolkit.errors import DataError, ShapeError
from vqtoolkit.training.loop import train_autoencoder


def write_idx(folder: Path, prefix: str, images: np.ndarray, labels: np.ndarray) -> None:
    """MNIST's big-endian IDX format: magic, counts and sizes, then raw uint8 data."""
    folder.mkdir(parents=True, exist_ok=True)
    n, h, w = images.shape
    header = struct.pack(">IIII", 2051, n, h, w)
    (folder / f"{prefix}-images-idx3-ubyte").write_bytes(header + images.tobytes())
    (folder / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 2049, n) + labels.tobytes())


@pytest.mark.parametrize(("name", "folder"), [("mnist", "MNIST"), ("fashion-mnist", "FashionMNIST")])
def test_idx_datasets_load_from_torchvision_layout(tmp_path: Path, name: str, folder: str) -> None:
    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, (6, 28, 28), dtype=np.uint8)
    test = rng.integers(0, 256, (3, 28, 28), dtype=np.uint8)
    write_idx(tmp_path / folder / "raw", "train", train, np.arange(6, dtype=np.uint8))
    write_idx(tmp_path / folder / "raw", "t10k", test, np.array([7, 8, 9], dtype=np.uint8))
    data = load_dataset(name, tmp_path)
    assert data.name == name and data.image_shape == (1, 28, 28)
    assert torch.allclose(data.train_images[:, 0], torch.from_numpy(train).float() / 255)
    assert data.test_labels.tolist() == [7, 8, 9]
    resized = load_dataset(name, tmp_path, image_size=16)
    assert resized.image_shape == (1, 16, 16) and float(resized.train_images.max()) <= 1.0


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("mnist", "MNIST/raw to hold train-images-idx3-ubyte"),
        ("fashion-mnist", "FashionMNIST/raw to hold train-images-idx3-ubyte"),
        ("cifar10", "cifar-10-batches-py to hold data_batch_1"),
    ],
)
def test_missing_dataset_names_the_expected_files(tmp_path: Path, name: str, expected: str) -> None:
    with pytest.raises(DataError, match=expected):
        load_dataset(name, tmp_path)
    with pytest.raises(DataError, match="--data-root"):
        load_dataset(name, None)


def write_cifar(root: Path, n_per_batch: int = 2) -> None:
    """torchvision's CIFAR-10 'python version' layout with tiny batches: red images, class = index."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    pixels = np.zeros((n_per_batch, 3, 32, 32), dtype=np.uint8)
    pixels[:, 0] = 255  # red channel full, green and blue empty: catches a channel-order mix-up
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {"data": pixels.reshape(n_per_batch, -1), "labels": list(range(n_per_batch))}
        (folder / name).write_bytes(pickle.dumps(batch))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": [f"c{i}" for i in range(10)]}))


def test_cifar10_loads_three_channels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_cifar(tmp_path)  # torchvision checks the real files' MD5s; these tiny ones cannot match them
    monkeypatch.setattr("torchvision.datasets.cifar.check_integrity", lambda *args, **kwargs: True)
    data = load_dataset("cifar10", tmp_path)
    assert data.image_shape == (3, 32, 32) and len(data.train_images) == 10 and len(data.test_images) == 2
    assert torch.all(data.train_images[:, 0] == 1) and torch.all(data.train_images[:, 1:] == 0)

    torch.manual_seed(0)  # the encoder/decoder take their channels from the data
    channels = data.image_shape[0]
    model = vqtoolkit.build("conv", "vq", "conv", None, in_channels=channels, dim=8, num_codes=16).model
    history = train_autoencoder(
        model, data.train_images, data.test_images, epochs=1, batch_size=4, progress=False
    )
    assert model.decoder.out_channels == 3 and history[-1]["test_mse"] >= 0


def save_png(path: Path, size: tuple[int, int], mode: str, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value if mode == "L" else (value, 0, 0)).save(path)


def test_folder_with_class_subfolders_gives_labels_and_resizes(tmp_path: Path) -> None:
    for i in range(3):
        save_png(tmp_path / "cats" / f"{i}.png", (20 + i, 17), "L", 200)
        save_png(tmp_path / "dogs" / f"{i}.PNG", (40, 40), "L", 50)
    data = load_dataset("folder", tmp_path, image_size=8, seed=1)
    assert data.image_shape == (1, 8, 8) and data.num_classes == 2
    images = torch.cat([data.train_images, data.test_images])
    labels = torch.cat([data.train_labels, data.test_labels])
    assert len(images) == 6 and sorted(labels.tolist()) == [0, 0, 0, 1, 1, 1]
    assert torch.allclose(images[labels == 0], torch.tensor(200 / 255)), "cats are the first class"


def test_flat_folder_of_colour_images_loads_rgb(tmp_path: Path) -> None:
    for i in range(4):
        save_png(tmp_path / f"img{i}.png", (12, 12), "RGB", 255)
    (tmp_path / "notes.txt").write_text("not an image")
    data = load_dataset("folder", tmp_path)
    assert data.image_shape == (3, 32, 32) and len(data.train_images) + len(data.test_images) == 4
    assert torch.all(data.train_images[:, 0] == 1) and torch.all(data.train_images[:, 2] == 0)


def test_folder_errors_say_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="at least 2 files"):
        load_dataset("folder", tmp_path)
    with pytest.raises(DataError, match="not a directory"):
        load_dataset("folder", tmp_path / "missing")
    save_png(tmp_path / "good.png", (8, 8), "L", 1)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(DataError, match=r"broken\.png"):
        load_dataset("folder", tmp_path)


def test_folder_images_the_encoder_cannot_downsample_fail_before_training(tmp_path: Path) -> None:
    for i in range(3):
        save_png(tmp_path / f"{i}.png", (10, 10), "L", 100)
    data = load_dataset("folder", tmp_path, image_size=10)
    model = vqtoolkit.build("conv", "vq", "conv", None, dim=8, num_codes=16).model  # downsamples by 4
    with pytest.raises(ShapeError, match="multiple of 4"):
        train_autoencoder(model, data.train_images, data.test_images, epochs=1, progress=False)


def test_unknown_dataset_and_bad_size() -> None:
    with pytest.raises(DataError, match="available: digits, mnist, fashion-mnist, cifar10, folder"):
        load_dataset("imagenet")
    with pytest.raises(DataError, match="image_size"):
        load_dataset("digits", image_size=0)
