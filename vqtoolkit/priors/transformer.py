"""``transformer``: a small causal transformer over the raster-ordered grid of code indices.

The grid is read as a sequence of ``H·W`` codes. Position ``t`` receives the code at ``t - 1``
(position 0 a start token: a learned class token when ``conditional``), plus a learned position
embedding and, with ``condition_every_position``, a learned embedding of the label or cluster (as
the PixelCNN adds its class embedding to every layer: the condition then steers every position
directly, not only through attention back to the start token), and predicts the code at ``t``
through pre-norm blocks of causal self-attention
(:func:`torch.nn.functional.scaled_dot_product_attention`) and an MLP. Every position attends to
all earlier ones, so the receptive field is the whole past at any grid size.

Sampling keeps each layer's keys and values in a :class:`KVCache`: drawing ``n`` grids costs one
forward step of one token per position, batched over the ``n`` grids.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any, ClassVar, Literal, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from vqtoolkit._compat import positional_options
from vqtoolkit.components.options import Limit, bounds
from vqtoolkit.errors import ConfigError
from vqtoolkit.priors.editing import EditablePrior, RasterEditing
from vqtoolkit.priors.neural.base import NeuralIndexPrior, single_thread

if TYPE_CHECKING:
    from typing_extensions import Self


class KVCache:
    """One layer's keys and values ``(N, heads, T, head_dim)`` for the positions computed so far."""

    def __init__(self) -> None:
        self.keys: Tensor | None = None
        self.values: Tensor | None = None

    def extend(self, keys: Tensor, values: Tensor) -> tuple[Tensor, Tensor]:
        """Append the newest positions' keys and values; return all of them."""
        if self.keys is not None and self.values is not None:
            keys, values = torch.cat([self.keys, keys], 2), torch.cat([self.values, values], 2)
        self.keys, self.values = keys, values
        return keys, values


def attention_kernel(q: Tensor) -> AbstractContextManager[None]:
    """The ``scaled_dot_product_attention`` kernel for queries ``q``: the math one for bfloat16 on a CPU.

    There torch's default fused kernel runs a training step's attention several times slower
    (``benchmarks/prior_threads.py``); everywhere else torch's own choice stands.
    """
    if q.device.type == "cpu" and q.dtype == torch.bfloat16:
        return sdpa_kernel(SDPBackend.MATH)
    return nullcontext()


class Block(nn.Module):
    """Pre-norm self-attention (causal unless ``causal=False``) and MLP, each residual."""

    def __init__(self, dim: int, heads: int, dropout: float, *, causal: bool = True) -> None:
        super().__init__()
        self.heads, self.dropout, self.causal = heads, dropout, causal
        self.attention_norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.project = nn.Linear(dim, dim)
        self.mlp_norm = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, cache: KVCache | None = None) -> Tensor:
        """``x`` ``(N, T, dim)``: the whole sequence (masked if causal), or with ``cache`` the newest one."""
        n, t, dim = x.shape
        q, k, v = self.qkv(self.attention_norm(x)).view(n, t, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        if cache is None:
            dropout = self.dropout if self.training else 0.0
            with attention_kernel(q):
                attended = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal, dropout_p=dropout)
        else:  # one new position attends to every cached one, itself included: no mask needed
            if t != 1:
                raise ValueError(f"a cached step takes one position at a time; got {t}")
            k, v = cache.extend(k, v)
            attended = F.scaled_dot_product_attention(q, k, v)
        x = x + self.drop(self.project(attended.transpose(1, 2).reshape(n, t, dim)))
        return x + self.drop(self.mlp(self.mlp_norm(x)))


