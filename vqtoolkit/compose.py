"""How :func:`~vqtoolkit.pipeline.build` composes, and how a composition prints.

Shared options are routed to each component that takes them; the parts are created in order and
checked to fit together and in memory before any training.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from vqtoolkit._util.memory import check_fits
from vqtoolkit.components import registry
from vqtoolkit.components.base import component_name
from vqtoolkit.decoders.base import Decoder
from vqtoolkit.encoders.base import Encoder
from vqtoolkit.errors import ConfigError, VQToolkitError
from vqtoolkit.model.vqvae import check_wiring
from vqtoolkit.priors.base import Prior
from vqtoolkit.quantize.base import Quantizer

#: build()'s shared options, and the constructor option each component receives them as.
SHARED_OPTIONS: dict[str, dict[str, str]] = {
    "encoder": {"in_channels": "in_channels", "dim": "dim"},
    "quantizer": {"dim": "dim", "num_codes": "num_codes", "beta": "beta"},
    "decoder": {"in_channels": "out_channels", "dim": "dim"},
    "prior": {"num_codes": "num_codes", "num_classes": "num_classes"},
}


def component(kind: str, spec: Any, shared: dict[str, Any], config: dict[str, Any] | None) -> Any:
    """A ready component: an instance is used as is; a name is created with shared + own options."""
    if not isinstance(spec, str):
        if config:
            raise ConfigError(f"{kind}_config applies to a {kind} given by name, not to an instance")
        return spec
    accepted = registry.accepted_options(registry.get_class(kind, spec))
    options = {
        option: shared[key]
        for key, option in SHARED_OPTIONS[kind].items()
        if shared.get(key) is not None and (accepted is None or option in accepted)
    }
    options.update(config or {})
    return registry.create(kind, spec, **options)


def components(
    encoder: str | Encoder,
    quantizer: str | Quantizer,
    decoder: str | Decoder,
    prior: str | Prior | None,
    shared: dict[str, Any],
    configs: tuple[dict[str, Any] | None, ...],
) -> tuple[Any, Any, Any, Any]:
    """Create the four components; the quantizer first, so its ``dim`` is the default for the others."""
    quant = component("quantizer", quantizer, shared, configs[1])
    if shared.get("dim") is None:  # e.g. fsq's dim is len(levels): the encoder and decoder follow it
        shared["dim"] = getattr(quant, "dim", None)
    enc = component("encoder", encoder, shared, configs[0])
    dec = component("decoder", decoder, shared, configs[2])
    check_wiring(enc, quant, dec)
    shared["num_codes"] = quant.num_tokens
    pri = None if prior is None else component("prior", prior, shared, configs[3])
    return enc, quant, dec, pri


def check_model_fits(make: Callable[[], tuple[Any, ...]]) -> None:
    """Refuse components whose training state (weights, gradients, Adam's two moments) cannot fit.

    ``make()`` creates them; here it runs on the ``meta`` device, which allocates nothing. Components
    that cannot be built there are left to the real build.
    """
    try:
        with torch.device("meta"):
            components = make()
    except VQToolkitError:
        raise
    except Exception:
        return
    modules = [c for c in components if isinstance(c, torch.nn.Module)]
    values = sum(t.numel() for m in modules for t in (*m.parameters(), *m.buffers()))
    config = getattr(components[1], "config", {})
    described = ", ".join(f"{k}={v}" for k, v in config.items() if k in ("num_codes", "dim"))
    check_fits(
        f"a model of {values:.3g} values ({described})",
        values * 4 * 4,
        "choose a smaller num_codes or dim (--num-codes, --dim)",
    )


def describe(model: Any, prior: Prior | None, info: dict[str, Any]) -> str:
    """A pipeline's ``repr``: each component by name with its config, and what training recorded."""

    def one(component: Any) -> str:
        config = ", ".join(f"{k}={v!r}" for k, v in getattr(component, "config", {}).items())
        return f"{component_name(component)}({config})"

    parts = [
        f"  {role}={one(part)}"
        for role, part in (
            ("encoder", model.encoder),
            ("quantizer", model.quantizer),
            ("decoder", model.decoder),
            ("prior", prior),
        )
        if part is not None
    ]
    if prior is None:
        parts.append("  prior=None")
    elif not prior.is_fitted:
        parts.append("  prior_fitted=False")
    facts: dict[str, Any] = {k: info[k] for k in ("dataset", "epochs", "seed") if k in info}
    metrics = info.get("metrics", {})
    facts.update(
        {k: round(v, 5) for k in ("test_mse", "test_perplexity") if (v := metrics.get(k)) is not None}
    )
    if facts:
        parts.append("  trained: " + ", ".join(f"{k}={v}" for k, v in facts.items()))
    return "Pipeline(\n" + ",\n".join(parts) + ",\n)"
