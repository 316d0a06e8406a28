"""Second-stage priors: generative models over what the frozen stage-1 encoder produces.

Plugin authors subclass :class:`Prior` (any space) or :class:`IndexPrior` (code grids: it checks
indices, labels and the grid shape, and gives conditional priors a marginal likelihood).
"""

from vqtoolkit.priors.base import IndexPrior, Prior

__all__ = ["IndexPrior", "Prior"]
