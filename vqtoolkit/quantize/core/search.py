"""Exact nearest-code search: squared L2, lowest index on ties, memory bounded by a chunk budget.

The distances ``‖e_k‖² − 2 z·e_k`` (``‖z‖²`` does not change the argmin) are computed one tile of
rows × codes at a time into one reused buffer of at most ``chunk_bytes``, so the extra memory never
grows with N×K. Three facts of CPU execution shape the code (the measurements are in
``docs/performance.md``):

* A row ``argmin`` is much slower than ``amin``. Within a tile the codes are stored interleaved
  (:func:`interleaved_order`) so that the minimum of each block of consecutive codes is a
  vectorised ``amin`` across rows; :func:`blocked_min` then needs ``argmin`` only over the block
  minima and within the winning block.
* A fresh CPU allocation of a few MiB costs page faults on every call, so the tile buffer is
  reused (:func:`scratch`).
* A GEMM of a few rows against a large codebook runs slowly, so a large codebook is split into
  code tiles against at least :data:`TILE_ROWS` rows, and a running minimum is kept.
"""

from __future__ import annotations

import functools
import math
import threading

import torch
from torch import Tensor

from vqtoolkit.errors import ShapeError
from vqtoolkit.quantize.core.screen import Screen, worth_screening

#: Largest distance tile (bytes) the search may allocate: small enough to stay in cache.
DEFAULT_CHUNK_BYTES = 8 * 2**20

#: Fewest rows per tile before the codebook is split into code tiles instead (GEMM efficiency).
TILE_ROWS = 1024


#: Largest tile buffer kept for reuse; a bigger ``chunk_bytes`` gets a fresh buffer each call.
KEEP_BYTES = 64 * 2**20

_workspace = threading.local()


def scratch(numel: int, like: Tensor) -> Tensor:
    """A flat buffer of ``numel`` elements, reused across calls on CPU (per thread and dtype).

    A fresh CPU allocation of a few MiB usually comes from the OS, and touching it costs a page
    fault per page on every call; GPUs have a caching allocator. The kept buffer is an ordinary
    tensor even when created under ``torch.inference_mode``, so later calls outside it can still
    write into it.
    """
    if like.device.type != "cpu" or numel * like.element_size() > KEEP_BYTES:
        return like.new_empty(numel)
    buffers: dict[torch.dtype, Tensor] = _workspace.__dict__.setdefault("buffers", {})
    buffer = buffers.get(like.dtype)
    if buffer is None or buffer.numel() < numel:
        with torch.inference_mode(False):
            buffer = buffers[like.dtype] = torch.empty(numel, dtype=like.dtype)
    return buffer[:numel]


def search_dtype(*tensors: Tensor) -> torch.dtype:
    """At least float32, so half/bfloat16 inputs never change which code wins beyond rounding."""
    dtype = torch.float32
    for t in tensors:
        dtype = torch.promote_types(dtype, t.dtype)
    return dtype


#: Fewest blocks per row: ``amin`` across rows vectorises over the blocks, and needs enough of them.
MIN_BLOCKS = 32


