"""A conformance kit for components, in the spirit of scikit-learn's ``check_estimator``.

Plugin authors call these in their own tests:

    from vqtoolkit.testing import check_prior
    def test_my_prior_conforms():
        check_prior("markov", {"num_codes": 4})      # a registered name, or the class itself

Each ``check_*`` builds the component from its config and verifies the contract its kind promises
(``docs/plugins.md``): the config is plain JSON and rebuilds the component; the component builds
on the ``meta`` device (so bundles validate before allocating); every buffer is a real tensor and
every tensor is registered, so ``state_dict`` is complete; a bundle round trip (safetensors bytes
and the loader's own validation) restores it exactly; shapes, float64 and every available device
work; and the kind's own invariants hold (the straight-through estimator and a codebook that
actually learns for quantizers, normalised likelihoods and reproducible samples for priors). A
failure raises :class:`ConformanceError` naming the check and the fix.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import importlib
import itertools
import json
import math
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar, cast

import torch
from safetensors.torch import load as load_bytes
from safetensors.torch import save as save_bytes
from torch import Tensor, nn

from vqtoolkit import bundle, bundle_restore, registry
from vqtoolkit.errors import ComponentNotFoundError, VQToolkitError

_Check = TypeVar("_Check", bound=Callable[..., None])

__all__ = [
    "ConformanceError",
    "check_component",
    "check_decoder",
    "check_encoder",
    "check_prior",
    "check_quantizer",
    "check_quantizer_invariants",
    "fake_distribution",
    "fake_install",
]


class ConformanceError(AssertionError):
    """A component that breaks its kind's contract; the message names the check and the fix."""


def _reports_crashes(check: _Check) -> _Check:
    """A component that crashes a check fails it with a :class:`ConformanceError`, never a raw error."""

    @functools.wraps(check)
    def run(component: Any, *args: Any, **kwargs: Any) -> None:
        try:
            check(component, *args, **kwargs)
        except (ConformanceError, ComponentNotFoundError):
            raise
        except Exception as err:
            name = component if isinstance(component, str) else getattr(component, "__name__", None)
            raise ConformanceError(
                f"{name or type(component).__name__} fails 'runs without crashing': "
                f"{type(err).__name__}: {err}"
            ) from err

    return cast(_Check, run)


def _fail(cls: type, check: str, problem: str) -> ConformanceError:
    return ConformanceError(f"{cls.__name__} fails '{check}': {problem}")


def devices() -> list[torch.device]:
    """The devices the device checks run on: the CPU and, where present, CUDA and MPS."""
    found = [torch.device("cpu")]
    if torch.cuda.is_available():
        found.append(torch.device("cuda"))
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        found.append(torch.device("mps"))
    return found


# -- checks every kind shares ----------------------------------------------------------------------
def _resolve(kind: str, component: str | type) -> tuple[type, str | None]:
    if isinstance(component, str):
        return registry.get_class(kind, component), registry.split_name(component)[0]
    return component, None


def _build(kind: str, cls: type, config: Mapping[str, Any], name: str | None) -> Any:
    try:
        instance: Any = cls(**config)
    except Exception as err:
        raise _fail(cls, "construct", f"cls(**{dict(config)!r}) raised {type(err).__name__}: {err}") from err
    if not isinstance(instance, nn.Module):
        raise _fail(
            cls, "is a module", "components must subclass torch.nn.Module (via vqtoolkit's base classes)"
        )
    instance = cast(Any, instance)  # components carry attributes nn.Module's typing does not know
    if getattr(instance, "kind", None) != kind:
        raise _fail(
            cls,
            "kind",
            f"kind is {getattr(instance, 'kind', None)!r}, expected {kind!r}: "
            f"subclass the {kind} base class in vqtoolkit",
        )
    if name is not None:
        instance.registered_name = name
    return instance


