"""Conformance checks of quantizers: the straight-through contract, exact search, a codebook that learns."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from vqtoolkit.testing.common import (
    _check_dtypes_devices,
    _common,
    _fail,
    _positive_ints,
    _reports_crashes,
    bundle_round_trip,
)


@_reports_crashes
def check_quantizer_invariants(
    quantizer: Any,
    z: Tensor,
    *,
    exact_nearest: bool = True,
    straight_through: bool = True,
    commitment: bool = True,
    training: bool = False,
) -> None:
    """The quantizer contract on one input ``z`` (B, D, *spatial), in eval mode or (``training``) train mode.

    Output shapes and dtypes; indices in range; ``counts`` is the bincount of the indices;
    ``quantized == lookup(indices)`` (in training mode, the codes of the codebook before or after
    the forward's own update, so returning ``z`` itself fails); with ``exact_nearest`` (eval mode),
    each index is a nearest code by squared L2; with ``straight_through``, the gradient of
    ``quantized`` with respect to ``z`` is the identity; with ``commitment``, ``loss`` has a
    non-zero gradient with respect to ``z`` (the commitment term). Drive it with Hypothesis.
    """
    cls = type(quantizer)
    mode = "in training mode" if training else "in eval mode"
    quantizer.train(training)
    b, spatial = z.shape[0], tuple(z.shape[2:])
    before = copy.deepcopy(quantizer) if training else None
    z = z.detach().clone().requires_grad_(True)
    out = quantizer(z)
    for field in ("quantized", "indices", "loss", "counts"):
        if not hasattr(out, field):
            raise _fail(
                cls, "output fields", f"forward's result has no {field!r}; return vqtoolkit's QuantizerOutput"
            )
    quantized, indices, loss = out.quantized, out.indices, out.loss
    if quantized.shape != z.shape or quantized.dtype != z.dtype:
        raise _fail(
            cls,
            "quantized shape",
            f"quantized is {tuple(quantized.shape)} {quantized.dtype}, z is {tuple(z.shape)} {z.dtype}",
        )
    if (
        indices.dtype != torch.long
        or indices.shape[0] != b
        or tuple(indices.shape[indices.ndim - len(spatial) :]) != spatial
    ):
        raise _fail(
            cls,
            "indices shape",
            f"indices are {tuple(indices.shape)} {indices.dtype}; expected long "
            f"(B, *spatial) = {(b, *spatial)} (or (B, stages, *spatial))",
        )
    k = int(quantizer.num_codes)
    if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= k):
        raise _fail(
            cls,
            "indices in range",
            f"indices span [{int(indices.min())}, {int(indices.max())}], not [0, {k})",
        )
    if loss.ndim != 0 or not torch.isfinite(loss):
        raise _fail(cls, "loss", f"loss must be a finite scalar; got shape {tuple(loss.shape)} value {loss}")
    _check_counts(cls, out.counts, indices, k, mode)
    tolerance = 1e-5 if z.dtype == torch.float64 else 1e-4
    codebooks = [quantizer] if before is None else [before, quantizer]
    if not any(
        torch.allclose(
            q.lookup(indices).to(quantized.dtype), quantized.detach(), atol=tolerance, rtol=tolerance
        )
        for q in codebooks
    ):
        raise _fail(
            cls,
            "quantized == lookup(indices)",
            f"{mode}, the quantized values are not the codes the indices name (is z returned unquantized?)",
        )
    if exact_nearest and not training and indices.shape == (b, *spatial):
        flat = z.detach().movedim(1, -1).reshape(-1, z.shape[1]).double()
        codebook = quantizer.codebook.detach().double()
        distances = torch.cdist(flat, codebook).square()
        chosen = distances.gather(1, indices.reshape(-1, 1)).squeeze(1)
        if not (chosen <= distances.min(1).values + 1e-4 * (1 + distances.min(1).values)).all():
            raise _fail(cls, "nearest code", "an index is not a nearest code by squared L2")
        if not torch.equal(quantizer.quantize_indices(z.detach()), indices):
            raise _fail(cls, "quantize_indices", "quantize_indices(z) differs from forward(z).indices")
    if commitment:
        pull = (
            torch.autograd.grad(loss, z, retain_graph=True, allow_unused=True)[0]
            if loss.requires_grad
            else None
        )
        if pull is None or not torch.isfinite(pull).all() or not pull.abs().sum() > 0:
            raise _fail(
                cls,
                "commitment loss",
                f"{mode}, loss has no gradient with respect to z: add beta * mse(z, sg[q]) "
                "(vq_losses in vqtoolkit.quantize.core); commitment=False for a quantizer without one",
            )
    if straight_through:
        grad = torch.randn_like(quantized)
        if not quantized.requires_grad:
            raise _fail(
                cls,
                "straight-through gradient",
                f"{mode}, quantized carries no gradient (detached?); return straight_through(z, q) "
                f"from vqtoolkit.quantize.core",
            )
        (quantized * grad).sum().backward()
        if z.grad is None or not torch.allclose(z.grad, grad, atol=1e-5, rtol=1e-4):
            raise _fail(
                cls,
                "straight-through gradient",
                f"{mode}, d quantized / d z is not the identity; return "
                "straight_through(z, q) from vqtoolkit.quantize.core",
            )


def _check_counts(cls: type, counts: Any, indices: Tensor, k: int, mode: str) -> None:
    """``counts`` must be the per-code usage of this batch: ``bincount(indices)`` of shape ``(K,)``."""
    expected = torch.bincount(indices.detach().reshape(-1).cpu(), minlength=k)
    if (
        not isinstance(counts, Tensor)
        or tuple(counts.shape) != (k,)
        or counts.is_floating_point()
        or not torch.equal(counts.detach().cpu().long(), expected)
    ):
        got = tuple(counts.shape) if isinstance(counts, Tensor) else type(counts).__name__
        raise _fail(
            cls,
            "counts",
            f"{mode}, counts ({got}) is not bincount(indices, minlength={k}); perplexity, dead-code "
            f"revival and the training log all read it",
        )


@_reports_crashes
def check_quantizer(
    component: str | type,
    config: Mapping[str, Any] | None = None,
    *,
    exact_nearest: bool = True,
    straight_through: bool = True,
    codebook_learns: bool = True,
    commitment: bool = True,
) -> None:
    """Verify a quantizer against the contract.

    The invariants of :func:`check_quantizer_invariants` on several shapes in eval mode and, on fresh
    instances after one warm-up step, in training mode; ``codebook``/``lookup``/``nearest``, float64
    and devices, a bundle round trip, and (unless ``codebook_learns=False``, for implicit codebooks
    such as FSQ) that one training step changes the codebook, by gradient or by EMA.
    ``commitment=False`` is for quantizers whose loss is zero by design (FSQ).
    """
    cls, quantizer = _common("quantizer", component, config)
    k, d = _positive_ints(cls, quantizer, "num_codes", "dim")
    if tuple(quantizer.codebook.shape[-2:]) != (k, d) or quantizer.codebook.ndim not in (2, 3):
        raise _fail(
            cls,
            "codebook",
            f"codebook is {tuple(quantizer.codebook.shape)}, expected (num_codes, dim) = {(k, d)} "
            f"(or (stages, num_codes, dim) for a multi-stage quantizer)",
        )
    g = torch.Generator().manual_seed(0)
    for shape in [(2, d, 3, 4), (1, d, 1, 1), (3, d, 5)]:
        check_quantizer_invariants(
            quantizer,
            torch.randn(shape, generator=g),
            exact_nearest=exact_nearest,
            straight_through=straight_through,
            commitment=commitment,
        )
    for shape in [(2, d, 3, 4), (3, d, 5)]:
        fresh, z = cls(**quantizer.config).train(), torch.randn(shape, generator=g)
        with torch.no_grad():
            fresh(z)  # warm-up: data-dependent initialisation (k-means) happens on the first step
        check_quantizer_invariants(
            fresh, z, straight_through=straight_through, commitment=commitment, training=True
        )
    z = torch.randn(4, d, 3, 3, generator=g)
    _check_dtypes_devices(cls, quantizer.eval(), lambda m, t: m(t).quantized, z)
    copy = bundle_round_trip("quantizer", cls, quantizer.eval())
    with torch.no_grad():
        if not torch.equal(copy.eval()(z).indices, quantizer(z).indices):
            raise _fail(cls, "bundle round trip", "the restored quantizer picks other codes")
    if codebook_learns:
        _check_codebook_learns(cls, dict(quantizer.config), z)


def _check_codebook_learns(cls: type, config: dict[str, Any], z: Tensor) -> None:
    """One optimiser step (plus the forward's own EMA update) must move the codebook.

    A warm-up forward first lets data-dependent initialisation (k-means) happen before the snapshot.
    The step then sees a different batch: on the batch k-means just fitted, an EMA step is exactly
    a fixed point.
    """
    quantizer = cls(**config).train()
    with torch.no_grad():
        quantizer(z)
    before = quantizer.codebook.detach().clone()
    z = (z + torch.randn(z.shape, generator=torch.Generator().manual_seed(1))).requires_grad_(True)
    out = quantizer(z)
    (out.loss + out.quantized.square().mean()).backward()
    params = [p for p in quantizer.parameters() if p.grad is not None]
    if params:
        torch.optim.SGD(params, lr=0.5).step()
    if torch.equal(quantizer.codebook.detach(), before):
        raise _fail(
            cls,
            "codebook learns",
            "one training step left the codebook unchanged: its codes get no "
            "gradient (is the codebook loss computed from a detached copy?) "
            "and no EMA update in train mode",
        )
