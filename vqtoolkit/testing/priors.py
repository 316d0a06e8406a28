"""Conformance checks of priors: fit, sample, normalised likelihoods, reproducible draws, bundles."""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from vqtoolkit.errors import VQToolkitError
from vqtoolkit.testing.common import (
    _common,
    _fail,
    _reports_crashes,
    bundle_round_trip,
    check_meta_build,
    check_state,
)


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