def check_config(cls: type, instance: Any) -> None:
    """``config`` is plain JSON, names only constructor options, and ``cls(**config)`` rebuilds it."""
    config = getattr(instance, "config", None)
    if not isinstance(config, dict) or not all(isinstance(k, str) for k in config):
        raise _fail(cls, "config", "config must be a dict of constructor options keyed by name")
    try:
        round_tripped = json.loads(json.dumps(config, allow_nan=False))
    except (TypeError, ValueError) as err:
        raise _fail(
            cls, "config is JSON", f"{err}; keep only numbers, strings, booleans, None, lists, dicts"
        ) from err
    if round_tripped != config:
        raise _fail(
            cls,
            "config is JSON",
            f"{config!r} changes through JSON (to {round_tripped!r}); "
            f"store lists, not tuples, and string dict keys",
        )
    try:
        registry.check_options(cls, config, what=cls.__name__)
        rebuilt = cls(**config)
    except Exception as err:
        raise _fail(cls, "config rebuilds", f"cls(**config) raised {type(err).__name__}: {err}") from err
    if rebuilt.config != config:
        raise _fail(cls, "config rebuilds", f"cls(**config).config is {rebuilt.config!r}, not {config!r}")


def check_state(cls: type, instance: Any) -> None:
    """Every buffer is a tensor and every tensor attribute is registered, so ``state_dict`` is complete."""
    for module_name, module in instance.named_modules():
        where = f"{module_name}." if module_name else ""
        for name, buffer in module._buffers.items():
            if buffer is None:
                raise _fail(
                    cls,
                    "no None buffers",
                    f"buffer {where}{name} is None, so state_dict drops it and a "
                    f"bundle cannot restore it; register a tensor of the right shape",
                )
        for name, value in vars(module).items():
            if isinstance(value, Tensor):
                raise _fail(
                    cls,
                    "tensors are registered",
                    f"{where}{name} is a plain tensor attribute: bundles "
                    f"do not save it and .to() does not move it; use "
                    f"register_buffer({name!r}, ...)",
                )


def check_meta_build(cls: type, instance: Any) -> None:
    """``cls(**config)`` on the meta device has the same state names, shapes and dtypes (bundles need it)."""
    try:
        with torch.device("meta"):
            meta = cls(**instance.config).state_dict()
    except Exception as err:
        raise _fail(
            cls,
            "builds on meta",
            f"building on torch.device('meta') raised {type(err).__name__}: "
            f"{err}; avoid reading tensor values (.item(), numpy) in __init__",
        ) from err
    real = instance.state_dict()
    shapes = {k: (tuple(v.shape), v.dtype) for k, v in real.items()}
    meta_shapes = {k: (tuple(v.shape), v.dtype) for k, v in meta.items()}
    if shapes != meta_shapes:
        changed = sorted(k for k in shapes.keys() | meta_shapes.keys() if shapes.get(k) != meta_shapes.get(k))
        raise _fail(
            cls,
            "config fixes the state",
            f"cls(**config) has different tensors than the instance at "
            f"{changed[:5]}; record in config whatever decides their shapes",
        )


def bundle_round_trip(kind: str, cls: type, instance: Any) -> Any:
    """The component through safetensors bytes and the bundle loader's validation; returns the copy."""
    data = save_bytes(
        bundle.component_tensors(kind, instance), metadata={"config": json.dumps(instance.config)}
    )
    state = {k.split(".", 1)[1]: v for k, v in load_bytes(data).items()}
    try:
        rebuilt: Any = bundle_restore.restore(
            cls, json.loads(json.dumps(instance.config)), state, what=cls.__name__
        )
    except VQToolkitError as err:
        raise _fail(cls, "bundle round trip", str(err)) from err
    before, after = instance.state_dict(), rebuilt.state_dict()
    if not all(torch.equal(before[k].cpu(), after[k]) for k in before):
        raise _fail(cls, "bundle round trip", "restored tensors differ from the saved ones")
    rebuilt.registered_name = getattr(instance, "registered_name", None)
    return rebuilt.train(instance.training)


def _check_registered(kind: str, cls: type, instance: Any, name: str | None) -> None:
    if name is None:
        return
    try:
        entry = bundle.describe(kind, instance)
    except VQToolkitError as err:
        raise _fail(cls, "registered", str(err)) from err
    if entry["name"] != name:
        raise _fail(cls, "registered", f"saved as {entry['name']!r}, not {name!r}")


def _common(kind: str, component: str | type, config: Mapping[str, Any] | None) -> tuple[type, Any]:
    cls, name = _resolve(kind, component)
    instance = _build(kind, cls, dict(config or {}), name)
    check_config(cls, instance)
    check_state(cls, instance)
    check_meta_build(cls, instance)
    _check_registered(kind, cls, instance, name)
    return cls, instance


