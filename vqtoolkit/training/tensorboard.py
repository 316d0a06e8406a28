"""TensorBoard logging of a training run, as callbacks the stage-1 loop calls (optional extra).

:class:`TensorBoardLogger` writes, through ``torch.utils.tensorboard``:

* ``step/loss``, ``step/recon``, ``step/vq``, ``step/lr``: per optimizer step (every ``every`` steps),
  with the VQGAN recipe also ``step/gan``, ``step/disc`` and ``step/adaptive_weight`` (and
  ``step/l1``, ``step/perceptual`` where those terms are on);
* ``epoch/<key>`` for every number in the epoch's metrics record (``epoch/train_recon``,
  ``epoch/test_mse``, ``epoch/test_perplexity``, ``epoch/test_codes_used``, ...), x-axis the epoch;
* ``images/reconstructions`` per epoch: held-out originals (top rows) above their reconstructions;
* ``codebook/usage`` per epoch: a histogram over code indices of how often each code is chosen on
  the held-out images;
* ``images/samples``: prior samples, once the prior is fitted (:func:`log_samples`).

The JSON-lines metrics log stays the default record of a run; this needs
``pip install "vqtoolkit[tensorboard]"``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from vqtoolkit.data.images import tile
from vqtoolkit.errors import ConfigError
from vqtoolkit.model.vqvae import VQVAE
from vqtoolkit.training.evaluation import code_counts

log = logging.getLogger(__name__)

#: Held-out images whose reconstructions are logged each epoch (two rows of 8 over two rows of 8).
SHOWN = 16
#: Held-out images the per-epoch code-usage histogram counts over (bounded cost per epoch).
USAGE_IMAGES = 2048


def summary_writer(log_dir: str | Path) -> Any:
    """A ``SummaryWriter`` for ``log_dir``, or a :class:`ConfigError` saying how to install it."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as err:
        raise ConfigError(
            f'TensorBoard logging needs the tensorboard package: pip install "vqtoolkit[tensorboard]" ({err})'
        ) from err
    return SummaryWriter(log_dir=str(log_dir))


def _grid(images: Tensor, nrow: int = 8) -> Tensor:
    return tile(images.detach().float().cpu().clamp(0, 1), nrow=nrow, padding=2, pad_value=1.0)


class TensorBoardLogger:
    """Callbacks for :func:`~vqtoolkit.training.loop.train_autoencoder`: ``on_step`` and ``on_epoch_end``.

    ``held_out`` are test images (reconstructions and code usage are measured on them).
    """

    def __init__(self, log_dir: str | Path, model: VQVAE, held_out: Tensor, *, every: int = 10) -> None:
        self.writer = summary_writer(log_dir)
        self.model = model
        self.held_out = held_out[:USAGE_IMAGES]
        self.every = max(1, every)
        log.info("TensorBoard events go to %s", log_dir)

    def on_step(self, step: int, values: dict[str, Any]) -> None:
        """Scalars of one optimizer step (tensors are read only on the steps that are logged)."""
        if step % self.every and step != 1:
            return
        for key, value in values.items():
            self.writer.add_scalar(f"step/{key}", float(value), step)

    def on_epoch_end(self, record: dict[str, Any]) -> None:
        """Every number of the epoch's record, a reconstruction grid and the code-usage histogram."""
        epoch = int(record["epoch"])
        for key, value in record.items():
            if key not in ("epoch", "step") and isinstance(value, (int, float)):
                self.writer.add_scalar(f"epoch/{key}", value, epoch)
        model = self.model
        was_training = model.training
        model.eval()  # eval: an EMA codebook must not move while we look at it
        device = next(model.parameters()).device
        with torch.inference_mode():
            originals = self.held_out[:SHOWN].to(device)
            recon = model(originals).reconstruction
        model.train(was_training)
        self.writer.add_image("images/reconstructions", _grid(torch.cat([originals, recon])), epoch)
        log_usage(self.writer, code_counts(model, self.held_out), epoch)
        self.writer.flush()

    def close(self) -> None:
        """Flush and close the event file."""
        self.writer.close()


def log_usage(writer: Any, counts: Tensor, step: int) -> None:
    """``codebook/usage``: one histogram bucket per code index, its height the code's count."""
    counts = counts.detach().cpu().double()
    index = torch.arange(len(counts), dtype=torch.float64)
    total = float(counts.sum())
    writer.add_histogram_raw(
        "codebook/usage",
        min=0.0,
        max=float(len(counts) - 1),
        num=total,
        sum=float((index * counts).sum()),
        sum_squares=float((index**2 * counts).sum()),
        bucket_limits=(index + 0.5).tolist(),
        bucket_counts=counts.tolist(),
        global_step=step,
    )


def log_samples(log_dir: str | Path, samples: Tensor, step: int) -> None:
    """``images/samples``: a grid of prior samples at ``step`` (the run's last epoch)."""
    writer = summary_writer(log_dir)
    try:
        writer.add_image("images/samples", _grid(samples), step)
    finally:
        writer.close()
