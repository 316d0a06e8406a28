"""Index priors that condition on a global variable of their own: the k-means cluster of each grid.

A prior that opts in (categorical, and every network prior) subclasses :class:`ClusteredIndexPrior`:
``clusters=k`` gives an unconditional prior a global variable of its own (the k-means cluster of
each training grid, :mod:`vqtoolkit.priors.clusters`), which takes the place of a label while
fitting; sampling draws a cluster by its frequency first, and the likelihood marginalises over
clusters (over the :data:`LIKELIHOOD_CLUSTERS` nearest a grid when there are more).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor

from vqtoolkit.components.options import Limit, bounds
from vqtoolkit.errors import ConfigError, ShapeError
from vqtoolkit.priors.base import IndexPrior
from vqtoolkit.priors.clusters import PCA_DIM, GridClusters, auto_clusters, cluster_grids

#: A clustered prior's likelihood sums ``p(c) p(x | c)`` over every cluster up to this many, else
#: over this many nearest the grid in its k-means space: a lower bound of the exact sum, at the cost
#: of this many network passes, not one per cluster.
LIKELIHOOD_CLUSTERS = 16


class ClusteredIndexPrior(IndexPrior):
    """An :class:`~vqtoolkit.priors.base.IndexPrior` that may condition on k-means clusters of its grids.

    ``clusters="auto"`` sizes k from the training grids (:func:`~vqtoolkit.priors.clusters.auto_clusters`);
    ``None`` turns clusters off. ``sample(label=...)`` stays refused: clusters are not classes.
    ``clusters`` and ``cluster_code_dim`` (the width of the code vectors the k-means saw) are written
    into ``config`` by ``fit``, so a bundle rebuilds the k-means buffers before loading them.
    """

    #: Buffers of the fitted k-means (:class:`GridClusters`), registered by a clustered ``fit`` (or a
    #: config that records one): older bundles have none.
    CLUSTER_BUFFERS = ("cluster_vectors", "cluster_axes", "cluster_centers")
    limits = bounds(clusters=Limit(2), cluster_code_dim=Limit(1))
    added_options: ClassVar[Mapping[str, Any]] = {"clusters": None}  # saved before clusters existed
    sized_by_data: ClassVar[Mapping[str, Callable[[int], Any]]] = {
        **IndexPrior.sized_by_data,
        "clusters": auto_clusters,
    }

    def __init__(
        self,
        *,
        num_codes: int,
        clusters: int | Literal["auto"] | None = None,
        cluster_code_dim: int | None = None,
        **options: Any,
    ) -> None:
        if options.get("conditional") and clusters is not None:
            raise ConfigError(
                "clusters gives an unconditional prior a global variable; a conditional prior has its "
                "label already: drop clusters or conditional"
            )
        super().__init__(num_codes=num_codes, **options)
        self._register_cluster_buffers()

    def _register_cluster_buffers(self) -> None:
        """Zero k-means buffers of the shapes a config with a fitted k-means implies (else none)."""
        dim, grid, clusters = self._config.get("cluster_code_dim"), self._config["grid_shape"], self.clusters
        if dim is None or grid is None or clusters is None:
            return
        shapes = [(self.num_codes, dim), (PCA_DIM, dim * grid[0] * grid[1]), (clusters, PCA_DIM)]
        for name, shape in zip(self.CLUSTER_BUFFERS, shapes, strict=True):
            self.register_buffer(name, torch.zeros(shape))

    @property
    def clusters(self) -> int | None:
        """Clusters of an unconditional prior (``None``: none, or ``"auto"`` before ``fit``)."""
        value = self._config.get("clusters")
        return value if isinstance(value, int) else None

    @property
    def clustered(self) -> bool:
        """Whether ``fit`` clusters the grids (``clusters`` is a number or ``"auto"``)."""
        return self._config.get("clusters") is not None

    @property
    def cluster_model(self) -> GridClusters | None:
        """The fitted k-means of the training grids (``None`` without clusters, or in older bundles)."""
        tensors = [tensor for name in self.CLUSTER_BUFFERS if (tensor := self._buffers.get(name)) is not None]
        return GridClusters(*tensors) if len(tensors) == len(self.CLUSTER_BUFFERS) else None

    @property
    def groups(self) -> int | None:
        """Values of the global variable ``p(x | ·)`` is conditioned on: classes, clusters, or ``None``."""
        return self.num_classes if self.conditional else self.clusters

    def fit(
        self,
        data: Tensor,
        labels: Tensor | None = None,
        *,
        progress: bool = True,
        code_vectors: Tensor | None = None,
        **fit_params: Any,
    ) -> ClusteredIndexPrior:
        """Learn the distribution of index grids, clustering them first when ``clusters`` is set.

        Args:
            data: Code indices ``(N, H, W)``.
            labels: Class labels ``(N,)``; required by a conditional prior, ignored otherwise.
            progress: Show a progress bar while fitting.
            code_vectors: The stage-1 vector of every code ``(num_codes, D)``: the clusters group
                grids by what they decode to (by random vectors without it).
            **fit_params: Further fit-time inputs, for ``_fit``.

        Returns:
            ``self``, fitted.
        """
        super().fit(data, labels, progress=progress, code_vectors=code_vectors, **fit_params)
        return self

    def _fit_groups(self, data: Tensor, labels: Tensor | None, fit_params: dict[str, Any]) -> Tensor | None:
        """Each grid's k-means cluster when clustered (fitted here and kept), else its label."""
        code_vectors = fit_params.pop("code_vectors", None)
        if not self.clustered:
            return labels
        clusters = self.clusters
        assert clusters is not None  # fit resolves "auto" first
        if len(data) < clusters:
            raise ShapeError(f"clusters={clusters} needs at least {clusters} grids to fit; got {len(data)}")
        model, groups = cluster_grids(data, clusters, code_vectors, num_codes=self.num_codes)
        self._config["cluster_code_dim"] = int(model.vectors.shape[1])
        device = self.class_log_prior.device
        fitted = (model.vectors, model.axes, model.centers)
        for name, tensor in zip(self.CLUSTER_BUFFERS, fitted, strict=True):
            self.register_buffer(name, tensor.to(device))
        return groups

    def _likely_groups(self, data: Tensor) -> Tensor | None:
        """The :data:`LIKELIHOOD_CLUSTERS` clusters ``(N, m)`` nearest each grid (``None``: use all)."""
        model = self.cluster_model
        if model is None or self.groups is None or self.groups <= LIKELIHOOD_CLUSTERS:
            return None
        return model.nearest(data, LIKELIHOOD_CLUSTERS).to(data.device)
