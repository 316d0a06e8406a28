"""``pixelcnn``: a small gated PixelCNN over the grid of code indices (van den Oord et al., 2016).

``p(x) = Π_p p(x_p | x_<p)`` in raster order, each factor a softmax over the K codes. Each gated
layer has two stacks so there is no blind spot:

* the **vertical** stack sees every position in the rows strictly above (a ``(k//2+1) × k``
  kernel over rows ``i-k//2 … i``, whose input is shifted down one row in the first layer);
* the **horizontal** stack sees the positions strictly left in the same row (a ``1 × (k//2+1)``
  kernel, input shifted right one column in the first layer) plus the vertical stack's features
  at the same position through a 1×1 convolution.

The masked convolutions are written as cropped kernels over shifted inputs (as in PixelCNN++):
the same receptive field as a masked ``k × k`` kernel, without multiplying by zeroed weights.
Activations are gated, ``tanh(a) · σ(b)``; a class embedding joins both gates when
``conditional``. Because the vertical stack never looks at the current row, sampling computes it
once per row and only the cheap horizontal stack once per position.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from vqtoolkit import distributed
from vqtoolkit.component import check_positive
from vqtoolkit.errors import ConfigError, TrainingError
from vqtoolkit.priors.base import IndexPrior


def gate(x: Tensor) -> Tensor:
    """``tanh(a) · σ(b)`` over the two channel halves of ``x``."""
    a, b = x.chunk(2, dim=1)
    return torch.tanh(a) * torch.sigmoid(b)


@contextmanager
def single_thread() -> Iterator[None]:
    """Run tiny tensor ops on one CPU thread, then restore the thread count.

    Autoregressive sampling runs hundreds of small convolutions; forking and joining threads for
    each costs more than it saves (2 threads took ~10× the CPU time of 1 on a busy 2-core machine).
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class GatedLayer(nn.Module):
    """One gated layer: a vertical and a horizontal stack, optionally class-conditioned.

    The ``first`` layer shifts its inputs (down for the vertical stack, right for the horizontal
    one) so no position sees itself — the "mask A" of the paper; later layers may see the current
    position of the previous layer's features ("mask B") and add a residual connection.
    """

    def __init__(self, channels: int, kernel_size: int, num_classes: int | None, *, first: bool) -> None:
        super().__init__()
        self.first, self.reach = first, kernel_size // 2
        self.vertical = nn.Conv2d(channels, 2 * channels, (self.reach + 1, kernel_size))
        self.horizontal = nn.Conv2d(channels, 2 * channels, (1, self.reach + 1))
        self.vertical_to_horizontal = nn.Conv2d(2 * channels, 2 * channels, 1)
        self.horizontal_out = nn.Conv2d(channels, channels, 1)
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
        return self.vertical(F.pad(v, (self.reach, self.reach, self.reach, 0)))

    def horizontal_step(self, h: Tensor, vertical: Tensor, bias: Tensor | float) -> Tensor:
        """Horizontal stack output: position ``(i, j)`` sees row ``i`` left of ``j`` and ``vertical``."""
        x = F.pad(h, (1, 0))[..., :-1] if self.first else h  # shift right one column
        pre = self.horizontal(F.pad(x, (self.reach, 0))) + self.vertical_to_horizontal(vertical)
        out = self.horizontal_out(gate(pre + bias))
        return out if self.first else h + out


