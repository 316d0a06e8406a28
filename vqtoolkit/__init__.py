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

from vqtoolkit.bundle import load  # noqa: E402
from vqtoolkit.data import ImageDataset, load_dataset  # noqa: E402
from vqtoolkit.errors import (  # noqa: E402
    BundleError,
    ComponentNotFoundError,
    ConfigError,
    DataError,
    ShapeError,
    TrainingError,
    VQToolkitError,
)
from vqtoolkit.model import VQVAE, VQVAEOutput  # noqa: E402
from vqtoolkit.pipeline import Pipeline, build  # noqa: E402
from vqtoolkit.registry import available, create  # noqa: E402

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
