"""The offline colour datasets: ``shapes`` (procedural scenes with known factors) and ``photos`` (crops)."""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest
import torch

from vqtoolkit.data import photos, shapes
from vqtoolkit.data.datasets import load_dataset
from vqtoolkit.errors import DataError

pytestmark = pytest.mark.usefixtures("one_thread")  # small tensors: a second thread only contends

#: Shape area over radius² as the renderer draws them: circle, square, triangle, diamond.
AREAS = (math.pi, (2 * 0.85) ** 2, 3 * math.sqrt(3) / 4, 2 * (0.75 * math.sqrt(2)) ** 2)


def fingerprint(images: torch.Tensor) -> str:
    return hashlib.sha256((images * 255).round().to(torch.uint8).numpy().tobytes()).hexdigest()[:16]


def test_same_seed_same_scenes_other_seed_others() -> None:
    a, b = shapes.generate(16, seed=3), shapes.generate(16, seed=3)
    assert torch.equal(a.images, b.images) and torch.equal(a.shape, b.shape)
    assert not torch.equal(a.images, shapes.generate(16, seed=4).images)


def test_scenes_are_pinned_so_every_machine_draws_the_same() -> None:
    # elementwise float32 arithmetic from a seeded CPU generator: a change here changes every shapes run
    assert fingerprint(shapes.generate(8, seed=0).images) == "f858a9b4bb8f5b47"


def test_skip_continues_the_stream() -> None:
    whole = shapes.generate(12, seed=1)
    tail = shapes.generate(3, seed=1, skip=8)  # scenes 8 to 10: the same, however many are asked
    assert torch.equal(tail.images, whole.images[8:11]) and torch.equal(tail.colour, whole.colour[8:11])
    assert torch.equal(shapes.generate(5, seed=1).images, whole.images[:5])


def test_tensor_shapes_and_range() -> None:
    scenes = shapes.generate(5, image_size=64)
    assert scenes.images.shape == (5, 3, 64, 64) and scenes.images.dtype == torch.float32
    assert scenes.images.min() >= 0 and scenes.images.max() <= 1
    assert scenes.shape.shape == scenes.colour.shape == scenes.size.shape == (5, shapes.MAX_OBJECTS)
    assert scenes.position.shape == (5, shapes.MAX_OBJECTS, 2) and scenes.num_objects.shape == (5,)
    assert bool(((scenes.num_objects >= 1) & (scenes.num_objects <= shapes.MAX_OBJECTS)).all())


def test_main_object_colour_is_at_its_centre_and_is_the_label() -> None:
    scenes = shapes.generate(200, seed=2)
    centre = (scenes.position[:, 0] * 32).long()  # pixel holding the main object's centre
    pixels = scenes.images[torch.arange(200), :, centre[:, 1], centre[:, 0]]
    assert torch.allclose(pixels, shapes.PALETTE[scenes.colour[:, 0]], atol=1e-5)
    assert torch.equal(shapes.labels_of(scenes, "colour"), scenes.colour[:, 0])
    assert torch.equal(shapes.labels_of(scenes), scenes.shape[:, 0])
    assert bool((scenes.size[:, 0] > scenes.size[:, 1:].max(dim=1).values).all())  # the main one is biggest


def test_shape_factor_draws_that_shape() -> None:
    scenes = shapes.generate(400, seed=5, image_size=64)
    alone = scenes.num_objects == 1
    covered = (scenes.images - shapes.BACKGROUND).abs().amax(dim=1)  # a flat colour on a flat background
    covered = (
        covered / (shapes.PALETTE - shapes.BACKGROUND).abs().amax(dim=1)[scenes.colour[:, 0], None, None]
    )
    area = covered.sum(dim=(1, 2))[alone]
    radius = (scenes.size[:, 0] * 64)[alone]
    expected = torch.tensor(AREAS)[scenes.shape[alone, 0]] * radius**2
    assert len(area) > 50
    assert torch.allclose(area, expected, rtol=0.05)


def test_dataset_split_is_disjoint_and_labelled() -> None:
    data = load_dataset("shapes", image_size=16, seed=0)
    assert data.image_shape == (3, 16, 16) and data.num_classes == 4 and data.classes == shapes.SHAPES
    assert (len(data.train_images), len(data.test_images)) == (shapes.TRAIN_SCENES, shapes.TEST_SCENES)
    train = {row.tobytes() for row in (data.train_images * 255).round().byte().flatten(1).numpy()}
    assert not any(
        row.tobytes() in train for row in (data.test_images * 255).round().byte().flatten(1).numpy()
    )
    assert set(data.test_labels.tolist()) == {0, 1, 2, 3}
    other = load_dataset("shapes", image_size=16, seed=1)
    assert not torch.equal(other.test_images, data.test_images)


def test_colour_labels_and_bad_arguments() -> None:
    from vqtoolkit.data.datasets import load_shapes

    assert load_shapes(image_size=8, label="colour").num_classes == 6
    with pytest.raises(DataError, match="shape or colour"):
        load_shapes(image_size=8, label="size")
    with pytest.raises(DataError, match="at least 8"):
        load_dataset("shapes", image_size=4)


def test_photo_crops_come_from_disjoint_regions(monkeypatch: pytest.MonkeyPatch) -> None:
    columns = np.broadcast_to(np.arange(200, dtype=np.uint8)[None, :, None], (60, 200, 3))
    monkeypatch.setattr(photos, "pictures", lambda: [columns.copy()])
    train, test = photos.split_crops(16)
    cut = round(200 * photos.TRAIN_SHARE) / 255.0  # each pixel's value is its column
    assert len(train) and len(test)
    assert float(train.amax()) < cut <= float(test.amin())
    assert train.shape[1:] == test.shape[1:] == (3, 16, 16)


def test_photos_dataset() -> None:
    data = load_dataset("photos")
    assert data.image_shape == (3, 32, 32) and data.num_classes == 1
    assert len(data.train_images) > 10 * len(data.test_images) > 0
    assert float(data.train_images.std()) > 0.1  # real pictures, not a blank
    assert load_dataset("photos", image_size=64).image_shape == (3, 64, 64)
    with pytest.raises(DataError, match="photos crops must be 4 to 160"):
        load_dataset("photos", image_size=300)
