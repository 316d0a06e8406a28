"""Optional dependencies: import one, or say in one line which extra to install."""

from __future__ import annotations

import importlib
from types import ModuleType

from vqtoolkit.errors import ConfigError


def require(module: str, extra: str, purpose: str) -> ModuleType:
    """Import ``module``, which the optional extra ``extra`` installs.

    Args:
        module: The module to import, e.g. ``"huggingface_hub"``.
        extra: The vqtoolkit extra that installs it, e.g. ``"hub"``.
        purpose: What needs it, for the message (``"loading a model by repo id"``).

    Returns:
        The imported module.

    Raises:
        ConfigError: The module is not installed; the message names the ``pip install`` line.
    """
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ConfigError(
            f"{purpose} needs {module.split('.')[0]}, which is not installed: "
            f'pip install "vqtoolkit[{extra}]"'
        ) from err