class TransformerNet(nn.Module):
    """What the transformer priors' networks share: blocks, a final norm and the logits head.

    A subclass's constructor takes :meth:`for_prior`'s arguments and registers its embeddings and
    learned positions, then :meth:`add_trunk`; its ``forward`` embeds a grid, adds the positions and
    hands the sequence to :meth:`trunk`.
    """

    position: nn.Parameter
    blocks: nn.ModuleList
    norm: nn.LayerNorm
    head: nn.Linear

    @classmethod
    def for_prior(cls, prior: NeuralIndexPrior, **options: Any) -> Self:
        """The network ``prior``'s ``dim``, ``layers`` and ``heads`` describe, for its grid and conditions.

        Args:
            prior: A transformer prior (its config holds ``dim``, ``layers`` and ``heads``).
            **options: Further options of this network class.

        Returns:
            A fresh network, weights drawn from torch's random stream.

        Raises:
            ConfigError: ``dim`` is not a multiple of ``heads``.
        """
        c = prior.config
        return cls(
            prior.num_codes, prior.net_grid, c["dim"], c["layers"], c["heads"], prior.condition_rows,
            prior.dropout_rate, **options,
        )  # fmt: skip

    def add_positions(self, grid_shape: Sequence[int], dim: int) -> None:
        """Register ``position``: a learned ``dim``-vector per grid position, drawn from N(0, 0.02²)."""
        positions = torch.empty(grid_shape[0] * grid_shape[1], dim)
        self.position = nn.Parameter(nn.init.normal_(positions, std=0.02))  # randn * 0.02, no meta kernel

    def add_trunk(
        self, num_codes: int, dim: int, layers: int, heads: int, dropout: float, *, causal: bool
    ) -> None:
        """Register ``layers`` :class:`Block` s, the final ``norm`` and a ``head`` to ``num_codes`` logits."""
        if dim % heads:
            raise ConfigError(f"dim must be a multiple of heads; got dim={dim}, heads={heads}")
        self.blocks = nn.ModuleList(Block(dim, heads, dropout, causal=causal) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_codes)

    def trunk(self, x: Tensor, h: int, w: int) -> Tensor:
        """Logits ``(N, K, h, w)`` of embedded sequences ``x`` ``(N, h·w, dim)``, positions included."""
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x)).transpose(1, 2).reshape(len(x), -1, h, w)


class TransformerNetPrior(EditablePrior):
    """A network prior whose network is a :class:`TransformerNet`: the options every such prior takes.

    ``dropout="auto"`` sets the rate from the data size
    (:func:`~vqtoolkit.priors.neural.base.auto_dropout`). A subclass's constructor adds its own
    options and passes the rest on; its ``_new_net`` builds the network (with
    :meth:`TransformerNet.for_prior`), which this constructor calls last.

    Args:
        num_codes: Codes of the stage-1 model (the network's vocabulary).
        dim: Width of every block.
        layers: Transformer blocks.
        heads: Attention heads per block (``dim`` must be a multiple).
        dropout: Dropout rate of every block, or ``"auto"``.
        lr: Peak learning rate.
        **options: The fitting options of :class:`~vqtoolkit.priors.neural.base.NeuralIndexPrior`.
    """

    limits = bounds(dim=Limit(1), layers=Limit(1), heads=Limit(1), dropout=Limit(0, 1, high_open=True))
    #: Training grids of the default budget: 7 epochs of MNIST; a transformer grid costs more to
    #: train on than a PixelCNN's, so it gets fewer (the timing is in docs/results.md).
    auto_grids = 399_000

    def __init__(
        self,
        num_codes: int = 512,
        dim: int = 96,
        layers: int = 3,
        heads: int = 4,
        dropout: float | Literal["auto"] = "auto",
        lr: float = 3e-3,
        **options: Any,
    ) -> None:
        super().__init__(num_codes=num_codes, lr=lr, **options)
        self.net = self._new_net()


