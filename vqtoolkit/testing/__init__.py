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

from collections.abc import Mapping
from typing import Any

from vqtoolkit.testing.autoencoders import check_decoder, check_encoder
from vqtoolkit.testing.common import ConformanceError, devices
from vqtoolkit.testing.priors import check_prior, example_data
from vqtoolkit.testing.quantizers import check_quantizer, check_quantizer_invariants

__all__ = [
    "ConformanceError",
    "check_component",
    "check_decoder",
    "check_encoder",
    "check_prior",
    "check_quantizer",
    "check_quantizer_invariants",
    "devices",
    "example_data",
]

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