class GatedPixelCNN(nn.Module):
    """The network: code embedding → gated layers → 1×1 head with a softmax over ``num_codes``."""

    def __init__(
        self, num_codes: int, channels: int, layers: int, kernel_size: int, num_classes: int | None
    ) -> None:
        super().__init__()
        self.embedding = nn.Embedding(num_codes, channels)
        self.layers = nn.ModuleList(
            GatedLayer(channels, kernel_size, num_classes, first=i == 0) for i in range(layers)
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


#: Optimizer steps that ``epochs=None`` aims for.
AUTO_STEPS = 1500


class PixelCNNPrior(IndexPrior):
    """Gated PixelCNN prior, trained with cross-entropy on the frozen stage-1 model's indices.

    A ``val_fraction`` of the fitted grids is held out: its NLL (bits/code) is printed each epoch
    and the weights of the best epoch are kept. ``seed`` fixes initialisation and shuffling.
    ``epochs=None`` trains for about :data:`AUTO_STEPS` optimizer steps (2 to 50 epochs): 3 epochs
    on MNIST, 50 on the small ``digits`` set. With ``kernel_size=3`` each layer reaches one more
    row up and one more column left, so the default 6 layers cover a whole 7×7 grid.

    Under torch.distributed every process fits on all the grids: ``batch_size`` is the global batch,
    each process trains on its share of it in ``DistributedDataParallel``, and the held-out score
    (computed whole on every process) picks the same best epoch everywhere.
    """

    fits_on_every_rank = True

    def __init__(
        self,
        num_codes: int = 512,
        channels: int = 48,
        layers: int = 6,
        kernel_size: int = 3,
        epochs: int | None = None,
        batch_size: int = 128,
        lr: float = 2e-3,
        val_fraction: float = 0.05,
        seed: int = 0,
        conditional: bool = False,
        num_classes: int | None = None,
        grid_shape: Sequence[int] | None = None,
    ) -> None:
        for name, value in [("channels", channels), ("layers", layers), ("batch_size", batch_size)]:
            check_positive(name, value)
        if epochs is not None:
            check_positive("epochs", epochs)
        if kernel_size < 3 or kernel_size % 2 == 0:
            raise ConfigError(f"kernel_size must be odd and >= 3; got {kernel_size}")
        if not lr > 0 or not 0 < val_fraction < 1:
            raise ConfigError(
                f"need lr > 0 and 0 < val_fraction < 1; got lr={lr}, val_fraction={val_fraction}"
            )
        super().__init__(
            num_codes=num_codes,
            conditional=conditional,
            num_classes=num_classes,
            grid_shape=grid_shape,
            channels=channels,
            layers=layers,
            kernel_size=kernel_size,
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            val_fraction=val_fraction,
            seed=seed,
        )
        self.net = self._new_net()
        #: Per-epoch training record of the last ``fit`` (not saved in bundles).
        self.history: list[dict[str, Any]] = []

    def _new_net(self) -> GatedPixelCNN:
        c = self._config
        return GatedPixelCNN(self.num_codes, c["channels"], c["layers"], c["kernel_size"], self.num_classes)

    # -- fitting ------------------------------------------------------------------------------
    def _fit(self, data: Tensor, labels: Tensor | None, *, progress: bool) -> None:
        c = self._config
        device = self.class_log_prior.device
        # copies: the pipeline's indices come from inference mode and cannot join autograd as they are
        data = data.to(device, torch.long, copy=True)
        labels = None if labels is None else labels.to(device, torch.long, copy=True)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(c["seed"])
            self.net = self._new_net().to(device)
        generator = torch.Generator().manual_seed(c["seed"])
        order = torch.randperm(len(data), generator=generator).to(device)
        n_val = max(1, int(len(data) * c["val_fraction"]))
        val, train = order[:n_val], order[n_val:]
        per_epoch = distributed.batches_per_epoch(len(train), c["batch_size"])
        epochs = c["epochs"] or min(50, max(2, round(AUTO_STEPS / per_epoch)))
        optimizer = torch.optim.Adam(self.net.parameters(), lr=c["lr"])
        steps = epochs * per_epoch
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=c["lr"], total_steps=steps)
        best = (math.inf, copy.deepcopy(self.net.state_dict()))
        self.history = []
        saver, first = self.fit_checkpoint, 1
        state: dict[str, Any] = {
            "net": self.net,
            "optimizer": optimizer,
            "schedule": schedule,
            "generator": generator,
        }
        settings = {"config": self.config, "data": list(data.shape)}
        if saver is not None:  # resume from the last finished epoch, if asked and there is one
            done = saver.restore(**state, settings=settings)
            best, self.history, first = (
                (done.best_score, done.best_weights or best[1]),
                done.history or [],
                done.epoch,
            )
        net = distributed.wrap(self.net, device)  # DDP across processes: gradients averaged
        for epoch in range(first, epochs + 1):
            self.net.train()
            order = train[torch.randperm(len(train), generator=generator).to(device)]
            batches = distributed.shard_batches(order, c["batch_size"])  # this process's share
            bar = tqdm(
                batches,
                desc=f"stage 2 · pixelcnn epoch {epoch}/{epochs}",
                unit="batch",
                disable=not progress,
                leave=False,
                dynamic_ncols=True,
            )
            total = 0.0
            for batch in bar:
                loss = self._nats_per_code(data[batch], None if labels is None else labels[batch], net)
                if not torch.isfinite(loss):
                    raise TrainingError(
                        f"pixelcnn loss became {float(loss)} in epoch {epoch}: lower lr (now {c['lr']})"
                    )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
                total += float(loss.detach()) * len(batch)
                if saver is not None and saver.stop_requested:
                    raise saver.interrupted(epoch)
            seen = sum(len(b) for b in batches) * distributed.world_size()  # len(train) in one process
            record = {
                "epoch": epoch,
                "train_bits_per_code": distributed.sum_over_ranks(total) / seen / math.log(2),
                "val_bits_per_code": self._held_out_bits(data[val], None if labels is None else labels[val]),
            }
            self.history.append(record)
            if record["val_bits_per_code"] < best[0]:
                best = (record["val_bits_per_code"], copy.deepcopy(self.net.state_dict()))
            if saver is not None:
                saver.save(
                    **state,
                    epoch=epoch,
                    best_score=best[0],
                    best_weights=best[1],
                    history=self.history,
                    settings=settings,
                )
            if progress:
                tqdm.write(
                    f"prior epoch {epoch}/{epochs}  train {record['train_bits_per_code']:.4f} bits/code"
                    f"  | held-out {record['val_bits_per_code']:.4f} bits/code"
                )
        self.net.load_state_dict(best[1])
        self.net.eval()

    def _nats_per_code(self, indices: Tensor, labels: Tensor | None, net: nn.Module | None = None) -> Tensor:
        return F.cross_entropy((net or self.net)(indices, labels), indices)

    @torch.inference_mode()
    def _held_out_bits(self, indices: Tensor, labels: Tensor | None) -> float:
        self.net.eval()
        total = sum(
            float(self._nats_per_code(chunk, None if labels is None else labels[start : start + len(chunk)]))
            * chunk.numel()
            for start, chunk in zip(range(0, len(indices), 1024), indices.split(1024), strict=True)
        )
        return total / indices.numel() / math.log(2)

    # -- using it -----------------------------------------------------------------------------
    def _log_likelihood(self, data: Tensor, labels: Tensor | None) -> Tensor:
        data = data.long().to(self.class_log_prior.device)
        nll = F.cross_entropy(self.net(data, labels), data, reduction="none")
        return -nll.flatten(1).sum(1)

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
        with single_thread() if device.type == "cpu" else nullcontext():
            self._fill(grid, labels, temperature, generator)
        return grid

    def _fill(
        self, grid: Tensor, labels: Tensor | None, temperature: float, generator: torch.Generator | None
    ) -> None:
        h, w = grid.shape[1:]
        for i in range(h):
            vertical = [
                v[:, :, i : i + 1] for v in self.net.vertical(self.net.embed(grid[:, : i + 1]), labels)
            ]
            for j in range(w):
                features = self.net.horizontal(self.net.embed(grid[:, i : i + 1]), vertical, labels)
                logits = self.net.head(features[..., j : j + 1]).flatten(1)
                probs = torch.softmax(logits.float() / temperature, dim=-1)
                grid[:, i, j] = torch.multinomial(probs, 1, generator=generator).squeeze(1)
