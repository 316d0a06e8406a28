"""``python -m vqtoolkit`` runs the ``vqtool`` command line."""

from vqtoolkit.cli import main

main()
