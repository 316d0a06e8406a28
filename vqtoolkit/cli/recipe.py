"""The VQGAN recipe's stage-1 options (``--adversarial-weight`` and friends) for ``build`` and ``train``.

Their names are :class:`vqtoolkit.TrainConfig`'s fields, so they reach the loop like every other
training option; docs/training.md explains the recipe and when it helps.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])

#: ``vqtoolkit.training.config``'s choices, without importing torch (a test keeps them equal).
RECONSTRUCTION_LOSSES = ("mse", "l1")
ADVERSARIAL_LOSSES = ("hinge", "non-saturating")


def _integer(name: str, default: int, help: str, *, least: int = 1) -> Callable[[F], F]:
    """An integer option of at least ``least``."""
    return click.option(name, type=click.IntRange(min=least), default=default, show_default=True, help=help)


def recipe_options(command: F) -> F:
    """Add the reconstruction, perceptual and adversarial options of stage 1 to ``command``.

    Non-finite weights pass click's range check and are refused by :class:`vqtoolkit.TrainConfig`.
    """
    weight = click.FloatRange(min=0)
    for option in reversed(
        (
            click.option(
                "--reconstruction-loss",
                type=click.Choice(RECONSTRUCTION_LOSSES),
                default="mse",
                show_default=True,
                help="The reconstruction term (metrics report the MSE either way).",
            ),
            click.option(
                "--perceptual-weight",
                type=weight,
                default=0.0,
                show_default=True,
                help="Weight of the perceptual loss (0: none).",
            ),
            click.option(
                "--perceptual-features",
                default="ssim",
                show_default=True,
                help="ssim, ms-ssim (pip install 'vqtoolkit[perceptual]') or a local torchvision VGG16 "
                "weights file (never downloaded).",
            ),
            click.option(
                "--adversarial-weight",
                type=weight,
                default=0.0,
                show_default=True,
                help="VQGAN recipe: weight of a PatchGAN's adversarial loss, times the adaptive "
                "weight (0: off).",
            ),
            click.option(
                "--adversarial-start",
                type=click.IntRange(min=0),
                default=0,
                show_default=True,
                help="Step from which the generator's adversarial term counts (the discriminator trains "
                "from the first step).",
            ),
            click.option(
                "--adversarial-loss",
                type=click.Choice(ADVERSARIAL_LOSSES),
                default="hinge",
                show_default=True,
                help="The GAN objective.",
            ),
            click.option(
                "--discriminator-lr",
                type=click.FloatRange(min=0, min_open=True),
                default=None,
                help="The discriminator's peak learning rate [default: --lr].",
            ),
            _integer("--discriminator-layers", 2, "PatchGAN stride-2 layers."),
            _integer("--discriminator-channels", 64, "PatchGAN first width."),
            click.option(
                "--discriminator-spectral-norm",
                is_flag=True,
                help="Spectral normalisation in the discriminator (steadier against a collapse).",
            ),
        )
    ):
        command = option(command)
    return command
