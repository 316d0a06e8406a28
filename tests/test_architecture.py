"""The package's architecture, enforced: layers, no import cycle, every module importable on its own.

The import graph is read from the source (``ast``), so imports inside functions count as much as
those at the top of a module: a lazy import hides a cycle from Python, not from this test. Imports
under ``if TYPE_CHECKING:`` are left out (they never run), and so are the names ``vqtoolkit``'s
``__init__`` loads on first use through ``importlib.import_module`` (that is how the package stays
cheap to import; the names are listed in its ``_EXPORTS``). ``docs/architecture.md`` shows
:data:`LAYERS` and :data:`FORBIDDEN`; a test checks it shows them as they are here.
"""

from __future__ import annotations

import ast
import graphlib
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "vqtoolkit"
DOC = ROOT / "docs" / "architecture.md"

#: The layers, lowest first, as the folders (and top-level modules) in each (``vqtoolkit.`` left out;
#: ``.`` is the package's ``__init__``). A module belongs to the longest name here that covers it: a
#: folder's modules share its layer. A module may import its own layer or the layers below, never above.
LAYERS: dict[str, list[str]] = {
    "foundation": [".", "_version", "errors", "_compat", "_util"],
    "core": ["components", "data", "scoring", "runtime", "storage"],
    "components": ["encoders", "decoders", "quantize", "priors"],
    "model": ["model"],
    "stage 1": ["training"],
    "composition and stages": ["compose", "stages"],
    "application": ["pipeline", "reporting", "sharing", "cli", "__main__", "testing"],
}

#: Imports the layers would allow but the design forbids: (importers, imported, why). A name covers
#: the module and everything below it.
FORBIDDEN: list[tuple[list[str], list[str], str]] = [
    (
        ["encoders", "decoders", "quantize", "priors"],
        ["components.registry"],
        "the registry finds components, components never look themselves up",
    ),
    (
        [name for names in LAYERS.values() for name in names if name not in ("cli", "__main__")],
        ["cli"],
        "the CLI is the outermost shell: only `python -m vqtoolkit` starts it",
    ),
]

#: At most this many modules at the package's top, beside its folders: the public surface and little else.
TOP_LEVEL_MODULES = 10
#: No module longer than this many lines: one job each.
MAX_LINES = 400


def module_name(path: Path) -> str:
    """``vqtoolkit/quantize/vq.py`` → ``vqtoolkit.quantize.vq``; a package's ``__init__`` is the package."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def short(name: str) -> str:
    """``vqtoolkit.quantize.vq`` → ``quantize.vq``; ``vqtoolkit`` → ``.`` (the names of :data:`LAYERS`)."""
    return name.removeprefix("vqtoolkit").removeprefix(".") or "."


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(name: str, path: Path) -> set[str]:
    """The package's modules that ``name`` imports anywhere in its source (TYPE_CHECKING blocks aside)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name in MODULES)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, *([node.module] if node.module else [])])
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                found.add(submodule if submodule in MODULES else base)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    return {m for m in found if m in MODULES and m != name}


GRAPH = {name: imports_of(name, path) for name, path in MODULES.items()}
_LAYER_ROOTS = {name: index for index, names in enumerate(LAYERS.values()) for name in names}


def layer_index(name: str) -> int | None:
    """The layer of module ``name`` (short form): that of the longest :data:`LAYERS` entry covering it."""
    covering = [root for root in _LAYER_ROOTS if root == name or name.startswith(root + ".")]
    if name == ".":
        covering = ["."]
    return _LAYER_ROOTS[max(covering, key=len)] if covering else None


LAYER_OF = {short(m): layer_index(short(m)) for m in MODULES if layer_index(short(m)) is not None}


