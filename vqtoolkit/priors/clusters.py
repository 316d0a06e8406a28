"""Global clusters of code grids: an unsupervised stand-in for a class label.

An autoregressive prior told which digit to draw keeps the whole image coherent; one that is not
often loses the global shape. ``clusters=k`` (any :class:`~vqtoolkit.priors.clustered.ClusteredIndexPrior`)
gives an unconditional prior a global variable of its own: :func:`cluster_grids` groups the
training grids by k-means on their stage-1 code vectors (reduced by PCA), the prior learns
``p(x | c)`` conditioned on each grid's cluster ``c`` and ``p(c)`` from the cluster sizes, samples
by drawing ``c`` first, and scores ``p(x) = Σ_c p(c) p(x | c)``. The fitted k-means is kept as
tensors (:class:`GridClusters`), so a prior with many clusters can sum over the few nearest a grid
instead of all of them.
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass

import torch
from torch import Tensor

#: At most this many grids (a seeded subsample) fit the PCA and k-means; every grid is then assigned.
MAX_FIT_ROWS = 10_000
#: Dimensions the flattened code vectors of a grid are reduced to before k-means.
PCA_DIM = 32
#: Width of the random code vectors used when no codebook is given (Hamming-like distances).
RANDOM_DIM = 16
#: ``clusters="auto"``: about one cluster per this many training grids, within :data:`AUTO_LIMITS`.
GRIDS_PER_CLUSTER = 200
#: Fewest and most clusters of ``clusters="auto"`` (``digits``: 16; MNIST: 256).
AUTO_LIMITS = (16, 256)
#: Grids assigned to their clusters at a time (bounds the memory of their features).
CHUNK = 4096

logger = logging.getLogger(__name__)


def auto_clusters(rows: int) -> int:
    """Clusters for ``rows`` training grids: ``rows / GRIDS_PER_CLUSTER`` within :data:`AUTO_LIMITS`.

    Never more than half the grids (at least 2), so a tiny data set still fits.
    """
    low, high = AUTO_LIMITS
    return max(2, min(high, max(low, rows // GRIDS_PER_CLUSTER), rows // 2))


def grid_features(grids: Tensor, vectors: Tensor) -> Tensor:
    """``(N, H·W·D)`` float features of index grids ``(N, H, W)``: each code replaced by its vector."""
    return vectors[grids.reshape(len(grids), -1).long().to(vectors.device)].reshape(len(grids), -1)


def random_vectors(num_codes: int, seed: int) -> Tensor:
    """Seeded random code vectors ``(num_codes, RANDOM_DIM)``: grid distances then count differing codes."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(num_codes, RANDOM_DIM, generator=generator) / math.sqrt(RANDOM_DIM)


@dataclass
class GridClusters:
    """A fitted k-means of code grids, as tensors: any grid's distance to every cluster centre.

    ``vectors`` ``(K, D)`` turn a grid into features, ``axes`` ``(PCA_DIM, H·W·D)`` project them
    (zero rows where the PCA had fewer components) and ``centers`` ``(k, PCA_DIM)`` are the
    centres in those coordinates, the PCA mean folded in.
    """

    vectors: Tensor
    axes: Tensor
    centers: Tensor

    def distances(self, grids: Tensor) -> Tensor:
        """Squared distance ``(N, k)`` of every grid ``(N, H, W)`` to every centre, in chunks."""
        parts = [
            torch.cdist(grid_features(part, self.vectors) @ self.axes.T, self.centers).square()
            for part in grids.split(CHUNK)
        ]
        return torch.cat(parts) if parts else grids.new_zeros((0, len(self.centers)), dtype=torch.float)

    def assign(self, grids: Tensor) -> Tensor:
        """The nearest cluster ``(N,)`` (long) of every grid."""
        return self.distances(grids).argmin(1)

    def nearest(self, grids: Tensor, count: int) -> Tensor:
        """The ``count`` nearest clusters ``(N, count)`` of every grid, nearest first."""
        return self.distances(grids).topk(count, dim=1, largest=False).indices


def cluster_grids(
    grids: Tensor,
    clusters: int,
    vectors: Tensor | None = None,
    *,
    num_codes: int | None = None,
    seed: int = 0,
) -> tuple[GridClusters, Tensor]:
    """k-means with ``clusters`` centres of index grids ``(N, H, W)``, and every grid's cluster.

    Returns the fitted :class:`GridClusters` and the cluster ``(N,)`` (long, in ``[0, clusters)``)
    of every grid. ``vectors`` ``(num_codes, D)`` are the stage-1 code vectors (the quantizer's
    codebook), so grids that decode alike cluster together; without them, seeded random vectors make
    the distance count the positions whose codes differ. scikit-learn's PCA and KMeans fit on at most
    :data:`MAX_FIT_ROWS` grids. Warns when some clusters hold no grid (too few distinct grids).
    """
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA
    from sklearn.exceptions import ConvergenceWarning
    from threadpoolctl import threadpool_limits

    if vectors is None:
        vectors = random_vectors(num_codes or int(grids.max()) + 1, seed)
    vectors = vectors.detach().float().cpu()
    order = torch.randperm(len(grids), generator=torch.Generator().manual_seed(seed))
    sample = grid_features(grids[order[:MAX_FIT_ROWS].to(grids.device)], vectors).numpy()
    with threadpool_limits(limits=1), warnings.catch_warnings():  # small: threads only contend
        warnings.simplefilter("ignore", ConvergenceWarning)  # too few distinct grids: reported below
        pca = PCA(min(PCA_DIM, *sample.shape), random_state=seed).fit(sample)
        kmeans = KMeans(clusters, n_init=3, random_state=seed).fit(pca.transform(sample))
    axes = torch.zeros(PCA_DIM, sample.shape[1])
    axes[: len(pca.components_)] = torch.from_numpy(pca.components_).float()
    centers = torch.zeros(clusters, PCA_DIM)
    centers[:, : len(pca.components_)] = torch.from_numpy(kmeans.cluster_centers_).float()
    mean = torch.from_numpy(pca.mean_).float()
    model = GridClusters(vectors, axes, centers + mean @ axes.T)
    labels = model.assign(grids).to(grids.device)
    used = int((torch.bincount(labels, minlength=clusters) > 0).sum())
    if used < clusters:
        logger.warning(
            f"only {used} of {clusters} clusters hold grids (too few distinct grids); "
            f"a smaller `clusters` would do as well"
        )
    return model, labels
