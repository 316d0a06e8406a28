"""Griffe extension for the docs site: Sphinx roles in docstrings become API-reference links.

vqtoolkit's docstrings use the roles every Python reader knows (``:class:`ConfigError```,
``:func:`~vqtoolkit.quantize.core.nearest_codes```), which IDEs and ``help()`` show as they are.
mkdocstrings renders Markdown, so this extension rewrites each role into an *optional* autorefs
cross-reference: a link when the target is in the API reference, plain code when it is not, and never
a broken link that would fail ``mkdocs build --strict``. Short names resolve in the scope of the
object that wrote them (its module's imports included), as Sphinx would.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|attr|data|exc|obj):`(?P<tilde>~?)(?P<target>[\w.]+)`")


def resolve(obj: griffe.Object | griffe.Alias, name: str) -> str:
    """Full dotted path of ``name`` as seen from ``obj`` (its own members first, then its parents')."""
    head, _, rest = name.partition(".")
    scope: griffe.Object | griffe.Alias | None = obj
    while scope is not None:
        member = scope.members.get(head) if hasattr(scope, "members") else None
        if member is not None:
            base = member.target_path if isinstance(member, griffe.Alias) else member.path
            return f"{base}.{rest}" if rest else base
        scope = scope.parent
    return name  # already a full path, or unknown: autorefs leaves optional refs it cannot find as text


def rewrite(text: str, obj: griffe.Object | griffe.Alias) -> str:
    """``text`` with every Sphinx role replaced by an optional autorefs reference."""

    def link(match: re.Match[str]) -> str:
        target = match["target"]
        title = target.rsplit(".", 1)[-1] if match["tilde"] else target
        return f'<autoref identifier="{resolve(obj, target)}" optional><code>{title}</code></autoref>'

    return ROLE.sub(link, text)


class SphinxRoles(griffe.Extension):
    """Rewrite roles once the whole package is loaded, so imports can be resolved."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        """Visit every object of the package that has a docstring."""
        stack: list[griffe.Object | griffe.Alias] = [pkg]
        while stack:
            obj = stack.pop()
            if obj.docstring is not None:
                obj.docstring.value = rewrite(obj.docstring.value, obj)
            stack.extend(member for member in obj.members.values() if not member.is_alias)
