"""lfq and bsq: what is special about lookup-free quantizers, property by property.

The contract every quantizer meets is checked by the kit in test_conformance.py; here: indices are
the sign pattern (0 goes to bit 0), lookup inverts it, the estimator's gradient, the entropy terms
against a direct K-wide computation, memory that does not grow with K, float32 decisions under
bf16 autocast, the global batch under torch.distributed, bundles, and the usage plot of a large K.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from factories import tiny_data
from hypothesis import given, settings
from hypothesis import strategies as st
from test_distributed import free_port
from torch.utils._python_dispatch import TorchDispatchMode

import vqtoolkit
from vqtoolkit.components import registry
from vqtoolkit.errors import ConfigError
from vqtoolkit.quantize._binary import BinaryQuantizer
from vqtoolkit.quantize._entropy import entropy_terms, group_sizes
from vqtoolkit.reporting.plots import usage_figure
from vqtoolkit.testing import check_quantizer

NAMES = ("lfq", "bsq")


def make(name: str, **options: Any) -> BinaryQuantizer:
    quantizer = registry.create("quantizer", name, **options)
    assert isinstance(quantizer, BinaryQuantizer)
    return quantizer


def latents(bits: int, batch: int, positions: int, seed: int, zeros: float) -> torch.Tensor:
    """Random latents ``(batch, bits, positions)`` with a share ``zeros`` of exact (signed) zeros."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(batch, bits, positions, generator=g)
    hit = torch.rand(z.shape, generator=g) < zeros
    signed_zero = torch.where(torch.rand(z.shape, generator=g) < 0.5, 0.0, -0.0)
    return torch.where(hit, signed_zero, z)


@settings(max_examples=30, deadline=None)
@given(
    name=st.sampled_from(NAMES),
    bits=st.integers(1, 20),
    batch=st.integers(1, 3),
    positions=st.integers(1, 6),
    seed=st.integers(0, 2**16),
    zeros=st.sampled_from([0.0, 0.3]),
)
def test_indices_are_the_sign_bits_and_lookup_inverts_them(
    name: str, bits: int, batch: int, positions: int, seed: int, zeros: float
) -> None:
    quantizer = make(name, bits=bits).eval()
    z = latents(bits, batch, positions, seed, zeros)
    out = quantizer(z)
    expected = sum((z[:, i] > 0).long() << i for i in range(bits))  # channel i is bit i; 0 is bit 0
    assert torch.equal(out.indices, expected)
    assert torch.equal(quantizer.quantize_indices(z), expected)
    scale = 1.0 if name == "lfq" else 1 / math.sqrt(bits)
    codes = quantizer.lookup(out.indices)
    assert torch.equal(codes, torch.where(z > 0, scale, -scale))
    assert torch.allclose(out.quantized, codes, atol=1e-6)  # u + (c - u): c, to rounding
    assert torch.equal(quantizer.quantize_indices(codes), out.indices)  # lookup, then quantize: the same


@settings(max_examples=20, deadline=None)
@given(name=st.sampled_from(NAMES), bits=st.integers(1, 12), seed=st.integers(0, 2**16))
def test_lookup_of_every_index_is_its_codebook_row(name: str, bits: int, seed: int) -> None:
    quantizer = make(name, bits=bits)
    indices = torch.randint(0, 2**bits, (2, 3), generator=torch.Generator().manual_seed(seed))
    rows = quantizer.codebook[indices.reshape(-1)].reshape(2, 3, bits).movedim(-1, 1)
    assert torch.equal(quantizer.lookup(indices), rows)