class CausalTransformer(TransformerNet):
    """Start/class token + code embeddings + learned positions → blocks → logits over ``num_codes``."""

    def __init__(
        self,
        num_codes: int,
        grid_shape: Sequence[int],
        dim: int,
        layers: int,
        heads: int,
        num_classes: int | None,
        dropout: float = 0.0,
        condition_every_position: bool = False,
    ) -> None:
        super().__init__()
        self.grid_shape = tuple(grid_shape)
        self.code = nn.Embedding(num_codes, dim)
        self.start = nn.Embedding(num_classes or 1, dim)
        self.condition = nn.Embedding(num_classes, dim) if num_classes and condition_every_position else None
        self.add_positions(self.grid_shape, dim)
        self.add_trunk(num_codes, dim, layers, heads, dropout, causal=True)

    def start_token(self, n: int, labels: Tensor | None) -> Tensor:
        """``(n, dim)``: the class token of ``labels`` (the one start token when unconditional)."""
        which = torch.zeros(n, dtype=torch.long, device=self.position.device) if labels is None else labels
        return self.start(which)

    def condition_bias(self, labels: Tensor | None) -> Tensor | float:
        """``(n, 1, dim)``: the embedding of ``labels`` added at every position (0 without one)."""
        if self.condition is None or labels is None:
            return 0.0
        return self.condition(labels)[:, None]

    def forward(self, indices: Tensor, labels: Tensor | None = None) -> Tensor:
        """Logits ``(N, K, H, W)``: those at ``p`` depend only on codes before ``p`` in raster order."""
        n, h, w = indices.shape
        codes = indices.reshape(n, h * w)
        x = torch.cat([self.start_token(n, labels)[:, None], self.code(codes[:, :-1])], 1)
        return self.trunk(x + self.position + self.condition_bias(labels), h, w)

    def step(
        self, previous: Tensor | None, t: int, labels: Tensor | None, caches: list[KVCache], n: int
    ) -> Tensor:
        """Logits ``(n, K)`` at position ``t`` given the codes drawn at ``t - 1`` (``None`` at ``t = 0``).

        Each block attends over its ``cache`` of earlier positions and appends position ``t`` to it.
        """
        x = self.start_token(n, labels) if previous is None else self.code(previous)
        x = (x + self.position[t])[:, None] + self.condition_bias(labels)
        for block, cache in zip(self.blocks, caches, strict=True):
            x = block(x, cache)
        return self.head(self.norm(x[:, 0]))


class TransformerPrior(RasterEditing, TransformerNetPrior):
    """Causal transformer prior: ``dim`` wide, ``layers`` blocks of ``heads`` heads, ``dropout``.

    Args:
        condition_every_position: Add the label or cluster embedding to every position's input, not
            only the start token (bundles written before the option load with it off).
        **options: The options of :class:`TransformerNetPrior` (``dim``, ``layers``, ``heads``,
            ``dropout``, ``lr``) and its fitting options (``epochs``, ``patience``, ...).
    """

    added_options: ClassVar[Mapping[str, Any]] = {"condition_every_position": False}

    @positional_options("num_codes", "dim", "layers", "heads", "dropout", "condition_every_position", "lr")
    def __init__(self, condition_every_position: bool = True, **options: Any) -> None:
        super().__init__(**options)

    def _new_net(self) -> CausalTransformer:
        return CausalTransformer.for_prior(
            self, condition_every_position=self._config["condition_every_position"]
        )

    @torch.inference_mode()
    def _sample(
        self, n: int, labels: Tensor | None, temperature: float, generator: torch.Generator | None
    ) -> Tensor:
        """Raster-order ancestral sampling with a key/value cache: one one-token step per position."""
        h, w = self.grid_shape
        device = self.class_log_prior.device
        net = cast("CausalTransformer", self.net).eval()
        codes = torch.zeros(n, h * w, dtype=torch.long, device=device)
        caches = [KVCache() for _ in net.blocks]
        with single_thread() if device.type == "cpu" else nullcontext():
            for t in range(h * w):
                previous = codes[:, t - 1] if t else None
                codes[:, t] = self._draw(net.step(previous, t, labels, caches, n), temperature, generator)
        return codes.reshape(n, h, w)
