"""The sampling options of every command that draws from a prior: one grammar, and who takes what.

``--temperature`` (every prior) is :func:`vqtoolkit.cli.options.temperature_option`; the options here
belong to some priors only: ``--guidance`` (pixelcnn, transformer, maskgit fitted with a label or
clusters), ``--steps`` and ``--top-k`` (maskgit). They reach a command as one :class:`Sampling`,
which sets them on the bundle's prior, refusing one it does not take in a line that says which
priors do.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from vqtoolkit.cli.options import (
    F,
    compose,
    count_option,
    guidance_option,
    num_samples_option,
    seed_option,
    temperature_option,
)
from vqtoolkit.errors import ConfigError

if TYPE_CHECKING:
    from vqtoolkit.pipeline import Pipeline


#: What each sampling option does and which priors take it (``--help`` and the refusal both say it).
SAMPLING_PRIORS = {
    "guidance": "steers a network prior (pixelcnn, transformer, maskgit) fitted with a label or clusters",
    "steps": "sets how many parallel network passes a maskgit prior takes per image",
    "top_k": "draws a maskgit prior's codes from the K likeliest only",
}


@dataclass(frozen=True)
class Sampling:
    """The prior-specific sampling options a command was given (``None``: keep the bundle's)."""

    guidance: float | None = None
    steps: int | None = None
    top_k: int | None = None

    def apply(self, pipe: Pipeline) -> Pipeline:
        """Set the given options on ``pipe``'s prior.

        Args:
            pipe: The loaded bundle.

        Returns:
            ``pipe``, its prior set up to sample with these options.

        Raises:
            ConfigError: An option the bundle's prior does not take, naming the priors that do.
        """
        for name, value in vars(self).items():
            if value is None:
                continue
            if not isinstance(getattr(type(pipe.prior), name, None), property):
                what = "no prior" if pipe.prior is None else f"a {type(pipe.prior).__name__}"
                flag = name.replace("_", "-")
                raise ConfigError(f"--{flag} {SAMPLING_PRIORS[name]}; this bundle has {what}")
            setattr(pipe.prior, name, value)
        return pipe


def sampling_options() -> Callable[[F], F]:
    """``--steps N``, ``--top-k K`` (maskgit) and ``--guidance G``, as one argument.

    The command receives them as ``sampling``, a :class:`Sampling` whose :meth:`~Sampling.apply`
    sets them on the bundle's prior, refusing one that prior does not take.
    """

    def decorate(command: F) -> F:
        @functools.wraps(command)
        def wrapper(
            *args: Any, guidance: float | None, steps: int | None, top_k: int | None, **kwargs: Any
        ) -> Any:
            return command(*args, sampling=Sampling(guidance, steps, top_k), **kwargs)

        return compose(
            count_option(
                "--steps",
                help="maskgit only: parallel network passes per image (fewer: faster) [default: the "
                "bundle's, 8].",
            ),
            count_option(
                "--top-k",
                "top_k",
                help="maskgit only: draw each code from the K likeliest [default: the bundle's, all codes].",
            ),
            guidance_option(),
        )(wrapper)  # type: ignore[return-value]

    return decorate


def drawing_options(count: int, count_help: str, seed_help: str, temperature_help: str) -> Callable[[F], F]:
    """How a command draws from a prior: ``-n/--num-samples``, ``--seed``, ``--temperature``, the rest.

    The rest are :func:`sampling_options`; ``sample`` and ``inpaint`` take the four alike.

    Args:
        count: The default ``--num-samples``.
        count_help: What ``--num-samples`` counts.
        seed_help: What the seed makes repeatable.
        temperature_help: What ``--temperature`` does for this command.

    Returns:
        One decorator adding the four, in that order.
    """
    return compose(
        num_samples_option(count, count_help),
        seed_option(seed_help),
        temperature_option(temperature_help),
        sampling_options(),
    )