@settings(max_examples=20, deadline=None)
@given(
    name=st.sampled_from(NAMES),
    bits=st.integers(1, 12),
    seed=st.integers(0, 2**16),
    training=st.booleans(),
)
def test_the_estimator_is_straight_through(name: str, bits: int, seed: int, training: bool) -> None:
    quantizer = make(name, bits=bits).train(training)
    z = latents(bits, 2, 5, seed, 0.0).requires_grad_(True)
    grad = torch.randn(z.shape, generator=torch.Generator().manual_seed(seed + 1))
    (got,) = torch.autograd.grad(quantizer(z).quantized, z, grad)
    if name == "lfq":  # the identity
        assert torch.equal(got, grad)
    else:  # the identity on u = z/‖z‖: what reaches z is the normalisation's Jacobian
        (expected,) = torch.autograd.grad(F.normalize(z, dim=1), z, grad)
        assert torch.allclose(got, expected, rtol=1e-4, atol=1e-5 * float(expected.abs().max()))


def direct_entropies(x: torch.Tensor, scale: float, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample and batch entropy from the full ``(N, K)`` assignment: the definition, in float64."""
    bits = x.shape[1]
    codes = make("lfq", bits=bits).codebook.double() * scale
    q = (-torch.cdist(x.double(), codes).square() / temperature).softmax(1)
    sample = -(q * q.clamp_min(1e-300).log()).sum(1).mean()
    return sample, q.mean(0)


def entropy(p: torch.Tensor) -> torch.Tensor:
    return -(p * p.clamp_min(1e-300).log()).sum()


@settings(max_examples=30, deadline=None)
@given(
    bits=st.integers(1, 8),
    group_bits=st.integers(1, 8),
    rows=st.integers(1, 40),
    spread=st.floats(0.1, 3.0),
    scale=st.sampled_from([1.0, 0.3]),
    temperature=st.sampled_from([1.0, 0.25]),
    seed=st.integers(0, 2**16),
)
def test_entropy_terms_equal_the_direct_computation(
    bits: int, group_bits: int, rows: int, spread: float, scale: float, temperature: float, seed: int
) -> None:
    x = torch.randn(rows, bits, generator=torch.Generator().manual_seed(seed)).double() * spread
    terms = entropy_terms(x, scale, temperature, group_bits)
    sample, mean = direct_entropies(x, scale, temperature)
    assert torch.allclose(terms.sample, sample, atol=1e-9)
    # each group's batch entropy is that of the joint's marginal over the group's bits
    joint = mean.reshape([2] * bits).permute(*range(bits - 1, -1, -1))  # axis i: bit i
    marginals, start = [], 0
    for size in group_sizes(bits, group_bits):
        others = [i for i in range(bits) if not start <= i < start + size]
        part = joint.sum(others) if others else joint
        marginals.append(entropy(part.reshape(-1)))
        start += size
    assert torch.allclose(terms.batch, torch.stack(marginals).sum(), atol=1e-9)
    if bits <= group_bits:  # one group: exactly H(mean q)
        assert torch.allclose(terms.batch, entropy(mean), atol=1e-9)
    assert terms.batch >= entropy(mean) - 1e-9  # more groups: an upper bound


class LargestFloatTensor(TorchDispatchMode):
    """Records the most elements of any floating-point tensor an operation returns."""

    def __init__(self) -> None:
        super().__init__()
        self.most = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        result = func(*args, **(kwargs or {}))
        for t in result if isinstance(result, (tuple, list)) else (result,):
            if isinstance(t, torch.Tensor) and t.is_floating_point():
                self.most = max(self.most, t.numel())
        return result


@pytest.mark.parametrize("name", NAMES)
def test_memory_does_not_grow_with_k(name: str) -> None:
    """K = 2^18: no float tensor beyond rows × 2^9 (two groups of 9 bits), forward and backward."""
    rows = 2 * 8 * 8
    most = {}
    for bits in (10, 18):
        quantizer = make(name, bits=bits, dim=32).train()  # with projections, as on a real encoder
        z = torch.randn(2, 32, 8, 8, requires_grad=True)
        with LargestFloatTensor() as tracker:
            out = quantizer(z)
            (out.loss + out.quantized.square().mean()).backward()
        most[bits] = tracker.most
    assert most[18] <= rows * 2**9  # not 2^18
    assert most[10] <= rows * 2**10
    assert group_sizes(18, 10) == [9, 9]


@pytest.mark.parametrize("name", NAMES)
def test_projections_fit_any_encoder_width_and_pass_the_kit(name: str) -> None:
    quantizer = make(name, bits=5, dim=12)
    assert (quantizer.num_codes, quantizer.dim, tuple(quantizer.codebook.shape)) == (32, 12, (32, 12))
    assert make(name, dim=7).bits == 7  # without bits: one bit per channel
    check_quantizer(name, {"bits": 5, "dim": 12}, exact_nearest=False, straight_through=False)


def test_bits_out_of_range_are_refused_by_name() -> None:
    with pytest.raises(ConfigError, match="bits"):
        make("lfq", bits=40)


@pytest.mark.parametrize("name", NAMES)
def test_bf16_autocast_decides_in_float32(name: str) -> None:
    quantizer = make(name, bits=6, dim=10).train()
    z = torch.randn(4, 10, 6, 6) * 1e-3  # small latents: bfloat16 rounding would flip signs
    reference = quantizer(z)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = quantizer(z)
    assert torch.equal(mixed.indices, reference.indices)
    assert mixed.losses["batch_entropy"].dtype == torch.float32
    assert torch.allclose(mixed.losses["batch_entropy"], reference.losses["batch_entropy"])


def ddp_worker(rank: int, port: int, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        z = torch.randn(4, 6, 3, 3, generator=torch.Generator().manual_seed(0))[2 * rank : 2 * rank + 2]
        z.requires_grad_(True)
        result = make("lfq", bits=6).train()(z)
        result.loss.backward()
        assert z.grad is not None
        torch.save({"batch": result.losses["batch_entropy"].detach(), "grad": z.grad}, f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_batch_entropy_is_over_the_global_batch_under_torch_distributed(tmp_path: Path) -> None:
    mp.spawn(ddp_worker, args=(free_port(), str(tmp_path)), nprocs=2, join=True)
    z = torch.randn(4, 6, 3, 3, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    whole = make("lfq", bits=6).train()(z)
    whole.loss.backward()
    assert z.grad is not None
    for rank in (0, 1):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        assert torch.allclose(got["batch"], whole.losses["batch_entropy"], atol=1e-6)
        # each rank's gradient, averaged over the 2 ranks as DDP does, is the whole batch's
        assert torch.allclose(got["grad"] / 2, z.grad[2 * rank : 2 * rank + 2], atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_bundles_save_load_and_sample(name: str, tmp_path: Path) -> None:
    pipe = vqtoolkit.build(
        "conv",
        name,
        "conv",
        "gmm",
        quantizer_config={"bits": 6},
        dim=8,
        encoder_config={"hidden_channels": [8, 8]},
        decoder_config={"hidden_channels": [8, 8]},
        prior_config={"n_components": 2, "pca_dim": 3},
    )
    data = tiny_data()
    pipe.fit(data, epochs=1, progress=False)
    path = pipe.save(tmp_path / "model.safetensors")
    loaded = vqtoolkit.load(path)
    assert loaded.model.quantizer.config == pipe.model.quantizer.config
    pipe.model.eval()
    assert torch.equal(loaded.encode(data.test_images), pipe.encode(data.test_images))
    assert loaded.sample(3, generator=torch.Generator().manual_seed(0)).shape == (3, 1, 28, 28)


def test_the_usage_plot_of_a_large_codebook_shows_its_top_codes() -> None:
    counts = torch.zeros(2**16, dtype=torch.long)
    counts[torch.arange(0, 2**16, 7)] = torch.arange(len(range(0, 2**16, 7)))
    figure = usage_figure(counts)
    (axes,) = figure.axes
    assert len(axes.patches) == 1024  # the top codes, not 65 536 bars
    assert "top" in axes.get_title()