@functools.lru_cache(maxsize=256)
def interleave_block(num_codes: int) -> int:
    """Codes per block of :func:`blocked_min` (1, a plain row minimum, for small or prime K).

    The largest divisor of K up to √K that leaves at least :data:`MIN_BLOCKS` blocks.
    """
    limit = min(math.isqrt(num_codes), num_codes // MIN_BLOCKS)
    return max(b for b in range(1, max(limit, 1) + 1) if num_codes % b == 0)


def interleaved_order(num_codes: int, block: int) -> Tensor:
    """Code at each distance column: column ``j·(K/block) + c`` holds code ``c·block + j``.

    With the columns in this order, ``view(N, block, K/block)`` puts each block of ``block``
    consecutive codes in one column, so its minimum is a vectorised reduction across rows.
    """
    return torch.arange(num_codes).view(num_codes // block, block).t().reshape(-1)


def blocked_min(distances: Tensor, block: int) -> tuple[Tensor, Tensor]:
    """Row minima and their positions (lowest code on ties) of columns in :func:`interleaved_order`."""
    if block == 1:
        values, indices = distances.min(1)
        return values, indices
    n, k = distances.shape
    by_block = distances.view(n, block, k // block)
    values, first_block = by_block.amin(1).min(1)
    rows = torch.arange(n, device=distances.device)
    within = by_block[rows, :, first_block].argmin(1)
    return values, first_block * block + within


@functools.lru_cache(maxsize=64)
def tile_plan(num_codes: int, tile_codes: int) -> tuple[Tensor, tuple[tuple[int, int, int], ...]]:
    """``(order, tiles)``: codebook row order and ``(start, stop, block)`` of each code tile."""
    tiles = []
    orders = []
    for start in range(0, num_codes, tile_codes):
        stop = min(start + tile_codes, num_codes)
        block = interleave_block(stop - start)
        tiles.append((start, stop, block))
        orders.append(start + interleaved_order(stop - start, block))
    return torch.cat(orders), tuple(tiles)


def tile_shape(n: int, k: int, chunk_bytes: int, element_size: int) -> tuple[int, int]:
    """``(rows, codes)`` of a distance tile of at most ``chunk_bytes`` (whole codebook when it fits)."""
    rows_with_all_codes = chunk_bytes // (k * element_size)
    if rows_with_all_codes >= min(n, TILE_ROWS):
        return max(1, rows_with_all_codes), k
    rows = max(1, min(n, TILE_ROWS, chunk_bytes // element_size))
    return rows, max(1, chunk_bytes // (rows * element_size))


def _tile_min(
    chunk: Tensor, table: Tensor, sq: Tensor, tile: tuple[int, int, int], buffer: Tensor
) -> tuple[Tensor, Tensor]:
    """Minimum distance and its code over one code tile ``(start, stop, block)`` of ``table``."""
    start, stop, block = tile
    distances = buffer[: chunk.shape[0] * (stop - start)].view(chunk.shape[0], stop - start)
    torch.addmm(sq[start:stop], chunk, table[start:stop].t(), alpha=-2, out=distances)
    value, index = blocked_min(distances, block)
    return value, index + start


def first_copies(codebook: Tensor) -> Tensor | None:
    """For each code, the lowest index of a code with the very same vector (``None``: all differ).

    Two copies of a code have equal distances in exact arithmetic, but a GEMM may round them
    differently (another tile, another column of a blocked kernel, another memory alignment), so the
    search alone cannot promise the lowest copy. An integer hash of the bits (exact and
    order-free, unlike float sums: products and sums wrap modulo 2³² in any order) groups identical
    rows; a collision is caught by comparing the rows and only leaves a code as its own first copy.
    """
    k = codebook.shape[0]
    values = (codebook + 0.0).contiguous()  # -0.0 + 0.0 is +0.0: equal values, equal bits
    bits = values.view(torch.int32).reshape(k, -1)
    weights = torch.randint(-(2**31), 2**31 - 1, (bits.shape[1],), generator=torch.Generator().manual_seed(0))
    hashes = (bits * (weights.to(torch.int32) | 1).to(bits.device)).sum(1, dtype=torch.int32)
    _, group = torch.unique(hashes, return_inverse=True)
    codes = torch.arange(k, device=codebook.device)
    first = torch.full((k,), k, device=codebook.device).scatter_reduce(0, group, codes, "amin")[group]
    first = torch.where((values[first] == values).all(1), first, codes)
    return None if bool((first == codes).all()) else first


@torch.no_grad()
def nearest_codes(
    flat: Tensor, codebook: Tensor, *, chunk_bytes: int = DEFAULT_CHUNK_BYTES, screen: bool | None = None
) -> Tensor:
    """Indices ``(N,)`` of the nearest row of ``codebook`` ``(K, D)`` for each row of ``flat`` ``(N, D)``.

    Exact (the same answer as ``argmin`` over the full distance matrix, ties to the lowest index)
    with extra memory bounded by ``chunk_bytes`` whatever N and K. Ties go to the lowest index
    exactly for copies of a code, on any data (:func:`first_copies`), and between different codes
    wherever the distances are exact (e.g. integer-valued data); distinct codes whose distances
    differ only in rounding may go either way, as between any two GEMM implementations.

    Args:
        flat: Query rows ``(N, D)``.
        codebook: Codes ``(K, D)``, ``K >= 1``.
        chunk_bytes: Budget for the distance tile, the search's only allocation that grows with N·K.
        screen: Whether to screen candidates with a bfloat16 GEMM first (:mod:`.screen`; same
            answer). ``None`` screens where that is faster: float32 on CPUs with bfloat16 units.

    Returns:
        Code indices ``(N,)`` (``torch.long``).

    Raises:
        ShapeError: If the shapes are not ``(N, D)`` and ``(K, D)`` with one D, or K is 0.
    """
    if flat.ndim != 2 or codebook.ndim != 2 or flat.shape[1] != codebook.shape[1]:
        raise ShapeError(
            f"nearest_codes needs flat (N, D) and codebook (K, D) with the same D; "
            f"got {tuple(flat.shape)} and {tuple(codebook.shape)}"
        )
    if codebook.shape[0] == 0:
        raise ShapeError("nearest_codes needs at least one code; got an empty codebook (0, D)")
    dtype = search_dtype(flat, codebook)
    flat, codebook = flat.to(dtype), codebook.to(dtype)
    if flat.shape[0] and (worth_screening(flat, codebook) if screen is None else screen):
        return screened_codes(flat, codebook, chunk_bytes)
    return exact_codes(flat, codebook, chunk_bytes)


def exact_codes(flat: Tensor, codebook: Tensor, chunk_bytes: int) -> Tensor:
    """:func:`nearest_codes` by float32 (or wider) distance tiles alone."""
    (n, k), size = (flat.shape[0], codebook.shape[0]), flat.element_size()
    rows, tile_codes = tile_shape(n, k, chunk_bytes, size)
    order, tiles = tile_plan(k, tile_codes)
    table = codebook[order.to(codebook.device)]
    sq = table.pow(2).sum(1)
    buffer = scratch(min(rows, n) * min(tile_codes, k), flat)
    out = torch.empty(n, dtype=torch.long, device=flat.device)
    for row in range(0, n, rows):
        chunk = flat[row : row + rows]
        best_value, best_index = _tile_min(chunk, table, sq, tiles[0], buffer)
        for tile in tiles[1:]:
            value, index = _tile_min(chunk, table, sq, tile, buffer)
            better = value < best_value  # strictly: an earlier (lower-index) tile keeps its ties
            best_value = torch.where(better, value, best_value)
            best_index = torch.where(better, index, best_index)
        out[row : row + rows] = best_index
    copies = first_copies(codebook)
    return out if copies is None else copies[out]


def screened_codes(flat: Tensor, codebook: Tensor, chunk_bytes: int) -> Tensor:
    """:func:`nearest_codes` through the bfloat16 screen; from a crowded row chunk on, :func:`exact_codes`."""
    n, k = flat.shape[0], codebook.shape[0]
    rows, tile_codes = tile_shape(n, k, chunk_bytes, 2)
    order, tiles = tile_plan(k, tile_codes)
    screen = Screen(flat, codebook, codebook[order.to(codebook.device)], tiles)
    if not screen.usable:  # non-finite values: the bound says nothing
        return exact_codes(flat, codebook, chunk_bytes)
    buffer = scratch(min(rows, n) * min(tile_codes, k), screen.flat)
    out = torch.empty(n, dtype=torch.long, device=flat.device)
    for row in range(0, n, rows):
        found = screen.rows(row, flat[row : row + rows], buffer)
        if found is None:  # codes too close for bfloat16 to tell apart: the rest goes the plain way
            out[row:] = exact_codes(flat[row:], codebook, chunk_bytes)
            break
        out[row : row + rows] = found
    return out
