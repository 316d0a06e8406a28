"""Properties of the STE core: the loss formulas, the two gradient estimators and the fused lookup.

The exact search has its own file, ``test_search.py``.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from vqtoolkit.errors import ShapeError
from vqtoolkit.quantize.core import (
    from_flat,
    rotation_trick,
    straight_through,
    straight_through_lookup,
    to_flat,
    vq_losses,
)


@given(st.integers(1, 50), st.integers(1, 8), st.integers(0, 10_000))
@settings(max_examples=30, deadline=None)
def test_losses_follow_the_formula(n: int, d: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, d, generator=g, dtype=torch.float64, requires_grad=True)
    q = torch.randn(n, d, generator=g, dtype=torch.float64, requires_grad=True)
    codebook_loss, commitment_loss = vq_losses(z, q)
    expected = ((q - z) ** 2).mean()
    assert torch.allclose(codebook_loss, expected) and torch.allclose(commitment_loss, expected)
    codebook_loss.backward()
    assert z.grad is None or not z.grad.any()  # the codebook loss never moves the encoder
    assert torch.allclose(q.grad, 2 * (q - z).detach() / q.numel())


@given(
    st.integers(1, 30),
    st.integers(1, 8),
    st.integers(0, 10_000),
    st.sampled_from([torch.float32, torch.float64]),
)
@settings(max_examples=30, deadline=None)
def test_straight_through_has_value_q_and_identity_gradient(
    n: int, d: int, seed: int, dtype: torch.dtype
) -> None:
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, d, generator=g, dtype=dtype, requires_grad=True)
    q = torch.randn(n, d, generator=g, dtype=dtype)
    out = straight_through(z, q)
    assert torch.allclose(out, q, atol=1e-6)
    upstream = torch.randn(n, d, generator=g, dtype=dtype)
    (grad,) = torch.autograd.grad(out, z, upstream)
    assert torch.equal(grad, upstream)


@given(st.integers(1, 30), st.integers(2, 8), st.integers(0, 10_000))
@settings(max_examples=30, deadline=None)
def test_rotation_trick_value_and_gradient(n: int, d: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, d, generator=g, dtype=torch.float64, requires_grad=True)
    q = torch.randn(n, d, generator=g, dtype=torch.float64)
    out = rotation_trick(z, q)
    assert torch.allclose(out, q)
    upstream = torch.randn(n, d, generator=g, dtype=torch.float64)
    (grad,) = torch.autograd.grad(out, z, upstream)
    # Expected: λ·Rᵀ·g with R = I − 2wwᵀ + 2vuᵀ, written out as dense matrices per row.
    zd = z.detach()
    u, v = F.normalize(zd, dim=1), F.normalize(q, dim=1)
    w = F.normalize(u + v, dim=1)
    eye = torch.eye(d, dtype=torch.float64)
    rot = eye - 2 * w[:, :, None] * w[:, None, :] + 2 * v[:, :, None] * u[:, None, :]
    assert torch.allclose(torch.einsum("nij,nj->ni", rot, u), v, atol=1e-6)  # R really turns u onto v
    scale = q.norm(dim=1, keepdim=True) / zd.norm(dim=1, keepdim=True)
    expected = scale * torch.einsum("nji,nj->ni", rot, upstream)
    assert torch.allclose(grad, expected, atol=1e-8)
    # The gradient keeps its norm up to the scale λ (a rotation preserves length).
    assert torch.allclose(grad.norm(dim=1), scale.squeeze(1) * upstream.norm(dim=1))


@given(
    st.sampled_from([(7,), (3, 4), (2, 3, 5), (1, 2, 2)]),
    st.integers(1, 8),
    st.integers(1, 20),
    st.integers(0, 10_000),
    st.booleans(),
)
@settings(max_examples=40, deadline=None)
def test_fused_lookup_equals_lookup_estimator_and_losses(
    grid: tuple[int, ...], d: int, k: int, seed: int, table_learns: bool
) -> None:
    """Same values and gradients as the composition, for channel-first z with 0, 1 or 2 spatial dims."""
    g = torch.Generator().manual_seed(seed)
    b, spatial = grid[0], grid[1:]
    z = torch.randn(b, d, *spatial, generator=g, dtype=torch.float64, requires_grad=True)
    table = torch.randn(k, d, generator=g, dtype=torch.float64, requires_grad=table_learns)
    indices = torch.randint(k, grid, generator=g)
    upstream, weights = torch.randn(z.shape, generator=g, dtype=torch.float64), torch.rand(2, generator=g)

    def objective(
        out: torch.Tensor, codebook_loss: torch.Tensor, commitment_loss: torch.Tensor
    ) -> torch.Tensor:
        return (out * upstream).sum() + weights[0] * codebook_loss + weights[1] * commitment_loss

    rows, codes = to_flat(z, d), table[indices.reshape(-1)]
    reference = (from_flat(straight_through(rows, codes), indices), *vq_losses(rows, codes))
    fused = straight_through_lookup(z, table, indices)
    assert torch.equal(fused[0], from_flat(codes, indices).detach())  # exactly q, not z + (q - z)
    assert fused[0].is_contiguous() and fused[0].shape == z.shape
    assert torch.allclose(fused[1], reference[1]) and torch.allclose(fused[2], reference[2])
    inputs = (z, table) if table_learns else (z,)
    expected = torch.autograd.grad(objective(*reference), inputs)
    got = torch.autograd.grad(objective(*fused), inputs)
    for e, o in zip(expected, got, strict=True):
        assert torch.allclose(o, e)


def test_fused_lookup_in_bfloat16_keeps_float32_losses_and_codebook_gradient() -> None:
    g = torch.Generator().manual_seed(5)
    z = torch.randn(4, 8, 3, 3, generator=g).bfloat16().requires_grad_(True)
    table = torch.randn(16, 8, generator=g, requires_grad=True)
    indices = torch.randint(16, (4, 3, 3), generator=g)
    quantized, codebook_loss, commitment_loss = straight_through_lookup(z, table, indices)
    assert quantized.dtype == torch.bfloat16 and codebook_loss.dtype == torch.float32
    rows, codes = to_flat(z.detach().float(), 8), table.detach()[indices.reshape(-1)]
    expected = ((codes - rows) ** 2).mean()
    assert torch.allclose(codebook_loss, expected, rtol=1e-5)
    (codebook_loss + commitment_loss + quantized.float().sum()).backward()
    assert table.grad is not None and table.grad.dtype == torch.float32
    assert z.grad is not None and z.grad.dtype == torch.bfloat16


def test_fused_lookup_names_mismatched_shapes() -> None:
    z, table = torch.randn(2, 4, 3, 3), torch.randn(8, 4)
    with pytest.raises(ShapeError, match=r"indices \(B, \*spatial\)"):
        straight_through_lookup(z, table, torch.zeros(2, 9, dtype=torch.long))
    with pytest.raises(ShapeError, match=r"table \(K, D\)"):
        straight_through_lookup(z, torch.randn(8, 5), torch.zeros(2, 3, 3, dtype=torch.long))
