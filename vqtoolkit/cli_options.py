"""The ``vqtool`` option grammar, declared once: every command that has an idea spells it the same way.

| option | means |
| --- | --- |
| `-o/--output PATH` | where the command's result goes |
| `-n/--num-samples N` | how many images to draw from a prior |
| `-q/--quiet` | no progress bars and no notes (results and errors still print) |
| `--json` | one machine-readable JSON document on stdout, nothing else there |
| `--seed N` | the seed for weights, shuffling and sampling |
| `--device NAME` | `auto`, `cpu`, `cuda`, `cuda:N` or `mps` |

Results go to stdout; progress bars, per-epoch lines and notes go to stderr through the ``vqtoolkit``
logger (:func:`configure_logging`). This module imports no torch, so ``vqtool --help`` stays fast.
"""

from __future__ import annotations

import logging
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])

#: ``vqtoolkit.data.DATASETS`` and ``vqtoolkit.devices.PRECISIONS`` without importing torch
#: (a test keeps them equal).
DATASET_NAMES = ("cifar10", "digits", "fashion-mnist", "folder", "mnist")
PRECISIONS = ("32", "bf16", "16")


class FiniteFloat(click.FloatRange):
    """A float in a range that is also finite: ``nan`` and ``inf`` are refused at the command line."""

    name = "finite float"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        """Reject ``nan``/``inf`` before the range check (``nan`` compares false with any bound)."""
        number = click.FLOAT.convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return super().convert(number, param, ctx)


def compose(*decorators: Callable[[F], F]) -> Callable[[F], F]:
    """One decorator applying ``decorators`` in the order written (the first is the outermost)."""

    def apply(command: F) -> F:
        for decorator in reversed(decorators):
            command = decorator(command)
        return command

    return apply


def output_option(default: Path | None, help: str) -> Callable[[F], F]:
    """``-o/--output PATH`` (required when ``default`` is ``None``)."""
    return click.option(
        "-o",
        "--output",
        type=click.Path(dir_okay=False, path_type=Path),
        default=default,
        required=default is None,
        show_default=default is not None,
        help=help,
    )


def num_samples_option(
    default: int = 64, help: str = "How many images to draw from the prior."
) -> Callable[[F], F]:
    """``-n/--num-samples N``."""
    return click.option(
        "-n",
        "--num-samples",
        "num_samples",
        type=click.IntRange(min=1),
        default=default,
        show_default=True,
        help=help,
    )


def quiet_option() -> Callable[[F], F]:
    """``-q/--quiet``: no progress bars or notes."""
    return click.option("-q", "--quiet", is_flag=True, help="No progress bars or notes on stderr.")


def json_option(help: str = "Print one machine-readable JSON document on stdout.") -> Callable[[F], F]:
    """``--json``, passed to the command as ``as_json``."""
    return click.option("--json", "as_json", is_flag=True, help=help)


def seed_option(help: str = "Seed for weights, shuffling and sampling.") -> Callable[[F], F]:
    """``--seed N`` (default 0)."""
    return click.option("--seed", type=int, default=0, show_default=True, help=help)


def device_option(default: str = "auto") -> Callable[[F], F]:
    """``--device NAME``."""
    return click.option(
        "--device",
        default=default,
        show_default=True,
        help="auto, cpu, cuda, cuda:N or mps (auto picks cuda, then mps, then cpu).",
    )


def dataset_option(default: str | None, help: str) -> Callable[[F], F]:
    """``--data NAME``, passed to the command as ``dataset``."""
    return click.option(
        "--data",
        "dataset",
        type=click.Choice(DATASET_NAMES),
        default=default,
        show_default=default is not None,
        help=help,
    )


def data_root_option(help: str) -> Callable[[F], F]:
    """``--data-root DIR``."""
    return click.option(
        "--data-root", type=click.Path(file_okay=False, path_type=Path), default=None, help=help
    )


def data_options(command: F) -> F:
    """``--data`` and ``--data-root`` for commands that read a bundle's dataset again."""
    return compose(
        dataset_option(None, "Dataset [default: the one the bundle was trained on]."),
        data_root_option("Folder holding the dataset in torchvision's layout (needed for mnist)."),
    )(command)


class _StderrHandler(logging.Handler):
    """Log records as plain lines on stderr, written between tqdm's progress bars."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm import tqdm

            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # logging must never crash the command
            self.handleError(record)


def configure_logging(*, quiet: bool = False) -> None:
    """Send the ``vqtoolkit`` logger's INFO lines (WARNING and up when ``quiet``) to stderr.

    Idempotent: a second call replaces the handler it added, so repeated in-process runs (tests) do
    not print each line twice.
    """
    logger = reset_logging()
    logger.addHandler(_StderrHandler())
    logger.setLevel(logging.WARNING if quiet else logging.INFO)


def reset_logging() -> logging.Logger:
    """Remove what :func:`configure_logging` added: the library is silent again (run when a command ends)."""
    logger = logging.getLogger("vqtoolkit")
    for handler in [h for h in logger.handlers if isinstance(h, _StderrHandler)]:
        logger.removeHandler(handler)
    logger.setLevel(logging.NOTSET)
    return logger


def trust_option(command: F) -> F:
    """``--trust-provider``, for commands that load a bundle (see :func:`vqtoolkit.bundle.load`)."""
    return click.option(
        "--trust-provider",
        is_flag=True,
        help="Load components installed from another distribution than the bundle declares.",
    )(command)
