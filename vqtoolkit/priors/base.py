"""The prior contract: sklearn-like ``fit``/``sample`` estimators whose state lives in tensors."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch
from torch import Tensor

from vqtoolkit.components.base import Component
from vqtoolkit.components.options import Limit, bounds
from vqtoolkit.errors import ConfigError, ShapeError
from vqtoolkit.priors.clusters import PCA_DIM, GridClusters, auto_clusters, cluster_grids

if TYPE_CHECKING:
    from vqtoolkit.priors.neural.checkpoint import FitCheckpoint

Space = Literal["indices", "latents"]
#: A clustered prior's likelihood sums ``p(c) p(x | c)`` over every cluster up to this many, else
#: over this many nearest the grid in its k-means space: a lower bound of the exact sum (its gap is
#: measured in ``docs/priors.md``) at the cost of this many network passes, not one per cluster.
LIKELIHOOD_CLUSTERS = 16


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
    #: Set by :meth:`~vqtoolkit.pipeline.Pipeline.fit_prior` for a checkpointed fit; priors trained
    #: in epochs save and resume through it (:mod:`vqtoolkit.priors.neural.checkpoint`), others ignore it.
    fit_checkpoint: FitCheckpoint | None = None
    space: ClassVar[Space] = "indices"
    has_likelihood: ClassVar[bool] = False
    #: Under torch.distributed: ``True`` for priors trained by gradient steps, which ``fit`` on every
    #: process with the whole data, sharding batches and averaging gradients themselves
    #: (:func:`vqtoolkit.runtime.distributed.shard_batches`, :func:`~vqtoolkit.runtime.distributed.wrap`);
    #: ``False`` (closed-form fits such as gmm): fitted on rank 0 alone, then copied to every process.
    fits_on_every_rank: ClassVar[bool] = False
    conditional: bool = False
    fitted: Tensor

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))

    @property
    def is_fitted(self) -> bool:
        """Whether ``fit`` has run (or fitted state was loaded)."""
        return bool(self.fitted)

    @property
    def sample_shape(self) -> tuple[int, ...] | None:
        """Shape of one sample, without the batch (``None`` while unknown); bundles check it on load."""
        return None

    def fit(self, data: Tensor, labels: Tensor | None = None, *, progress: bool = True) -> Prior:
        """Learn the distribution of ``data``; returns ``self``."""
        raise NotImplementedError

    def fit_rows(self, n: int) -> Tensor | None:
        """Which of ``n`` rows ``fit`` would learn from, in order (``None``: all of them).

        A prior that fits on a subsample says so here, so the pipeline encodes (and, across
        processes, gathers) only those images; given exactly these rows, ``fit`` uses them all.
        """
        return None

    def sample(
        self,
        n: int,
        *,
        label: int | None = None,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Draw ``n`` samples in this prior's ``space``: checks the arguments, then :meth:`_generate`.

        A prior overrides either ``_generate`` (its arguments already checked) or ``sample`` itself.
        """
        self.check_sample_args(n, label, temperature)
        return self._generate(n, label, temperature, generator)

    def _generate(
        self, n: int, label: int | None, temperature: float, generator: torch.Generator | None
    ) -> Tensor:
        """``n`` samples from arguments :meth:`check_sample_args` accepted."""
        raise NotImplementedError

    def log_prob(self, data: Tensor, labels: Tensor | None = None) -> Tensor:
        """Per-sample log-likelihood in nats, summed over positions."""
        raise NotImplementedError(f"prior {type(self).__name__} has no likelihood over code indices")

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


