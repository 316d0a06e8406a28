"""Shared base of index priors that are neural networks trained by gradient descent.

A subclass builds its network in ``_new_net`` (``net(indices, labels)`` returns logits
``(N, K, H, W)`` where those at a position depend only on codes before it in raster order) and
draws samples in ``_sample``; fitting (:func:`vqtoolkit.priors.neural.loop.fit_network`, with early
stopping and the best weights kept), likelihoods and the options every such prior takes live here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from typing import Any, ClassVar, Final, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vqtoolkit.components.base import component_name
from vqtoolkit.components.options import Limit, bounds
from vqtoolkit.errors import ConfigError
from vqtoolkit.priors.clustered import ClusteredIndexPrior
from vqtoolkit.priors.neural.checkpoint import FitCheckpoint
from vqtoolkit.priors.neural.loop import FitSettings, Precision, fit_network, torch_threads
from vqtoolkit.runtime.threads import Threads

#: Default ``clusters`` of unconditional network priors: k-means clusters of the training grids,
#: as many as :func:`~vqtoolkit.priors.clusters.auto_clusters` gives for the data (MNIST: 256).
DEFAULT_CLUSTERS: Final = "auto"
#: Share of training grids fitted without their label or cluster when a prior has one (``None``).
DEFAULT_CONDITION_DROPOUT = 0.1
#: Classifier-free guidance of a prior fitted with condition dropout on its label (``guidance=None``),
#: and on its clusters unless the prior class sets :attr:`NeuralIndexPrior.default_cluster_guidance`.
DEFAULT_GUIDANCE = 1.5
#: ``dropout="auto"`` of the network priors: this rate when fitting fewer than
#: :data:`DROPOUT_FREE_ROWS` grids, none from there up.
AUTO_DROPOUT = 0.1
#: From this many fitted grids up the default budget passes over them too few times to overfit, so
#: dropout would only slow the network down (MNIST: 60 000 grids; ``digits``: 1 438).
DROPOUT_FREE_ROWS = 10_000


def auto_dropout(rows: int) -> float:
    """The dropout ``dropout="auto"`` trains with on ``rows`` grids (see :data:`DROPOUT_FREE_ROWS`)."""
    return AUTO_DROPOUT if rows < DROPOUT_FREE_ROWS else 0.0


def cross_entropy_loss(net: nn.Module, indices: Tensor, labels: Tensor | None) -> Tensor:
    """Mean NLL in nats per code of index grids under ``net``'s logits."""
    return F.cross_entropy(net(indices, labels).float(), indices)


def single_thread() -> AbstractContextManager[None]:
    """One CPU thread for autoregressive sampling, then the thread count as it was.

    Sampling runs hundreds of small ops; forking and joining threads for each costs more than it
    saves (``docs/performance.md``).
    """
    return torch_threads(1)


def draw(logits: Tensor, temperature: float, generator: torch.Generator | None, top_p: float = 1.0) -> Tensor:
    """One code per row of ``logits`` ``(N, K)`` from ``softmax(logits / temperature)``.

    ``top_p < 1`` samples from the nucleus: the most likely codes whose probabilities first add up to
    ``top_p`` (the most likely code always stays), renormalised.
    """
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        outside = sorted_probs.cumsum(-1) - sorted_probs >= top_p  # the codes before hold top_p already
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs.masked_fill(outside, 0.0))
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)


