"""Divergence detection for stage 1: a finite loss can still be a failed run.

A learning rate far too high does not always end in NaN: the weights blow up to millions, the
decoder's sigmoid saturates, and training "finishes" with a PSNR of 3 dB. After every epoch
:class:`DivergenceGuard` compares the epoch with two yardsticks that need no tuning per dataset:

* **predicting the mean**: a model whose reconstructions are worse than
  :data:`WORSE_THAN_MEAN` × the images' variance (the MSE of predicting their mean everywhere) has
  learnt nothing an average cannot do;
* **its own start**: a loss that has grown :data:`GROWTH` × beyond its first epoch's value.

Either raises :class:`~vqtoolkit.errors.TrainingDiverged`, unless the run asked to keep going
(``allow_divergence=True``), in which case it is logged as a warning.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch

from vqtoolkit.data.streaming import StreamedImages, as_tensor
from vqtoolkit.errors import TrainingDiverged

logger = logging.getLogger(__name__)

#: Reconstruction MSE above this many times the images' variance counts as diverged.
WORSE_THAN_MEAN = 2.0
#: An epoch's loss above this many times the first epoch's counts as diverged.
GROWTH = 100.0


#: Images a streamed dataset's variance is estimated from (a tensor dataset uses all of them).
STREAMED_IMAGES = 4096


def variance(images: Any) -> float:
    """MSE of predicting every pixel by the images' mean (computed in chunks, in float64)."""
    images = as_tensor(images[:STREAMED_IMAGES]) if isinstance(images, StreamedImages) else images
    count, total, squares = images.numel(), 0.0, 0.0
    for chunk in images.split(4096):
        flat = chunk.to("cpu", torch.float64)
        total += float(flat.sum())
        squares += float((flat * flat).sum())
    mean = total / max(count, 1)
    return max(squares / max(count, 1) - mean * mean, 0.0)


def epoch_loss(record: dict[str, Any]) -> float:
    """An epoch's mean training loss (reconstruction plus quantizer loss)."""
    return float(record["train_recon"]) + float(record["train_vq"])


class DivergenceGuard:
    """Checks each finished epoch of a stage-1 run; raises on divergence unless ``allow``."""

    def __init__(self, train_images: Any, test_images: Any | None, *, lr: float, allow: bool = False) -> None:
        self.lr, self.allow = lr, allow
        self.train_variance = variance(train_images)
        self.test_variance = None if test_images is None else variance(test_images)

    def check(
        self, record: dict[str, Any], history: list[dict[str, Any]], agree: Callable[[bool], bool] = bool
    ) -> None:
        """Raise :class:`~vqtoolkit.errors.TrainingDiverged` if ``record`` (an epoch) diverged.

        ``agree`` turns this process's verdict into the one all processes share: the training loop
        passes :func:`~vqtoolkit.runtime.distributed.any_rank`, so under ``torch.distributed`` every process
        raises or every one goes on, never one alone.
        """
        problem = self.problem(record, history)
        if not agree(problem is not None):
            return
        problem = problem or "another process found it diverged"
        message = (
            f"training diverged in epoch {record['epoch']}: {problem}. Lower the learning rate "
            f"(--lr, now {self.lr:g}) or use the cosine schedule (--lr-schedule cosine); pass "
            f"--allow-divergence (allow_divergence=True) to keep such a run anyway"
        )
        if not self.allow:
            raise TrainingDiverged(message)
        logger.warning("%s (allowed)", message)

    def problem(self, record: dict[str, Any], history: list[dict[str, Any]]) -> str | None:
        """What is wrong with ``record``, or ``None``."""
        if "test_mse" in record and self.test_variance is not None:
            name, mse, var = "test mse", float(record["test_mse"]), self.test_variance
        else:
            name, mse, var = "train reconstruction mse", float(record["train_recon"]), self.train_variance
        if var > 0 and mse > WORSE_THAN_MEAN * var:
            return f"{name} {mse:.4g} is {mse / var:.1f}× worse than predicting the images' mean ({var:.4g})"
        if history:
            first, now = epoch_loss(history[0]), epoch_loss(record)
            if first > 0 and now > GROWTH * first:
                return f"the loss grew from {first:.4g} in epoch 1 to {now:.4g}"
        return None
