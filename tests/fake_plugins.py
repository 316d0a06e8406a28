"""Test helpers that make a plugin look installed without pip: a ``.dist-info`` on ``sys.path``."""

from __future__ import annotations

import contextlib
import importlib
import shutil
import sys
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

from vqtoolkit.components import registry


@contextlib.contextmanager
def fake_distribution(
    name: str,
    entry_points: Mapping[str, Mapping[str, str]],
    *,
    version: str = "0.0.0",
    paths: tuple[str | Path, ...] = (),
) -> Iterator[None]:
    """Make distribution ``name`` look installed for the duration, without pip.

    ``entry_points`` is ``{group: {name: "module:Class"}}``; a ``.dist-info`` folder holding them goes
    in a temporary directory on ``sys.path``.

    ``paths`` are put on ``sys.path`` too (the plugin's sources). Useful to test name clashes and
    broken plugins; modules imported from ``paths`` are forgotten again on exit.
    """
    root = Path(tempfile.mkdtemp(prefix="vqtoolkit-fake-dist-"))
    info = root / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(
        "".join(
            f"[{group}]\n" + "".join(f"{ep} = {value}\n" for ep, value in eps.items())
            for group, eps in entry_points.items()
        )
    )
    added = [str(root), *(str(Path(p).resolve()) for p in paths)]
    sys.path[:0] = added
    importlib.invalidate_caches()
    registry.refresh()
    try:
        yield
    finally:
        for entry in added:
            sys.path.remove(entry)
        for module_name, module in list(sys.modules.items()):
            if any(str(getattr(module, "__file__", None) or "").startswith(p) for p in added[1:]):
                del sys.modules[module_name]
        shutil.rmtree(root, ignore_errors=True)
        importlib.invalidate_caches()
        registry.refresh()


def fake_install(project: str | Path) -> contextlib.AbstractContextManager[None]:
    """:func:`fake_distribution` for a plugin project folder, as if it had been ``pip install``-ed.

    Name, version and entry points come from its ``pyproject.toml``; sources from ``src/`` or the folder.
    """
    if sys.version_info < (3, 11):
        raise ImportError("fake_install reads pyproject.toml with tomllib: it needs Python 3.11 or newer")
    import tomllib  # type: ignore[import-not-found, unused-ignore]

    project = Path(project)
    meta = tomllib.loads((project / "pyproject.toml").read_text())["project"]
    source = project / "src" if (project / "src").is_dir() else project
    return fake_distribution(
        meta["name"], meta.get("entry-points", {}), version=meta["version"], paths=(source,)
    )
