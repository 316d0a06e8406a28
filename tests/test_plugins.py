"""Plugins end to end: the example packages under plugins/, broken plugins, and names registered twice.

Installs are simulated with :func:`fake_plugins.fake_install` (a ``.dist-info`` on ``sys.path``,
read from the plugin's own ``pyproject.toml``), so the suite needs no pip; "uninstalling" hides a
distribution's entry points. Both behave as pip would for :mod:`importlib.metadata`.
"""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from fake_plugins import fake_distribution, fake_install

import vqtoolkit
from vqtoolkit.cli import main
from vqtoolkit.components import registry
from vqtoolkit.data.datasets import ImageDataset
from vqtoolkit.errors import BundleError, ComponentNotFoundError
from vqtoolkit.testing import check_decoder, check_encoder, check_prior

PLUGINS = Path(__file__).resolve().parents[1] / "plugins"


@pytest.fixture()
def markov():
    with fake_install(PLUGINS / "markov"):
        yield


@pytest.fixture()
def patch():
    with fake_install(PLUGINS / "patch"):
        yield


def uninstall(monkeypatch: pytest.MonkeyPatch, distribution: str) -> None:
    """Hide ``distribution``'s entry points from importlib.metadata, as ``pip uninstall`` would."""
    everything = metadata.entry_points

    def without(**selection):
        return [
            ep
            for ep in everything(**selection)
            if ep.dist is None or ep.dist.metadata["Name"] != distribution
        ]

    monkeypatch.setattr(metadata, "entry_points", without)
    registry.refresh()


@pytest.fixture()
def tiny_data(monkeypatch: pytest.MonkeyPatch) -> ImageDataset:
    images = torch.rand(40, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    labels = torch.arange(40) % 2
    data = ImageDataset("tiny", images[:32], labels[:32], images[32:], labels[32:], 2, 1)
    monkeypatch.setattr("vqtoolkit.data.datasets.load_dataset", lambda *args, **kwargs: data)
    # matplotlib would take most of this test's time; plotting has its own tests
    monkeypatch.setattr("vqtoolkit.reporting.plots.training_curves", lambda history, path, **kwargs: path)
    monkeypatch.setattr("vqtoolkit.reporting.plots.code_usage", lambda counts, path, **kwargs: path)
    return data


def test_example_plugins_pass_the_conformance_kit(markov, patch) -> None:
    check_prior("markov", {"num_codes": 4})
    small = {"hidden": 4, "blocks": 1, "patch": 3}
    check_encoder("patch", small)
    check_decoder("patch", small)


def test_plugins_command_lists_plugins_with_their_distribution(markov, patch) -> None:
    result = CliRunner().invoke(main, ["plugins", "--json"])
    listing = json.loads(result.output)
    assert {
        "name": "markov",
        "distribution": "vqtoolkit-markov",
        "version": "0.2.0",
        "object": "vqtoolkit_markov:MarkovPrior",
    } in listing["components"]["prior"]
    assert "patch" in [e["name"] for e in listing["components"]["encoder"]]
    assert listing["problems"] == []


def test_done_when_build_inspect_uninstall_sample(markov, tiny_data, tmp_path: Path, monkeypatch) -> None:
    bundle = tmp_path / "model.safetensors"
    runner = CliRunner()
    built = runner.invoke(
        main,
        [
            "build",
            "--encoder",
            "conv",
            "--prior",
            "markov",
            "--epochs",
            "1",
            "--num-codes",
            "8",
            "--dim",
            "4",
            "-n",
            "4",
            "--quiet",
            "-o",
            str(bundle),
        ],
    )
    assert built.exit_code == 0, built.output
    inspected = runner.invoke(main, ["inspect", str(bundle)])
    assert "markov" in inspected.output and "vqtoolkit-markov 0.2.0" in inspected.output
    assert (
        runner.invoke(main, ["sample", str(bundle), "-n", "4", "-o", str(tmp_path / "ok.png")]).exit_code == 0
    )

    uninstall(monkeypatch, "vqtoolkit-markov")
    assert (
        "NOT INSTALLED: pip install vqtoolkit-markov" in runner.invoke(main, ["inspect", str(bundle)]).output
    )
    sampled = runner.invoke(main, ["sample", str(bundle), "-n", "4", "-o", str(tmp_path / "no.png")])
    assert sampled.exit_code == 1
    assert sampled.output.count("\n") == 1 and "pip install vqtoolkit-markov" in sampled.output
    assert not (tmp_path / "no.png").exists()


def test_a_plugin_that_fails_to_import_is_reported_and_breaks_nothing(tmp_path: Path) -> None:
    (tmp_path / "exploding_plugin.py").write_text("raise RuntimeError('boom: a missing native library')\n")
    broken = {
        "vqtoolkit.priors": {"exploding": "exploding_plugin:Prior", "ghost": "no_such_module_xyz:Prior"}
    }
    with fake_distribution("vqtoolkit-broken", broken, version="9.9", paths=(tmp_path,)):
        result = CliRunner().invoke(main, ["plugins"])
        assert result.exit_code == 0
        assert "prior 'exploding' (vqtoolkit-broken)" in result.output
        assert "RuntimeError: boom: a missing native library" in result.output
        assert "ModuleNotFoundError" in result.output and "gmm" in result.output
        assert vqtoolkit.create("prior", "gmm").kind == "prior"  # the others still work
        with pytest.raises(
            ComponentNotFoundError, match=r"failed to import.*reinstall or upgrade vqtoolkit-broken"
        ):
            vqtoolkit.build(prior="exploding")


def save_tiny_markov_bundle(tmp_path: Path) -> Path:
    """A small conv/vq model with a fitted markov prior, saved as a bundle."""
    pipe = vqtoolkit.build(
        "conv",
        "vq",
        "conv",
        "markov",
        dim=4,
        num_codes=8,
        encoder_config={"hidden_channels": [4, 4]},
        decoder_config={"hidden_channels": [4, 4]},
    )
    pipe.prior.fit(torch.randint(0, 8, (10, 7, 7)), progress=False)
    return pipe.save(tmp_path / "markov.safetensors")


def test_a_name_registered_twice_is_reported_and_can_be_chosen(markov, tmp_path: Path) -> None:
    saved = save_tiny_markov_bundle(tmp_path)
    fork = {"vqtoolkit.priors": {"markov": "vqtoolkit.priors.gmm:GMMPrior"}}
    with fake_distribution("markov-fork", fork, version="2.0"):
        problems = json.loads(CliRunner().invoke(main, ["plugins", "--json"]).output)["problems"]
        assert any(
            "more than one distribution" in p["reason"] and "markov-fork" in p["reason"] for p in problems
        )
        result = CliRunner().invoke(main, ["build", "--prior", "markov", "--quiet"])
        assert result.exit_code == 1
        assert "registered by both" in result.output and "--prior markov@" in result.output
        assert "vqtoolkit-markov" in result.output and "markov-fork" in result.output
        chosen = vqtoolkit.create("prior", "markov@vqtoolkit-markov", num_codes=8)
        assert type(chosen).__name__ == "MarkovPrior" and chosen.registered_name == "markov"
        assert type(vqtoolkit.load(saved).prior).__name__ == "MarkovPrior"  # the bundle recorded its provider


def test_bundle_from_a_plugin_installed_elsewhere_loads_from_the_sole_provider(
    markov, tmp_path: Path, monkeypatch
) -> None:
    saved = save_tiny_markov_bundle(tmp_path)
    uninstall(monkeypatch, "vqtoolkit-markov")
    with pytest.raises(BundleError, match="pip install vqtoolkit-markov"):
        vqtoolkit.load(saved)
