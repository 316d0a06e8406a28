"""Registry: entry-point discovery, creation, helpful errors, isolation of broken plugins."""

from __future__ import annotations

from importlib import metadata

import pytest

from vqtoolkit.components import registry
from vqtoolkit.errors import ComponentNotFoundError, ConfigError
from vqtoolkit.quantize.vq import VectorQuantizer


@pytest.fixture
def fake_entry_points(monkeypatch: pytest.MonkeyPatch):
    """Add entry points to one group, as an installed plugin would, and forget them afterwards."""
    real = metadata.entry_points

    def install(group: str, *entries: metadata.EntryPoint) -> None:
        def entry_points(**params):
            found = list(real(**params))
            return found + list(entries) if params.get("group") == group else found

        monkeypatch.setattr(registry.metadata, "entry_points", entry_points)
        registry.refresh()

    yield install
    monkeypatch.undo()
    registry.refresh()


def test_builtins_register_through_entry_points() -> None:
    for kind, name in [("encoder", "conv"), ("quantizer", "vq"), ("decoder", "conv"), ("prior", "gmm")]:
        assert name in registry.available(kind)
        spec = registry.spec(kind, name)
        assert spec.distribution == "vqtoolkit"


def test_create_passes_config() -> None:
    q = registry.create("quantizer", "vq", num_codes=7, dim=3, beta=0.5)
    assert isinstance(q, VectorQuantizer)
    assert q.codebook.shape == (7, 3)
    assert q.config["beta"] == 0.5
    assert registry.name_of(q) == "vq"
    rebuilt = VectorQuantizer(**q.config)
    assert rebuilt.config == q.config


def test_unknown_name_suggests_close_matches() -> None:
    with pytest.raises(ComponentNotFoundError, match=r"Did you mean 'vq'\?.*Available quantizers: .*vq"):
        registry.create("quantizer", "vqq")


def test_unknown_option_names_valid_ones() -> None:
    with pytest.raises(ConfigError, match=r"'num_code' \(did you mean 'num_codes'\?\)"):
        registry.create("quantizer", "vq", num_code=8)


def test_unknown_kind() -> None:
    with pytest.raises(ConfigError, match="unknown component kind"):
        registry.available("sampler")


def test_broken_plugin_is_reported_not_fatal(fake_entry_points) -> None:
    fake_entry_points(
        "vqtoolkit.priors",
        metadata.EntryPoint("broken", "vqtoolkit_no_such_module:Prior", "vqtoolkit.priors"),
    )
    assert "broken" in registry.available("prior")
    assert "gmm" in registry.available("prior")
    with pytest.raises(ComponentNotFoundError, match=r"failed to import.*ModuleNotFoundError"):
        registry.create("prior", "broken")
    registry.create("prior", "gmm")  # the others keep working
    reported = [p for p in registry.problems("prior") if p.name == "broken"]
    assert reported and "failed to import" in reported[0].reason
