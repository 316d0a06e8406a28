"""vqtoolkit: a modular VQ-VAE toolkit with swappable components and second-stage priors.

The whole public surface is here:

    import vqtoolkit
    pipe = vqtoolkit.build(encoder="conv", quantizer="vq", decoder="conv", prior="gmm")
    pipe.fit(vqtoolkit.load_dataset("digits"), epochs=5)
    images = pipe.sample(16)
    pipe.save("model.safetensors")
    same = vqtoolkit.load("model.safetensors")
"""

from __future__ import annotations

import logging
from importlib import import_module
from typing import TYPE_CHECKING, Any

from vqtoolkit import _compat
from vqtoolkit._version import __version__

_compat.install()  # the import paths that moved in 0.2 keep working, with a DeprecationWarning

# A library stays silent unless its user asks: the CLI (or an application) attaches a real handler.
logging.getLogger(__name__).addHandler(logging.NullHandler())

if TYPE_CHECKING:
    from vqtoolkit.components.registry import available, create
    from vqtoolkit.data.datasets import ImageDataset, load_dataset
    from vqtoolkit.errors import (
        BundleError,
        ComponentNotFoundError,
        ConfigError,
        DataError,
        ShapeError,
        TrainingError,
        VQToolkitError,
    )
    from vqtoolkit.model.vqvae import VQVAE, VQVAEOutput
    from vqtoolkit.pipeline import Pipeline, build, load
    from vqtoolkit.sharing.pretrained import from_pretrained
    from vqtoolkit.training.config import TrainConfig

#: Where each public name is defined. They are imported on first use, so ``import vqtoolkit`` (and
#: ``vqtool --version``/``--help``) stays cheap until something needs torch.
_EXPORTS = {
    "ImageDataset": "vqtoolkit.data.datasets",
    "load_dataset": "vqtoolkit.data.datasets",
    "BundleError": "vqtoolkit.errors",
    "ComponentNotFoundError": "vqtoolkit.errors",
    "ConfigError": "vqtoolkit.errors",
    "DataError": "vqtoolkit.errors",
    "ShapeError": "vqtoolkit.errors",
    "TrainingError": "vqtoolkit.errors",
    "VQToolkitError": "vqtoolkit.errors",
    "VQVAE": "vqtoolkit.model.vqvae",
    "VQVAEOutput": "vqtoolkit.model.vqvae",
    "Pipeline": "vqtoolkit.pipeline",
    "build": "vqtoolkit.pipeline",
    "load": "vqtoolkit.pipeline",
    "from_pretrained": "vqtoolkit.sharing.pretrained",
    "available": "vqtoolkit.components.registry",
    "create": "vqtoolkit.components.registry",
    "TrainConfig": "vqtoolkit.training.config",
}


def __getattr__(name: str) -> Any:
    """Import a public name from its module on first access (PEP 562)."""
    if name not in _EXPORTS:
        raise AttributeError(f"module 'vqtoolkit' has no attribute {name!r}")
    value = getattr(import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


__all__ = [
    "VQVAE",
    "BundleError",
    "ComponentNotFoundError",
    "ConfigError",
    "DataError",
    "ImageDataset",
    "Pipeline",
    "ShapeError",
    "TrainConfig",
    "TrainingError",
    "VQToolkitError",
    "VQVAEOutput",
    "__version__",
    "available",
    "build",
    "create",
    "from_pretrained",
    "load",
    "load_dataset",
]
