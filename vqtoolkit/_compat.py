"""Import paths that moved in 0.2, kept working for one release with a ``DeprecationWarning``.

``import vqtoolkit.config`` (and ``from vqtoolkit import config``) still gives the module that now
lives at ``vqtoolkit.components.options``, and warns once with the new path. A meta-path finder
serves the old names, so no stub module is left in the tree for each; 0.3 removes them.
"""

from __future__ import annotations

import functools
import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings
from collections.abc import Callable
from types import ModuleType

#: A component's constructor.
Init = Callable[..., None]

#: Old module (``vqtoolkit.`` left out) → where it lives now.
MOVED = {
    "atomic": "_util.atomic",
    "lock": "_util.lock",
    "memory": "_util.memory",
    "deadline": "_util.deadline",
    "modes": "_util.modes",
    "component": "components.base",
    "config": "components.options",
    "registry": "components.registry",
    "streaming": "data.streaming",
    "images": "data.images",
    "metrics": "scoring.metrics",
    "classifier": "scoring.classifier",
    "sample_quality": "scoring.sample_quality",
    "devices": "runtime.devices",
    "distributed": "runtime.distributed",
    "quantize.distributed": "runtime.collectives",
    "schedule": "runtime.schedule",
    "stopping": "runtime.stopping",
    "priors.threads": "runtime.threads",
    "bundle": "storage.bundle",
    "bundle_restore": "storage.restore",
    "checkpoint": "storage.checkpoint",
    "fit_checkpoint": "priors.neural.checkpoint",
    "priors.training": "priors.neural.loop",
    "assemble": "model.assemble",
    "train_config": "training.config",
    "train": "training.loop",
    "evaluation": "training.evaluation",
    "tensorboard": "training.tensorboard",
    "divergence": "training.divergence",
    "fitting": "stages",
    "report": "reporting.report",
    "report_html": "reporting.html",
    "plots": "reporting.plots",
    "runs": "reporting.runs",
    "cli_options": "cli.options",
}


class _MovedModuleLoader(importlib.abc.Loader):
    def __init__(self, new_name: str) -> None:
        self.new_name = new_name

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        warnings.warn(
            f"{spec.name} moved to {self.new_name} in vqtoolkit 0.2; import it from there "
            f"(the old path goes in 0.3)",
            DeprecationWarning,
            stacklevel=_caller_level(),
        )
        return importlib.import_module(self.new_name)

    def exec_module(self, module: ModuleType) -> None:
        """The module is the new one, already executed."""


class MovedModuleFinder(importlib.abc.MetaPathFinder):
    """Finds the old names of :data:`MOVED` and hands out the modules that replaced them."""

    def find_spec(
        self, fullname: str, path: object = None, target: object = None
    ) -> importlib.machinery.ModuleSpec | None:
        """A spec for an old name of :data:`MOVED`; ``None`` for every other module."""
        old = fullname.removeprefix("vqtoolkit.")
        if not fullname.startswith("vqtoolkit.") or old not in MOVED:
            return None
        return importlib.machinery.ModuleSpec(fullname, _MovedModuleLoader(f"vqtoolkit.{MOVED[old]}"))


def _caller_level() -> int:
    """The stack level of the first frame outside importlib and vqtoolkit: the file that imported."""
    return outside_stacklevel(2)


def outside_stacklevel(start: int = 1) -> int:
    """``warnings.warn``'s ``stacklevel`` naming the first caller outside vqtoolkit (and importlib).

    Args:
        start: Frames from here up to the function that calls ``warnings.warn`` (1: this one's caller).

    Returns:
        The level, counted from that function, of the user's (or plugin's) own code.
    """
    frame, level = sys._getframe(start), 1
    while frame.f_back is not None and (
        frame.f_code.co_filename.startswith("<frozen importlib")
        or str(frame.f_globals.get("__name__", "")).startswith("vqtoolkit.")
    ):
        frame, level = frame.f_back, level + 1
    return level


def deprecated_super_options(cls: type, options: dict[str, object], warned: set[type]) -> None:
    """Warn, once per class, that a constructor passed its options on to ``super().__init__()``.

    The guide before 0.2 said to (``super().__init__(num_codes=num_codes, ...)``); since 0.2 a
    component's options are captured from its constructor's signature, so the base takes none.
    """
    if cls in warned:
        return
    warned.add(cls)
    warnings.warn(
        f"{cls.__name__}.__init__ passes its options ({', '.join(sorted(options))}) to "
        f"super().__init__(): that is deprecated since vqtoolkit 0.2 and stops working in 0.3. Call "
        f"super().__init__() without them; the options are recorded from your constructor's signature",
        DeprecationWarning,
        stacklevel=outside_stacklevel(1),
    )


def positional_options(*names: str) -> Callable[[Init], Init]:
    """Let a constructor take, for one more release, options that 0.3 made keyword-only, by position.

    Up to 0.2 the decorated constructor's first options were ``names`` in this order (e.g.
    ``TransformerPrior(512, 96)``); 0.3 moved them into a shared base, where they are keyword-only.
    A call by position still works, with a ``DeprecationWarning`` spelling the call by name
    (:func:`options_by_name`, also used by :class:`~vqtoolkit.components.base.Component`'s
    ``__new__``, which records the options).
    """

    def decorate(init: Init) -> Init:
        @functools.wraps(init)
        def by_name(self: object, *args: object, **kwargs: object) -> None:
            init(self, **options_by_name(type(self), args, kwargs, warn=False))

        by_name.positional_names = names  # type: ignore[attr-defined]
        return by_name

    return decorate


def options_by_name(
    cls: type, args: tuple[object, ...], kwargs: dict[str, object], *, warn: bool
) -> dict[str, object]:
    """``kwargs`` plus ``args`` named as ``cls``'s 0.2 constructor named them (:func:`positional_options`).

    Raises:
        TypeError: More positional options than the old constructor had, or an option given twice.
    """
    names: tuple[str, ...] = getattr(cls.__init__, "positional_names", ())  # type: ignore[misc]
    if not args:
        return kwargs
    if len(args) > len(names):
        raise TypeError(f"{cls.__name__}() takes at most {len(names)} options by position; got {len(args)}")
    named = dict(zip(names, args, strict=False))
    if twice := sorted(set(named) & set(kwargs)):
        raise TypeError(f"{cls.__name__}() got option(s) {', '.join(twice)} both by position and by name")
    if warn:
        spelled = ", ".join(f"{name}={value!r}" for name, value in named.items())
        warnings.warn(
            f"{cls.__name__}: options by position are deprecated since vqtoolkit 0.3 and stop working in "
            f"0.4; name them: {cls.__name__}({spelled}, ...)",
            DeprecationWarning,
            stacklevel=outside_stacklevel(1),
        )
    return {**named, **kwargs}


def install() -> None:
    """Put the finder on ``sys.meta_path`` once (``vqtoolkit/__init__`` calls it)."""
    if not any(isinstance(f, MovedModuleFinder) for f in sys.meta_path):
        sys.meta_path.append(MovedModuleFinder())
