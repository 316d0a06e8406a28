"""Documentation that cannot rot: the guides' code, the examples and docstring examples all run here.

* every ```` ```python ```` block of ``docs/*.md`` runs, page by page, blocks in order in one namespace
  (a block preceded by ``<!-- docs-test: skip -->`` is shown but not run, e.g. an hour of training);
* every ``examples/*.py`` runs as its own process with ``VQTOOLKIT_EXAMPLE_FAST=1``;
* every ``>>>`` example in a vqtoolkit docstring runs as a doctest.

Everything runs in a temporary working directory, so nothing is written into the repository, and the
embedded ``digits`` dataset is cut to :data:`TINY_TRAIN`/:data:`TINY_TEST` images with one default
epoch, so the whole file takes seconds while still calling the real API: a renamed function fails here.
"""

from __future__ import annotations

import dataclasses
import doctest
import importlib
import os
import pkgutil
import re
import subprocess
import sys
import textwrap
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import torch

import vqtoolkit
import vqtoolkit.data.datasets

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
EXAMPLES = ROOT / "examples"
SKIP_MARKER = "<!-- docs-test: skip -->"
FAST_ENV = "VQTOOLKIT_EXAMPLE_FAST"
TINY_TRAIN, TINY_TEST = 128, 32
EXAMPLE_TIMEOUT_S = 300

