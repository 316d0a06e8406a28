"""Redraws the tree in docs/architecture.md from the package as it is (a test checks it)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from test_architecture import DOC, package_tree  # noqa: E402

text = DOC.read_text()
updated = re.sub(
    r"```text\nvqtoolkit/\n.*?\n```", lambda _: f"```text\n{package_tree()}\n```", text, flags=re.S
)
DOC.write_text(updated)
print("docs/architecture.md: tree " + ("updated" if updated != text else "already current"))
