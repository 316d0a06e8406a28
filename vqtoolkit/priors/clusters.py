"""Global clusters of code grids: an unsupervised stand-in for a class label.

An autoregressive prior told which digit to draw keeps the whole image coherent; one that is not
often loses the global shape. ``clusters=k`` (any :class:`~vqtoolkit.priors.base.IndexPrior`)
gives an unconditional prior a global variable of its own: :func:`cluster_grids` groups the
training grids by k-means on their stage-1 code vectors (reduced by PCA), the prior learns
``p(x | c)`` conditioned on each grid's cluster ``c`` and ``p(c)`` from the cluster sizes, samples
by drawing ``c`` first, and scores ``p(x) = Σ_c p(c) p(x | c)``, an exact likelihood.
"""

from __future__ import annotations

import logging
import math
import warnings

import torch
from torch import Tensor

#: At most this many grids (a seeded subsample) fit the PCA and k-means; every grid is then assigned.
MAX_FIT_ROWS = 10_000
#: Dimensions the flattened code vectors of a grid are reduced to before k-means.
PCA_DIM = 32
#: Width of the random code vectors used when no codebook is given (Hamming-like distances).
RANDOM_DIM = 16

logger = logging.getLogger(__name__)


def grid_features(grids: Tensor, vectors: Tensor) -> Tensor:
    """``(N, H·W·D)`` float features of index grids ``(N, H, W)``: each code replaced by its vector."""
    return vectors[grids.reshape(len(grids), -1).long().cpu()].reshape(len(grids), -1)


def random_vectors(num_codes: int, seed: int) -> Tensor:
    """Seeded random code vectors ``(num_codes, RANDOM_DIM)``: grid distances then count differing codes."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(num_codes, RANDOM_DIM, generator=generator) / math.sqrt(RANDOM_DIM)


def cluster_grids(
    grids: Tensor,
    clusters: int,
    vectors: Tensor | None = None,
    *,
    num_codes: int | None = None,
    seed: int = 0,
    chunk: int = 4096,
) -> Tensor:
    """The k-means cluster ``(N,)`` (long, in ``[0, clusters)``) of every index grid ``(N, H, W)``.

    ``vectors`` ``(num_codes, D)`` are the stage-1 code vectors (the quantizer's codebook), so grids
    that decode alike cluster together; without them, seeded random vectors make the distance count
    the positions whose codes differ. PCA and k-means fit on at most :data:`MAX_FIT_ROWS` grids;
    every grid is then assigned in chunks of ``chunk``, so memory stays bounded.
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
        assigned = [
            torch.from_numpy(kmeans.predict(pca.transform(grid_features(part, vectors).numpy())))
            for part in grids.split(chunk)
        ]
    labels = torch.cat(assigned).long()
    used = int((torch.bincount(labels, minlength=clusters) > 0).sum())
    if used < clusters:
        logger.warning(
            f"only {used} of {clusters} clusters hold grids (too few distinct grids); "
            f"a smaller `clusters` would do as well"
        )
    return labels.to(grids.device)
