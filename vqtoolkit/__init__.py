"""vqtoolkit: a modular VQ-VAE toolkit with swappable components and second-stage priors.

The whole public surface is here::

    import vqtoolkit
    pipe = vqtoolkit.build(encoder="conv", quantizer="vq", decoder="conv", prior="gmm")
    pipe.fit(vqtoolkit.load_dataset("digits"), epochs=5)
    images = pipe.sample(16)
    pipe.save("model.safetensors")
    same = vqtoolkit.load("model.safetensors")
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("vqtoolkit")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"

from vqtoolkit.bundle import load
from vqtoolkit.data import ImageDataset, load_dataset
from vqtoolkit.errors import (
    BundleError,
    ComponentNotFoundError,
    ConfigError,
    DataError,
    ShapeError,
    TrainingError,
    VQToolkitError,
)
from vqtoolkit.model import VQVAE, VQVAEOutput
from vqtoolkit.pipeline import Pipeline, build
from vqtoolkit.registry import available, create

__all__ = [
    "VQVAE",
    "BundleError",
    "ComponentNotFoundError",
    "ConfigError",
    "DataError",
    "ImageDataset",
    "Pipeline",
    "ShapeError",
    "TrainingError",
    "VQToolkitError",
    "VQVAEOutput",
    "__version__",
    "available",
    "build",
    "create",
    "load",
    "load_dataset",
]
