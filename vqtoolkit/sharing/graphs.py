"""The two halves of a model as plain modules ONNX can express: images → code indices → images.

PyTorch's own search (:func:`vqtoolkit.quantize.core.nearest_codes`) tiles the work and reuses
buffers, which is fast in eager PyTorch but no graph; here each built-in quantizer's search is one
``argmin`` over ``‖e‖² − 2 x·e`` (the same distances, the lowest copy of a duplicated code, as the
search promises), and each lookup one gather from the codebook (for ``fsq``, its implicit grid
points). The modules compute what :meth:`vqtoolkit.model.vqvae.VQVAE.encode` and
:meth:`~vqtoolkit.pipeline.Pipeline.decode` compute, so the exported graphs can be checked against them.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from vqtoolkit.components.base import component_name
from vqtoolkit.errors import ConfigError
from vqtoolkit.model.vqvae import VQVAE
from vqtoolkit.quantize.base import Quantizer
from vqtoolkit.quantize.core.search import first_copies
from vqtoolkit.quantize.ema import EMAQuantizer
from vqtoolkit.quantize.fsq import FSQ
from vqtoolkit.quantize.residual import ResidualQuantizer
from vqtoolkit.quantize.vq import VectorQuantizer

#: The quantizers whose search and lookup this module knows (plugin subclasses may change either).
SUPPORTED = (VectorQuantizer, EMAQuantizer, FSQ, ResidualQuantizer)


class CodebookSearch(nn.Module):
    """Rows ``(N, D)`` → the index of their nearest code, as :meth:`VectorQuantizer.nearest` finds it."""

    table: Tensor
    squares: Tensor
    first: Tensor

    def __init__(self, quantizer: VectorQuantizer) -> None:
        super().__init__()
        self.quantizer = quantizer  # its projection (code_dim) and normalisation (cosine) run in the graph
        table = quantizer._search_table().detach().float()
        copies = first_copies(table)
        self.register_buffer("table", table)
        self.register_buffer("squares", table.pow(2).sum(1))
        self.register_buffer("first", torch.arange(len(table)) if copies is None else copies)

    def forward(self, rows: Tensor) -> Tensor:
        """Indices ``(N,)``: the lowest code at the least squared distance, in the search space."""
        x = self.quantizer._to_search_space(rows)
        return self.first[(self.squares - 2 * x @ self.table.t()).argmin(1)]


class ResidualSearch(nn.Module):
    """Rows ``(N, D)`` → ``(N, R)``: each stage's nearest code to what the stages before it left."""

    codebooks: Tensor

    def __init__(self, quantizer: ResidualQuantizer) -> None:
        super().__init__()
        self.stages = nn.ModuleList(CodebookSearch(stage) for stage in quantizer.vq_stages)
        self.register_buffer("codebooks", quantizer.codebook.detach().float())

    def forward(self, rows: Tensor) -> Tensor:
        """Stage indices ``(N, R)``."""
        residual, out = rows, []
        for r, search in enumerate(self.stages):
            index = search(residual)
            residual = residual - self.codebooks[r][index]
            out.append(index)
        return torch.stack(out, 1)


class GridSearch(nn.Module):
    """Rows ``(N, d)`` → the index of the ``fsq`` grid point they round to (:meth:`FSQ.nearest`)."""

    def __init__(self, quantizer: FSQ) -> None:
        super().__init__()
        self.quantizer = quantizer

    def forward(self, rows: Tensor) -> Tensor:
        """Indices ``(N,)``."""
        return self.quantizer.nearest(rows)


def code_search(quantizer: Quantizer) -> nn.Module:
    """The export-ready search of a built-in quantizer (rows ``(N, D)`` → indices ``(N,)`` or ``(N, R)``).

    Args:
        quantizer: One of the built-in quantizers (``vq``, ``ema``, ``fsq``, ``residual``).

    Returns:
        A module computing the quantizer's indices.

    Raises:
        ConfigError: Any other quantizer (a plugin's), named in the message.
    """
    if type(quantizer) not in SUPPORTED:
        raise ConfigError(
            f"the quantizer {component_name(quantizer)!r} ({type(quantizer).__module__}."
            f"{type(quantizer).__qualname__}) cannot be exported to ONNX: only the built-in vq, ema, fsq and "
            f"residual quantizers can; keep this model in PyTorch (vqtoolkit.load)"
        )
    if isinstance(quantizer, ResidualQuantizer):
        return ResidualSearch(quantizer)
    if isinstance(quantizer, FSQ):
        return GridSearch(quantizer)
    return CodebookSearch(quantizer)  # type: ignore[arg-type]


class Encode(nn.Module):
    """Images ``(B, C, H, W)`` → code indices ``(B, h, w)`` (``(B, R, h, w)`` for ``residual``)."""

    def __init__(self, model: VQVAE) -> None:
        super().__init__()
        self.encoder, self.search = model.encoder, code_search(model.quantizer)
        self.stacked = isinstance(model.quantizer, ResidualQuantizer)

    def forward(self, images: Tensor) -> Tensor:
        """The indices :meth:`VQVAE.encode` returns for ``images``."""
        z = self.encoder(images)
        b, d, h, w = z.shape
        indices = self.search(z.permute(0, 2, 3, 1).reshape(b * h * w, d))
        if self.stacked:
            return indices.reshape(b, h, w, -1).permute(0, 3, 1, 2)
        return indices.reshape(b, h, w)


class Decode(nn.Module):
    """Code indices (as :class:`Encode` returns them) → images ``(B, C, H, W)`` in [0, 1]."""

    codebook: Tensor

    def __init__(self, model: VQVAE) -> None:
        super().__init__()
        code_search(model.quantizer)  # the same refusal as the encoder's, naming the quantizer
        self.decoder = model.decoder
        self.register_buffer("codebook", model.quantizer.codebook.detach().float())  # (K, D) or (R, K, D)

    def forward(self, indices: Tensor) -> Tensor:
        """The images :meth:`~vqtoolkit.pipeline.Pipeline.decode` returns for ``indices``."""
        if self.codebook.ndim == 3:  # residual: the sum of every stage's codes, stage by stage
            vectors = self.codebook[0][indices[:, 0]]
            for r in range(1, self.codebook.shape[0]):
                vectors = vectors + self.codebook[r][indices[:, r]]
        else:
            vectors = self.codebook[indices]
        return self.decoder(vectors.permute(0, 3, 1, 2)).clamp(0, 1)
