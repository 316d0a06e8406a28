"""One training run's model and files: a pipeline built for its dataset, its pictures beside the bundle.

``vqtool build`` and ``vqtool train`` call these, and so can any script that wants the same run:
:func:`build_for` fills in what the dataset decides (image channels, codebook size), and
:func:`stage1_pictures`, :func:`sample_grid` and :func:`report_page` write the files a run leaves
next to its bundle (``runs/m.safetensors`` → ``runs/m-reconstructions.png``, ...).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from vqtoolkit.components import registry
from vqtoolkit.data.datasets import ImageDataset
from vqtoolkit.data.images import save_grid
from vqtoolkit.data.streaming import as_tensor
from vqtoolkit.pipeline import Pipeline, build
from vqtoolkit.reporting import plots
from vqtoolkit.reporting.report import write_report
from vqtoolkit.training.evaluation import code_counts

#: Held-out images in a run's reconstruction grid (originals above, reconstructions below).
RECONSTRUCTIONS = 32


def beside(output: Path, suffix: str) -> Path:
    """A file next to the bundle: ``runs/m.safetensors`` → ``runs/m-<suffix>``."""
    return output.with_name(f"{output.stem}-{suffix}")


def autoencoder_names(data: ImageDataset, encoder: str | None, decoder: str | None) -> tuple[str, str]:
    """The encoder and decoder a run uses: those given, else the dataset's ``default_autoencoder``.

    A decoder left unsaid follows a given encoder's name where a decoder is registered under it
    (``--encoder resnet`` alone gets the ``resnet`` decoder), else the dataset's default.
    """
    encoder = encoder or data.default_autoencoder
    if decoder is None:
        decoder = encoder if encoder in registry.available("decoder") else data.default_autoencoder
    return encoder, decoder


def build_for(
    data: ImageDataset,
    encoder: str | None = None,
    quantizer: str = "ema",
    decoder: str | None = None,
    prior: str | None = "gmm",
    *,
    num_codes: int | None = None,
    **options: Any,
) -> Pipeline:
    """:func:`~vqtoolkit.build` with the dataset's image channels and, unless given, its choices.

    The encoder and decoder default to the dataset's (:func:`autoencoder_names`); the codebook size
    follows the dataset (``data.default_num_codes``: 64 for the small embedded digits, 256 for
    shapes, 512 for the rest) for a quantizer that has one; ``options`` (``dim``, ``beta``,
    ``encoder_config``, ``prior_config``, ``seed``, ...) go to :func:`~vqtoolkit.build` unchanged.
    """
    encoder, decoder = autoencoder_names(data, encoder, decoder)
    if num_codes is None and registry.takes("quantizer", quantizer, "num_codes"):  # fsq takes none
        num_codes = data.default_num_codes
    return build(
        encoder, quantizer, decoder, prior, in_channels=data.image_shape[0], num_codes=num_codes, **options
    )


def stage1_pictures(pipe: Pipeline, data: ImageDataset, output: Path) -> dict[str, Path]:
    """Reconstructions, training curves and codebook usage of a trained stage 1, beside ``output``."""
    originals = as_tensor(data.test_images[:RECONSTRUCTIONS])
    return {
        "reconstructions": save_grid(
            torch.cat([originals, pipe.reconstruct(originals).cpu()]),
            beside(output, "reconstructions.png"),
            nrow=8,
            sections=2,
        ),
        "curves": plots.training_curves(
            pipe.info["history"], beside(output, "training.png"), title=data.describe()
        ),
        "code_usage": plots.code_usage(
            code_counts(pipe.model, data.test_images), beside(output, "codes.png")
        ),
    }


def sample_grid(pipe: Pipeline, n: int, output: Path, *, seed: int = 0) -> Path:
    """A grid of ``n`` prior samples (drawn with ``seed``) beside ``output``."""
    samples = pipe.sample(n, generator=torch.Generator().manual_seed(seed))
    return save_grid(samples, beside(output, "samples.png"))


def report_page(pipe: Pipeline, data: ImageDataset | None, output: Path, *, seed: int = 0) -> Path:
    """The run's HTML report (:mod:`vqtoolkit.reporting.report`) beside ``output``."""
    return write_report(pipe, beside(output, "report.html"), data, bundle=output, seed=seed)
