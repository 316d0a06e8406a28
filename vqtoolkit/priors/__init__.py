"""Second-stage priors: generative models over what the frozen stage-1 encoder produces."""

from vqtoolkit.priors.base import Prior

__all__ = ["Prior"]