def _positive_ints(cls: type, instance: Any, *names: str) -> list[int]:
    values = [getattr(instance, n, None) for n in names]
    for n, v in zip(names, values, strict=True):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise _fail(
                cls,
                "declares its shape",
                f"attribute {n} must be a positive int (build() reads it); got {v!r}",
            )
    return values  # type: ignore[return-value]


def _check_gradients(cls: type, module: Any, output: Tensor, x: Tensor) -> None:
    output.square().mean().backward()
    if x.grad is None or not torch.isfinite(x.grad).all() or not x.grad.abs().sum() > 0:
        raise _fail(cls, "differentiable", "no finite, non-zero gradient reaches the input")
    unused = [n for n, p in module.named_parameters() if p.requires_grad and p.grad is None]
    if unused:
        raise _fail(
            cls,
            "every parameter is used",
            f"{unused[:5]} receive no gradient (unused parameters "
            f"waste memory and break DistributedDataParallel)",
        )


def _check_dtypes_devices(cls: type, module: Any, run: Any, example: Tensor) -> None:
    """``run(module, x)`` keeps float64 and every available device."""
    for device in devices():
        for dtype in (torch.float32, torch.float64) if device.type != "mps" else (torch.float32,):
            moved = module.to(device=device, dtype=dtype)
            out = run(moved, example.to(device=device, dtype=dtype))
            if out.dtype != dtype or out.device.type != device.type:
                raise _fail(
                    cls,
                    "dtype and device",
                    f"on {device} with {dtype} the output is {out.dtype} on "
                    f"{out.device}; create new tensors with like=input's dtype/device",
                )
    module.to(device="cpu", dtype=torch.float32)


# -- encoders and decoders -------------------------------------------------------------------------
@_reports_crashes
def check_encoder(component: str | type, config: Mapping[str, Any] | None = None) -> None:
    """Verify an encoder: images ``(B, in_channels, H, W)`` → latents ``(B, dim, H/f, W/f)``."""
    cls, encoder = _common("encoder", component, config)
    channels, dim, factor = _positive_ints(cls, encoder, "in_channels", "dim", "downsample")
    x = torch.rand(2, channels, 4 * factor, 3 * factor, generator=torch.Generator().manual_seed(0))
    _check_map(cls, encoder, x, (2, dim, 4, 3))
    copy = bundle_round_trip("encoder", cls, encoder)
    if not torch.equal(copy.eval()(x), encoder.eval()(x)):
        raise _fail(cls, "bundle round trip", "the restored encoder computes something else")


@_reports_crashes
def check_decoder(component: str | type, config: Mapping[str, Any] | None = None) -> None:
    """Verify a decoder: latents ``(B, dim, h, w)`` → images ``(B, out_channels, h·f, w·f)``."""
    cls, decoder = _common("decoder", component, config)
    channels, dim, factor = _positive_ints(cls, decoder, "out_channels", "dim", "upsample")
    q = torch.randn(2, dim, 4, 3, generator=torch.Generator().manual_seed(0))
    _check_map(cls, decoder, q, (2, channels, 4 * factor, 3 * factor))
    copy = bundle_round_trip("decoder", cls, decoder)
    if not torch.equal(copy.eval()(q), decoder.eval()(q)):
        raise _fail(cls, "bundle round trip", "the restored decoder computes something else")


def _check_map(cls: type, module: Any, x: Tensor, shape: tuple[int, ...]) -> None:
    module.train()
    x = x.clone().requires_grad_(True)
    out = module(x)
    if tuple(out.shape) != shape or not torch.isfinite(out).all():
        raise _fail(
            cls, "shapes", f"input {tuple(x.shape)} gave {tuple(out.shape)}, expected {shape} (finite)"
        )
    _check_gradients(cls, module, out, x)
    module.eval()
    with torch.no_grad():
        if not torch.equal(module(x), module(x)):
            raise _fail(cls, "deterministic in eval mode", "two eval-mode calls on the same input differ")
    _check_dtypes_devices(cls, module, lambda m, t: m(t), x.detach())


# -- quantizers ------------------------------------------------------------------------------------
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


