"""The stage-1 model (:class:`VQVAE`) and its assembly from a bundle's components."""

from vqtoolkit.model.vqvae import VQVAE, VQVAEOutput

__all__ = ["VQVAE", "VQVAEOutput"]
