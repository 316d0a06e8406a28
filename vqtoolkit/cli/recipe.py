"""Stage 1's command-line options: training (``--epochs``, ``--lr``, ...) and the VQGAN recipe.

Their names are :class:`vqtoolkit.TrainConfig`'s fields, so they reach the loop as they are;
:func:`stage1_options` is everything ``build`` and ``train`` share. docs/training.md explains the
recipe (``--adversarial-weight`` and friends) and when it helps.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import click

from vqtoolkit.cli.options import (
    PRECISIONS,
    F,
    FiniteFloat,
    choice_option,
    component_options,
    compose,
    count_option,
    data_options,
    device_option,
    image_options,
    json_option,
    output_option,
    quiet_option,
    seed_option,
)
from vqtoolkit.runtime.schedule import DEFAULT_LR, DEFAULT_SCHEDULE, SCHEDULES

#: ``vqtoolkit.training.config``'s choices, without importing torch (a test keeps them equal).
RECONSTRUCTION_LOSSES = ("mse", "l1")
ADVERSARIAL_LOSSES = ("hinge", "non-saturating")


def _weight(name: str, help: str) -> Callable[[F], F]:
    """A loss weight, at least 0 (default 0: the term is off).

    Non-finite weights pass click's range check and are refused by :class:`vqtoolkit.TrainConfig`.
    """
    return click.option(name, type=click.FloatRange(min=0), default=0.0, show_default=True, help=help)


def recipe_options(command: F) -> F:
    """Add the reconstruction, perceptual and adversarial options of stage 1 to ``command``."""
    return compose(
        choice_option(
            "--reconstruction-loss",
            choices=RECONSTRUCTION_LOSSES,
            default="mse",
            help="The reconstruction term (metrics report the MSE either way).",
        ),
        _weight("--perceptual-weight", "Weight of the perceptual loss (0: none)."),
        click.option(
            "--perceptual-features",
            default="ssim",
            show_default=True,
            help="ssim, ms-ssim (pip install 'vqtoolkit[perceptual]') or a local torchvision VGG16 "
            "weights file (never downloaded).",
        ),
        _weight(
            "--adversarial-weight",
            "VQGAN recipe: weight of a PatchGAN's adversarial loss, times the adaptive weight (0: off).",
        ),
        count_option(
            "--adversarial-start",
            default=0,
            minimum=0,
            help="Step from which the generator's adversarial term counts (the discriminator trains "
            "from the first step).",
        ),
        choice_option(
            "--adversarial-loss", choices=ADVERSARIAL_LOSSES, default="hinge", help="The GAN objective."
        ),
        click.option(
            "--discriminator-lr",
            type=click.FloatRange(min=0, min_open=True),
            default=None,
            help="The discriminator's peak learning rate [default: --lr].",
        ),
        count_option("--discriminator-layers", default=2, help="PatchGAN stride-2 layers."),
        count_option("--discriminator-channels", default=16, help="PatchGAN first width."),
        click.option(
            "--discriminator-spectral-norm",
            is_flag=True,
            help="Spectral normalisation in the discriminator (steadier against a collapse).",
        ),
    )(command)


def training_options(command: F) -> F:
    """The stage-1 training options; their names are :class:`vqtoolkit.TrainConfig`'s fields."""
    return compose(
        count_option("--epochs", help="Stage-1 epochs [default: per dataset; the total when resuming]."),
        count_option(
            "--batch-size",
            help="Images per optimizer step, over all processes [default: per dataset; 32 for digits, "
            "128 for the others].",
        ),
        click.option(
            "--lr",
            type=FiniteFloat(min=0, min_open=True),
            default=DEFAULT_LR,
            show_default=True,
            help="Adam's peak learning rate.",
        ),
        choice_option(
            "--lr-schedule",
            choices=SCHEDULES,
            default=DEFAULT_SCHEDULE,
            help="cosine: 5% warm-up, then down to zero at the last epoch; constant: --lr throughout.",
        ),
        seed_option("Seed for weights, shuffling, the prior's fit and sampling."),
        device_option(),
        choice_option(
            "--precision",
            choices=PRECISIONS,
            default="32",
            help="Mixed precision for training: 32, bf16 (CPU/CUDA) or 16 (CUDA/MPS).",
        ),
        click.option(
            "--checkpoint",
            "checkpoint_path",
            type=click.Path(dir_okay=False, path_type=Path),
            default=None,
            help="Checkpoint written each epoch [default: OUTPUT-checkpoint.safetensors].",
        ),
        click.option(
            "--resume", is_flag=True, help="Continue from --checkpoint (same options; --epochs may grow)."
        ),
        click.option(
            "--allow-divergence",
            is_flag=True,
            help="Keep a run whose loss diverged (worse than predicting the mean) instead of failing.",
        ),
        click.option(
            "--log",
            "log_to",
            type=(click.Choice(["tensorboard"]), click.Path(file_okay=False, path_type=Path)),
            default=None,
            metavar="tensorboard DIR",
            help="Also log scalars, image grids and code usage for TensorBoard in DIR "
            '(pip install "vqtoolkit[tensorboard]"); the JSON-lines metrics log is always written.',
        ),
    )(command)


def stage1_options(command: F) -> F:
    """Everything ``build`` and ``train`` share: components, data, training, device and outputs."""
    return compose(
        component_options,
        data_options("digits"),
        image_options,
        training_options,
        recipe_options,
        output_option(
            Path("vqtool-out/model.safetensors"),
            "Bundle path; checkpoint, metrics log, plots and grids go beside it.",
        ),
        quiet_option(),
        json_option("Print only a final machine-readable summary on stdout."),
    )(command)
