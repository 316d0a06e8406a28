"""Conformance checks of quantizers: the straight-through contract, exact search, a codebook that learns."""

from __future__ import annotations

import copy
import difflib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from vqtoolkit.testing.common import (
    KitUsageError,
    _check_dtypes_devices,
    _common,
    _fail,
    _positive_ints,
    _reports_crashes,
    bundle_round_trip,
)


@dataclass
class Forward:
    """One forward pass the invariants are checked on: the quantizer, its input and its output."""

    quantizer: Any
    z: Tensor  # requires grad
    out: Any
    training: bool
    before: Any  # in training mode, a copy of the quantizer before the forward's own update

    @property
    def mode(self) -> str:
        """How messages name the mode."""
        return "in training mode" if self.training else "in eval mode"


class Violation(Exception):
    """Raised by a named check with what is wrong; :func:`check_invariant` adds the check's name."""


def _output_fields(f: Forward) -> None:
    for field in ("quantized", "indices", "loss", "counts"):
        if not hasattr(f.out, field):
            raise Violation(f"forward's result has no {field!r}; return vqtoolkit's QuantizerOutput")


def _quantized_shape(f: Forward) -> None:
    quantized, z = f.out.quantized, f.z
    if quantized.shape != z.shape or quantized.dtype != z.dtype:
        raise Violation(
            f"quantized is {tuple(quantized.shape)} {quantized.dtype}, z is {tuple(z.shape)} {z.dtype}",
        )


def _indices_shape(f: Forward) -> None:
    indices, b, spatial = f.out.indices, f.z.shape[0], tuple(f.z.shape[2:])
    tail = tuple(indices.shape[indices.ndim - len(spatial) :])
    if indices.dtype != torch.long or indices.shape[0] != b or tail != spatial:
        raise Violation(
            f"indices are {tuple(indices.shape)} {indices.dtype}; expected long "
            f"(B, *spatial) = {(b, *spatial)} (or (B, stages, *spatial))",
        )


def _indices_in_range(f: Forward) -> None:
    indices, k = f.out.indices, int(f.quantizer.num_codes)
    if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= k):
        raise Violation(
            f"indices span [{int(indices.min())}, {int(indices.max())}], not [0, {k})",
        )


def _loss(f: Forward) -> None:
    loss = f.out.loss
    if loss.ndim != 0 or not torch.isfinite(loss):
        raise Violation(f"loss must be a finite scalar; got shape {tuple(loss.shape)} value {loss}")


def _counts(f: Forward) -> None:
    """``counts`` must be the per-code usage of this batch: ``bincount(indices)`` of shape ``(K,)``."""
    counts, k = f.out.counts, int(f.quantizer.num_codes)
    expected = torch.bincount(f.out.indices.detach().reshape(-1).cpu(), minlength=k)
    if (
        not isinstance(counts, Tensor)
        or tuple(counts.shape) != (k,)
        or counts.is_floating_point()
        or not torch.equal(counts.detach().cpu().long(), expected)
    ):
        got = tuple(counts.shape) if isinstance(counts, Tensor) else type(counts).__name__
        raise Violation(
            f"{f.mode}, counts ({got}) is not bincount(indices, minlength={k}); perplexity, dead-code "
            f"revival and the training log all read it",
        )


def _quantized_is_lookup(f: Forward) -> None:
    quantized, indices = f.out.quantized.detach(), f.out.indices
    tolerance = 1e-5 if f.z.dtype == torch.float64 else 1e-4
    codebooks = [f.quantizer] if f.before is None else [f.before, f.quantizer]
    if not any(
        torch.allclose(q.lookup(indices).to(quantized.dtype), quantized, atol=tolerance, rtol=tolerance)
        for q in codebooks
    ):
        raise Violation(
            f"{f.mode}, the quantized values are not the codes the indices name (is z returned unquantized?)",
        )


def _eval_single_codebook(f: Forward) -> bool:
    """The exact-search checks apply in eval mode to one index per position."""
    return not f.training and f.out.indices.shape == (f.z.shape[0], *f.z.shape[2:])


def _nearest_code(f: Forward) -> None:
    if not _eval_single_codebook(f):
        return
    flat = f.z.detach().movedim(1, -1).reshape(-1, f.z.shape[1]).double()
    distances = torch.cdist(flat, f.quantizer.codebook.detach().double()).square()
    chosen = distances.gather(1, f.out.indices.reshape(-1, 1)).squeeze(1)
    best = distances.min(1).values
    if not (chosen <= best + 1e-4 * (1 + best)).all():
        raise Violation("an index is not a nearest code by squared L2")


def _quantize_indices(f: Forward) -> None:
    if _eval_single_codebook(f) and not torch.equal(
        f.quantizer.quantize_indices(f.z.detach()), f.out.indices
    ):
        raise Violation("quantize_indices(z) differs from forward(z).indices")


def _commitment_loss(f: Forward) -> None:
    loss = f.out.loss
    pull = (
        torch.autograd.grad(loss, f.z, retain_graph=True, allow_unused=True)[0]
        if loss.requires_grad
        else None
    )
    if pull is None or not torch.isfinite(pull).all() or not pull.abs().sum() > 0:
        raise Violation(
            f"{f.mode}, loss has no gradient with respect to z: add beta * mse(z, sg[q]) "
            "(vq_losses in vqtoolkit.quantize.core); commitment=False for a quantizer without one",
        )


def _straight_through(f: Forward) -> None:
    quantized = f.out.quantized
    fix = "return straight_through(z, q) from vqtoolkit.quantize.core"
    if not quantized.requires_grad:
        raise Violation(f"{f.mode}, quantized carries no gradient (detached?); {fix}")
    grad = torch.randn_like(quantized)
    (gradient,) = torch.autograd.grad(quantized, f.z, grad, retain_graph=True, allow_unused=True)
    if gradient is None or not torch.allclose(gradient, grad, atol=1e-5, rtol=1e-4):
        raise Violation(f"{f.mode}, d quantized / d z is not the identity; {fix}")


