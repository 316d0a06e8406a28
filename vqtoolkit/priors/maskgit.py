"""``maskgit``: a bidirectional transformer that predicts masked codes, sampled in a few parallel steps.

MaskGIT (Chang et al., 2022). Training hides a random share of each grid's codes behind a learned
mask token, the share ``γ(r)`` for ``r ~ U(0, 1)`` under the mask :data:`SCHEDULES` (cosine by
default), and scores the network's cross-entropy on the hidden codes alone. Every position attends
to every other (no causal mask), and a label or cluster embedding joins every position, as in the
AR transformer.

Sampling starts from a grid of mask tokens and runs ``steps`` network passes: each pass draws a
code at every masked position (``temperature``, ``top_k``, ``top_p``, classifier-free ``guidance``),
and keeps the likeliest of them (log-probability plus Gumbel noise scaled by ``choice_temperature``,
annealed linearly to 0) so that ``γ(t / steps)`` of the grid stays masked after step ``t``. A grid
with fewer masked codes than ``steps`` takes one pass per code. The same loop fills any region of an
existing grid (:meth:`~vqtoolkit.priors.editing.EditablePrior.resample`).

Likelihood: MaskGIT has no exact one, so ``has_likelihood`` is false and ``prior_nll``, ``vqtool
eval`` and ``fit-prior`` report none. Its fit scores (``history``) are the **masked-token
cross-entropy**, in bits per masked code at mask ratios drawn from the schedule (held-out: the
same masks every epoch), named ``train_masked_bits`` and ``val_masked_bits``: not bits per code, and
not comparable with the AR priors' NLL.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, Final, Literal, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vqtoolkit.components.options import Limit, bounds
from vqtoolkit.errors import ConfigError
from vqtoolkit.priors.editing import FillOptions
from vqtoolkit.priors.neural.base import draw
from vqtoolkit.priors.transformer import TransformerNet, TransformerNetPrior

Schedule = Literal["cosine", "linear", "arccos"]
#: The share of a grid left masked, ``γ(r)`` for ``r`` in [0, 1]: 1 at 0, 0 at 1.
SCHEDULES: Final[Mapping[str, Callable[[Tensor], Tensor]]] = {
    "cosine": lambda r: torch.cos(r * math.pi / 2),
    "linear": lambda r: 1 - r,
    "arccos": lambda r: torch.arccos(r) / (math.pi / 2),
}
#: History keys of the loop renamed to what a MaskGIT fit's scores are.
HISTORY_NAMES: Final = {"train_bits_per_code": "train_masked_bits", "val_bits_per_code": "val_masked_bits"}


class BidirectionalTransformer(TransformerNet):
    """Code embeddings (plus a mask token, index ``num_codes``) + positions + condition → blocks → logits."""

    def __init__(
        self,
        num_codes: int,
        grid_shape: tuple[int, int],
        dim: int,
        layers: int,
        heads: int,
        num_classes: int | None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.code = nn.Embedding(num_codes + 1, dim)
        self.condition = nn.Embedding(num_classes, dim) if num_classes else None
        self.add_positions(grid_shape, dim)
        self.add_trunk(num_codes, dim, layers, heads, dropout, causal=False)

    def forward(self, tokens: Tensor, labels: Tensor | None = None) -> Tensor:
        """Logits ``(N, K, H, W)`` of grids ``(N, H, W)`` whose masked positions hold the mask token."""
        n, h, w = tokens.shape
        x = self.code(tokens.reshape(n, h * w)) + self.position
        if self.condition is not None and labels is not None:
            x = x + self.condition(labels)[:, None]
        return self.trunk(x, h, w)


def random_masks(indices: Tensor, schedule: Schedule, generator: torch.Generator | None = None) -> Tensor:
    """Training masks ``(N, H, W)``: ``ceil(γ(r)·H·W)`` random positions of each grid, ``r ~ U(0, 1)``."""
    n, positions = len(indices), indices[0].numel()
    r = torch.rand(n, device=indices.device, generator=generator)
    count = (SCHEDULES[schedule](r) * positions).ceil().clamp(1, positions)
    ranks = torch.rand(n, positions, device=indices.device, generator=generator).argsort(1).argsort(1)
    return (ranks < count[:, None]).reshape(indices.shape)


#: Most log-probabilities (groups × positions × codes) scored at once when inferring an edit's group.
GROUP_SCORE_ELEMENTS = 2**24


class MaskGITPrior(TransformerNetPrior):
    """MaskGIT prior: ``dim`` wide, ``layers`` bidirectional blocks of ``heads`` heads, ``dropout``.

    The sampling options are also settable after fitting, like ``guidance``.

    Args:
        steps: Network passes of a sample.
        schedule: The mask schedule of training and sampling (:data:`SCHEDULES`).
        choice_temperature: Scale of the confidence noise that picks which drawn codes to keep.
        top_k: Draw each code from the ``top_k`` likeliest (``None``: all).
        **options: The options of :class:`~vqtoolkit.priors.transformer.TransformerNetPrior`
            (``dim``, ``layers``, ``heads``, ``dropout``, ``lr``) and its fitting options
            (``epochs``, ``patience``, ...).
    """

    has_likelihood = False
    limits = bounds(steps=Limit(1), choice_temperature=Limit(0), top_k=Limit(1))

    def __init__(
        self,
        steps: int = 8,
        schedule: Schedule = "cosine",
        choice_temperature: float = 4.5,
        top_k: int | None = None,
        **options: Any,
    ) -> None:
        super().__init__(**options)

    def _new_net(self) -> BidirectionalTransformer:
        return BidirectionalTransformer.for_prior(self)

    # -- sampling options, settable after fitting ------------------------------------------------
    @property
    def steps(self) -> int:
        """Network passes of a sample (fewer when fewer codes are masked)."""
        return int(self._config["steps"])

    @steps.setter
    def steps(self, value: int) -> None:
        if not isinstance(value, int) or value < 1:
            raise ConfigError(f"steps must be a whole number >= 1; got {value!r}")
        self._config["steps"] = value

    @property
    def top_k(self) -> int | None:
        """Draw each code from the ``top_k`` most likely (``None``: from all)."""
        return self._config["top_k"]

    @top_k.setter
    def top_k(self, value: int | None) -> None:
        if value is not None and (not isinstance(value, int) or value < 1):
            raise ConfigError(f"top_k must be a whole number >= 1 (or None for all codes); got {value!r}")
        self._config["top_k"] = value

    # -- fitting ---------------------------------------------------------------------------------
    def _fit(self, data: Tensor, labels: Tensor | None, *, progress: bool, **fit_params: Any) -> None:
        super()._fit(data, labels, progress=progress, **fit_params)
        self.history = [{HISTORY_NAMES.get(k, k): v for k, v in record.items()} for record in self.history]

    def _loss(self, net: nn.Module, indices: Tensor, groups: Tensor | None) -> Tensor:
        """Mean cross-entropy in nats per masked code, masks drawn from the schedule.

        Training draws fresh masks (and, with ``condition_dropout``, drops that share of the
        conditions); held-out scoring (eval mode) uses the same seeded masks every epoch.
        """
        generator = None if net.training else torch.Generator(indices.device).manual_seed(0)
        masked = random_masks(indices, self._config["schedule"], generator)
        logits = net(indices.masked_fill(masked, self.num_codes), self._drop_conditions(net, groups))
        return F.cross_entropy(logits.float().permute(0, 2, 3, 1)[masked], indices[masked])

    def _log_likelihood(self, data: Tensor, labels: Tensor | None) -> Tensor:
        raise NotImplementedError(
            "maskgit has no exact likelihood over code grids; its fit reports the masked-token "
            "cross-entropy (history: val_masked_bits), which is not bits per code"
        )

    # -- sampling and editing --------------------------------------------------------------------
    @torch.inference_mode()
    def _sample(
        self, n: int, labels: Tensor | None, temperature: float, generator: torch.Generator | None
    ) -> Tensor:
        """``steps`` parallel passes from an all-masked grid (twin rows come back doubled when guided)."""
        rows = n // 2 if self._guided else n
        h, w = self.grid_shape
        tokens = torch.zeros(rows, h, w, dtype=torch.long, device=self.class_log_prior.device)
        self.net.eval()
        fill = FillOptions(labels, temperature, generator)
        filled = self._resample(tokens, torch.ones_like(tokens, dtype=torch.bool), fill)
        return filled.repeat(n // rows, 1, 1)

    def _groups_given(
        self, indices: Tensor, keep: Tensor, generator: torch.Generator | None
    ) -> Tensor | None:
        """Each grid's label or cluster drawn from ``p(c | kept codes) ∝ p(c) Π p(code | c)``.

        ``p(code | c)`` at a position is the network's prediction there from an all-masked grid given
        ``c`` alone: the codes a condition makes likely, position by position. Without such a
        posterior an edit is conditioned on no group. The bidirectional network then under-uses
        the kept codes, having always seen a group in training but for ``condition_dropout``.
        """
        assert self.groups is not None
        n, h, w = indices.shape
        positions = indices.reshape(n, h * w)
        kept = keep.reshape(n, h * w).float()
        blank = torch.full((1, h, w), self.num_codes, dtype=torch.long, device=indices.device)
        chunk = max(1, GROUP_SCORE_ELEMENTS // (h * w * self.num_codes))
        scores = []
        for start in range(0, self.groups, chunk):
            groups = torch.arange(start, min(start + chunk, self.groups), device=indices.device)
            logits = self.net(blank.expand(len(groups), h, w), groups).float().flatten(2)  # (g, K, hw)
            log_p = torch.log_softmax(logits, 1).transpose(1, 2)  # (g, hw, K)
            chosen = log_p.gather(2, positions.t()[None].expand(len(groups), h * w, n))  # (g, hw, n)
            scores.append(torch.einsum("gpn,np->ng", chosen, kept))
        posterior = torch.cat(scores, 1) + self.class_log_prior[: self.groups]
        return torch.multinomial(torch.softmax(posterior, 1), 1, generator=generator).squeeze(1)

    def _resample(self, tokens: Tensor, masked: Tensor, fill: FillOptions) -> Tensor:
        """Fill ``tokens`` where ``masked`` in ``min(steps, masked codes)`` parallel passes."""
        temperature, generator = fill.temperature, fill.generator
        n, h, w = tokens.shape
        net = cast("BidirectionalTransformer", self.net)
        tokens, masked = tokens.reshape(n, h * w).clone(), masked.reshape(n, h * w).clone()
        total = masked.sum(1)
        steps = min(self.steps, int(total.max()))
        gamma = SCHEDULES[self._config["schedule"]]
        for step in range(steps):
            inputs = tokens.masked_fill(masked, self.num_codes).reshape(n, h, w)
            logits = (
                net(inputs.repeat(2 if self._guided else 1, 1, 1), fill.groups).flatten(2).transpose(1, 2)
            )
            logits = self._filtered(logits.float()).reshape(n * h * w, -1)
            drawn = draw(logits, temperature, generator, self._config["top_p"]).reshape(n, h * w)
            confidence = torch.log_softmax(logits / temperature, -1).gather(1, drawn.reshape(-1, 1))
            noise = -torch.log(
                -torch.log(torch.rand(n, h * w, device=tokens.device, generator=generator).clamp_min(1e-20))
            )
            anneal = self._config["choice_temperature"] * (1 - (step + 1) / steps)
            confidence = (confidence.reshape(n, h * w) + anneal * noise).masked_fill(~masked, math.inf)
            ratio = gamma(torch.tensor((step + 1) / steps, dtype=torch.float64))
            # keep the remain least confident masked; at least one code fills per pass
            remain = torch.minimum((ratio * total).floor().long(), masked.sum(1) - 1).clamp(min=0)
            still = confidence.argsort(1).argsort(1) < remain[:, None]
            tokens = torch.where(masked & ~still, drawn, tokens)
            masked = still
        return tokens.reshape(n, h, w)

    def _filtered(self, logits: Tensor) -> Tensor:
        """Logits ``(N, T, K)``: the guided mix of the twin halves, then all but the ``top_k`` at -inf."""
        if self._guided:
            conditioned, unconditioned = logits.chunk(2)
            logits = unconditioned + self.guidance * (conditioned - unconditioned)
        k = self.top_k
        if k is not None and k < logits.shape[-1]:
            logits = logits.masked_fill(logits < logits.topk(k, -1).values[..., -1:], -math.inf)
        return logits