# -- priors ----------------------------------------------------------------------------------------
def example_data(prior: Any, n: int = 64, spatial: tuple[int, ...] = (2, 3)) -> Tensor:
    """Structured training data in the prior's space: indices following a random walk, or latents."""
    g = torch.Generator().manual_seed(0)
    if prior.space == "latents":
        centres = torch.randn(3, 4, *spatial, generator=g)
        return centres[torch.arange(n) % 3] + 0.1 * torch.randn(n, 4, *spatial, generator=g)
    k = int(prior.config.get("num_codes") or 8)
    steps = torch.randint(0, 2, (n, *spatial), generator=g).reshape(n, -1)
    return (steps.cumsum(1) + torch.randint(0, k, (n, 1), generator=g)).remainder(k).reshape(n, *spatial)


@_reports_crashes
def check_prior(
    component: str | type,
    config: Mapping[str, Any] | None = None,
    *,
    data: Tensor | None = None,
    labels: Tensor | None = None,
) -> None:
    """Verify a prior against the contract.

    fit/sample/log_prob on ``data`` (default :func:`example_data`), unfitted and bad
    arguments refused with vqtoolkit errors, reproducible samples, fitted state restored exactly by a
    bundle, and, where ``has_likelihood`` and ``num_codes ** positions <= 4096``, that ``log_prob``
    sums to one over every possible index grid (e.g. ``num_codes=4`` on the default 2×3 data).
    """
    cls, prior = _common("prior", component, config)
    if prior.space not in ("indices", "latents"):
        raise _fail(cls, "space", f"space must be 'indices' or 'latents'; got {prior.space!r}")
    data = example_data(prior) if data is None else data
    labels = torch.arange(len(data)) % 2 if labels is None else labels
    if prior.is_fitted:
        raise _fail(cls, "unfitted", "is_fitted is True before fit()")
    _expect_error(cls, "sampling before fit", lambda: prior.sample(2))
    if prior.fit(data, labels, progress=False) is not prior or not prior.is_fitted:
        raise _fail(cls, "fit", "fit() must return self and set the 'fitted' buffer")
    check_state(cls, prior)
    check_meta_build(cls, prior)
    label = 1 if prior.conditional else None
    samples = _check_samples(cls, prior, data, label)
    _expect_error(cls, "n=0 refused", lambda: prior.sample(0))
    _expect_error(cls, "temperature=0 refused", lambda: prior.sample(2, temperature=0.0))
    if not prior.conditional:
        _expect_error(cls, "label refused by an unconditional prior", lambda: prior.sample(2, label=0))
    copy = bundle_round_trip("prior", cls, prior)
    if not torch.equal(copy.sample(5, label=label, generator=torch.Generator().manual_seed(0)), samples):
        raise _fail(cls, "bundle round trip", "the restored prior draws other samples from the same seed")
    if prior.has_likelihood:
        _check_likelihood(cls, prior, copy, data)


def _expect_error(cls: type, check: str, call: Any) -> None:
    try:
        call()
    except VQToolkitError:
        return
    except Exception as err:
        raise _fail(
            cls,
            check,
            f"raised {type(err).__name__}: {err}; raise a vqtoolkit error (ConfigError) "
            f"so the CLI prints one line",
        ) from err
    raise _fail(cls, check, "no error was raised")


def _check_samples(cls: type, prior: Any, data: Tensor, label: int | None) -> Tensor:
    samples = prior.sample(5, label=label, generator=torch.Generator().manual_seed(0))
    if tuple(samples.shape) != (5, *data.shape[1:]):
        raise _fail(
            cls, "sample shape", f"sample(5) is {tuple(samples.shape)}, expected {(5, *data.shape[1:])}"
        )
    if prior.space == "indices":
        k = int(prior.config["num_codes"])
        if samples.dtype != torch.long or int(samples.min()) < 0 or int(samples.max()) >= k:
            raise _fail(
                cls,
                "sample values",
                f"index samples must be long in [0, {k}); got {samples.dtype} "
                f"in [{int(samples.min())}, {int(samples.max())}]",
            )
    elif not samples.is_floating_point() or not torch.isfinite(samples).all():
        raise _fail(cls, "sample values", "latent samples must be finite floats")
    again = prior.sample(5, label=label, generator=torch.Generator().manual_seed(0))
    if not torch.equal(samples, again):
        raise _fail(
            cls,
            "reproducible",
            "the same generator seed gave different samples; draw all randomness from the generator argument",
        )
    drawn = []
    for temperature in (0.5, 2.0):
        batch = prior.sample(
            32, label=label, temperature=temperature, generator=torch.Generator().manual_seed(0)
        )
        if tuple(batch.shape) != (32, *data.shape[1:]):
            raise _fail(cls, "temperature", f"sample(32, temperature={temperature}) has the wrong shape")
        drawn.append(batch)
    if torch.equal(*drawn):
        raise _fail(
            cls,
            "temperature",
            "temperature 0.5 and 2.0 drew the same 32 samples from the same seed: temperature is "
            "validated but ignored; scale logits (index priors) or the noise (latent priors) by it",
        )
    return samples


