"""``gmm``: the classic tutorial's Gaussian mixture over encoder latents, fitted on whole images.

A full-covariance GMM on flattened latents (7·7·64 = 3136 dims on MNIST) is slow and
ill-posed, and one GMM per position ignores how positions depend on each other. So the latents of
each image are flattened and reduced with PCA to ``pca_dim`` dimensions, a GMM is fitted there
(scikit-learn), and samples are mapped back through the PCA basis; the quantizer then snaps each
sampled latent vector to its nearest code. The density is over continuous latents, so it is not
comparable with the bits-per-code likelihood of index priors.

Why the defaults (64 components in 32 PCA dimensions, fitted on 10 000 images): a Gaussian is
unimodal, so a component that has to cover several digits or writing styles samples blends of them
that decode as smudges; 64 components each cover one tight cluster of similar images. More PCA
dimensions add noise that the quantizer snaps to stray codes, fewer lose strokes. 10 000 images
are plenty for 64 full 32×32 covariances. docs/priors.md shows the grids and the variance kept.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from einops import rearrange
from torch import Tensor

from vqtoolkit.components.options import Limit, bounds
from vqtoolkit.errors import ConfigError, ShapeError
from vqtoolkit.priors.base import Prior

if TYPE_CHECKING:  # scikit-learn is imported by fit alone: sampling a fitted prior needs torch only
    from sklearn.mixture import GaussianMixture

COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")


class GMMPrior(Prior):
    """Gaussian mixture over PCA-reduced whole-image latents.

    ``n_components`` mixture components in a ``pca_dim``-dimensional PCA space; at most
    ``max_fit_samples`` images are used to fit (a random subset, seeded by ``seed``).
    """

    space = "latents"
    limits = bounds(n_components=Limit(1), pca_dim=Limit(1), max_fit_samples=Limit(1))
    pca_mean: Tensor
    pca_basis: Tensor
    weights: Tensor
    means: Tensor
    scale_tril: Tensor

    def __init__(
        self,
        n_components: int = 64,
        pca_dim: int = 32,
        covariance_type: str = "full",
        reg_covar: float = 1e-4,
        max_fit_samples: int = 10000,
        seed: int = 0,
        latent_shape: Sequence[int] | None = None,
    ) -> None:
        if covariance_type not in COVARIANCE_TYPES:
            raise ConfigError(
                f"covariance_type must be one of {', '.join(COVARIANCE_TYPES)}; got {covariance_type!r}"
            )
        shape = None if latent_shape is None else [int(s) for s in latent_shape]
        if shape is not None and (not shape or min(shape) < 1):
            raise ConfigError(f"latent_shape must be positive sizes [D, *spatial]; got {shape}")
        super().__init__()
        self._allocate(shape or [1], n_components, pca_dim)

    def _allocate(self, latent_shape: list[int], components: int, dims: int) -> None:
        features = math.prod(latent_shape)  # Python ints: a crafted shape cannot wrap around
        self.register_buffer("pca_mean", torch.zeros(features))
        self.register_buffer("pca_basis", torch.zeros(dims, features))
        self.register_buffer("weights", torch.full((components,), 1.0 / components))
        self.register_buffer("means", torch.zeros(components, dims))
        self.register_buffer("scale_tril", torch.zeros(components, dims, dims))
        self.scale_tril.diagonal(dim1=1, dim2=2).fill_(1.0)  # identities; torch.eye has no C++ meta kernel

    def fit(self, data: Tensor, labels: Tensor | None = None, *, progress: bool = True) -> GMMPrior:
        """Fit PCA then the mixture on latents ``(N, D, *spatial)``.

        BLAS runs on one thread here: EM works on ``pca_dim × pca_dim`` matrices, too small for
        threads to pay off, and threads that spin waiting on each other make it far slower on a
        busy machine (``docs/performance.md``).
        """
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=1, user_api="blas"):
            return self._fit(data)

    def _fit(self, data: Tensor) -> GMMPrior:
        from sklearn.decomposition import PCA
        from sklearn.mixture import GaussianMixture

        if data.ndim < 3 or not data.is_floating_point():
            raise ShapeError(
                f"the gmm prior fits continuous encoder latents (N, D, *spatial); got "
                f"{tuple(data.shape)} {data.dtype}. Index priors (categorical, pixelcnn) fit indices."
            )
        cfg = self._config
        flat = rearrange(data.detach().float().cpu(), "n ... -> n (...)").numpy()
        rows = self.fit_rows(len(flat))
        if rows is not None:
            flat = flat[rows.numpy()]
        dims = min(cfg["pca_dim"], flat.shape[0] - 1, flat.shape[1])
        components = min(cfg["n_components"], flat.shape[0])
        if dims < 1:
            raise ShapeError(f"the gmm prior needs at least 2 samples to fit; got {flat.shape[0]}")
        pca = PCA(n_components=dims, random_state=cfg["seed"]).fit(flat)
        reduced = pca.transform(flat)
        gmm = GaussianMixture(
            n_components=components,
            covariance_type=cfg["covariance_type"],
            reg_covar=cfg["reg_covar"],
            random_state=cfg["seed"],
        ).fit(reduced)
        covariances = _full_covariances(gmm, components, dims)
        self._config.update(latent_shape=list(data.shape[1:]), pca_dim=dims, n_components=components)
        self._allocate(list(data.shape[1:]), components, dims)
        self.pca_mean.copy_(torch.from_numpy(pca.mean_))
        self.pca_basis.copy_(torch.from_numpy(pca.components_))
        self.weights.copy_(torch.from_numpy(gmm.weights_))
        self.means.copy_(torch.from_numpy(gmm.means_))
        self.scale_tril.copy_(torch.linalg.cholesky(torch.from_numpy(covariances)))
        self.fitted.fill_(True)
        return self

    def fit_rows(self, n: int) -> Tensor | None:
        """A seeded random ``max_fit_samples`` of ``n`` rows (``None`` when ``n`` is not more)."""
        limit = self._config["max_fit_samples"]
        if n <= limit:
            return None
        return torch.from_numpy(np.random.default_rng(self._config["seed"]).choice(n, limit, replace=False))

    @property
    def sample_shape(self) -> tuple[int, ...] | None:
        """``latent_shape`` once fitted."""
        shape = self._config["latent_shape"]
        return None if shape is None else tuple(shape)

    @torch.no_grad()
    def _generate(
        self, n: int, label: int | None, temperature: float, generator: torch.Generator | None
    ) -> Tensor:
        """Latents ``(n, D, *spatial)``: a mixture draw in PCA space mapped back to latent space.

        ``temperature`` scales the components' standard deviations (below 1: cleaner, less varied).
        """
        device = self.means.device
        which = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        noise = torch.randn(n, self.means.shape[1], 1, generator=generator, device=device)
        reduced = self.means[which] + temperature * (self.scale_tril[which] @ noise).squeeze(-1)
        flat = reduced @ self.pca_basis + self.pca_mean
        return flat.reshape(n, *self._config["latent_shape"])


def _full_covariances(gmm: GaussianMixture, components: int, dims: int) -> np.ndarray:
    """Every covariance type as ``(components, dims, dims)`` matrices, so sampling has one path."""
    cov = gmm.covariances_
    kind = gmm.covariance_type
    if kind == "full":
        return cov
    if kind == "tied":
        return np.broadcast_to(cov, (components, dims, dims)).copy()
    if kind == "diag":
        return np.stack([np.diag(c) for c in cov])
    return cov[:, None, None] * np.eye(dims)[None]
