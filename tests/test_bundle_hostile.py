"""Crafted bundles: refused with the field named, before allocating anything.

Each load runs in a forked child capped at 512 MB of extra address space: a loader that built a
crafted component for real (gigabytes) dies there instead of answering.
"""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
from bundle_edit import HOSTILE_EDITS, TINY_PRIORS, load_message, rewrite, tiny_pipeline
from click.testing import CliRunner
from forked import run_forked

import vqtoolkit
from vqtoolkit.cli import main
from vqtoolkit.errors import BundleError

CAP = 512 << 20


@functools.cache
def valid_bundle(prior: str, folder: Path) -> Path:
    return tiny_pipeline(prior, **TINY_PRIORS[prior]).save(folder / f"{prior}.safetensors")


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hostile")


@pytest.mark.parametrize("case", sorted(HOSTILE_EDITS))
def test_crafted_header_is_refused_naming_the_field(case: str, folder: Path) -> None:
    prior, edit, field = HOSTILE_EDITS[case]
    path = rewrite(valid_bundle(prior, folder), folder / "crafted.safetensors", edit_document=edit)
    outcome = run_forked(lambda: load_message(path), timeout=30, address_space=CAP)
    assert outcome.result.startswith("BundleError: "), outcome
    assert field in outcome.result, outcome


def test_valid_bundles_still_load(folder: Path) -> None:
    for prior in TINY_PRIORS:
        pipe = vqtoolkit.load(valid_bundle(prior, folder))
        assert pipe.sample(2).shape == (2, 1, 28, 28)


def test_eval_reports_a_bad_seed_in_one_line(folder: Path) -> None:
    _, edit, _ = HOSTILE_EDITS["info seed='abc'"]
    path = rewrite(valid_bundle("gmm", folder), folder / "seed.safetensors", edit_document=edit)
    result = CliRunner().invoke(main, ["eval", str(path)])
    assert result.exit_code == 1 and result.exception is not None
    assert "info.seed is 'abc'" in result.output and "Traceback" not in result.output


def test_class_count_must_match_the_tensors(folder: Path) -> None:
    def more_classes(document: dict) -> None:
        document["components"]["prior"]["config"].update(conditional=True, num_classes=7)

    path = rewrite(
        valid_bundle("pixelcnn", folder), folder / "classes.safetensors", edit_document=more_classes
    )
    with pytest.raises(BundleError, match=r"do not match|expected"):
        vqtoolkit.load(path)


def test_a_codebook_no_tensor_bounds_is_refused(tmp_path: Path) -> None:
    saved = tiny_pipeline(None, "fsq").save(tmp_path / "fsq.safetensors")

    def huge_levels(document: dict) -> None:
        document["components"]["quantizer"]["config"]["levels"] = [10**18, 5, 5, 5]

    path = rewrite(saved, tmp_path / "levels.safetensors", edit_document=huge_levels)
    with pytest.raises(BundleError, match="implies 125000000000000000000 codes"):
        vqtoolkit.load(path)
