"""``vq``: the classic VQ-VAE quantizer (van den Oord et al., 2017) on the shared STE core.

It carries the codebook-health options every codebook quantizer in vqtoolkit offers.

With its defaults it is exactly the tutorial layer. The options, each a few lines below:

* ``ema`` - codes follow an exponential moving average of their assigned encoder outputs
  (``decay``, Laplace smoothing ``eps``) instead of the codebook loss;
* ``kmeans_init`` - the first training batch seeds the codebook by k-means (``kmeans_iters``);
* ``revive_after`` - a code unused (chosen fewer than ``min_usage`` times per step) for that many
  training steps in a row is re-seeded from an encoder output of the current batch;
* ``cosine`` - search and codes live on the unit sphere (L2-normalised);
* ``code_dim`` - a factorised lookup: project ``dim → code_dim`` before the search and back after;
* ``rotation_trick`` - the rotation-trick gradient estimator instead of the plain STE.

Under ``torch.distributed`` the EMA statistics and usage counts are all-reduced and random draws
come from rank 0, so all processes keep identical codebooks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vqtoolkit.components.options import Limit, bounds
from vqtoolkit.quantize.base import Quantizer, QuantizerOutput
from vqtoolkit.quantize.core import (
    DEFAULT_CHUNK_BYTES,
    from_flat,
    nearest_codes,
    rotation_trick,
    straight_through,
    straight_through_lookup,
    to_flat,
    vq_losses,
)
from vqtoolkit.quantize.health import ema_update_, kmeans
from vqtoolkit.runtime.collectives import broadcast_, sum_then


class VectorQuantizer(Quantizer):
    """Codebook ``nn.Embedding(num_codes, code_dim or dim)``; see the module docstring for options.

    ``loss = mse(q, sg[z]) + beta * mse(sg[q], z)`` (the first term is dropped with ``ema``, whose
    codes are not trained by gradient). The output passes gradients straight through (or by the
    rotation trick). ``chunk_bytes`` bounds the memory of the nearest-code search.
    """

    limits = bounds(
        beta=Limit(0, float("inf"), high_open=True),
        decay=Limit(0, 1, low_open=True, high_open=True),
        eps=Limit(0, low_open=True),
        kmeans_iters=Limit(0),
        revive_after=Limit(1),
        code_dim=Limit(1),
        min_usage=Limit(1),
        chunk_bytes=Limit(1),
    )

    # buffers that exist only with the option that needs them (``ema``, ``kmeans_init``, ``revive_after``)
    cluster_size: Tensor
    embed_sum: Tensor
    initialized: Tensor
    unused_steps: Tensor
    project_in: nn.Linear | None
    project_out: nn.Linear | None

    def __init__(
        self,
        num_codes: int = 512,
        dim: int = 64,
        beta: float = 0.25,
        ema: bool = False,
        decay: float = 0.99,
        eps: float = 1e-5,
        kmeans_init: bool = False,
        kmeans_iters: int = 10,
        revive_after: int | None = None,
        cosine: bool = False,
        code_dim: int | None = None,
        rotation_trick: bool = False,
        min_usage: int = 1,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    ) -> None:
        super().__init__()
        self.num_codes, self.dim, self.beta, self.chunk_bytes = num_codes, dim, beta, chunk_bytes
        self.ema, self.decay, self.eps, self.cosine = ema, decay, eps, cosine
        self.kmeans_iters, self.revive_after, self.min_usage = kmeans_iters, revive_after, min_usage
        self.use_rotation_trick, self.kmeans_init = rotation_trick, kmeans_init
        search_dim = code_dim or dim
        self.embedding = nn.Embedding(num_codes, search_dim)
        nn.init.uniform_(self.embedding.weight, -1.0 / num_codes, 1.0 / num_codes)
        self.project_in = nn.Linear(dim, code_dim) if code_dim else None
        self.project_out = nn.Linear(code_dim, dim) if code_dim else None
        if ema:  # codes move by EMA only; the optimiser must leave them alone
            self.embedding.weight.requires_grad_(False)
            self.register_buffer("cluster_size", torch.ones(num_codes))
            self.register_buffer("embed_sum", self.embedding.weight.detach().clone())
        if kmeans_init:
            self.register_buffer("initialized", torch.tensor(False))
        if revive_after is not None:
            self.register_buffer("unused_steps", torch.zeros(num_codes, dtype=torch.long))

    # -- the codebook in search space and in the encoder's space ----------------------------
    def _search_table(self) -> Tensor:
        """Codes where the search happens ``(K, code_dim or dim)``: unit-norm with ``cosine``."""
        weight = self.embedding.weight
        return F.normalize(weight, dim=1) if self.cosine else weight

    def _to_search_space(self, flat: Tensor) -> Tensor:
        x = self.project_in(flat) if self.project_in is not None else flat
        return F.normalize(x, dim=1) if self.cosine else x

    def _from_search_space(self, vectors: Tensor) -> Tensor:
        return self.project_out(vectors) if self.project_out is not None else vectors

    @property
    def codebook(self) -> Tensor:
        """Codes ``(K, dim)`` in the encoder's space (projected back with ``code_dim``)."""
        return self._from_search_space(self._search_table())

    @property
    def stale_codes(self) -> int:
        """Codes unused for ``revive_after`` training steps in a row: the next ones revival re-seeds.

        (0 without revival.) Not ``dead_codes``, which counts codes never chosen in given counts.
        """
        if self.revive_after is None:
            return 0
        return int((self.unused_steps >= self.revive_after).sum())

    def nearest(self, flat: Tensor) -> Tensor:
        """Exact nearest code of each row, searched in the (cosine / low-dim) search space."""
        with torch.no_grad():
            x = self._to_search_space(flat)
            return nearest_codes(x, self._search_table().to(x.dtype), chunk_bytes=self.chunk_bytes)

    # -- codebook health (training mode only) -----------------------------------------------
    @torch.no_grad()
    def _kmeans_init(self, x: Tensor) -> None:
        """Seed the codebook from the first batch: k-means on rank 0, broadcast to the others."""
        centres, sizes = kmeans(x.float(), self.num_codes, self.kmeans_iters, chunk_bytes=self.chunk_bytes)
        centres, sizes = centres.to(self.embedding.weight), sizes.to(self.embedding.weight)
        broadcast_(centres, sizes)
        self.embedding.weight.copy_(centres)
        if self.ema:
            self.cluster_size.copy_(sizes)
            self.embed_sum.copy_(centres * sizes[:, None])
        self.initialized.fill_(True)

    @torch.no_grad()
    def _revive(self, x: Tensor) -> None:
        """Re-seed codes unused for ``revive_after`` steps with random rows of this batch."""
        if self.revive_after is None:
            return
        dead = self.unused_steps >= self.revive_after
        n_dead = int(dead.sum())
        if n_dead == 0:
            return
        pick = torch.randint(x.shape[0], (n_dead,), device=x.device)
        fresh = x[pick].to(self.embedding.weight)
        broadcast_(fresh)
        self.embedding.weight[dead] = fresh
        if self.ema:
            self.cluster_size[dead] = 1.0
            self.embed_sum[dead] = fresh
        self.unused_steps[dead] = 0

    @torch.no_grad()
    def _update(self, x: Tensor, indices: Tensor, counts: Tensor) -> None:
        """EMA step and usage bookkeeping, with statistics summed over processes (:func:`sum_then`)."""
        counts = counts.to(self.embedding.weight.dtype)
        if not self.ema:
            sum_then((counts,), lambda: self._count_usage(counts))
            return
        sums = torch.zeros_like(self.embedding.weight).index_add_(0, indices, x.to(self.embedding.weight))

        @torch.no_grad()  # may run after the forward (at the end of an overlapped training step)
        def apply() -> None:
            ema_update_(
                self.embedding.weight,
                self.cluster_size,
                self.embed_sum,
                counts,
                sums,
                decay=self.decay,
                eps=self.eps,
            )
            self._count_usage(counts)

        sum_then((counts, sums), apply)

    @torch.no_grad()
    def _count_usage(self, counts: Tensor) -> None:
        """Count another step unused for each code chosen fewer than ``min_usage`` times (revival)."""
        if self.revive_after is not None:
            self.unused_steps.add_(1).masked_fill_(counts >= self.min_usage, 0)

    # -- forward ----------------------------------------------------------------------------
    def forward(self, z: Tensor) -> QuantizerOutput:
        """Quantize ``z``; in training mode also run k-means init, revival and the EMA step."""
        flat = to_flat(z, self.dim)
        x = self._to_search_space(flat)
        if self.training:
            if self.kmeans_init and not bool(self.initialized):
                self._kmeans_init(x.detach())
            if self.revive_after is not None:
                self._revive(x.detach())
        table = self._search_table()
        indices = nearest_codes(x.detach(), table.detach(), chunk_bytes=self.chunk_bytes)
        table = table.detach() if self.ema else table
        grid = indices.reshape(z.shape[0], *z.shape[2:])
        if self.use_rotation_trick or self.cosine or self.project_in is not None:
            codes = F.embedding(indices, table).to(x.dtype)
            codebook_loss, commitment_loss = vq_losses(x, codes)
            estimator = rotation_trick if self.use_rotation_trick else straight_through
            quantized = from_flat(self._from_search_space(estimator(x, codes)), grid)
        else:  # the plain layer: lookup, estimator and losses in one fused node
            quantized, codebook_loss, commitment_loss = straight_through_lookup(z, table, grid, x.detach())
        counts = torch.bincount(indices, minlength=self.num_codes)
        if self.training and (self.ema or self.revive_after is not None):  # after the lookup used the codes
            self._update(x.detach(), indices, counts.clone())
        loss = self.beta * commitment_loss if self.ema else codebook_loss + self.beta * commitment_loss
        return QuantizerOutput(
            quantized=quantized,
            indices=grid,
            loss=loss,
            counts=counts,
            losses={"codebook": codebook_loss, "commitment": commitment_loss},
        )
