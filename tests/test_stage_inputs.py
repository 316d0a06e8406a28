"""Stage 2 hands a prior what its fit needs as arguments: nothing is set on a component from outside.

Every ``nn.Module.__setattr__`` during a two-stage fit is traced; an assignment to a component made
by code that is not one of that component's own methods (the caller's ``self`` is another object)
is a side door into the fit, and fails the test.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from factories import tiny_data, tiny_pipeline
from torch import nn

import vqtoolkit
from vqtoolkit.components.base import Component

pytestmark = pytest.mark.usefixtures("one_thread")


def trace_outside_assignments(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """From now on, record ``Class.attribute <- caller`` for attributes set on a component from outside."""
    found: list[str] = []
    original = nn.Module.__setattr__

    def traced(self: nn.Module, name: str, value: Any) -> None:
        caller = sys._getframe(1)
        if isinstance(self, Component) and caller.f_locals.get("self") is not self:
            found.append(f"{type(self).__name__}.{name} <- {caller.f_code.co_filename}:{caller.f_lineno}")
        original(self, name, value)

    monkeypatch.setattr(nn.Module, "__setattr__", traced)
    return found


def test_the_tracer_sees_an_assignment_from_outside(monkeypatch: pytest.MonkeyPatch) -> None:
    prior = vqtoolkit.create("prior", "categorical", num_codes=4)
    outside_assignments = trace_outside_assignments(monkeypatch)
    prior.code_vectors = None  # what stage 2 once did
    assert outside_assignments and outside_assignments[0].startswith("CategoricalPrior.code_vectors")


@pytest.mark.parametrize(
    ("prior", "options"),
    [
        ("gmm", {"n_components": 2, "pca_dim": 4}),
        ("categorical", {"clusters": 2}),
        ("pixelcnn", {"epochs": 2, "channels": 8, "layers": 3, "batch_size": 16}),
    ],
)
def test_no_component_attribute_is_set_from_outside_during_a_fit(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, prior: str, options: dict[str, Any]
) -> None:
    pipe = tiny_pipeline(prior, prior_config=options)
    data = tiny_data()
    outside_assignments = trace_outside_assignments(monkeypatch)
    pipe.fit_autoencoder(data, epochs=1, batch_size=16, progress=False)
    pipe.fit_prior(data, progress=False, checkpoint_path=tmp_path / "prior.safetensors")
    assert pipe.prior is not None and pipe.prior.is_fitted
    assert not outside_assignments, "\n".join(outside_assignments)


def test_python_and_the_cli_record_the_same_training_facts() -> None:
    pipe = tiny_pipeline()
    pipe.fit_autoencoder(tiny_data(), epochs=1, batch_size=16, progress=False)
    assert pipe.info["device"] == "cpu" and pipe.info["precision"] == "32"
    assert pipe.info["world_size"] == 1 and pipe.info["schema_version"] == 1
