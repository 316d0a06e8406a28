"""Constructors whose options 0.3 moved into a shared base still take them by position, with a warning.

Up to 0.2 ``TransformerPrior(512, 96, ...)`` and ``ResidualQuantizer(512, 64, 0.25, 2)`` named their
options by position; 0.3's shared bases make them keyword-only. For one release the old calls build
the same component as the call by name and warn with that spelling.
"""

from __future__ import annotations

import pytest

from vqtoolkit.priors.transformer import TransformerPrior
from vqtoolkit.quantize.residual import ResidualQuantizer


@pytest.mark.parametrize(
    ("cls", "args", "names"),
    [
        (
            TransformerPrior,
            (64, 32, 1, 2, 0.0, False, 1e-3),
            ("num_codes", "dim", "layers", "heads", "dropout", "condition_every_position", "lr"),
        ),
        (ResidualQuantizer, (128, 16, 0.5, 3), ("num_codes", "dim", "beta", "num_stages")),
    ],
)
def test_old_positional_calls_build_what_the_named_call_builds(cls, args, names) -> None:
    named = cls(**dict(zip(names, args, strict=True)))
    with pytest.warns(DeprecationWarning, match=rf"{cls.__name__}\({names[0]}={args[0]!r}"):
        positional = cls(*args)
    assert positional.config == named.config
    assert positional.config[names[-1]] == args[-1]


def test_a_positional_call_too_long_or_naming_an_option_twice_is_refused() -> None:
    with pytest.raises(TypeError, match="at most 4 options by position"):
        ResidualQuantizer(128, 16, 0.5, 3, True)
    with pytest.raises(TypeError, match="num_codes both by position and by name"):
        ResidualQuantizer(128, num_codes=64)
