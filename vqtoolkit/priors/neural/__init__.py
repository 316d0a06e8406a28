"""Priors that are neural networks trained by gradient descent: their base, shared loop and checkpoint."""

from vqtoolkit.priors.neural.base import NeuralIndexPrior, auto_dropout, cross_entropy_loss, single_thread

__all__ = ["NeuralIndexPrior", "auto_dropout", "cross_entropy_loss", "single_thread"]