@torch.no_grad()
def _check_likelihood(cls: type, prior: Any, copy: Any, data: Tensor) -> None:
    log_p = prior.log_prob(data)
    if tuple(log_p.shape) != (len(data),) or not torch.isfinite(log_p).all() or (log_p > 1e-5).any():
        raise _fail(
            cls,
            "log_prob",
            f"log_prob must be finite, <= 0, one per sample; got shape "
            f"{tuple(log_p.shape)}, max {float(log_p.max())}",
        )
    if not torch.allclose(copy.log_prob(data), log_p):
        raise _fail(cls, "bundle round trip", "the restored prior gives other likelihoods")
    k, spatial = int(prior.config["num_codes"]), tuple(data.shape[1:])
    positions = math.prod(spatial)
    if k**positions <= 4096:
        grids = torch.tensor(list(itertools.product(range(k), repeat=positions))).reshape(-1, *spatial)
        total = float(torch.logsumexp(prior.log_prob(grids).double(), 0).exp())
        if abs(total - 1) > 1e-3:
            raise _fail(
                cls, "normalised", f"probabilities of all {len(grids)} index grids sum to {total:.6f}, not 1"
            )


# -- dispatch and fake installs --------------------------------------------------------------------
CHECKS = {
    "encoder": check_encoder,
    "decoder": check_decoder,
    "quantizer": check_quantizer,
    "prior": check_prior,
}


def check_component(
    kind: str, component: str | type, config: Mapping[str, Any] | None = None, **options: Any
) -> None:
    """Run the check of ``kind`` (``encoder``, ``decoder``, ``quantizer`` or ``prior``)."""
    CHECKS[kind](component, config, **options)


@contextlib.contextmanager
def fake_distribution(
    name: str,
    entry_points: Mapping[str, Mapping[str, str]],
    *,
    version: str = "0.0.0",
    paths: tuple[str | Path, ...] = (),
) -> Iterator[None]:
    """Make distribution ``name`` look installed for the duration, without pip.

    ``entry_points`` is ``{group: {name: "module:Class"}}``; a ``.dist-info`` folder holding them goes
    in a temporary directory on ``sys.path``.

    ``paths`` are put on ``sys.path`` too (the plugin's sources). Useful to test name clashes and
    broken plugins; modules imported from ``paths`` are forgotten again on exit.
    """
    root = Path(tempfile.mkdtemp(prefix="vqtoolkit-fake-dist-"))
    info = root / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(
        "".join(
            f"[{group}]\n" + "".join(f"{ep} = {value}\n" for ep, value in eps.items())
            for group, eps in entry_points.items()
        )
    )
    added = [str(root), *(str(Path(p).resolve()) for p in paths)]
    sys.path[:0] = added
    importlib.invalidate_caches()
    registry.refresh()
    try:
        yield
    finally:
        for entry in added:
            sys.path.remove(entry)
        for module_name, module in list(sys.modules.items()):
            if any(str(getattr(module, "__file__", None) or "").startswith(p) for p in added[1:]):
                del sys.modules[module_name]
        shutil.rmtree(root, ignore_errors=True)
        importlib.invalidate_caches()
        registry.refresh()


def fake_install(project: str | Path) -> contextlib.AbstractContextManager[None]:
    """:func:`fake_distribution` for a plugin project folder, as if it had been ``pip install``-ed.

    Name, version and entry points come from its ``pyproject.toml``; sources from ``src/`` or the folder.
    """
    if sys.version_info < (3, 11):
        raise ImportError("fake_install reads pyproject.toml with tomllib: it needs Python 3.11 or newer")
    import tomllib  # type: ignore[import-not-found, unused-ignore]

    project = Path(project)
    meta = tomllib.loads((project / "pyproject.toml").read_text())["project"]
    source = project / "src" if (project / "src").is_dir() else project
    return fake_distribution(
        meta["name"], meta.get("entry-points", {}), version=meta["version"], paths=(source,)
    )
