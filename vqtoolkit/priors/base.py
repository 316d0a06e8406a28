"""The prior contract: sklearn-like ``fit``/``sample`` estimators whose state lives in tensors."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, Literal, TypedDict

import torch
from torch import Tensor

from vqtoolkit.components.base import Component
from vqtoolkit.components.options import Limit, bounds
from vqtoolkit.errors import ConfigError, ShapeError

Space = Literal["indices", "latents"]


class SampleOptions(TypedDict, total=False):
    """How a prior (and ``Pipeline.sample``) draws: a label, a temperature, a generator."""

    label: int | None
    temperature: float
    generator: torch.Generator | None


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
    #: Under torch.distributed: ``True`` for priors trained by gradient steps, which ``fit`` on every
    #: process with the whole data, sharding batches and averaging gradients themselves
    #: (:func:`vqtoolkit.runtime.distributed.shard_batches`, :func:`~vqtoolkit.runtime.distributed.wrap`);
    #: ``False`` (closed-form fits such as gmm): fitted on rank 0 alone, then copied to every process.
    fits_on_every_rank: ClassVar[bool] = False
    conditional: bool = False
    fitted: Tensor

    def __init__(self, **legacy_options: Any) -> None:
        super().__init__(**legacy_options)  # 0.1's constructors passed their options: see Component
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))

    @property
    def is_fitted(self) -> bool:
        """Whether ``fit`` has run (or fitted state was loaded)."""
        return bool(self.fitted)

    @property
    def sample_shape(self) -> tuple[int, ...] | None:
        """Shape of one sample, without the batch (``None`` while unknown); bundles check it on load.

        By default the ``grid_shape`` (index priors) or ``latent_shape`` (latent priors) a fit wrote
        into the config.
        """
        shape = self._config.get("grid_shape" if self.space == "indices" else "latent_shape")
        return None if shape is None else tuple(shape)

    def fit(self, data: Tensor, labels: Tensor | None = None, *, progress: bool = True) -> Prior:
        """Learn the distribution of ``data``.

        Stage 2 passes a fit-time input only to a prior whose ``fit`` names it as a keyword
        (scikit-learn's ``fit(X, y, **fit_params)``): ``code_vectors`` (the stage-1 vector of every
        code, ``(num_codes, D)``) and ``checkpoint`` (a
        :class:`~vqtoolkit.priors.neural.checkpoint.FitCheckpoint` to save and resume through).

        Args:
            data: Code indices ``(N, *spatial)`` (``space="indices"``) or latents ``(N, D, *spatial)``.
            labels: Class labels ``(N,)`` for a conditional prior, else ``None``.
            progress: Show a progress bar while fitting.

        Returns:
            ``self``, fitted.
        """
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

    A prior may add a global variable of its own in place of a label: the k-means clusters of
    :class:`~vqtoolkit.priors.clustered.ClusteredIndexPrior`, which the built-in priors opt into.

    ``grid_shape`` and ``num_classes`` are learned by ``fit`` and written into ``config`` so a bundle
    rebuilds buffers of the right shape before loading them.
    """

    space = "indices"
    has_likelihood = True
    class_log_prior: Tensor
    limits = bounds(num_codes=Limit(1), num_classes=Limit(1))
    #: Options that take ``"auto"``, each with what sizes it from the number of grids fitted: every
    #: ``fit`` resolves them from its own data and writes the value into ``config``.
    sized_by_data: ClassVar[Mapping[str, Callable[[int], Any]]] = {}

    def __init__(
        self,
        *,
        num_codes: int,
        conditional: bool = False,
        num_classes: int | None = None,
        grid_shape: Sequence[int] | None = None,
    ) -> None:
        if grid_shape is not None and (len(grid_shape) != 2 or min(grid_shape) < 1):
            raise ConfigError(f"grid_shape must be two positive sizes (H, W); got {list(grid_shape)}")
        super().__init__()
        self.num_codes, self.conditional = num_codes, conditional
        #: The :attr:`sized_by_data` options asked for as ``"auto"``: every ``fit`` sizes them again.
        self.auto_options = [name for name in self.sized_by_data if self._config.get(name) == "auto"]
        classes = self.groups or 1
        self.register_buffer("class_log_prior", torch.full((classes,), -math.log(classes)))

    @property
    def groups(self) -> int | None:
        """Values of the global variable ``p(x | ·)`` is conditioned on: classes, or ``None``."""
        return self.num_classes if self.conditional else None

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
    def fit(
        self,
        data: Tensor,
        labels: Tensor | None = None,
        *,
        progress: bool = True,
        **fit_params: Any,
    ) -> IndexPrior:
        """Learn the distribution of index grids (and of their labels, if conditional).

        Args:
            data: Code indices ``(N, H, W)``.
            labels: Class labels ``(N,)``; required by a conditional prior, ignored otherwise.
            progress: Show a progress bar while fitting.
            **fit_params: Fit-time inputs (see :meth:`Prior.fit`), for :meth:`_fit_groups` and ``_fit``.

        Returns:
            ``self``, fitted.

        Raises:
            ShapeError: ``data`` is not a grid of integer codes, or has fewer than 2 grids.
            ConfigError: codes or labels out of range, or a conditional prior without labels.
        """
        self._config["grid_shape"] = None  # refitting may change the grid
        self.check_indices(data)
        if len(data) < 2:
            raise ShapeError(f"a prior needs at least 2 index grids to fit; got {len(data)}")
        labels = self.check_labels(labels, len(data), fitting=True)
        self._config["grid_shape"] = [int(s) for s in data.shape[1:]]
        for name in self.auto_options:
            self._config[name] = self.sized_by_data[name](len(data))
        labels = self._fit_groups(data, labels, fit_params)
        if labels is not None:
            classes = self.groups or int(labels.max()) + 1
            if self.conditional:
                self._config["num_classes"] = classes
            counts = torch.bincount(labels, minlength=classes).double() + 1.0  # add-one: no class has p = 0
            self.class_log_prior = (counts / counts.sum()).log().float().to(self.class_log_prior.device)
        self._fit(data, labels, progress=progress, **fit_params)
        self.fitted.fill_(True)
        return self

    def _fit_groups(self, data: Tensor, labels: Tensor | None, fit_params: dict[str, Any]) -> Tensor | None:
        """Each grid's value of the global variable: its label here; a subclass may fit its own.

        It may take (pop) the fit-time inputs it uses from ``fit_params``; the rest go to ``_fit``.
        """
        return labels

    def log_prob(self, data: Tensor, labels: Tensor | None = None) -> Tensor:
        """Per-grid log-likelihood in nats ``(N,)``.

        Marginal over classes when a conditional prior gets no labels (and over clusters, always,
        for a :class:`~vqtoolkit.priors.clustered.ClusteredIndexPrior`); labels given to an
        unconditional prior are ignored.
        """
        if not self.is_fitted:
            raise ConfigError(f"{type(self).__name__} is not fitted; call fit() first")
        self.check_indices(data)
        labels = self.check_labels(labels, len(data))
        if self.groups is None or labels is not None:
            return self._log_likelihood(data, labels)
        return torch.logsumexp(self._log_joint(data, self._likely_groups(data)), dim=0)

    def _likely_groups(self, data: Tensor) -> Tensor | None:
        """The groups ``(N, m)`` the marginal likelihood of each grid sums over (``None``: all of them)."""
        return None

    def log_joint(self, data: Tensor) -> Tensor:
        """``log p(c) + log p(x | c)`` in nats ``(groups, N)`` for every class or cluster ``c``.

        Its ``logsumexp`` over ``c`` is :meth:`log_prob`; its maximum over ``c`` is a lower bound of
        it (the likelihood of the best single class or cluster).
        """
        if not self.is_fitted:
            raise ConfigError(f"{type(self).__name__} is not fitted; call fit() first")
        if self.groups is None:
            raise ConfigError(
                f"{type(self).__name__} has no classes or clusters; fit one with conditional=True (or, "
                f"for a prior that takes it, clusters=k)"
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
        """Fit the model of ``p(x | label)`` (a subclass may take fit-time inputs as keywords too)."""
        raise NotImplementedError

    def _log_likelihood(self, data: Tensor, labels: Tensor | None) -> Tensor:
        raise NotImplementedError

    def _sample(
        self, n: int, labels: Tensor | None, temperature: float, generator: torch.Generator | None
    ) -> Tensor:
        raise NotImplementedError
