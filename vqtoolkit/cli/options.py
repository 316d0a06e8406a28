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

import functools
import logging
import math
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from vqtoolkit.cli.configs import config_option

if TYPE_CHECKING:
    from vqtoolkit.pipeline import Pipeline

F = TypeVar("F", bound=Callable[..., Any])

#: ``vqtoolkit.data.datasets.DATASETS`` and ``vqtoolkit.runtime.devices.PRECISIONS`` without importing torch
#: (a test keeps them equal).
DATASET_NAMES = ("cifar10", "digits", "fashion-mnist", "folder", "mnist", "photos", "shapes")
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
    return count_option("-n", "--num-samples", "num_samples", default=default, help=help)


def temperature_option(help: str) -> Callable[[F], F]:
    """``--temperature T`` (> 0, default 1) for drawing from a prior."""
    return click.option(
        "--temperature", type=FiniteFloat(min=0, min_open=True), default=1.0, show_default=True, help=help
    )


def guidance_option() -> Callable[[F], F]:
    """``--guidance G`` (>= 0): classifier-free guidance of a prior fitted with a label or clusters."""
    return click.option(
        "--guidance",
        type=FiniteFloat(min=0),
        default=None,
        help="Classifier-free guidance of pixelcnn, transformer or maskgit fitted with a label or clusters "
        "(1: none, above 1: samples truer to their label or cluster).  "
        "[default: the bundle's: 1.5 with a label or clusters]",
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


def data_options(default: str | None) -> Callable[[F], F]:
    """``--data NAME`` (passed as ``dataset``) and ``--data-root DIR``, declared once for every command.

    ``default`` is the dataset a training command uses; ``None`` for commands that read a bundle,
    whose default is the dataset the bundle was trained on.
    """
    fallback = "" if default is not None else " [default: the one the bundle was trained on]"
    return compose(
        click.option(
            "--data",
            "dataset",
            type=click.Choice(DATASET_NAMES),
            default=default,
            show_default=default is not None,
            help=f"Dataset; `digits` (grey), `shapes` and `photos` (colour) need no files{fallback}.",
        ),
        click.option(
            "--data-root",
            type=click.Path(file_okay=False, path_type=Path),
            default=None,
            help="Folder holding the dataset (ROOT/MNIST/raw, ROOT/FashionMNIST/raw, "
            "ROOT/cifar-10-batches-py, or a folder of images for --data folder).",
        ),
    )


def count_option(*names: str, help: str, default: int | None = None, minimum: int = 1) -> Callable[[F], F]:
    """An option taking a whole number >= ``minimum``; ``default=None`` lets the library decide."""
    return click.option(
        *names,
        type=click.IntRange(min=minimum),
        default=default,
        show_default=default is not None,
        help=help,
    )


def choice_option(*names: str, choices: Sequence[str], default: str, help: str) -> Callable[[F], F]:
    """An option taking one of ``choices``, ``default`` shown in ``--help``."""
    return click.option(*names, type=click.Choice(choices), default=default, show_default=True, help=help)


def component_options(command: F) -> F:
    """``--encoder``, ``--quantizer``, ``--decoder``, their ``--KIND-option`` s and the shared model sizes."""
    return compose(
        click.option(
            "--encoder",
            default=None,
            help="Registered encoder name (see `vqtool plugins`; `resnet` for colour images) "
            "[default: the dataset's, conv for every built-in one].",
        ),
        config_option("encoder"),
        click.option(
            "--quantizer",
            default="ema",
            show_default=True,
            help="Registered quantizer name (`vq` is the classic tutorial layer).",
        ),
        config_option("quantizer"),
        click.option(
            "--decoder",
            default=None,
            help="Registered decoder name [default: the --encoder's name where a decoder has it, "
            "else the dataset's, as for --encoder].",
        ),
        config_option("decoder"),
        count_option(
            "--num-codes",
            "--codes",
            help="Codebook size K [default: per dataset: 64 for digits, 512 otherwise].",
        ),
        count_option(
            "--dim", help="Code dimension D [default: the quantizer's: 64, or len(levels) = 4 for fsq]."
        ),
        click.option(
            "--beta",
            type=FiniteFloat(min=0),
            default=None,
            help="Commitment weight β [default: the quantizer's, 0.25; fsq has none].",
        ),
    )(command)


def image_options(command: F) -> F:
    """``--image-size`` and ``--stream``: how a training command reads its dataset's images."""
    return compose(
        count_option(
            "--image-size",
            help="Resize images to this square size (shapes and photos are made at it) [default: as "
            "stored; 32 for folder, shapes and photos].",
        ),
        click.option(
            "--stream/--no-stream",
            default=None,
            help="--data folder: read images from disk batch by batch (DataLoader workers) instead of "
            "into memory [default: stream when they would not fit comfortably in RAM].",
        ),
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

    Under ``torchrun`` only rank 0 says what it is doing; the other processes (``RANK`` > 0) report
    warnings and errors alone, so a run's log reads as one process's. Idempotent: a second call
    replaces the handler it added, so repeated in-process runs (tests) do not print each line twice.
    """
    logger = reset_logging()
    logger.addHandler(_StderrHandler())
    other_rank = os.environ.get("RANK", "0") not in ("", "0")
    logger.setLevel(logging.WARNING if quiet or other_rank else logging.INFO)


def reset_logging() -> logging.Logger:
    """Remove what :func:`configure_logging` added: the library is silent again (run when a command ends)."""
    logger = logging.getLogger("vqtoolkit")
    for handler in [h for h in logger.handlers if isinstance(h, _StderrHandler)]:
        logger.removeHandler(handler)
    logger.setLevel(logging.NOTSET)
    return logger


@dataclass(frozen=True)
class BundleSource:
    """The bundle a command reads: its path, the device to load it on, whether to trust its provider."""

    path: Path
    device: str = "cpu"
    trust_provider: bool = False

    def load(self) -> Pipeline:
        """The bundle's pipeline on :attr:`device` (see :func:`vqtoolkit.load` for ``trust_provider``).

        The file's header is checked before torch is imported, so a file that is no bundle is
        refused at once.
        """
        from vqtoolkit.storage.header import read_header

        read_header(self.path)
        import vqtoolkit

        return vqtoolkit.load(self.path, trust_provider=self.trust_provider).to(self.device)


def bundle_source(*, device: bool = True) -> Callable[[F], F]:
    """``BUNDLE``, ``--device`` (unless ``device=False``) and ``--trust-provider`` as one argument.

    The command receives them as ``bundle``, a :class:`BundleSource`; put this decorator below the
    command's other options, so these come last in ``--help``.
    """

    def decorate(command: F) -> F:
        @functools.wraps(command)
        def wrapper(*args: Any, bundle: Path, trust_provider: bool, **kwargs: Any) -> Any:
            source = BundleSource(bundle, kwargs.pop("device", "cpu"), trust_provider)
            return command(*args, bundle=source, **kwargs)

        options = [click.argument("bundle", type=click.Path(dir_okay=False, path_type=Path))]
        options += [device_option("cpu")] if device else []
        return compose(*options, trust_option)(wrapper)  # type: ignore[return-value]

    return decorate


def trust_option(command: F) -> F:
    """``--trust-provider``, for commands that load a bundle (see :func:`vqtoolkit.pipeline.load`)."""
    return click.option(
        "--trust-provider",
        is_flag=True,
        help="Load components installed from another distribution than the bundle declares.",
    )(command)