class NeuralIndexPrior(ClusteredIndexPrior):
    """An autoregressive network over code grids, trained with :func:`fit_network`.

    Shared options: ``epochs`` and ``batch_size`` (``None``: sized from the data),
    ``lr`` (peak of a warm-up + cosine schedule), ``val_fraction`` held out to score every epoch,
    ``patience`` epochs without a better held-out NLL before stopping, ``seed`` (initialisation,
    split and shuffling) and ``threads`` (CPU threads while fitting: ``"auto"`` times the steps and
    picks the fastest count, see :mod:`vqtoolkit.runtime.threads`; ``None`` keeps torch's).
    ``top_p`` is the nucleus every ``sample`` draws from (1: the full distribution).
    ``condition_dropout`` replaces that share of the training grids' labels (or clusters) by a
    learned "no condition", so the same network also models ``p(x)``; ``guidance`` then samples
    from ``softmax(l_∅ + guidance · (l_c − l_∅))`` (classifier-free guidance; 1: plain ``p(x | c)``,
    above 1: samples truer to their label or cluster). Likelihoods always use ``p(x | c)``. Both
    default (``None``) to :data:`DEFAULT_CONDITION_DROPOUT` and, as guidance, :data:`DEFAULT_GUIDANCE`
    for a prior with a label or :attr:`default_cluster_guidance` for one with clusters, and to 0 and
    1 (off) for one without.
    A subclass with a ``dropout`` option may default it to ``"auto"`` (:func:`auto_dropout`, one of
    :attr:`sized_by_data`): every ``fit`` then sets the rate from its own data; the network reads it
    as :attr:`dropout_rate`.
    ``clusters`` (default :data:`DEFAULT_CLUSTERS`: sized from the data) conditions an
    unconditional network on the k-means cluster of each grid (see
    :class:`~vqtoolkit.priors.clustered.ClusteredIndexPrior`): samples keep their global shape, as a
    conditional prior's do. ``None`` turns it off; a conditional prior conditions on its label instead and
    records ``clusters=None``.
    """

    #: Set while a guided ``sample`` runs: ``_draw`` then mixes the two halves' logits.
    _guided = False
    fits_on_every_rank = True
    limits = bounds(
        epochs=Limit(1),
        batch_size=Limit(1),
        lr=Limit(0, low_open=True),
        val_fraction=Limit(0, 1, low_open=True, high_open=True),
        patience=Limit(1),
        threads=Limit(1),
        top_p=Limit(0, 1, low_open=True),
        condition_dropout=Limit(0, 1, high_open=True),
        guidance=Limit(0),
    )
    added_options: ClassVar[Mapping[str, Any]] = {"condition_dropout": 0.0, "guidance": 1.0}
    sized_by_data: ClassVar[Mapping[str, Callable[[int], Any]]] = {
        **ClusteredIndexPrior.sized_by_data,
        "dropout": auto_dropout,
    }

    #: Guidance of a clustered prior fitted with condition dropout when ``guidance=None`` (chosen by
    #: the guidance sweep in docs/results.md); a plugin whose clusters steer less may set more.
    default_cluster_guidance: ClassVar[float] = DEFAULT_GUIDANCE
    #: Training grids of the default budget (``epochs=None``), sized to this prior's cost per grid
    #: (``None``: ``AUTO_GRIDS``).
    auto_grids: int | None = None

    def __init__(
        self,
        *,
        num_codes: int,
        epochs: int | None = None,
        batch_size: int | None = None,
        lr: float = 2e-3,
        val_fraction: float = 0.05,
        patience: int = 3,
        seed: int = 0,
        threads: Threads = "auto",
        precision: Precision = "auto",
        top_p: float = 1.0,
        clusters: int | Literal["auto"] | None = DEFAULT_CLUSTERS,
        condition_dropout: float | None = None,
        guidance: float | None = None,
        **options: Any,
    ) -> None:
        if options.get("conditional"):  # the label is the global variable
            clusters = self._config["clusters"] = None
        super().__init__(num_codes=num_codes, clusters=clusters, **options)
        conditioned = clusters is not None or self.conditional
        if condition_dropout is None:
            condition_dropout = DEFAULT_CONDITION_DROPOUT if conditioned else 0.0
            self._config["condition_dropout"] = condition_dropout
        elif condition_dropout and not conditioned:
            raise ConfigError(
                "condition_dropout needs a condition to drop: fit with clusters=k or conditional=True"
            )
        if guidance is None:
            guided = DEFAULT_GUIDANCE if self.conditional else self.default_cluster_guidance
            guidance = self._config["guidance"] = guided if condition_dropout else 1.0
        elif guidance != 1 and not condition_dropout:
            raise ConfigError(
                f"guidance={guidance} needs a network that also learned p(x) without its condition: "
                f"fit with condition_dropout > 0 (e.g. {DEFAULT_CONDITION_DROPOUT}), or keep guidance=1"
            )
        self.fit_settings = FitSettings(
            epochs, batch_size, lr, val_fraction, patience, seed, threads, self.auto_grids, precision
        )
        #: Per-epoch training record of the last ``fit`` (not saved in bundles).
        self.history: list[dict[str, Any]] = []

    @property
    def guidance(self) -> float:
        """Classifier-free guidance of ``sample`` (1: none); may be changed after fitting."""
        return self._config["guidance"]

    @guidance.setter
    def guidance(self, value: float) -> None:
        if not value >= 0:  # also refuses NaN
            raise ConfigError(f"guidance must be >= 0; got {value}")
        if value != 1 and not self._config["condition_dropout"]:
            raise ConfigError(
                f"this {type(self).__name__} was fitted without condition_dropout, so it has no "
                f"unconditioned logits to guide from; only guidance=1 applies (refit with "
                f"condition_dropout > 0, and clusters=k or conditional=True, to use guidance)"
            )
        self._config["guidance"] = float(value)

    @property
    def dropout_rate(self) -> float:
        """The network's dropout: the ``dropout`` option, or :data:`AUTO_DROPOUT` until fit sizes "auto"."""
        rate = self._config.get("dropout", 0.0)
        return AUTO_DROPOUT if rate == "auto" else float(rate)

    @property
    def condition_rows(self) -> int | None:
        """Rows of the network's condition embedding (``None``: it has none).

        :attr:`groups`, plus the "no condition" row (index ``groups``) when fitted with
        ``condition_dropout``.
        """
        if self.groups is None:
            return None
        return self.groups + (1 if self._config["condition_dropout"] else 0)

    @property
    def net_grid(self) -> tuple[int, int]:
        """The grid ``(H, W)`` the network is built for: the fitted ``grid_shape``, else ``(1, 1)``."""
        height, width = self._config["grid_shape"] or (1, 1)
        return height, width

    def _generate(
        self, n: int, label: int | None, temperature: float, generator: torch.Generator | None
    ) -> Tensor:
        """As :meth:`IndexPrior._generate`, guided when ``guidance != 1``.

        Each grid is drawn beside a twin without its condition, every code from the guided mix of the
        two logits.
        """
        if self.guidance == 1:
            return super()._generate(n, label, temperature, generator)
        labels = self.draw_groups(n, label, generator)
        assert labels is not None and self.groups is not None  # __init__ refuses guidance without
        twins = torch.cat([labels, torch.full_like(labels, self.groups)])
        self._guided = True
        try:  # the twins share every drawn code: the first n rows are the samples
            return self._sample(2 * n, twins, temperature, generator)[:n]
        finally:
            self._guided = False

    def _draw(self, logits: Tensor, temperature: float, generator: torch.Generator | None) -> Tensor:
        """One code per row of ``logits`` with this prior's ``top_p`` (and ``guidance``: see above)."""
        if not self._guided:
            return draw(logits, temperature, generator, self._config["top_p"])
        conditioned, unconditioned = logits.float().chunk(2)
        guided = unconditioned + self.guidance * (conditioned - unconditioned)
        return draw(guided, temperature, generator, self._config["top_p"]).repeat(2)

    def _new_net(self) -> nn.Module:
        raise NotImplementedError

    def fit(
        self,
        data: Tensor,
        labels: Tensor | None = None,
        *,
        progress: bool = True,
        code_vectors: Tensor | None = None,
        checkpoint: FitCheckpoint | None = None,
        **fit_params: Any,
    ) -> NeuralIndexPrior:
        """Train the network on index grids with early stopping (see :meth:`IndexPrior.fit`).

        Args:
            data: Code indices ``(N, H, W)``.
            labels: Class labels ``(N,)``; required by a conditional prior, ignored otherwise.
            progress: Show a progress bar and a line per epoch.
            code_vectors: The stage-1 vector of every code, which ``clusters`` groups grids by.
            checkpoint: Saves the fit after every epoch and resumes from it (``resume=True``);
                Ctrl-C then stops after a step, leaving it resumable.
            **fit_params: Further fit-time inputs a subclass takes.

        Returns:
            ``self``, holding the weights of its best held-out epoch.
        """
        super().fit(
            data, labels, progress=progress, code_vectors=code_vectors, checkpoint=checkpoint, **fit_params
        )
        return self

    def _fit(
        self, data: Tensor, labels: Tensor | None, *, progress: bool, checkpoint: FitCheckpoint | None = None
    ) -> None:
        device = self.class_log_prior.device
        # copies: the pipeline's indices come from inference mode and cannot join autograd as they are
        data = data.to(device, torch.long, copy=True)
        labels = None if labels is None else labels.to(device, torch.long, copy=True)
        name = component_name(self)
        hooks = None
        if checkpoint is not None:  # stage 2 of a resumable build: save every epoch
            hooks = checkpoint.hooks(fingerprint={"config": self.config, "data": list(data.shape)})
        # seeded initialisation and dropout, without touching the caller's random state
        with torch.random.fork_rng(devices=[] if device.type == "cpu" else [device]):
            torch.manual_seed(self.fit_settings.seed)
            self.net = self._new_net().to(device)
            state = fit_network(
                self.net,
                self._loss,
                data,
                labels,
                self.fit_settings,
                name=name,
                progress=progress,
                hooks=hooks,
            )
        self.history = state.history

    def _loss(self, net: nn.Module, indices: Tensor, groups: Tensor | None) -> Tensor:
        """Mean NLL per code of grids given their label or cluster ``groups`` (training and held-out).

        A clustered prior adds each grid's ``-log p(c)``: only ``p(x | c)`` trains, but the held-out
        figure the fit reports becomes an upper bound of the marginal NLL rather than a flattering
        conditional one. While training, ``condition_dropout`` of the grids see "no condition".
        """
        cost: Tensor | float = 0.0
        if self.clusters is not None:
            assert groups is not None  # fit passes every grid's cluster
            cost = -self.class_log_prior[groups].mean() / indices[0].numel()
        return cross_entropy_loss(net, indices, self._drop_conditions(net, groups)) + cost

    def _drop_conditions(self, net: nn.Module, groups: Tensor | None) -> Tensor | None:
        """``groups`` with, while ``net`` trains, ``condition_dropout`` of them set to "no condition"."""
        dropout = self._config["condition_dropout"]
        if net.training and dropout and groups is not None and self.groups is not None:
            dropped = torch.rand(len(groups), device=groups.device) < dropout
            groups = groups.masked_fill(dropped, self.groups)  # the "no condition" row
        return groups

    def _log_likelihood(self, data: Tensor, labels: Tensor | None) -> Tensor:
        self.net.eval()  # no dropout when scoring
        data = data.long().to(self.class_log_prior.device)
        nll = F.cross_entropy(self.net(data, labels), data, reduction="none")
        return -nll.flatten(1).sum(1)
