"""What every ``vqtool`` command shares: one-line errors, JSON output, locks, loading a bundle."""

from __future__ import annotations

import functools
import json
import os
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from vqtoolkit.errors import VQToolkitError

if TYPE_CHECKING:  # torch and the models load inside the commands, so --help and --version stay fast
    pass

F = TypeVar("F", bound=Callable[..., Any])


def friendly_errors(command: F) -> F:
    """Turn vqtoolkit's own errors, failed writes and exhausted memory into a one-line ``Error: ...``."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except VQToolkitError as err:
            raise click.ClickException(str(err)) from err
        except OSError as err:  # a folder that vanished, a full disk, a read-only mount, ...
            where = f" {err.filename}" if err.filename else ""
            raise click.ClickException(f"cannot write or read{where}: {err.strerror or err}") from err
        except (MemoryError, RuntimeError) as err:
            if not isinstance(err, MemoryError) and not _out_of_memory(err):
                raise
            raise click.ClickException(
                "ran out of memory; choose smaller sizes (--num-codes, --dim, --image-size, --batch-size, -n)"
            ) from err

    return wrapper  # type: ignore[return-value]


def _out_of_memory(err: BaseException) -> bool:
    """Whether ``err`` is torch's out-of-memory error (CPU or GPU), recognised without importing torch."""
    return type(err).__name__ == "OutOfMemoryError" or "can't allocate memory" in str(err)


def emit_json(document: Any) -> None:
    """The command's one JSON document, on stdout."""
    click.echo(json.dumps(document, indent=2))


def text(value: Any) -> str:
    """A value for people: floats to 5 significant digits, ``None`` as ``n/a`` (never Python's ``None``)."""
    if value is None:
        return "n/a"
    return f"{value:.5g}" if isinstance(value, float) else str(value)


def hold_output(output: Path) -> None:
    """Lock ``output`` until the command ends: a second run writing it is refused (see ``_util.lock``)."""
    from vqtoolkit._util.lock import output_lock

    click.get_current_context().with_resource(output_lock(output))


def resume_hint() -> str:
    """The command line that was run, with ``--resume`` added (under torchrun, with torchrun in front)."""
    world, local = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    args = [sys.argv[0] if world > 1 else "vqtool", *sys.argv[1:]]
    command = shlex.join(args if "--resume" in args else [*args, "--resume"])
    if world == 1:
        return command
    launcher = f"torchrun --nproc_per_node {local}" if world == local else "torchrun <the same options>"
    return f"{launcher} {command}"


def check_sample_memory(num_samples: int, image_shape: Any) -> None:
    """Refuse a sample count whose images (and the decoder's activations, ~8× as much) cannot fit."""
    import math

    from vqtoolkit._util.memory import check_fits

    check_fits(
        f"{num_samples} samples of {'×'.join(map(str, image_shape))} pixels",
        num_samples * math.prod(image_shape) * 4 * 8,
        "draw fewer with a smaller -n",
    )


def check_image_output(output: Path) -> None:
    """Fail before any work on an image ``-o`` whose suffix is unknown or whose place is unwritable."""
    from vqtoolkit._util.atomic import check_writable
    from vqtoolkit._util.image_formats import check_image_path

    check_image_path(output)
    check_writable(output)


def prior_seed(prior: str | None, seed: int) -> dict[str, Any]:
    """``{"seed": seed}`` for a prior that takes a seed (gmm, pixelcnn, ...), else nothing."""
    from vqtoolkit.components import registry

    if prior is None:
        return {}
    accepted = registry.accepted_options(registry.get_class("prior", prior))
    return {"seed": seed} if accepted is None or "seed" in accepted else {}
