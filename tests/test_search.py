"""The nearest-code search: exact answers (ties to the lowest index) through every tiling path."""

from __future__ import annotations

import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vqtoolkit.errors import ShapeError
from vqtoolkit.quantize.core import search
from vqtoolkit.quantize.core.search import (
    blocked_min,
    interleave_block,
    interleaved_order,
    nearest_codes,
    tile_plan,
    tile_shape,
)


def brute_force(flat: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Lowest index among the codes at minimal squared distance, one row at a time."""
    d = ((flat[:, None, :] - codebook[None, :, :]) ** 2).sum(-1)
    best = d.min(1, keepdim=True).values
    return torch.stack([torch.nonzero(row == b)[0, 0] for row, b in zip(d, best, strict=True)])


@st.composite
def tied_problem(draw: st.DrawFn) -> tuple[torch.Tensor, torch.Tensor]:
    """Integer rows and codebooks up to K = 300: distances are exact, so ties really are ties.

    K up to 300 reaches the blocked search and, with small budgets, code tiles.
    """
    n, k, d = draw(st.integers(1, 60)), draw(st.integers(1, 300)), draw(st.integers(1, 6))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    values = draw(st.integers(1, 3))  # a narrow range makes duplicate codes and ties common
    flat = torch.randint(-values, values + 1, (n, d), generator=g).double()
    codebook = torch.randint(-values, values + 1, (k, d), generator=g).double()
    return flat, codebook


@given(tied_problem(), st.one_of(st.integers(8, 400), st.sampled_from([4096, 20_000, 8 * 2**20])))
@settings(max_examples=100, deadline=None)
def test_search_is_exact_on_every_tiling(
    problem: tuple[torch.Tensor, torch.Tensor], chunk_bytes: int
) -> None:
    flat, codebook = problem
    expected = brute_force(flat, codebook)
    assert torch.equal(nearest_codes(flat, codebook, chunk_bytes=chunk_bytes), expected)
    assert torch.equal(nearest_codes(flat.float(), codebook.float(), chunk_bytes=chunk_bytes), expected)


@given(st.integers(1, 100_000))
@settings(max_examples=200, deadline=None)
def test_block_divides_k_and_stays_small(k: int) -> None:
    block = interleave_block(k)
    assert k % block == 0 and block * block <= k
    assert block == 1 or k // block >= 32


@given(st.integers(1, 5_000), st.integers(1, 70_000), st.integers(4, 2**24))
@settings(max_examples=200, deadline=None)
def test_tile_fits_the_budget(n: int, k: int, chunk_bytes: int) -> None:
    rows, codes = tile_shape(n, k, chunk_bytes, 4)
    assert 1 <= codes <= k and rows >= 1
    assert min(rows, n) * codes * 4 <= chunk_bytes


@given(st.integers(1, 2_000), st.integers(1, 700))
@settings(max_examples=100, deadline=None)
def test_tile_plan_covers_every_code_once(k: int, tile_codes: int) -> None:
    order, tiles = tile_plan(k, tile_codes)
    assert torch.equal(order.sort().values, torch.arange(k))
    assert tiles[0][0] == 0 and tiles[-1][1] == k
    assert all(a[1] == b[0] for a, b in itertools.pairwise(tiles))


def test_blocked_min_matches_min_with_lowest_index_on_ties() -> None:
    g = torch.Generator().manual_seed(0)
    k, block = 512, interleave_block(512)
    distances = torch.randint(0, 4, (300, k), generator=g).float()  # every row has many ties
    order = interleaved_order(k, block)
    values, indices = blocked_min(distances[:, order], block)
    expected_values, expected_indices = distances.min(1)
    assert torch.equal(values, expected_values)
    assert torch.equal(indices, expected_indices)


def test_code_tiles_with_blocks_are_exact() -> None:
    g = torch.Generator().manual_seed(3)
    flat = torch.randint(-2, 3, (50, 3), generator=g).float()
    codebook = torch.randint(-2, 3, (256, 3), generator=g).float()
    chunk_bytes = 50 * 64 * 4  # 4 tiles of 64 codes, each searched in blocks of 2
    assert tile_shape(50, 256, chunk_bytes, 4) == (50, 64)
    assert [block for _, _, block in tile_plan(256, 64)[1]] == [2, 2, 2, 2]
    assert torch.equal(nearest_codes(flat, codebook, chunk_bytes=chunk_bytes), brute_force(flat, codebook))


def test_search_works_in_and_out_of_inference_mode() -> None:
    """The reused tile buffer must not become an inference tensor that later calls cannot write."""
    search._workspace.__dict__.pop("buffers", None)  # so the buffer is created inside inference mode
    g = torch.Generator().manual_seed(4)
    flat, codebook = torch.randn(300, 8, generator=g), torch.randn(640, 8, generator=g)
    with torch.inference_mode():
        inside = nearest_codes(flat, codebook, chunk_bytes=2**20)
    assert torch.equal(nearest_codes(flat, codebook, chunk_bytes=2**20), inside)
    assert torch.equal(inside, brute_force(flat, codebook))


def test_empty_inputs() -> None:
    assert nearest_codes(torch.empty(0, 4), torch.randn(64, 4)).shape == (0,)
    with pytest.raises(ShapeError, match="at least one code"):
        nearest_codes(torch.randn(3, 4), torch.empty(0, 4))
    with pytest.raises(ShapeError, match="same D"):
        nearest_codes(torch.randn(3, 4), torch.randn(5, 3))


@st.composite
def duplicated_float_problem(draw: st.DrawFn) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Float rows and a codebook whose later codes copy some of its first ones, exactly."""
    n, half, d = draw(st.integers(1, 80)), draw(st.integers(1, 70)), draw(st.integers(1, 12))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    first = torch.randn(half, d, generator=g) * 10 ** draw(st.integers(-3, 3))
    copies = draw(st.integers(1, half))
    codebook = torch.cat([first, first[:copies]])
    flat = codebook[torch.randint(0, len(codebook), (n,), generator=g)] + 1e-3 * torch.randn(
        n, d, generator=g
    )
    return flat, codebook, half


def unround(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every distance GEMM round odd columns one step down, as blocked BLAS kernels may."""
    addmm = torch.addmm

    def rounding_addmm(*args, out: torch.Tensor, **kwargs):  # type: ignore[no-untyped-def]
        addmm(*args, out=out, **kwargs)
        out[:, 1::2] = torch.nextafter(out[:, 1::2], torch.tensor(-float("inf")))
        return out

    monkeypatch.setattr(torch, "addmm", rounding_addmm)


@pytest.mark.parametrize("rounding", ["native", "uneven"])
@given(duplicated_float_problem(), st.one_of(st.integers(8, 600), st.sampled_from([4096, 8 * 2**20])))
@settings(max_examples=25, deadline=None)
def test_copies_of_a_code_tie_to_the_first_on_float_data(
    rounding: str, problem: tuple[torch.Tensor, torch.Tensor, int], chunk_bytes: int
) -> None:
    flat, codebook, half = problem
    with pytest.MonkeyPatch.context() as monkeypatch:
        if rounding == "uneven":
            unround(monkeypatch)
        found = nearest_codes(flat, codebook, chunk_bytes=chunk_bytes)
    assert int(found.max()) < half, "a later copy of a code won"
    exact = ((flat.double()[:, None] - codebook.double()[None]) ** 2).sum(-1)
    # float32 ‖z‖² − 2 z·e + ‖e‖² is exact only to a few ulps of its largest term
    scale = flat.double().pow(2).sum(1) + codebook.double().pow(2).sum(1).max()
    gap = exact.gather(1, found[:, None]).squeeze(1) - exact.min(1).values
    assert bool((gap <= 1e-5 * scale + 1e-6).all())


def test_first_copies_groups_identical_codes_only() -> None:
    codebook = torch.tensor([[1.0, 2.0], [0.0, -0.0], [1.0, 2.0], [-0.0, 0.0], [2.0, 1.0]])
    assert search.first_copies(codebook).tolist() == [0, 1, 0, 1, 4]
    assert search.first_copies(torch.eye(3)) is None


def float32_argmin(flat: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Lowest index at the least float32 ``‖z − e‖²``, computed as the screen's recheck computes it."""
    n, k = flat.shape[0], codebook.shape[0]
    d = (flat.repeat_interleave(k, 0) - codebook.repeat(n, 1)).pow(2).sum(1).view(n, k)
    return (d == d.min(1, keepdim=True).values).int().argmax(1)


@given(tied_problem(), st.sampled_from([400, 20_000, 8 * 2**20]))
@settings(max_examples=60, deadline=None)
def test_screen_is_exact_on_tied_integer_problems(
    problem: tuple[torch.Tensor, torch.Tensor], chunk_bytes: int
) -> None:
    flat, codebook = problem
    expected = brute_force(flat, codebook)
    for dtype in (torch.float32, torch.float64):
        found = nearest_codes(flat.to(dtype), codebook.to(dtype), chunk_bytes=chunk_bytes, screen=True)
        assert torch.equal(found, expected)


@given(duplicated_float_problem(), st.sampled_from([4096, 8 * 2**20]))
@settings(max_examples=40, deadline=None)
def test_screen_ties_copies_to_the_first_and_matches_float32(
    problem: tuple[torch.Tensor, torch.Tensor, int], chunk_bytes: int
) -> None:
    flat, codebook, half = problem
    found, expected = screened(flat, codebook, chunk_bytes)
    assert int(found.max()) < half, "a later copy of a code won"
    assert torch.equal(found, expected)


@st.composite
def near_tie_problem(draw: st.DrawFn) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's nearest codes are rivals whose distances differ by float32 ulps, far below bfloat16's.

    Among up to 600 background codes, every row gets 2-6 rivals on a sphere around it, with radii a
    few float32 steps apart.
    """
    n, rivals, d = draw(st.integers(1, 40)), draw(st.integers(2, 6)), draw(st.integers(4, 64))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    scale = 10.0 ** draw(st.integers(-2, 2))
    flat = torch.randn(n, d, generator=g) * scale
    directions = torch.nn.functional.normalize(torch.randn(n, rivals, d, generator=g), dim=2)
    radius = 0.01 * scale * (1 + 1.2e-7 * torch.randint(0, 4, (n, rivals, 1), generator=g))
    near = (flat[:, None] + directions * radius).reshape(n * rivals, d)
    background = torch.randn(draw(st.integers(0, 600)), d, generator=g) * scale
    codebook = torch.cat([background, near])[torch.randperm(len(background) + len(near), generator=g)]
    return flat, codebook


def screened(
    flat: torch.Tensor, codebook: torch.Tensor, chunk_bytes: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The screened search's answer, and what it must equal: the float32 ``‖z − e‖²`` argmin.

    A row chunk too crowded for the bound is searched the plain way instead, rightly; then the
    plain search's answer is the reference.
    """
    plain = search.exact_codes
    crowded = []
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setattr(search, "exact_codes", lambda *a: crowded.append(a) or plain(*a))
        found = nearest_codes(flat, codebook, chunk_bytes=chunk_bytes, screen=True)
    expected = float32_argmin(flat, codebook)
    for chunk, _, _ in crowded:  # rows (a contiguous chunk) that took the plain search
        start = (chunk.data_ptr() - flat.data_ptr()) // (flat.element_size() * flat.shape[1])
        expected[start : start + len(chunk)] = plain(chunk, codebook, chunk_bytes)
    return found, expected


@given(near_tie_problem(), st.sampled_from([4096, 8 * 2**20]))
@settings(max_examples=60, deadline=None)
def test_screen_picks_the_float32_argmin_among_near_ties(
    problem: tuple[torch.Tensor, torch.Tensor], chunk_bytes: int
) -> None:
    found, expected = screened(*problem, chunk_bytes)
    assert torch.equal(found, expected)


@given(st.integers(1, 300), st.integers(256, 3000), st.integers(1, 64), st.integers(0, 2**31 - 1))
@settings(max_examples=30, deadline=None)
def test_screen_matches_float64_on_random_data(n: int, k: int, d: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    flat, codebook = torch.randn(n, d, generator=g), torch.randn(k, d, generator=g)
    found, expected = screened(flat, codebook, 2**16)
    assert torch.equal(found, expected)
    exact = torch.cdist(flat.double(), codebook.double()).pow(2)
    gap = exact.gather(1, found[:, None]).squeeze(1) - exact.min(1).values
    assert bool((gap <= 1e-4 * (1 + exact.min(1).values)).all())  # float32's own rounding at most


def test_crowded_and_non_finite_searches_fall_back_to_the_plain_search(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    g = torch.Generator().manual_seed(5)
    crowded = torch.randn(1, 16, generator=g) + 1e-6 * torch.randn(
        512, 16, generator=g
    )  # all within the bound
    flat = torch.randn(64, 16, generator=g)
    calls = []
    plain = search.exact_codes
    monkeypatch.setattr(search, "exact_codes", lambda *a: calls.append(a[0].shape[0]) or plain(*a))
    assert torch.equal(
        nearest_codes(flat, crowded, screen=True), plain(flat, crowded, search.DEFAULT_CHUNK_BYTES)
    )
    assert calls == [64]
    broken = torch.randn(512, 16, generator=g)
    broken[7, 3] = float("inf")
    assert torch.equal(
        nearest_codes(flat, broken, screen=True), plain(flat, broken, search.DEFAULT_CHUNK_BYTES)
    )
    assert calls == [64, 64]


def test_screen_is_chosen_for_large_float32_codebooks_on_bfloat16_cpus() -> None:
    from vqtoolkit.quantize.core import screen

    big, small = torch.randn(screen.MIN_CODES, 8), torch.randn(screen.MIN_CODES - 1, 8)
    flat = torch.randn(4, 8)
    assert screen.worth_screening(flat, big) == screen.bf16_matmul_is_fast()
    assert not screen.worth_screening(flat, small)
    assert not screen.worth_screening(flat.double(), big.double())
