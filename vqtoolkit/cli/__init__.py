"""The ``vqtool`` command line: build, sample and inspect VQ-VAE models from registered components.

Each module holds a few commands and does only command-line work (parse, call the library, print);
the option grammar is declared once in :mod:`vqtoolkit.cli.options`. Nothing here imports torch at
import time, so ``vqtool --help`` and ``--version`` stay fast: the commands import it when they run.
"""

from __future__ import annotations

import click

from vqtoolkit import __version__
from vqtoolkit.cli.bundles import fit_prior, inspect, plugins, report_page
from vqtoolkit.cli.editing import inpaint
from vqtoolkit.cli.options import configure_logging, reset_logging
from vqtoolkit.cli.sharing import export, pull, push
from vqtoolkit.cli.training import build, train
from vqtoolkit.cli.using import evaluate, interpolate, reconstruct, sample


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="vqtool")
def main() -> None:
    """vqtool: train, sample and inspect modular VQ-VAEs.

    Results go to stdout (one JSON document with --json); progress bars and notes go to stderr.

    \b
    Example:
      vqtool build --encoder conv --prior gmm
      vqtool sample vqtool-out/model.safetensors -n 64 -o grid.png
    """
    configure_logging()
    click.get_current_context().call_on_close(reset_logging)


for _command in (
    build,
    train,
    fit_prior,
    sample,
    reconstruct,
    interpolate,
    inpaint,
    evaluate,
    report_page,
    inspect,
    plugins,
    push,
    pull,
    export,
):
    main.add_command(_command)

__all__ = ["main"]
