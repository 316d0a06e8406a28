"""Exception types users can catch: each message names the problem and the fix."""

from __future__ import annotations


class VQToolkitError(Exception):
    """Base class of every error vqtoolkit raises on purpose."""


class ComponentNotFoundError(VQToolkitError, KeyError):
    """A component name that no installed distribution registers."""

    def __str__(self) -> str:  # KeyError would wrap the message in quotes
        return str(self.args[0]) if self.args else ""


class ConfigError(VQToolkitError, ValueError):
    """A component or pipeline configured with values it cannot work with."""


class ShapeError(VQToolkitError, ValueError):
    """A tensor whose shape does not match what a component expects."""


class TrainingError(VQToolkitError, RuntimeError):
    """Training that cannot go on, e.g. a loss that became NaN or infinite."""


class DataError(VQToolkitError, ValueError):
    """A dataset that cannot be found or read."""


class BundleError(VQToolkitError, ValueError):
    """A bundle file that is corrupt, foreign, or needs a component that is not installed."""


class TrainingInterrupted(TrainingError):
    """Training stopped by Ctrl-C after saving a checkpoint; the message says how to resume."""


class TrainingDiverged(TrainingError):
    """Training whose loss or reconstructions show it diverged (finite, but no better than the mean)."""


class CheckpointError(VQToolkitError, ValueError):
    """A training checkpoint that is missing, unreadable, or from a different configuration."""
