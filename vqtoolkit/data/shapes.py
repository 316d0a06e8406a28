"""``shapes``: procedural RGB scenes whose factors are known, generated from a seed in seconds.

Every scene is a dark background with 1 to :data:`MAX_OBJECTS` flat-coloured objects. Each object
has four factors, drawn independently and uniformly:

* **shape**: one of :data:`SHAPES` (circle, square, triangle, diamond);
* **colour**: one of the six saturated :data:`COLOURS`;
* **size**: its radius, a fraction of the image side; the first object (the *main* one) is large
  (:data:`MAIN_SIZE`), the others small (:data:`SMALL_SIZE`), so it is always the biggest;
* **position**: its centre, anywhere that keeps the object inside the image.

The main object is painted last (on top), so it is never hidden: it carries the image's label,
its shape by default (``label="shape"``, 4 classes) or its colour (``label="colour"``, 6 classes).
Edges are anti-aliased analytically (coverage from each pixel's signed distance to the outline),
so 32×32 and 64×64 scenes look alike and nothing is supersampled.

Generation is vectorised over images (one loop over the three object slots), uses only a seeded
CPU :class:`torch.Generator` and elementwise float32 arithmetic, and so gives the same pixels on
every machine (a test pins a fingerprint). The train and test scenes are different draws of one
stream: ``seed`` picks the stream, the first :data:`TRAIN_SCENES` draws train, the next
:data:`TEST_SCENES` test.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from vqtoolkit.errors import DataError

SHAPES = ("circle", "square", "triangle", "diamond")
COLOURS = ("red", "green", "blue", "yellow", "magenta", "cyan")
#: RGB in [0, 1] of each of :data:`COLOURS`.
PALETTE = torch.tensor(
    [
        [0.9, 0.15, 0.15],
        [0.15, 0.8, 0.2],
        [0.2, 0.35, 0.95],
        [0.95, 0.85, 0.15],
        [0.85, 0.2, 0.85],
        [0.15, 0.85, 0.9],
    ]
)
BACKGROUND = 0.08
MAX_OBJECTS = 3
#: Radius range of the main object and of the others, as fractions of the image side.
MAIN_SIZE = (0.22, 0.32)
SMALL_SIZE = (0.09, 0.15)
TRAIN_SCENES = 10_000
TEST_SCENES = 1_000
#: Which factor of the main object is the label, and how many classes it has.
LABELS = {"shape": len(SHAPES), "colour": len(COLOURS)}
#: Scenes rendered at once: bounds the ``(chunk, objects, H, W)`` distance tensors.
CHUNK = 1024


class Scenes(NamedTuple):
    """Rendered scenes and the factors that made them (object 0 is the main, labelled one)."""

    #: ``(N, 3, S, S)`` float32 in [0, 1].
    images: Tensor
    #: ``(N, MAX_OBJECTS)`` long: index into :data:`SHAPES`.
    shape: Tensor
    #: ``(N, MAX_OBJECTS)`` long: index into :data:`COLOURS`.
    colour: Tensor
    #: ``(N, MAX_OBJECTS)`` float: radius as a fraction of the side.
    size: Tensor
    #: ``(N, MAX_OBJECTS, 2)`` float: centre ``(x, y)`` as fractions of the side.
    position: Tensor
    #: ``(N,)`` long: how many objects (1 to :data:`MAX_OBJECTS`); slots beyond it are empty.
    num_objects: Tensor


def _coverage(shape: Tensor, dx: Tensor, dy: Tensor, radius: Tensor) -> Tensor:
    """Per-pixel coverage in [0, 1] of each object, from its signed distance in pixels.

    ``dx``, ``dy`` are pixel offsets from the centre ``(n, k, S, S)``; ``shape``, ``radius`` ``(n, k)``.
    """
    r = radius[..., None, None]
    s = shape[..., None, None]
    ax, ay = dx.abs(), dy.abs()
    # an upward equilateral triangle inscribed in the circle of radius r: three half-planes
    triangle = torch.maximum(dy - r * 0.5, (math.sqrt(3) / 2) * ax - 0.5 * dy - r * 0.5)
    chosen = torch.where(
        s == 0,
        torch.sqrt(dx * dx + dy * dy) - r,  # circle
        torch.where(
            s == 1,
            torch.maximum(ax, ay) - r * 0.85,  # square
            torch.where(s == 2, triangle, (ax + ay) * (0.5**0.5) - r * 0.75),  # diamond
        ),
    )
    return (0.5 - chosen).clamp(0.0, 1.0)


def _render(
    shape: Tensor, colour: Tensor, size: Tensor, position: Tensor, num_objects: Tensor, image_size: int
) -> Tensor:
    """Paint the scenes, later slots first so object 0 lies on top."""
    n = len(shape)
    pixels = torch.arange(image_size, dtype=torch.float32) + 0.5
    centre = position * image_size  # (n, k, 2) in pixels
    dx, dy = torch.broadcast_tensors(
        pixels.view(1, 1, 1, -1) - centre[..., 0, None, None],
        pixels.view(1, 1, -1, 1) - centre[..., 1, None, None],
    )
    alpha = _coverage(shape, dx, dy, size * image_size)  # (n, k, S, S)
    present = (torch.arange(MAX_OBJECTS) < num_objects[:, None]).float()
    alpha = alpha * present[..., None, None]
    images = torch.full((n, 3, image_size, image_size), BACKGROUND)
    rgb = PALETTE[colour]  # (n, k, 3)
    for k in reversed(range(MAX_OBJECTS)):
        a = alpha[:, k, None]
        images = images * (1 - a) + rgb[:, k, :, None, None] * a
    return images.clamp_(0.0, 1.0)


def generate(n: int, *, image_size: int = 32, seed: int = 0, skip: int = 0) -> Scenes:
    """``n`` scenes of ``image_size``² pixels: draws ``skip`` to ``skip + n`` of the stream ``seed``.

    Args:
        n: Scenes to make.
        image_size: Side in pixels (at least 8).
        seed: Picks the random stream; the same seed gives the same scenes on every machine.
        skip: Scenes of the stream to pass over first (how the test split follows the training one);
            scene ``skip + i`` is the same whatever ``n``.

    Returns:
        The images and their factors.

    Raises:
        DataError: ``image_size`` below 8 (objects would be a pixel or two).
    """
    if image_size < 8:
        raise DataError(f"shapes needs --image-size of at least 8 pixels; got {image_size}")
    generator = torch.Generator().manual_seed(seed)
    k = MAX_OBJECTS
    # one row of uniforms per scene, taken in order from the stream: scene i is the same whatever
    # n and skip are. Columns: object count, then per object shape, colour, size, x, y.
    unit = torch.rand(skip + n, 1 + 5 * k, generator=generator)[skip:]
    per_object = unit[:, 1:].view(n, k, 5)
    num_objects = (unit[:, 0] * k).long().clamp_(max=k - 1) + 1
    shape = (per_object[..., 0] * len(SHAPES)).long().clamp_(max=len(SHAPES) - 1)
    colour = (per_object[..., 1] * len(COLOURS)).long().clamp_(max=len(COLOURS) - 1)
    low = torch.tensor([MAIN_SIZE[0]] + [SMALL_SIZE[0]] * (k - 1))
    high = torch.tensor([MAIN_SIZE[1]] + [SMALL_SIZE[1]] * (k - 1))
    size = low + per_object[..., 2] * (high - low)
    margin = size[..., None] * 1.05
    position = margin + per_object[..., 3:] * (1 - 2 * margin)
    parts = [
        _render(
            shape[i : i + CHUNK],
            colour[i : i + CHUNK],
            size[i : i + CHUNK],
            position[i : i + CHUNK],
            num_objects[i : i + CHUNK],
            image_size,
        )
        for i in range(0, n, CHUNK)
    ]
    images = torch.cat(parts) if parts else torch.empty(0, 3, image_size, image_size)
    return Scenes(images, shape, colour, size, position.contiguous(), num_objects)


def labels_of(scenes: Scenes, label: str = "shape") -> Tensor:
    """The main object's ``label`` factor (``"shape"`` or ``"colour"``) of every scene, ``(N,)`` long.

    Args:
        scenes: What :func:`generate` returned.
        label: Which factor of object 0.

    Returns:
        One class index per scene.

    Raises:
        DataError: ``label`` is not a factor with classes.
    """
    if label not in LABELS:
        raise DataError(f"shapes labels images by {' or '.join(LABELS)}; got {label!r}")
    return getattr(scenes, label)[:, 0].clone()


def class_names(label: str = "shape") -> tuple[str, ...]:
    """The names of the classes of ``label`` (:data:`SHAPES` or :data:`COLOURS`)."""
    return SHAPES if label == "shape" else COLOURS