_FENCE_OPEN = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^\n`]*)$")


class Block(NamedTuple):
    """One fenced code block of a page: its language, first code line (1-based) and source."""

    lang: str
    line: int
    code: str
    skipped: bool


def code_blocks(text: str) -> list[Block]:
    """Fenced code blocks of a Markdown page, dedented, with the skip marker honoured."""
    lines = text.splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        opened = _FENCE_OPEN.match(lines[i])
        if not opened:
            i += 1
            continue
        indent, fence = opened["indent"], opened["fence"]
        lang = opened["info"].split()[0] if opened["info"].strip() else ""
        previous = next((line.strip() for line in reversed(lines[:i]) if line.strip()), "")
        end = i + 1
        while end < len(lines) and not (
            lines[end].strip().startswith(fence[0] * len(fence)) and not lines[end].strip().strip(fence[0])
        ):
            end += 1
        body = [line[len(indent) :] if line.startswith(indent) else line for line in lines[i + 1 : end]]
        blocks.append(Block(lang, i + 2, textwrap.dedent("\n".join(body)), previous == SKIP_MARKER))
        i = end + 1
    return blocks


def python_blocks(page: Path) -> list[Block]:
    """The ``python`` blocks of ``page`` that the test suite runs."""
    return [b for b in code_blocks(page.read_text(encoding="utf-8")) if b.lang in ("python", "py")]


def _pages_with_code() -> list[Path]:
    return [page for page in sorted(DOCS.glob("*.md")) if python_blocks(page)]


def tiny(data: vqtoolkit.ImageDataset) -> vqtoolkit.ImageDataset:
    """``data`` cut to a few hundred images and one default epoch: seconds, not minutes."""
    return dataclasses.replace(
        data,
        train_images=data.train_images[:TINY_TRAIN],
        train_labels=data.train_labels[:TINY_TRAIN],
        test_images=data.test_images[:TINY_TEST],
        test_labels=data.test_labels[:TINY_TEST],
        default_epochs=1,
    )


def tiny_loader(original: Callable[..., vqtoolkit.ImageDataset]) -> Callable[..., vqtoolkit.ImageDataset]:
    """A dataset loader that returns what ``original`` loads, made :func:`tiny`."""

    def load_tiny(*args: Any, **kwargs: Any) -> vqtoolkit.ImageDataset:
        return tiny(original(*args, **kwargs))

    return load_tiny


def shrink_digits() -> None:
    """Make ``load_dataset("digits")`` return tiny digits in this process (examples' subprocesses)."""
    vqtoolkit.data.datasets.DATASETS["digits"] = tiny_loader(vqtoolkit.data.datasets.DATASETS["digits"])


@pytest.fixture
def sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A temporary cwd, headless matplotlib, tiny digits, fixed seeds; restored afterwards."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv(FAST_ENV, "1")
    monkeypatch.setitem(
        vqtoolkit.data.datasets.DATASETS, "digits", tiny_loader(vqtoolkit.data.datasets.DATASETS["digits"])
    )
    torch.manual_seed(0)
    yield tmp_path


# -- the parser itself ---------------------------------------------------------------------------------


def test_code_blocks_finds_languages_lines_and_skip_markers() -> None:
    page = textwrap.dedent(
        """\
        # Title

        ```python
        x = 1
        ```

        <!-- docs-test: skip -->

        ```python
        train_for_an_hour()
        ```

        ```bash
        vqtool build
        ```

        - a list item

            ```python
            y = x + 1
            ```
        """
    )
    blocks = code_blocks(page)
    assert [b.lang for b in blocks] == ["python", "python", "bash", "python"]
    assert [b.skipped for b in blocks] == [False, True, False, False]
    assert [b.line for b in blocks] == [4, 10, 14, 20]
    assert blocks[3].code == "y = x + 1"
    assert page.splitlines()[blocks[1].line - 1].strip() == blocks[1].code


def test_a_failing_block_reports_its_page_and_line(tmp_path: Path) -> None:
    page = tmp_path / "broken.md"
    page.write_text("Intro\n\n```python\nok = 1\nvqtoolkit.no_such_function()\n```\n", encoding="utf-8")
    with pytest.raises(AttributeError) as info:
        run_page(page)
    frames = [(frame.filename, frame.lineno) for frame in traceback.extract_tb(info.value.__traceback__)]
    assert (str(page), 5) in frames


# -- the guides ------------------------------------------------------------------------------------------


def run_page(page: Path) -> dict[str, Any]:
    """Run the page's python blocks in order in one namespace; tracebacks point into the page."""
    namespace: dict[str, Any] = {"__name__": f"docs.{page.stem}", "vqtoolkit": vqtoolkit}
    for block in python_blocks(page):
        if block.skipped:
            continue
        code = compile("\n" * (block.line - 1) + block.code, str(page), "exec")
        exec(code, namespace)
    return namespace


@pytest.mark.parametrize("page", _pages_with_code(), ids=lambda p: f"docs/{p.name}")
def test_docs_page_runs(page: Path, sandbox: Path) -> None:
    run_page(page)


# -- the examples ----------------------------------------------------------------------------------------

_RUNNER = """
import importlib.util, runpy, sys
spec = importlib.util.spec_from_file_location("_docs_support", {support!r})
support = importlib.util.module_from_spec(spec)
spec.loader.exec_module(support)
support.shrink_digits()
sys.argv = [{script!r}]
runpy.run_path({script!r}, run_name="__main__")
"""


@pytest.mark.parametrize("script", sorted(EXAMPLES.glob("*.py")), ids=lambda p: f"examples/{p.name}")
def test_example_runs(script: Path, tmp_path: Path) -> None:
    env = {**os.environ, FAST_ENV: "1", "MPLBACKEND": "Agg", "PYTHONHASHSEED": "0"}
    runner = _RUNNER.format(support=__file__, script=str(script))
    result = subprocess.run(
        [sys.executable, "-c", runner],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=EXAMPLE_TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 0, f"{script.name} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"


# -- docstring examples ----------------------------------------------------------------------------------


def _modules_with_examples() -> list[str]:
    submodules = pkgutil.walk_packages(vqtoolkit.__path__, prefix="vqtoolkit.")
    names = ["vqtoolkit"] + [m.name for m in submodules if not m.name.endswith("__main__")]
    finder = doctest.DocTestFinder(exclude_empty=True)
    found = []
    for name in sorted(names):
        module = importlib.import_module(name)
        if any(t.examples for t in finder.find(module, name)):
            found.append(name)
    return found


@pytest.mark.parametrize("module_name", _modules_with_examples())
def test_docstring_examples_run(module_name: str, sandbox: Path) -> None:
    module = importlib.import_module(module_name)
    flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    result = doctest.testmod(module, optionflags=flags, verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {module_name}"


# -- the API reference -----------------------------------------------------------------------------------


def _documented_modules() -> set[str]:
    directive = re.compile(r"^:::\s+([\w.]+)\s*$", re.M)
    pages = (DOCS / "reference").glob("*.md")
    return {name for page in pages for name in directive.findall(page.read_text(encoding="utf-8"))}


@pytest.mark.parametrize("name", sorted(set(vqtoolkit.__all__) - {"__version__"}))
def test_public_name_is_in_the_api_reference_with_a_docstring(name: str) -> None:
    obj = getattr(vqtoolkit, name)
    assert obj.__module__ in _documented_modules(), (
        f"vqtoolkit.{name} is defined in {obj.__module__}, which no docs/reference/*.md page renders; "
        f"add a page with '::: {obj.__module__}' and list it in mkdocs.yml"
    )
    assert (obj.__doc__ or "").strip(), f"vqtoolkit.{name} has no docstring for the API reference"


def test_sphinx_roles_become_links_resolved_through_imports() -> None:
    griffe = pytest.importorskip("griffe")  # a docs tool: installed by the dev extra
    extensions = griffe.load_extensions(f"{ROOT / 'scripts' / 'griffe_sphinx_roles.py'}:SphinxRoles")
    package = griffe.load("vqtoolkit", search_paths=[str(ROOT)], extensions=extensions)
    create = package["components"]["registry"]["create"].docstring.value
    link = '<autoref identifier="vqtoolkit.errors.ConfigError" optional><code>ConfigError</code></autoref>'
    assert link in create
    assert ":class:" not in create
