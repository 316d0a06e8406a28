"""The prior contract: sklearn-like ``fit``/``sample`` estimators whose state lives in tensors."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from torch import Tensor

from vqtoolkit.component import Component
from vqtoolkit.errors import ConfigError

Space = Literal["indices", "latents"]


class Prior(Component):
    """A generative model over code indices (``space="indices"``) or encoder latents (``"latents"``).

    * ``fit(data, labels=None, progress=True)`` learns from the frozen stage-1 model's output:
      indices ``(N, *spatial)`` for index priors, channel-first latents ``(N, D, *spatial)`` for
      latent priors;
    * ``sample(n, label=None, temperature=1.0, generator=None)`` returns data of the same kind
      (latent samples are snapped to the nearest codes by the quantizer, not by the prior, so a
      latent prior never needs a copy of the codebook);
    * ``log_prob(data, labels=None)`` returns per-sample log-likelihoods in nats where the prior
      has a discrete likelihood (``has_likelihood``), so priors compare in bits per code.

    Every fitted quantity is a registered buffer or parameter, so bundles store it as tensors.
    """

    kind = "prior"
    space: ClassVar[Space] = "indices"
    has_likelihood: ClassVar[bool] = False
    conditional: bool = False

    def __init__(self, **config: Any) -> None:
        super().__init__(**config)
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))

    @property
    def is_fitted(self) -> bool:
        """Whether ``fit`` has run (or fitted state was loaded)."""
        return bool(self.fitted)

    def fit(self, data: Tensor, labels: Tensor | None = None, *, progress: bool = True) -> Prior:
        """Learn the distribution of ``data``; returns ``self``."""
        raise NotImplementedError

    def sample(
        self,
        n: int,
        *,
        label: int | None = None,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Draw ``n`` samples in this prior's ``space``."""
        raise NotImplementedError

    def log_prob(self, data: Tensor, labels: Tensor | None = None) -> Tensor:
        """Per-sample log-likelihood in nats, summed over positions."""
        raise NotImplementedError(
            f"prior {type(self).__name__} has no likelihood over code indices"
        )

    def check_sample_args(self, n: int, label: int | None, temperature: float) -> None:
        """Shared validation of ``sample``'s arguments, with messages that say what to change."""
        if not self.is_fitted:
            raise ConfigError(f"{type(self).__name__} is not fitted; call fit() first")
        if n < 1:
            raise ConfigError(f"number of samples must be >= 1; got {n}")
        if temperature <= 0:
            raise ConfigError(f"temperature must be > 0; got {temperature}")
        if label is not None and not self.conditional:
            raise ConfigError(
                f"{type(self).__name__} is unconditional, so it cannot sample a label; "
                f"fit a conditional prior (e.g. --prior pixelcnn --conditional) to use --label"
            )
