"""``--KIND-option KEY=VALUE``: every component's own options, in one grammar, checked before any work.

``build`` and ``train`` take ``--encoder-option``, ``--decoder-option`` and ``--quantizer-option``;
``build`` and ``fit-prior`` take ``--prior-option``. Values are JSON where they parse
(``widths=[32,64]``, ``epochs=5``, ``clusters=null``) and strings otherwise; the options are checked
against the registered component's constructor (names with did-you-mean, JSON types, bounds) by
:func:`component_config`. This module imports no torch until a command runs.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

import click

from vqtoolkit.errors import ConfigError

F = TypeVar("F", bound=Callable[..., Any])

#: An option of each kind of component, for the ``--KIND-option`` help and messages.
OPTION_EXAMPLES = {
    "encoder": "widths=[32,64,64]",
    "quantizer": "decay=0.95",
    "decoder": "blocks=2",
    "prior": "epochs=5",
}


def config_option(kind: str) -> Callable[[F], F]:
    """``--KIND-option KEY=VALUE`` (repeatable), passed to the command as ``KIND_options``.

    Args:
        kind: ``encoder``, ``quantizer``, ``decoder`` or ``prior``.

    Returns:
        The click option; :func:`parse_config` turns what it collects into a config.
    """
    return click.option(
        f"--{kind}-option",
        f"{kind}_options",
        multiple=True,
        metavar="KEY=VALUE",
        help=f"An option of the {kind}'s constructor (repeatable; values are JSON where they parse, "
        f"else strings), e.g. --{kind}-option {OPTION_EXAMPLES[kind]}.",
    )


def parse_config(kind: str, pairs: tuple[str, ...]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs with JSON values (``epochs=3``, ``widths=[32,64]``); bare words stay strings.

    Args:
        kind: The component kind the pairs are for, named in errors.
        pairs: What ``--KIND-option`` collected, in order (a later key wins).

    Returns:
        The options as a dict.

    Raises:
        ConfigError: A pair without ``=`` or without a key.
    """
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            example = OPTION_EXAMPLES[kind]
            raise ConfigError(
                f"--{kind}-option takes KEY=VALUE, e.g. --{kind}-option {example}; got {pair!r}"
            )
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


def component_config(kind: str, name: str, pairs: tuple[str, ...]) -> dict[str, Any]:
    """What ``--KIND-option`` collected, as a config checked against the registered ``name``'s constructor.

    Unknown options (with the close match), values of the wrong JSON type and numbers out of bounds
    are refused here, before any model is built or trained.

    Args:
        kind: ``encoder``, ``quantizer``, ``decoder`` or ``prior``.
        name: The registered component the options are for.
        pairs: The ``KEY=VALUE`` strings, in order.

    Returns:
        The options (empty when none were given).

    Raises:
        ConfigError: A malformed pair, or an option the component does not take as given.
    """
    from vqtoolkit.components import registry  # torch: imported when a command runs, not for --help
    from vqtoolkit.components.options import check_config

    config = parse_config(kind, pairs)
    if config:
        check_config(registry.get_class(kind, name), config, what=f"--{kind}-option: {kind} {name!r}")
    return config
