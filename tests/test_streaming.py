"""A folder streamed from disk trains exactly like the same folder read into memory."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import vqtoolkit
from vqtoolkit.data import streaming
from vqtoolkit.data.datasets import ImageDataset, load_dataset
from vqtoolkit.data.streaming import StreamedImages, as_tensor
from vqtoolkit.errors import DataError


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory, digits: ImageDataset) -> Path:
    """70 digit PNGs (28×28, stored 20×20 so reading resizes) in three class folders."""
    root = tmp_path_factory.mktemp("folder")
    images = torch.as_tensor(digits.train_images[:70])
    for i, image in enumerate(images):
        label = int(digits.train_labels[i]) % 3
        (root / str(label)).mkdir(exist_ok=True)
        pixels = (image[0].numpy() * 255).round().astype(np.uint8)
        Image.fromarray(pixels).resize((20, 20)).save(root / str(label) / f"{i}.png")
    return root


def test_streamed_images_read_the_same_pixels_lazily(folder: Path) -> None:
    memory = load_dataset("folder", folder, image_size=16, stream=False)
    streamed = load_dataset("folder", folder, image_size=16, stream=True)
    assert isinstance(memory.train_images, torch.Tensor)
    assert isinstance(streamed.train_images, StreamedImages)
    assert streamed.image_shape == memory.image_shape == (1, 16, 16)
    assert len(streamed.train_images) == len(memory.train_images) and streamed.describe() == memory.describe()
    assert torch.equal(streamed.train_labels, memory.train_labels)
    assert torch.equal(as_tensor(streamed.train_images), memory.train_images)
    rows = torch.tensor([5, 0, 3])
    assert torch.equal(as_tensor(streamed.test_images[rows]), memory.test_images[rows])
    assert torch.equal(torch.cat(list(streamed.test_images.split(4))), memory.test_images)


def test_a_streamed_folder_trains_to_the_same_bundle(folder: Path, tmp_path: Path) -> None:
    results = []
    for stream in (False, True):
        data = load_dataset("folder", folder, image_size=16, stream=stream)
        torch.manual_seed(0)
        pipe = vqtoolkit.build("conv", "ema", "conv", "gmm", dim=8, num_codes=16, prior_config={"pca_dim": 4})
        pipe.fit(data, epochs=2, batch_size=16, progress=False)
        pipe.info.pop("history")  # holds wall-clock seconds
        results.append(vqtoolkit.load(pipe.save(tmp_path / f"{stream}.safetensors")))
    memory, streamed = results
    assert memory.info == streamed.info  # metrics included
    for part in ("model", "prior"):
        a, b = getattr(memory, part).state_dict(), getattr(streamed, part).state_dict()
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), (part, key)


def test_streaming_is_chosen_by_size_and_only_for_folders(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert isinstance(load_dataset("folder", folder, image_size=16).train_images, torch.Tensor)
    monkeypatch.setattr(streaming, "physical_memory", lambda: 100_000)  # 70 images of 16² fp32 > 25 kB
    assert isinstance(load_dataset("folder", folder, image_size=16).train_images, StreamedImages)
    assert isinstance(load_dataset("folder", folder, image_size=16, stream=False).train_images, torch.Tensor)
    with pytest.raises(DataError, match="only --data folder streams"):
        load_dataset("digits", stream=True)