#: The per-input invariants, by the name a failure reports (and ``skip=`` takes), in the order they run.
INVARIANTS: dict[str, Callable[[Forward], None]] = {
    "output fields": _output_fields,
    "quantized shape": _quantized_shape,
    "indices shape": _indices_shape,
    "indices in range": _indices_in_range,
    "loss": _loss,
    "counts": _counts,
    "quantized == lookup(indices)": _quantized_is_lookup,
    "nearest code": _nearest_code,
    "quantize_indices": _quantize_indices,
    "commitment loss": _commitment_loss,
    "straight-through gradient": _straight_through,
}


def _skipped(skip: Iterable[str], exact_nearest: bool, straight_through: bool, commitment: bool) -> set[str]:
    """The names to skip: ``skip`` (checked against :data:`INVARIANTS`) plus what the flags turn off."""
    names = set(skip)
    unknown = sorted(names - set(INVARIANTS) - {"codebook learns"})
    if unknown:
        hint = {n: difflib.get_close_matches(n, INVARIANTS, n=1) for n in unknown}
        raise KitUsageError(
            f"no quantizer check named {unknown}; close: {hint}; the checks: {list(INVARIANTS)}"
        )
    names |= {"nearest code", "quantize_indices"} if not exact_nearest else set()
    names |= {"straight-through gradient"} if not straight_through else set()
    names |= {"commitment loss"} if not commitment else set()
    return names


@_reports_crashes
def check_quantizer_invariants(
    quantizer: Any,
    z: Tensor,
    *,
    exact_nearest: bool = True,
    straight_through: bool = True,
    commitment: bool = True,
    training: bool = False,
    skip: Iterable[str] = (),
) -> None:
    """The quantizer contract on one input, one named check of :data:`INVARIANTS` at a time.

    Drive it with Hypothesis. In training mode ``quantized == lookup(indices)`` accepts the codebook
    before or after the forward's own update (returning ``z`` itself fails).

    Args:
        quantizer: The quantizer under test.
        z: One input ``(B, D, *spatial)``.
        exact_nearest: Check that each index is a nearest code by squared L2 and that
            ``quantize_indices`` agrees (eval mode); ``False`` for a search that is not plain L2 on z.
        straight_through: Check that ``d quantized / d z`` is the identity.
        commitment: Check that ``loss`` has a non-zero gradient with respect to ``z``.
        training: Run the forward in training mode.
        skip: Names of :data:`INVARIANTS` not to check.

    Raises:
        ConformanceError: A check fails; the message names it and the fix.
    """
    skipped = _skipped(skip, exact_nearest, straight_through, commitment)
    quantizer.train(training)
    before = copy.deepcopy(quantizer) if training else None
    z = z.detach().clone().requires_grad_(True)
    forward = Forward(quantizer, z, quantizer(z), training, before)
    for name in INVARIANTS:
        if name not in skipped:
            check_invariant(name, forward)


def check_invariant(name: str, forward: Forward) -> None:
    """Run the one check of :data:`INVARIANTS` called ``name`` on ``forward``.

    Raises:
        ConformanceError: It fails; the message names the check and the fix.
    """
    try:
        INVARIANTS[name](forward)
    except Violation as problem:
        raise _fail(type(forward.quantizer), name, str(problem)) from None


@_reports_crashes
def check_quantizer(
    component: str | type,
    config: Mapping[str, Any] | None = None,
    *,
    exact_nearest: bool = True,
    straight_through: bool = True,
    codebook_learns: bool = True,
    commitment: bool = True,
    skip: Iterable[str] = (),
) -> None:
    """Verify a quantizer against the contract, check by named check.

    The :data:`INVARIANTS` on several shapes in eval mode and, on fresh instances after one warm-up
    step, in training mode; ``codebook``/``lookup``/``nearest``, float64 and devices, a bundle round
    trip, and that one training step changes the codebook, by gradient or by EMA ("codebook learns").

    Args:
        component: A registered name or the class.
        config: Constructor options.
        exact_nearest: See :func:`check_quantizer_invariants`.
        straight_through: See :func:`check_quantizer_invariants`.
        codebook_learns: ``False`` for an implicit codebook such as FSQ's.
        commitment: ``False`` for a quantizer whose loss is zero by design (FSQ).
        skip: Names of checks not to run (of :data:`INVARIANTS`, or ``"codebook learns"``).

    Raises:
        ConformanceError: A check fails; the message names it and the fix.
    """
    skipped = _skipped(skip, exact_nearest, straight_through, commitment)
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
        check_quantizer_invariants(quantizer, torch.randn(shape, generator=g), skip=skipped)
    for shape in [(2, d, 3, 4), (3, d, 5)]:
        fresh, z = cls(**quantizer.config).train(), torch.randn(shape, generator=g)
        with torch.no_grad():
            fresh(z)  # warm-up: data-dependent initialisation (k-means) happens on the first step
        check_quantizer_invariants(
            fresh, z, training=True, skip=skipped - {"nearest code", "quantize_indices"}
        )
    z = torch.randn(4, d, 3, 3, generator=g)
    _check_dtypes_devices(cls, quantizer.eval(), lambda m, t: m(t).quantized, z)
    copy = bundle_round_trip("quantizer", cls, quantizer.eval())
    with torch.no_grad():
        if not torch.equal(copy.eval()(z).indices, quantizer(z).indices):
            raise _fail(cls, "bundle round trip", "the restored quantizer picks other codes")
    if codebook_learns and "codebook learns" not in skipped:
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