class IndexPrior(Prior):
    """Shared machinery of priors over a 2-D grid of code indices ``(N, H, W)``.

    Subclasses implement ``_fit``, ``_log_likelihood`` and ``_sample``; this class validates
    indices and labels, learns the grid shape and (for ``conditional`` priors) the class
    frequencies, and turns a class-conditional model into an honest marginal likelihood:
    ``log p(x) = logsumexp_y [log p(y) + log p(x | y)]`` when no labels are given, so every index
    prior reports bits per code on one scale.

    ``clusters=k`` gives an unconditional prior a global variable of its own: the k-means cluster
    of each training grid (:mod:`vqtoolkit.priors.clusters`) takes the place of a label while
    fitting, sampling draws a cluster by its frequency first, and the likelihood marginalises over
    clusters as above (over the :data:`LIKELIHOOD_CLUSTERS` nearest a grid when there are more).
    ``clusters="auto"`` sizes k from the training grids (:func:`~vqtoolkit.priors.clusters.auto_clusters`).
    ``sample(label=...)`` stays refused: clusters are not classes.

    ``grid_shape``, ``num_classes``, ``clusters`` and ``cluster_code_dim`` (the width of the code
    vectors the k-means saw) are learned by ``fit`` and written into ``config`` so a bundle rebuilds
    buffers of the right shape before loading them.
    """

    space = "indices"
    has_likelihood = True
    class_log_prior: Tensor
    #: Buffers of the fitted k-means of a clustered prior (:class:`GridClusters`), registered by a
    #: clustered ``fit`` (or a config that records one): older bundles have none.
    CLUSTER_BUFFERS = ("cluster_vectors", "cluster_axes", "cluster_centers")
    limits = bounds(num_codes=Limit(1), num_classes=Limit(1), clusters=Limit(2), cluster_code_dim=Limit(1))
    added_options: ClassVar[Mapping[str, Any]] = {"clusters": None}  # saved before clusters existed
    #: Set by :meth:`~vqtoolkit.pipeline.Pipeline.fit_prior` for the next ``fit``: the stage-1 vector
    #: of every code ``(num_codes, D)``, which ``clusters`` groups grids by (random vectors without it).
    code_vectors: Tensor | None = None
    #: Options that take ``"auto"``, each with what sizes it from the number of grids fitted: every
    #: ``fit`` resolves them from its own data and writes the value into ``config``.
    sized_by_data: ClassVar[Mapping[str, Callable[[int], Any]]] = {"clusters": auto_clusters}

    def __init__(
        self,
        *,
        num_codes: int,
        conditional: bool = False,
        num_classes: int | None = None,
        grid_shape: Sequence[int] | None = None,
        clusters: int | Literal["auto"] | None = None,
        cluster_code_dim: int | None = None,
    ) -> None:
        if grid_shape is not None and (len(grid_shape) != 2 or min(grid_shape) < 1):
            raise ConfigError(f"grid_shape must be two positive sizes (H, W); got {list(grid_shape)}")
        if conditional and clusters is not None:
            raise ConfigError(
                "clusters gives an unconditional prior a global variable; a conditional prior has its "
                "label already: drop clusters or conditional"
            )
        super().__init__()
        self.num_codes, self.conditional = num_codes, conditional
        #: The :attr:`sized_by_data` options asked for as ``"auto"``: every ``fit`` sizes them again.
        self.auto_options = [name for name in self.sized_by_data if self._config.get(name) == "auto"]
        classes = (num_classes or 1) if conditional else (self.clusters or 1)
        self.register_buffer("class_log_prior", torch.full((classes,), -math.log(classes)))
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

    @property
    def num_classes(self) -> int | None:
        """Classes a conditional prior was fitted on (``None`` while unknown or unconditional)."""
        return self._config["num_classes"] if self.conditional else None

    @property
    def grid_shape(self) -> tuple[int, int]:
        """``(H, W)`` of the index grids this prior models (known after ``fit``)."""
        if self._config["grid_shape"] is None:
            raise ConfigError(f"{type(self).__name__} is not fitted; call fit() first")
        return tuple(self._config["grid_shape"])

    @property
    def sample_shape(self) -> tuple[int, ...] | None:
        """``grid_shape`` once known."""
        grid = self._config["grid_shape"]
        return None if grid is None else tuple(grid)

    # -- validation --------------------------------------------------------------------------
    def check_indices(self, indices: Tensor) -> None:
        """Raise unless ``indices`` is an integer ``(N, H, W)`` grid of codes in ``[0, num_codes)``."""
        if indices.is_floating_point() or indices.is_complex() or indices.dtype == torch.bool:
            raise ShapeError(
                f"the {type(self).__name__} models code indices (N, H, W) of an integer dtype; got "
                f"{indices.dtype}. Continuous latents go to a latent prior such as gmm."
            )
        if indices.ndim != 3:
            raise ShapeError(f"code indices must be (N, H, W); got shape {tuple(indices.shape)}")
        if self._config["grid_shape"] is not None and tuple(indices.shape[1:]) != self.grid_shape:
            raise ShapeError(
                f"this prior was fitted on {self.grid_shape[0]}×{self.grid_shape[1]} code grids; got "
                f"{indices.shape[1]}×{indices.shape[2]}. Refit it on this model with `vqtool fit-prior`"
            )
        if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= self.num_codes):
            raise ConfigError(
                f"code indices must lie in [0, {self.num_codes}); got range [{int(indices.min())}, "
                f"{int(indices.max())}]. Was this prior fitted for a codebook of another size?"
            )

    def check_labels(self, labels: Tensor | None, n: int, *, fitting: bool = False) -> Tensor | None:
        """Labels as a long ``(n,)`` tensor for a conditional prior (``None`` for an unconditional one)."""
        if not self.conditional:
            return None
        if labels is None:
            if fitting:
                raise ConfigError(
                    f"a conditional {type(self).__name__} needs class labels to fit; pass labels=, or "
                    f"drop conditional=True (--conditional)"
                )
            return None
        labels = torch.as_tensor(labels)
        if labels.shape != (n,) or labels.is_floating_point():
            raise ShapeError(
                f"labels must be an integer tensor of shape ({n},); got {labels.dtype} {tuple(labels.shape)}"
            )
        labels = labels.long()
        limit = None if fitting and self.num_classes is None else self.num_classes
        if n and (int(labels.min()) < 0 or (limit is not None and int(labels.max()) >= limit)):
            raise ConfigError(
                f"labels must lie in [0, {limit}); got range [{int(labels.min())}, {int(labels.max())}]"
            )
        return labels

    def check_sample_args(self, n: int, label: int | None, temperature: float) -> None:
        """The base checks, plus a label within the classes seen in fit."""
        super().check_sample_args(n, label, temperature)
        classes = self.num_classes
        if label is not None and classes is not None and not 0 <= label < classes:
            raise ConfigError(f"label {label} is out of range: this prior knows classes 0..{classes - 1}")

    # -- the estimator interface -----------------------------------------------------------
    def fit(self, data: Tensor, labels: Tensor | None = None, *, progress: bool = True) -> IndexPrior:
        """Learn the distribution of index grids ``data`` ``(N, H, W)`` (and labels if conditional)."""
        self._config["grid_shape"] = None  # refitting may change the grid
        self.check_indices(data)
        if len(data) < 2:
            raise ShapeError(f"a prior needs at least 2 index grids to fit; got {len(data)}")
        labels = self.check_labels(labels, len(data), fitting=True)
        self._config["grid_shape"] = [int(s) for s in data.shape[1:]]
        for name in self.auto_options:
            self._config[name] = self.sized_by_data[name](len(data))
        if self.clustered:
            labels = self._fit_clusters(data)
        if labels is not None:
            classes = self.groups or int(labels.max()) + 1
            if self.conditional:
                self._config["num_classes"] = classes
            counts = torch.bincount(labels, minlength=classes).double() + 1.0  # add-one: no class has p = 0
            self.class_log_prior = (counts / counts.sum()).log().float().to(self.class_log_prior.device)
        self._fit(data, labels, progress=progress)
        self.fitted.fill_(True)
        return self

    def _fit_clusters(self, data: Tensor) -> Tensor:
        """Fit and keep the k-means of ``data``; each grid's cluster."""
        clusters = self.clusters
        assert clusters is not None  # fit resolves "auto" first; None never calls this
        if len(data) < clusters:
            raise ShapeError(f"clusters={clusters} needs at least {clusters} grids to fit; got {len(data)}")
        model, labels = cluster_grids(data, clusters, self.code_vectors, num_codes=self.num_codes)
        self._config["cluster_code_dim"] = int(model.vectors.shape[1])
        device = self.class_log_prior.device
        fitted = (model.vectors, model.axes, model.centers)
        for name, tensor in zip(self.CLUSTER_BUFFERS, fitted, strict=True):
            self.register_buffer(name, tensor.to(device))
        return labels

    def log_prob(self, data: Tensor, labels: Tensor | None = None) -> Tensor:
        """Per-grid log-likelihood in nats ``(N,)``.

        Marginal over classes (or clusters) when a conditional prior gets no labels, and always
        for a clustered one (over the :data:`LIKELIHOOD_CLUSTERS` nearest each grid when it has
        more: a lower bound); labels given to an unconditional prior are ignored.
        """
        if not self.is_fitted:
            raise ConfigError(f"{type(self).__name__} is not fitted; call fit() first")
        self.check_indices(data)
        labels = self.check_labels(labels, len(data))
        if self.groups is None or labels is not None:
            return self._log_likelihood(data, labels)
        return torch.logsumexp(self._log_joint(data, self._likely_clusters(data)), dim=0)

    def _likely_clusters(self, data: Tensor) -> Tensor | None:
        """The :data:`LIKELIHOOD_CLUSTERS` clusters ``(N, m)`` nearest each grid (``None``: use all)."""
        model = self.cluster_model
        if model is None or self.groups is None or self.groups <= LIKELIHOOD_CLUSTERS:
            return None
        return model.nearest(data, LIKELIHOOD_CLUSTERS).to(data.device)

    def log_joint(self, data: Tensor) -> Tensor:
        """``log p(c) + log p(x | c)`` in nats ``(groups, N)`` for every class or cluster ``c``.

        Its ``logsumexp`` over ``c`` is :meth:`log_prob`; its maximum over ``c`` is a lower bound of
        it (the likelihood of the best single class or cluster).
        """
        if not self.is_fitted:
            raise ConfigError(f"{type(self).__name__} is not fitted; call fit() first")
        if self.groups is None:
            raise ConfigError(
                f"{type(self).__name__} has no classes or clusters; fit one with conditional=True or "
                f"clusters=k"
            )
        self.check_indices(data)
        return self._log_joint(data)

    def _log_joint(self, data: Tensor, groups: Tensor | None = None) -> Tensor:
        """``log p(c) + log p(x | c)`` ``(m, N)`` for each grid's candidate ``groups`` ``(N, m)`` (all)."""
        if groups is None:
            every = torch.arange(len(self.class_log_prior), device=data.device)
            groups = every.expand(len(data), -1)
        per_group = torch.stack([self._log_likelihood(data, column) for column in groups.T])
        return per_group + self.class_log_prior.to(per_group.device)[groups.T]

    def _generate(
        self, n: int, label: int | None, temperature: float, generator: torch.Generator | None
    ) -> Tensor:
        """Index grids ``(n, H, W)``; a conditional prior draws ``label`` (or classes by frequency).

        ``temperature`` divides the logits: below 1 gives cleaner, less varied samples.
        """
        return self._sample(n, self.draw_groups(n, label, generator), temperature, generator)

    def draw_groups(self, n: int, label: int | None, generator: torch.Generator | None) -> Tensor | None:
        """The label or cluster of ``n`` samples (``None`` for a prior without either).

        ``label`` if asked for, else classes (clusters) drawn by their frequency.
        """
        if self.groups is None:
            return None
        device = self.class_log_prior.device
        if label is not None:
            return torch.full((n,), label, dtype=torch.long, device=device)
        return torch.multinomial(self.class_log_prior.exp(), n, replacement=True, generator=generator)

    def _fit(self, data: Tensor, labels: Tensor | None, *, progress: bool) -> None:
        raise NotImplementedError

    def _log_likelihood(self, data: Tensor, labels: Tensor | None) -> Tensor:
        raise NotImplementedError

    def _sample(
        self, n: int, labels: Tensor | None, temperature: float, generator: torch.Generator | None
    ) -> Tensor:
        raise NotImplementedError
