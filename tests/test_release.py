"""One version, everywhere: pyproject.toml, ``vqtoolkit.__version__``, every bundle, the changelog."""

from __future__ import annotations

import re
import sys
from importlib import metadata
from pathlib import Path

import pytest

import vqtoolkit
from vqtoolkit.storage import bundle

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]


def project_version() -> str:
    with (ROOT / "pyproject.toml").open("rb") as f:
        return str(tomllib.load(f)["project"]["version"])


def test_installed_version_is_the_one_in_pyproject() -> None:
    assert vqtoolkit.__version__ == metadata.version("vqtoolkit")
    assert vqtoolkit.__version__ == project_version(), (
        "the installed metadata is stale: run `pip install -e .` after changing the version in pyproject.toml"
    )


def test_bundles_record_the_version_that_wrote_them(tmp_path: Path) -> None:
    pipe = vqtoolkit.build("conv", "vq", "conv", prior=None, dim=8, num_codes=16)
    path = pipe.save(tmp_path / "model.safetensors")
    document, _ = bundle.read(path)
    assert document["vqtoolkit_version"] == vqtoolkit.__version__


def test_changelog_has_an_unreleased_section_and_the_current_version() -> None:
    headings = re.findall(r"^## \[?([^\]\s]+)\]?", (ROOT / "CHANGELOG.md").read_text(encoding="utf-8"), re.M)
    assert headings[0] == "Unreleased", "keep an 'Unreleased' section at the top of CHANGELOG.md"
    assert project_version() in headings, f"CHANGELOG.md has no section for version {project_version()}"
