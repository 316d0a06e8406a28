"""``pixelcnn``: a gated PixelCNN over the grid of code indices (van den Oord et al., 2016).

``p(x) = Π_p p(x_p | x_<p)`` in raster order, each factor a softmax over the K codes. Each gated
layer has two stacks so there is no blind spot:

* the **vertical** stack sees positions in the rows strictly above (a ``(k//2+1) × k`` kernel
  over rows ``i-d·k//2 … i`` at dilation ``d``, whose input is shifted down one row in the first
  layer);
* the **horizontal** stack sees the positions strictly left in the same row (a ``1 × (k//2+1)``
  kernel at dilation ``d``, input shifted right one column in the first layer) plus the vertical
  stack's features at the same position through a 1×1 convolution.

The dilations cycle through 1, 2, 4, … up to the grid's size (:func:`dilations`), so the receptive
field covers every earlier position of any grid with a few layers (plain 3×3 layers grow it by one
row and column per layer: 6 of them leave 56 position pairs unseen on an 8×8 grid). The masked
convolutions are written as cropped kernels over shifted inputs (as in PixelCNN++). Activations are
gated, ``tanh(a) · σ(b)``; a class embedding joins both gates when ``conditional``; later layers
are residual. Because the vertical stack never looks at the current row, sampling computes it once
per row and only the cheap horizontal stack once per position.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from typing import Any, Literal, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vqtoolkit.components.options import Limit, bounds
from vqtoolkit.errors import ConfigError
from vqtoolkit.priors.editing import RasterEditing
from vqtoolkit.priors.neural.base import single_thread


def dilations(grid_shape: Sequence[int], layers: int, kernel_size: int = 3) -> list[int]:
    """Per-layer dilations ``1, r+1, (r+1)², …`` (``r = kernel_size // 2``), cycled over ``layers``.

    With reach ``r`` per layer, dilations ``(r+1)^0 … (r+1)^(m-1)`` together reach every offset up to
    ``(r+1)^m - 1`` without holes; ``m`` is the smallest that spans the grid. Raises a
    :class:`ConfigError` if ``layers`` is fewer than ``m``.
    """
    reach, span = kernel_size // 2, max(grid_shape) - 1
    cycle = [1]
    while (reach + 1) ** len(cycle) - 1 < span:
        cycle.append(cycle[-1] * (reach + 1))
    if layers < len(cycle):
        raise ConfigError(
            f"{layers} layers of kernel_size {kernel_size} cannot see every earlier position of "
            f"grid_shape {list(grid_shape)}; use layers >= {len(cycle)} or a larger kernel_size"
        )
    return [cycle[i % len(cycle)] for i in range(layers)]


def gate(x: Tensor) -> Tensor:
    """``tanh(a) · σ(b)`` over the two channel halves of ``x``."""
    a, b = x.chunk(2, dim=1)
    return torch.tanh(a) * torch.sigmoid(b)


class GatedLayer(nn.Module):
    """One gated layer: a vertical and a horizontal stack, optionally class-conditioned.

    The ``first`` layer shifts its inputs (down for the vertical stack, right for the horizontal
    one) so no position sees itself — the "mask A" of the paper; later layers may see the current
    position of the previous layer's features ("mask B") and add a residual connection.
    """

    def __init__(
        self,
        channels: int,
        kernel_size: int,
        num_classes: int | None,
        *,
        first: bool,
        dilation: int = 1,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.first, self.reach, self.dilation = first, kernel_size // 2, dilation
        self.vertical = nn.Conv2d(channels, 2 * channels, (self.reach + 1, kernel_size), dilation=dilation)
        self.horizontal = nn.Conv2d(channels, 2 * channels, (1, self.reach + 1), dilation=dilation)
        self.vertical_to_horizontal = nn.Conv2d(2 * channels, 2 * channels, 1)
        self.horizontal_out = nn.Conv2d(channels, channels, 1)
        self.dropout = nn.Dropout(dropout)
        self.condition = nn.Embedding(num_classes, 2 * channels) if num_classes else None

    def bias(self, labels: Tensor | None) -> Tensor | float:
        """The class embedding added to both gates (0 for an unconditional layer)."""
        if self.condition is None or labels is None:
            return 0.0
        return self.condition(labels)[:, :, None, None]

    def vertical_features(self, v: Tensor) -> Tensor:
        """Pre-activation of the vertical stack: row ``i`` depends on input rows ``< i`` only."""
        if self.first:
            v = F.pad(v, (0, 0, 1, 0))[:, :, :-1]  # shift down one row
        pad = self.reach * self.dilation
        return self.vertical(F.pad(v, (pad, pad, pad, 0)))

    def horizontal_step(self, h: Tensor, vertical: Tensor, bias: Tensor | float) -> Tensor:
        """Horizontal stack output: position ``(i, j)`` sees row ``i`` left of ``j`` and ``vertical``."""
        x = F.pad(h, (1, 0))[..., :-1] if self.first else h  # shift right one column
        pre = self.horizontal(F.pad(x, (self.reach * self.dilation, 0))) + self.vertical_to_horizontal(
            vertical
        )
        out = self.horizontal_out(self.dropout(gate(pre + bias)))
        return out if self.first else h + out


class GatedPixelCNN(nn.Module):
    """The network: code embedding → gated layers (one per dilation) → 1×1 head over ``num_codes``."""

    def __init__(
        self,
        num_codes: int,
        channels: int,
        dilations: Sequence[int],
        kernel_size: int,
        num_classes: int | None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.embedding = nn.Embedding(num_codes, channels)
        self.layers = nn.ModuleList(
            GatedLayer(channels, kernel_size, num_classes, first=i == 0, dilation=d, dropout=dropout)
            for i, d in enumerate(dilations)
        )
        self.head = nn.Sequential(
            nn.ReLU(), nn.Conv2d(channels, 2 * channels, 1), nn.ReLU(), nn.Conv2d(2 * channels, num_codes, 1)
        )

    @property
    def gated_layers(self) -> list[GatedLayer]:
        """The gated layers, typed (``nn.ModuleList`` hands out plain modules)."""
        return cast("list[GatedLayer]", list(self.layers))

    def embed(self, indices: Tensor) -> Tensor:
        """Channel-first code embeddings ``(N, C, H, W)`` of index grids ``(N, H, W)``."""
        return self.embedding(indices).permute(0, 3, 1, 2)

    def vertical(self, x: Tensor, labels: Tensor | None) -> list[Tensor]:
        """Every layer's vertical pre-activations for embedded grids ``x`` (rows above only)."""
        features = []
        for layer in self.gated_layers:
            pre = layer.vertical_features(x)
            features.append(pre)
            x = gate(pre + layer.bias(labels))
        return features

    def horizontal(self, x: Tensor, vertical: list[Tensor], labels: Tensor | None) -> Tensor:
        """Features ``(N, C, H, W)`` from embedded grids ``x`` and the vertical features of the same rows."""
        for layer, v in zip(self.gated_layers, vertical, strict=True):
            x = layer.horizontal_step(x, v, layer.bias(labels))
        return x

    def forward(self, indices: Tensor, labels: Tensor | None = None) -> Tensor:
        """Logits ``(N, K, H, W)``: those at ``p`` depend only on codes before ``p`` in raster order."""
        x = self.embed(indices)
        return self.head(self.horizontal(x, self.vertical(x, labels), labels))


class PixelCNNPrior(RasterEditing):
    """Gated PixelCNN prior, trained with cross-entropy on the frozen stage-1 model's indices.

    ``channels`` wide, ``layers`` gated layers of ``kernel_size`` with dilations chosen from the
    grid size (:func:`dilations`) so every earlier position reaches every later one, ``dropout``
    on each layer's gated output (``"auto"``: from the data size, see
    :func:`~vqtoolkit.priors.neural.base.auto_dropout`), and a peak learning rate ``lr`` of its own
    (higher than the transformer's). Fitting options (``epochs``, ``patience``, ...) are those
    of :class:`~vqtoolkit.priors.neural.base.NeuralIndexPrior`.
    """

    limits = bounds(channels=Limit(1), layers=Limit(1), dropout=Limit(0, 1, high_open=True))
    #: Training grids of the default budget: 8 epochs of MNIST (the timing is in docs/results.md).
    auto_grids = 456_000

    def __init__(
        self,
        num_codes: int = 512,
        channels: int = 48,
        layers: int = 6,
        kernel_size: int = 3,
        dropout: float | Literal["auto"] = "auto",
        lr: float = 5e-3,
        **options: Any,
    ) -> None:
        if kernel_size < 3 or kernel_size % 2 == 0:
            raise ConfigError(f"kernel_size must be odd and >= 3; got {kernel_size}")
        super().__init__(num_codes=num_codes, lr=lr, **options)
        self.net = self._new_net()

    def _new_net(self) -> GatedPixelCNN:
        c = self._config
        rates = dilations(self.net_grid, c["layers"], c["kernel_size"])
        return GatedPixelCNN(
            self.num_codes, c["channels"], rates, c["kernel_size"], self.condition_rows, self.dropout_rate
        )

    # -- using it -----------------------------------------------------------------------------
    @torch.inference_mode()
    def _sample(
        self, n: int, labels: Tensor | None, temperature: float, generator: torch.Generator | None
    ) -> Tensor:
        """Raster-order ancestral sampling, batched over the ``n`` grids.

        The vertical stack runs once per row on the rows drawn so far; the horizontal stack runs once
        per position on the current row only, and the head only at the position being drawn.
        """
        h, w = self.grid_shape
        device = self.class_log_prior.device
        grid = torch.zeros(n, h, w, dtype=torch.long, device=device)
        self.net.eval()  # no dropout when sampling
        with single_thread() if device.type == "cpu" else nullcontext():
            self._fill(grid, labels, temperature, generator)
        return grid

    def _fill(
        self, grid: Tensor, labels: Tensor | None, temperature: float, generator: torch.Generator | None
    ) -> None:
        h, w = grid.shape[1:]
        net = cast("GatedPixelCNN", self.net)
        for i in range(h):
            vertical = [v[:, :, i : i + 1] for v in net.vertical(net.embed(grid[:, : i + 1]), labels)]
            for j in range(w):
                features = net.horizontal(net.embed(grid[:, i : i + 1]), vertical, labels)
                grid[:, i, j] = self._draw(
                    net.head(features[..., j : j + 1]).flatten(1), temperature, generator
                )
