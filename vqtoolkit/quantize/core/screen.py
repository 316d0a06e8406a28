"""A bfloat16 screen in front of the exact search: the same codes, for a fraction of the float32 GEMM.

On CPUs with bfloat16 matrix instructions a bfloat16 distance GEMM costs well under half the
float32 one. Its distances are only approximate, but their error has a proven bound
(:func:`screen_error`, plus the float32 recheck's own rounding, :func:`recheck_error`): every code
whose screened distance lies within twice that bound of a row's best screened distance is a
*candidate*, and every code that could win the float32 comparison is one of them. The candidates
(a handful per row) are then compared in float32 by ``‖z − e‖²``, ties to the lowest index, so
copies of a code resolve to the first copy with no separate pass. A row chunk whose candidates
would exceed a budget (codes packed far closer than the bound can tell apart) reports ``None``,
and the search takes the plain way from there on.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

#: bfloat16's unit roundoff (8 significant bits, round to nearest).
UNIT = 2.0**-8
#: Headroom over the derived bound, for kernels that order their float32 accumulation differently.
SAFETY = 1.5
#: Smallest codebook screened by default: below it the float32 search is faster (docs/performance.md).
MIN_CODES = 4096
#: Most candidate blocks per row (on average over a row chunk) before the chunk is searched exactly.
MAX_BLOCKS_PER_ROW = 8


@functools.cache
def bf16_matmul_is_fast() -> bool:
    """Whether this CPU runs bfloat16 GEMMs on native instructions (oneDNN's own check)."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def worth_screening(flat: Tensor, codebook: Tensor) -> bool:
    """Screen float32 CPU searches of at least :data:`MIN_CODES` codes where bfloat16 GEMMs are fast."""
    return (
        flat.device.type == "cpu"
        and flat.dtype == torch.float32
        and codebook.dtype == torch.float32
        and codebook.shape[0] >= MIN_CODES
        and bf16_matmul_is_fast()
    )


def screen_error(row_norms: Tensor, code_norm: float, dim: int) -> Tensor:
    """Bound on ``|screened − true|`` squared distance per row, for codes of norm at most ``code_norm``.

    The screen computes ``bf16(‖e‖²) − 2·z̃·ẽ`` with ``z̃, ẽ`` rounded to bfloat16 (relative error
    ``u`` each), float32 accumulation over ``dim`` terms (``γ``) and the result rounded to bfloat16
    again. With ``S = ‖z‖·‖e‖`` (Cauchy-Schwarz bounds ``Σ|z_i e_i|``) the error before the final
    rounding is at most ``2(2u + u² + γ(1+u)²)·S + (u + 2γ)·‖e‖²``, and the final rounding adds
    ``u`` of the result's magnitude, at most ``‖e‖² + 2S`` plus that error.
    """
    gamma = dim * 2.0**-24 / (1 - dim * 2.0**-24)
    s = row_norms * code_norm
    squared = code_norm * code_norm
    before = 2 * (2 * UNIT + UNIT**2 + gamma * (1 + UNIT) ** 2) * s + (UNIT + 2 * gamma) * squared
    return SAFETY * ((1 + UNIT) * before + UNIT * (squared + 2 * s))


def recheck_error(row_norms: Tensor, code_norm: float, dim: int) -> Tensor:
    """Bound on the rounding of the float32 ``‖z − e‖²`` recheck itself, per row.

    Each difference, square and the ``dim``-term sum round once (``γ`` of ``dim + 2`` float32
    roundings), relative to ``‖z − e‖² ≤ (‖z‖ + ‖e‖)²``.
    """
    steps = (dim + 2) * 2.0**-24
    return SAFETY * steps / (1 - steps) * (row_norms + code_norm) ** 2


def exact_choice(chunk: Tensor, codebook: Tensor, rows: Tensor, codes: Tensor) -> Tensor:
    """Per row of ``chunk``, the candidate code at the least float32 ``‖z − e‖²``, lowest index on ties.

    ``(rows[i], codes[i])`` are the candidate pairs; every row must have at least one.
    """
    distances = (chunk[rows] - codebook[codes]).pow_(2).sum(1)
    best = distances.new_full((chunk.shape[0],), float("inf")).scatter_reduce(0, rows, distances, "amin")
    tied = distances == best[rows]
    first = codes.new_full((chunk.shape[0],), codebook.shape[0])
    return first.scatter_reduce(0, rows[tied], codes[tied], "amin")


class Screen:
    """One call's screened search: the codebook in bfloat16, tiled as the exact search tiles it.

    ``tiles`` are ``(start, stop, block)`` code tiles of :func:`~.search.tile_plan` whose columns
    ``table`` holds in interleaved order: column ``j·(n/block) + c`` of a tile is code
    ``start + c·block + j``.
    """

    def __init__(
        self, flat: Tensor, codebook: Tensor, table: Tensor, tiles: tuple[tuple[int, int, int], ...]
    ):
        self.codebook, self.tiles = codebook, tiles
        sq = table.pow(2).sum(1)
        self.table, self.sq = table.bfloat16(), sq.bfloat16()
        self.flat = flat.bfloat16()
        code_norm = float(sq.max().sqrt())
        row_norms, dim = flat.norm(dim=1), flat.shape[1]
        # a code beyond this margin is farther than the best both truly and after float32 rounding
        self.margin = 2 * (screen_error(row_norms, code_norm, dim) + recheck_error(row_norms, code_norm, dim))
        self.usable = bool(torch.isfinite(self.margin).all()) and bool(torch.isfinite(sq).all())

    def rows(self, start_row: int, flat_chunk: Tensor, buffer: Tensor) -> Tensor | None:
        """Nearest codes of ``flat_chunk`` (rows ``start_row …`` of the call), ``None`` if too crowded."""
        n = flat_chunk.shape[0]
        chunk = self.flat[start_row : start_row + n]
        margin = self.margin[start_row : start_row + n]
        best = torch.full((n,), float("inf"), device=chunk.device)
        found_rows, found_codes, found_values = [], [], []
        for start, stop, block in self.tiles:
            screened = buffer[: n * (stop - start)].view(n, stop - start)
            torch.addmm(self.sq[start:stop], chunk, self.table[start:stop].t(), alpha=-2, out=screened)
            by_block = screened.view(n, block, (stop - start) // block)
            block_min = by_block.amin(1).float()
            best = torch.minimum(best, block_min.amin(1))
            limit = best + margin
            row, blocks = (block_min <= limit[:, None]).nonzero(as_tuple=True)
            if row.numel() > MAX_BLOCKS_PER_ROW * n:
                return None
            values = by_block[row, :, blocks].float()
            pick, within = (values <= limit[row, None]).nonzero(as_tuple=True)
            found_rows.append(row[pick])
            found_codes.append(start + blocks[pick] * block + within)
            found_values.append(values[pick, within])
        rows, codes, values = torch.cat(found_rows), torch.cat(found_codes), torch.cat(found_values)
        keep = values <= (best + margin)[rows]
        return exact_choice(flat_chunk, self.codebook, rows[keep], codes[keep])
