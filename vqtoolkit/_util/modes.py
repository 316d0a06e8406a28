"""Temporary switches of a module's state, always undone: eval mode and frozen parameters.

Sampling, scoring and fitting a prior on a frozen model need the model in eval mode or without
gradients only while they run; these context managers put back exactly what was there before,
even when the work inside raises (or is interrupted by Ctrl-C).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from torch import nn


@contextlib.contextmanager
def eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """``module`` in eval mode inside the block; each submodule's own mode is restored after it."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield module
    finally:
        for m, training in modes:  # parents first: each child's own mode lands after its parent's
            m.train(training)


@contextlib.contextmanager
def frozen(module: nn.Module) -> Iterator[nn.Module]:
    """``module`` with ``requires_grad`` off for every parameter inside the block, restored after it."""
    flags = [(p, p.requires_grad) for p in module.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield module
    finally:
        for p, requires_grad in flags:
            p.requires_grad_(requires_grad)
