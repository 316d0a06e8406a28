"""Image folders larger than memory: images decoded and resized batch by batch by ``DataLoader`` workers.

:class:`StreamedImages` stands where an ``(N, C, H, W)`` tensor stands in an
:class:`~vqtoolkit.data.datasets.ImageDataset`, and behaves like one where training touches it: ``len``,
``shape``, ``numel``, indexing and slicing (lazy: a view of the rows, nothing is read), ``split``
into batches, ``.to`` (stays lazy; each batch moves as it is read). Training asks for the batches
of an epoch with :func:`image_batches`, which reads them through a ``DataLoader`` whose workers open,
decode and resize the files in parallel and a step ahead; in memory it is one index operation per
batch. Every pixel goes through the same :func:`read_image` either way, and the batches
are the same (:func:`vqtoolkit.runtime.distributed.shard_batches`), so a run trains identically streamed or
not. :func:`vqtoolkit.data.datasets.load_dataset` streams a folder by itself when its decoded images would
not fit comfortably in memory (:func:`should_stream`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import Any, Union

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from vqtoolkit.errors import DataError

#: PIL modes read as one grey channel; anything else becomes RGB.
GREY_MODES = {"1", "L", "I", "I;16", "F"}
#: Stream when the decoded float32 images of every process on this machine would take more than this
#: share of its physical memory (in-memory tensors are faster whenever they fit).
MEMORY_SHARE = 0.25


def read_image(path: str, image_size: int) -> tuple[np.ndarray, bool]:
    """One file as an ``(image_size, image_size, 3)`` uint8 RGB array (bilinear resize); is it grey?"""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            grey = img.mode in GREY_MODES
            rgb = img.convert("RGB").resize((image_size, image_size), Image.Resampling.BILINEAR)
    except (UnidentifiedImageError, OSError) as err:
        raise DataError(f"cannot read {path} as an image ({err}); remove it or fix it") from err
    return np.array(rgb), grey  # a writable copy: torch.from_numpy warns on PIL's read-only buffer


def to_tensor(pictures: np.ndarray, channels: int) -> Tensor:
    """uint8 ``(N, H, W, 3)`` pictures as float ``(N, channels, H, W)`` in [0, 1] (grey: channel 0)."""
    images = torch.from_numpy(pictures).permute(0, 3, 1, 2)[:, :channels]
    # contiguous first: one grey channel would otherwise keep channels-last strides, which send
    # convolutions down another (differently rounding) path than a streamed batch takes
    return images.contiguous().float().div_(255.0)


def all_grey(paths: Sequence[str]) -> bool:
    """Whether every file is greyscale, from the headers alone (PIL reads no pixels to tell the mode)."""
    from PIL import Image

    for path in paths:
        try:
            with Image.open(path) as img:
                if img.mode not in GREY_MODES:
                    return False
        except OSError as err:
            raise DataError(f"cannot read {path} as an image ({err}); remove it or fix it") from err
    return True


class FolderFiles(Dataset[Tensor]):
    """The ``DataLoader`` side: image ``i`` read from ``paths[i]``, as one ``(C, S, S)`` float tensor."""

    def __init__(self, paths: Sequence[str], image_size: int, channels: int) -> None:
        self.paths, self.image_size, self.channels = paths, image_size, channels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> Tensor:
        picture, _ = read_image(self.paths[index], self.image_size)
        return to_tensor(picture[None], self.channels)[0]


class StreamedImages:
    """Images of a folder, read on demand: the lazy twin of an ``(N, C, S, S)`` float tensor in [0, 1].

    ``rows`` picks which files (and in what order) this object's images are; indexing returns a
    narrower ``StreamedImages`` without reading anything. ``workers`` ``DataLoader`` processes decode.
    """

    ndim = 4

    def __init__(
        self,
        paths: Sequence[str],
        *,
        image_size: int,
        channels: int,
        workers: int,
        rows: Tensor | None = None,
    ) -> None:
        self.paths, self.image_size, self.channels, self.workers = paths, image_size, channels, workers
        self.rows = torch.arange(len(paths)) if rows is None else rows

    def __len__(self) -> int:
        return len(self.rows)

    def __repr__(self) -> str:
        return f"StreamedImages({len(self)} images of {tuple(self.shape[1:])}, {self.workers} workers)"

    @property
    def shape(self) -> torch.Size:
        """``(N, C, S, S)``, as the tensor would have."""
        return torch.Size((len(self), self.channels, self.image_size, self.image_size))

    @property
    def device(self) -> torch.device:
        """Batches are read onto the CPU."""
        return torch.device("cpu")

    def numel(self) -> int:
        """Values in all the images."""
        return int(np.prod(self.shape))

    def __getitem__(self, index: Any) -> StreamedImages:
        """The images at ``index`` (a slice, an index tensor or a list), still unread."""
        return StreamedImages(
            self.paths,
            image_size=self.image_size,
            channels=self.channels,
            workers=self.workers,
            rows=self.rows[index].reshape(-1),
        )

    def to(self, *args: Any, **kwargs: Any) -> StreamedImages:
        """Itself: streamed images stay on disk, and each batch moves to the device as it is read."""
        return self

    def batches(self, index_batches: Sequence[Tensor]) -> Iterator[Tensor]:
        """The images of each index batch in turn, decoded by the ``DataLoader``'s workers a step ahead."""
        if not index_batches:
            return iter(())
        loader = DataLoader(
            FolderFiles(self.paths, self.image_size, self.channels),
            batch_sampler=[self.rows[b.cpu()].tolist() for b in index_batches],
            num_workers=self.workers,
            pin_memory=torch.cuda.is_available(),
            generator=torch.Generator(),  # workers' seeds from their own generator: torch's stays untouched
        )
        return iter(loader)

    def split(self, batch_size: int) -> Iterator[Tensor]:
        """All the images in order, ``batch_size`` at a time (what ``Tensor.split`` gives)."""
        return self.batches(torch.arange(len(self)).split(batch_size))

    def load(self) -> Tensor:
        """Every image, read into one tensor (for a few: grids, calibration)."""
        return torch.cat(list(self.split(1024))) if len(self) else torch.empty(tuple(self.shape))


#: Images in memory or streamed from files: what :class:`~vqtoolkit.data.datasets.ImageDataset` holds.
Images = Union[Tensor, StreamedImages]  # noqa: UP007 (a runtime alias: `X | Y` of a class and Tensor)


def image_batches(images: Images, index_batches: Sequence[Tensor]) -> Iterator[Tensor]:
    """The images of each index batch in turn: one index operation in memory, workers for a stream."""
    if isinstance(images, StreamedImages):
        return images.batches(index_batches)
    return (images[b.to(images.device)] for b in index_batches)


def as_tensor(images: Images) -> Tensor:
    """``images`` as a tensor (streamed ones are read: use on a few)."""
    return images.load() if isinstance(images, StreamedImages) else images


def default_workers() -> int:
    """Decoding processes per training process: the CPU cores shared among this machine's processes."""
    per_process = (os.cpu_count() or 1) // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    return max(1, min(8, per_process))


def physical_memory() -> int:
    """Bytes of RAM on this machine (0 where the OS does not say)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 0


def should_stream(num_images: int, image_size: int, channels: int = 3) -> bool:
    """Whether decoded float32 images would outgrow :data:`MEMORY_SHARE` of RAM (all local processes)."""
    processes = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    needed = num_images * channels * image_size * image_size * 4 * processes
    memory = physical_memory()
    return memory > 0 and needed > MEMORY_SHARE * memory
