"""Conformance of every built-in quantizer, and the codebook-health options, checked with Hypothesis."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vqtoolkit.components import registry
from vqtoolkit.errors import ConfigError, ShapeError
from vqtoolkit.quantize.base import Quantizer

#: Small configurations per built-in name (the defaults are sized for MNIST).
SMALL: dict[str, dict[str, Any]] = {
    "vq": {"num_codes": 12, "dim": 4},
    "ema": {"num_codes": 12, "dim": 4, "revive_after": 2},
    "residual": {"num_codes": 6, "dim": 4, "num_stages": 3, "ema": True, "kmeans_init": True},
    "fsq": {"levels": [3, 4, 5], "dim": 3},
}
#: Options of the codebook quantizers, each exercised on ``vq``.
OPTIONS: list[dict[str, Any]] = [
    {},
    {"ema": True},
    {"kmeans_init": True, "kmeans_iters": 3},
    {"revive_after": 1},
    {"cosine": True},
    {"code_dim": 2},
    {"rotation_trick": True},
    {"ema": True, "kmeans_init": True, "revive_after": 1, "cosine": True, "code_dim": 3, "min_usage": 2},
]
#: Configurations whose output gradient w.r.t. z is exactly the identity (plain STE, no projection).
IDENTITY_GRADIENT = ["vq", "ema", "residual"]


def builtin_names() -> list[str]:
    return [s.name for s in registry.specs("quantizer") if s.distribution == "vqtoolkit"]


def make(name: str, **options: Any) -> Quantizer:
    return registry.create("quantizer", name, **{**SMALL.get(name, {}), **options})


#: Built-ins with a suite of their own: no codebook to search (tests/test_lookup_free.py).
LOOKUP_FREE = {"lfq", "bsq"}


def test_every_builtin_is_covered() -> None:
    assert set(builtin_names()) == set(SMALL) | LOOKUP_FREE


shapes = st.tuples(st.integers(1, 3), st.lists(st.integers(1, 4), min_size=0, max_size=3))


@pytest.mark.parametrize("name", sorted(SMALL))
@given(
    shape=shapes,
    dtype=st.sampled_from([torch.float32, torch.float64]),
    seed=st.integers(0, 1000),
    training=st.booleans(),
)
@settings(max_examples=15, deadline=None)
def test_conformance(
    name: str, shape: tuple[int, list[int]], dtype: torch.dtype, seed: int, training: bool
) -> None:
    torch.manual_seed(seed)
    q = make(name).to(dtype).train(training)
    batch, spatial = shape
    z = (torch.randn(batch, q.dim, *spatial, dtype=dtype) * 2).requires_grad_(True)
    out = q(z)
    index_shape = (batch, q.num_stages, *spatial) if name == "residual" else (batch, *spatial)
    assert out.quantized.shape == z.shape and out.quantized.dtype == dtype
    assert out.indices.shape == index_shape and out.indices.dtype == torch.long
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    assert out.counts.shape == (q.num_codes,) and int(out.counts.sum()) == out.indices.numel()
    assert out.codes_used + out.dead_codes == q.num_codes
    assert 1 <= out.perplexity <= q.num_codes + 1e-6
    # quantized is the code vectors of the indices (residual: their sum), in value
    looked_up = q.lookup(out.indices).to(dtype)
    if training and name != "fsq":
        # an EMA/revival step moved the codebook after the search; quantized used the old codes
        return
    assert torch.allclose(out.quantized, looked_up, atol=1e-5)
    assert torch.equal(q.quantize_indices(z), out.indices)
    tokens = q.to_tokens(out.indices)
    assert tokens.shape == (batch, *spatial) and int(tokens.max()) < q.num_tokens
    assert torch.equal(q.from_tokens(tokens), out.indices)


@pytest.mark.parametrize("name", IDENTITY_GRADIENT)
@given(seed=st.integers(0, 1000), spatial=st.lists(st.integers(1, 3), min_size=0, max_size=3))
@settings(max_examples=10, deadline=None)
def test_output_gradient_is_the_identity(name: str, seed: int, spatial: list[int]) -> None:
    torch.manual_seed(seed)
    q = make(name).double()
    z = torch.randn(2, q.dim, *spatial, dtype=torch.float64, requires_grad=True)
    upstream = torch.randn_like(z)
    (grad,) = torch.autograd.grad(q(z).quantized, z, upstream)
    assert torch.equal(grad, upstream)


@given(seed=st.integers(0, 1000))
@settings(max_examples=10, deadline=None)
def test_fsq_gradient_passes_rounding_straight_through(seed: int) -> None:
    torch.manual_seed(seed)
    q = make("fsq").double()
    z = torch.randn(3, q.dim, 5, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(q(z).quantized.sum(), z)
    zd = z.detach().clone().requires_grad_(True)
    flat = zd.movedim(1, -1).reshape(-1, q.dim)
    (expected,) = torch.autograd.grad((q.bound(flat) / (q.levels // 2)).sum(), zd)
    assert torch.allclose(grad, expected)
    assert q(z).loss.item() == 0.0


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: ",".join(o) or "plain")
@given(seed=st.integers(0, 1000), beta=st.floats(0, 2))
@settings(max_examples=8, deadline=None)
def test_codebook_options_in_eval_mode(options: dict[str, Any], seed: int, beta: float) -> None:
    """Indices are the exact nearest codes in the search space; the loss is the documented formula."""
    torch.manual_seed(seed)
    q = make("vq", beta=beta, **options).double().eval()
    z = torch.randn(3, q.dim, 4, 2, dtype=torch.float64, requires_grad=True)
    out = q(z)
    flat = z.detach().movedim(1, -1).reshape(-1, q.dim)
    x = q._to_search_space(flat)
    table = q._search_table().detach()
    expected = ((x[:, None] - table[None]) ** 2).sum(-1).argmin(1)
    assert torch.equal(out.indices.reshape(-1), expected)
    assert torch.allclose(out.quantized, q.lookup(out.indices), atol=1e-10)
    mse = ((table[expected] - x) ** 2).mean()
    want = beta * mse if q.ema else (1 + beta) * mse
    assert torch.allclose(out.loss, want)
    if options.get("cosine"):
        assert torch.allclose(table.norm(dim=1), torch.ones(q.num_codes, dtype=torch.float64))


def test_config_rebuilds_every_builtin() -> None:
    for name in SMALL:
        q = make(name)
        again = registry.create("quantizer", name, **q.config)
        again.load_state_dict(q.state_dict())
        z = torch.randn(2, q.dim, 3, 3)
        assert torch.equal(q.eval()(z).indices, again.eval()(z).indices)


def test_ema_moves_codes_toward_their_vectors() -> None:
    torch.manual_seed(0)
    q = make("vq", ema=True, decay=0.5).train()
    z = torch.randn(4, q.dim, 5, 5)
    before = q.codebook.detach().clone()
    out = q(z)
    after = q.codebook.detach()
    flat = z.movedim(1, -1).reshape(-1, q.dim)
    for k in out.indices.unique().tolist():
        centroid = flat[out.indices.reshape(-1) == k].mean(0)
        assert (after[k] - centroid).norm() < (before[k] - centroid).norm()
    assert not any(p.requires_grad for p in [q.embedding.weight])  # the optimiser leaves EMA codes alone


def test_kmeans_init_seeds_codes_from_the_first_batch() -> None:
    torch.manual_seed(0)
    centres = torch.tensor([[10.0, 0.0], [0.0, 10.0], [-10.0, 0.0]])
    points = centres.repeat_interleave(20, 0) + 0.1 * torch.randn(60, 2)
    q = make("vq", num_codes=3, dim=2, kmeans_init=True, kmeans_iters=10).train()
    q(points.T.reshape(1, 2, 60))
    dist = torch.cdist(q.codebook.detach(), centres)
    assert dist.min(1).values.max() < 1.0 and bool(q.initialized)
    q(points.T.reshape(1, 2, 60) + 100)  # a second batch does not re-initialise
    assert torch.cdist(q.codebook.detach(), centres).min(1).values.max() < 1.0


def test_stale_codes_are_revived_from_the_batch() -> None:
    torch.manual_seed(0)
    q = make("vq", num_codes=8, dim=2, revive_after=2).train()
    z = torch.randn(1, 2, 64) + 50  # far from every code: one code wins everything, seven go unused
    for _ in range(2):
        q(z)
    assert q.stale_codes == 7
    dead = q.unused_steps >= 2
    out = q(z)  # revival re-seeds the stale codes from this batch before the search
    assert q.stale_codes == 0 and out.codes_used > 1
    revived = q.codebook.detach()[dead]
    assert torch.cdist(revived, z[0].T).min(1).values.max() == 0  # each one is a vector of the batch


def test_code_dim_projects_before_the_search() -> None:
    q = make("vq", code_dim=2)
    assert q.embedding.weight.shape == (q.num_codes, 2) and q.codebook.shape == (q.num_codes, q.dim)


def test_residual_indices_and_tokens() -> None:
    torch.manual_seed(0)
    q = make("residual").eval()
    z = torch.randn(2, q.dim, 3, 3)
    out = q(z)
    assert out.indices.shape == (2, 3, 3, 3)
    expected = sum(q.stages[r].codebook[out.indices[:, r]] for r in range(3))
    assert torch.allclose(out.quantized, expected.movedim(-1, 1), atol=1e-5)
    tokens = q.to_tokens(out.indices)
    assert q.num_tokens == 6**3 and torch.equal(
        tokens, out.indices[:, 0] * 36 + out.indices[:, 1] * 6 + out.indices[:, 2]
    )
    # each stage lowers the error: the residual really is being refined
    first = q.stages[0].lookup(out.indices[:, 0])
    assert (out.quantized - z).pow(2).sum() <= (first - z).pow(2).sum()


def test_fsq_codebook_is_the_grid() -> None:
    q = make("fsq")
    assert q.num_codes == 60 and q.codebook.shape == (60, 3)
    assert torch.unique(q.codebook, dim=0).shape[0] == 60
    z = torch.rand(3000, 3, dtype=torch.float64) * 8 - 4
    squashed = q.bound(z) / (q.levels // 2)
    brute = ((squashed[:, None] - q.codebook.double()[None]) ** 2).sum(-1).argmin(1)
    assert torch.equal(q.nearest(z), brute)  # the nearest grid point after the squash
    assert len(q.nearest(z).unique()) == 60  # every code is reachable, the extremes included


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("vq", {"beta": -0.1}, "beta"),
        ("vq", {"num_codes": 0}, "num_codes"),
        ("ema", {"decay": 1.0}, "decay"),
        ("ema", {"decay": 0.0}, "decay"),
        ("vq", {"revive_after": 0}, "revive_after"),
        ("vq", {"code_dim": 0}, "code_dim"),
        ("vq", {"decya": 0.9}, "did you mean 'decay'"),
        ("residual", {"num_stages": 0}, "num_stages"),
        ("residual", {"decya": 0.9}, "decay"),
        ("residual", {"rotation_trick": True}, "rotation_trick"),
        ("fsq", {"levels": [8, 5, 5], "dim": 64}, "dim=3"),
        ("fsq", {"levels": [1, 5]}, "levels"),
    ],
)
def test_bad_options_fail_at_construction(name: str, options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        registry.create("quantizer", name, **options)


def test_wrong_channels_and_bad_indices_are_clear() -> None:
    q = make("vq")
    with pytest.raises(ShapeError, match="dim"):
        q(torch.randn(2, q.dim + 1, 3))
    with pytest.raises(ConfigError, match="lie in"):
        q.lookup(torch.tensor([[q.num_codes]]))
    with pytest.raises(ConfigError, match="residual indices"):
        make("residual").lookup(torch.zeros(2, 2, dtype=torch.long))


@pytest.mark.parametrize("name", sorted(SMALL))
def test_bundle_round_trip(name: str, tmp_path: Any) -> None:
    """Every buffer (EMA sums, usage counters, init flag) survives a bundle, and so do the codes."""
    import vqtoolkit

    options = {k: v for k, v in SMALL[name].items() if k != "dim"}
    dim = SMALL[name]["dim"]
    torch.manual_seed(0)
    pipe = vqtoolkit.build("conv", name, "conv", None, dim=dim, quantizer_config=options)
    pipe.model.train()
    images = torch.rand(4, 1, 28, 28)
    pipe.model(images)  # one training-mode pass: k-means init, EMA and usage buffers change
    again = vqtoolkit.load(pipe.save(tmp_path / "m.safetensors"))
    for key, value in pipe.model.quantizer.state_dict().items():
        assert torch.equal(again.model.quantizer.state_dict()[key], value), key
    assert torch.equal(again.model.eval().encode(images), pipe.model.eval().encode(images))
