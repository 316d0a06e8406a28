"""The judge of sample quality: a compact CNN trained on a dataset's own training split, cached on disk.

Sample scores (:mod:`vqtoolkit.scoring.sample_quality`) need a classifier that knows the dataset. None is
downloaded: the first time a dataset is scored, :func:`dataset_classifier` trains one (seeded, a
couple of epochs: about a minute on a CPU for MNIST, seconds for ``digits``) and writes it as a
safetensors file under the user's cache directory, keyed by the dataset's name and a fingerprint
of its training images and labels, so a changed dataset never meets a stale classifier.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load, save
from torch import Tensor, nn
from tqdm.auto import tqdm

from vqtoolkit._util.atomic import atomic_write
from vqtoolkit.data.datasets import ImageDataset
from vqtoolkit.data.streaming import as_tensor
from vqtoolkit.errors import DataError

logger = logging.getLogger(__name__)

#: Bumped whenever the architecture or recipe changes, so old cache files are not reused.
VERSION = 1
#: Optimizer steps a classifier aims for, rounded up to whole epochs within ``EPOCHS``.
TRAIN_STEPS = 900
#: Fewest and most epochs: MNIST gets 2 (938 steps), the small ``digits`` set 30 (360 steps).
EPOCHS = (2, 30)
FEATURES = 128


class Classifier(nn.Module):
    """Two conv blocks and a 128-wide penultimate layer: ``features`` feed the Fréchet distance."""

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.AdaptiveAvgPool2d(4),
            nn.Flatten(),
            nn.Linear(64 * 16, FEATURES),
            nn.ReLU(),
        )
        self.dropout = nn.Dropout(0.3)
        self.head = nn.Linear(FEATURES, num_classes)

    def features(self, images: Tensor) -> Tensor:
        """Penultimate activations ``(N, 128)``."""
        return self.body(images)

    def forward(self, images: Tensor) -> Tensor:
        """Class logits ``(N, classes)``."""
        return self.head(self.dropout(self.features(images)))


def cache_dir() -> Path:
    """``$VQTOOLKIT_CACHE``, else ``$XDG_CACHE_HOME/vqtoolkit``, else ``~/.cache/vqtoolkit``."""
    if os.environ.get("VQTOOLKIT_CACHE"):
        return Path(os.environ["VQTOOLKIT_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "vqtoolkit"


def dataset_key(data: ImageDataset) -> str:
    """``<name>-<fingerprint>``: the name plus a hash of the training images (as 8-bit) and labels."""
    digest = hashlib.blake2b(digest_size=8)
    digest.update(f"v{VERSION}:{tuple(data.train_images.shape)}:{data.num_classes}".encode())
    digest.update((as_tensor(data.train_images) * 255).round().to(torch.uint8).numpy().tobytes())
    digest.update(data.train_labels.to(torch.int64).numpy().tobytes())
    safe_name = "".join(c if c.isalnum() or c in "-_." else "_" for c in data.name)
    return f"{safe_name}-{digest.hexdigest()}"


def unlabelled(data: ImageDataset) -> str | None:
    """Why ``data`` cannot have a classifier (fewer than 2 classes), or ``None`` when it can.

    Args:
        data: The dataset to score samples against.

    Returns:
        A one-line reason naming the fix, or ``None``.
    """
    if data.num_classes >= 2:
        return None
    return (
        f"{data.name} has {data.num_classes} class; sample scores need a labelled dataset with at "
        f"least 2 classes (for a folder dataset: one sub-folder per class; photos has no labels)"
    )


def train_classifier(
    data: ImageDataset,
    *,
    steps: int = TRAIN_STEPS,
    batch_size: int = 128,
    seed: int = 0,
    progress: bool = True,
) -> Classifier:
    """A seeded classifier trained with Adam on ``data``'s training split for about ``steps`` steps."""
    reason = unlabelled(data)
    if reason is not None:
        raise DataError(reason)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = Classifier(data.image_shape[0], data.num_classes)
    generator = torch.Generator().manual_seed(seed)
    images = as_tensor(data.train_images)  # a streamed folder is read into memory once
    per_epoch = math.ceil(len(images) / batch_size)
    epochs = min(EPOCHS[1], max(EPOCHS[0], math.ceil(steps / per_epoch)))
    optimizer = torch.optim.Adam(net.parameters(), lr=4e-3)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=4e-3, total_steps=epochs * per_epoch)
    bar = tqdm(total=epochs * per_epoch, desc=f"training a {data.name} classifier", disable=not progress)
    net.train()
    for _ in range(epochs):
        for batch in torch.randperm(len(images), generator=generator).split(batch_size):
            loss = F.cross_entropy(net(images[batch]), data.train_labels[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            bar.update()
    bar.close()
    return net.eval()


def dataset_classifier(data: ImageDataset, *, progress: bool = True) -> Classifier:
    """The cached classifier of ``data`` (trained and written to :func:`cache_dir` on first use)."""
    path = cache_dir() / "classifiers" / f"{dataset_key(data)}.safetensors"
    net = Classifier(data.image_shape[0], data.num_classes)
    if path.exists():
        try:
            net.load_state_dict(load(path.read_bytes()))
            return net.eval()
        except (
            SafetensorError,
            RuntimeError,
            ValueError,
            OSError,
        ) as err:  # corrupt or foreign file: retrain over it
            logger.warning("ignoring unreadable cached classifier %s (%s); retraining", path, err)
    logger.info("training a classifier for %s; it will be cached at %s", data.name, path)
    net = train_classifier(data, progress=progress)
    atomic_write(path, save({k: v.contiguous() for k, v in net.state_dict().items()}))
    return net


@torch.inference_mode()
def classify(net: Classifier, images: Tensor, *, batch_size: int = 1000) -> tuple[Tensor, Tensor]:
    """Class probabilities ``(N, classes)`` and penultimate features ``(N, 128)`` of ``images``."""
    net.eval()
    probs, features = [], []
    for batch in images.split(batch_size):
        f = net.features(batch.float())
        features.append(f)
        probs.append(torch.softmax(net.head(f), dim=1))
    return torch.cat(probs), torch.cat(features)