def covers(prefixes: list[str], name: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def test_no_import_cycle_counting_imports_inside_functions() -> None:
    try:
        graphlib.TopologicalSorter(GRAPH).prepare()
    except graphlib.CycleError as err:
        pytest.fail(f"import cycle: {' -> '.join(err.args[1])}")


def test_every_module_sits_in_a_layer() -> None:
    unplaced = sorted(short(m) for m in MODULES if short(m) not in LAYER_OF)
    assert not unplaced, f"add these modules to LAYERS here and in docs/architecture.md: {unplaced}"
    stale = sorted(set(_LAYER_ROOTS) - {short(m) for m in MODULES})
    assert not stale, f"LAYERS names modules that do not exist: {stale}"


def test_the_top_of_the_package_holds_little_beside_its_folders() -> None:
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top) <= TOP_LEVEL_MODULES, f"{len(top)} modules at the top of the package: {top}"


def test_no_module_is_over_the_line_limit() -> None:
    long = {short(m): n for m, p in MODULES.items() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines (split them by job): {long}"


def test_modules_import_only_their_own_layer_or_below() -> None:
    names = list(LAYERS)
    upward = [
        f"{short(a)} ({names[LAYER_OF[short(a)]]}) imports {short(b)} ({names[LAYER_OF[short(b)]]})"
        for a, targets in GRAPH.items()
        for b in targets
        if short(a) in LAYER_OF and short(b) in LAYER_OF and LAYER_OF[short(b)] > LAYER_OF[short(a)]
    ]
    assert not upward, "imports that go up a layer:\n" + "\n".join(sorted(upward))


def test_no_forbidden_import() -> None:
    broken = [
        f"{short(a)} imports {short(b)}: {why}"
        for importers, imported, why in FORBIDDEN
        for a, targets in GRAPH.items()
        if covers(importers, short(a))
        for b in targets
        if covers(imported, short(b))
    ]
    assert not broken, "\n".join(sorted(broken))


def test_the_graph_reader_sees_lazy_imports_and_skips_type_checking(tmp_path: Path) -> None:
    """The checks above are only as good as the reader: a function-level import is an edge."""
    source = textwrap.dedent(
        """
        from typing import TYPE_CHECKING
        from vqtoolkit.components import registry
        if TYPE_CHECKING:
            from vqtoolkit.pipeline import Pipeline
        def later():
            from vqtoolkit.model.vqvae import VQVAE
            import vqtoolkit.storage.bundle
        """
    )
    probe = tmp_path / "probe.py"
    probe.write_text(source)
    found = imports_of("vqtoolkit.probe", probe)
    assert found == {"vqtoolkit.components.registry", "vqtoolkit.model.vqvae", "vqtoolkit.storage.bundle"}


def layer_table() -> str:
    """The markdown table of :data:`LAYERS` that docs/architecture.md shows."""
    rows = ["| layer | folders and modules (`vqtoolkit.` left out) |", "| --- | --- |"]
    rows += [
        f"| {i}. {layer} | {', '.join(f'`{m}`' for m in modules)} |"
        for i, (layer, modules) in enumerate(LAYERS.items())
    ]
    return "\n".join(rows)


def forbidden_list() -> str:
    """The markdown list of :data:`FORBIDDEN` that docs/architecture.md shows."""
    lines = []
    for importers, imported, why in FORBIDDEN:
        who = "every other module" if len(importers) > 10 else ", ".join(f"`{m}`" for m in importers)
        lines.append(f"* {who} never imports {', '.join(f'`{m}`' for m in imported)}: {why}.")
    return "\n".join(lines)


def package_tree() -> str:
    """The package's folders and modules, each with the first line of its docstring, as the doc draws it."""
    lines = []

    def summary(path: Path) -> str:
        doc = ast.get_docstring(ast.parse(path.read_text())) or ""
        return doc.strip().splitlines()[0] if doc.strip() else ""

    def walk(folder: Path, depth: int) -> None:
        entries = sorted(folder.iterdir(), key=lambda p: (p.is_dir(), p.name))
        for entry in entries:
            if entry.name == "__init__.py" or entry.name.startswith("__pycache__"):
                continue
            if entry.is_dir() and (entry / "__init__.py").exists():
                lines.append(f"{'  ' * depth}{entry.name}/  {summary(entry / '__init__.py')}")
                walk(entry, depth + 1)
            elif entry.suffix == ".py":
                lines.append(f"{'  ' * depth}{entry.name}  {summary(entry)}")

    walk(PACKAGE, 1)
    return "\n".join(["vqtoolkit/", *lines])


def test_the_architecture_doc_shows_these_rules() -> None:
    text = DOC.read_text()
    assert package_tree() in text, "docs/architecture.md must draw this tree:\n" + package_tree()
    assert layer_table() in text, "docs/architecture.md must show this table:\n" + layer_table()
    assert forbidden_list() in text, "docs/architecture.md must show this list:\n" + forbidden_list()


def third_party_imports() -> list[str]:
    """Every module outside the package and the standard library that the package imports anywhere."""
    found: set[str] = set()
    for path in MODULES.values():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                found.add(node.module)
    return sorted(m for m in found if m.split(".")[0] not in ("vqtoolkit", *sys.stdlib_module_names))


#: Imports each module in a fresh child process: the third-party libraries the package uses are loaded
#: once in the parent (no vqtoolkit module), then every child is forked from it and imports exactly one
#: module, so each child costs only vqtoolkit's own code.
ISOLATED_IMPORTS = """
import importlib, json, os, sys, traceback
for library in json.loads(sys.argv[2]):
    try:
        importlib.import_module(library)
    except Exception:  # an optional library that is not installed: the child reports it if needed
        pass
assert not [m for m in sys.modules if m == "vqtoolkit" or m.startswith("vqtoolkit.")]
failures, running = {}, {}


def reap():
    pid, status = os.wait()
    name, read = running.pop(pid)
    with os.fdopen(read, "rb") as pipe:
        message = pipe.read().decode()
    if status:
        failures[name] = message or f"exit status {status}"


for name in json.loads(sys.argv[1]):
    if len(running) >= (os.cpu_count() or 1):
        reap()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        try:
            importlib.import_module(name)
            code = 0
        except BaseException:
            os.write(write, traceback.format_exc().encode()[-4000:])
            code = 1
        os._exit(code)
    os.close(write)
    running[pid] = (name, read)
while running:
    reap()
print(json.dumps(failures))
"""


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs os.fork")
def test_every_module_imports_alone_in_a_fresh_interpreter() -> None:
    """Catches a module that works only when another was imported first (import-order dependence)."""
    names = [m for m in MODULES if m != "vqtoolkit.__main__"]  # __main__ runs the CLI when imported
    out = subprocess.run(
        [sys.executable, "-c", ISOLATED_IMPORTS, json.dumps(names), json.dumps(third_party_imports())],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
        cwd=ROOT,
    )
    failures = json.loads(out.stdout.strip().splitlines()[-1])
    assert not failures, "\n\n".join(f"{name}:\n{trace}" for name, trace in failures.items())


def test_nothing_in_the_project_imports_a_moved_path() -> None:
    """The old paths of ``vqtoolkit._compat.MOVED`` are for users' code; ours uses the new ones."""
    from vqtoolkit._compat import MOVED

    old = {f"vqtoolkit.{name}" for name in MOVED}
    sources = [*PACKAGE.rglob("*.py"), *(ROOT / "tests").glob("*.py"), *(ROOT / "benchmarks").glob("*.py")]
    sources += [*(ROOT / "examples").glob("*.py"), *(ROOT / "plugins").rglob("*.py")]
    found = []
    for path in sources:
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
            found += [f"{path.relative_to(ROOT)}:{node.lineno} {n}" for n in names if n in old]
    assert not found, "imports of moved paths (use the new ones):\n" + "\n".join(found)
