"""The one optimizer step both stages take: backward and a non-finite check agreed across processes.

Stage 1 (:mod:`vqtoolkit.training.loop`) and the network priors' loop
(:mod:`vqtoolkit.priors.neural.loop`) each compute their loss, then hand it to an :class:`AgreedStep`:
:meth:`~AgreedStep.backward` sets the learning rate, clears the gradients, starts one collective that
or-s "this loss is not finite" and "a stop was requested" over every process, and runs the backward
pass while it travels; :meth:`~AgreedStep.finish` reads the answer, so every process raises before
the update, or steps, and stops after the same step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from vqtoolkit.errors import TrainingError
from vqtoolkit.runtime import distributed


@dataclass
class AgreedStep:
    """Backward, agreement and update of one optimizer (and its gradient scaler, for float16)."""

    optimizer: torch.optim.Optimizer
    #: Scales float16 losses so their gradients do not underflow; ``None``: plain backward.
    scaler: torch.amp.GradScaler | None = None
    _loss: Tensor | None = field(default=None, init=False, repr=False)
    _agreement: distributed.Agreement | None = field(default=None, init=False, repr=False)

    def backward(self, loss: Tensor, *, lr: float, stop_requested: bool) -> None:
        """Set ``lr``, clear the gradients, start the agreement and run the backward pass of ``loss``.

        Args:
            loss: The step's scalar loss.
            lr: The learning rate of this step (every parameter group).
            stop_requested: Whether this process was asked to stop (Ctrl-C, SIGTERM).
        """
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        self._loss = loss
        self._agreement = distributed.Agreement(not bool(torch.isfinite(loss)), stop_requested)
        (loss if self.scaler is None else self.scaler.scale(loss)).backward()

    def finish(self, failure: Callable[[str], str]) -> bool:
        """Wait for the agreement, then update the weights, or raise on every process.

        Args:
            failure: Turns the bad loss (its value, or "non-finite on another rank") into the
                message of the error, which should say what to change.

        Returns:
            Whether any process was asked to stop (every process then stops after this step).

        Raises:
            TrainingError: The loss was not finite on some process; no weight was changed.
        """
        assert self._agreement is not None and self._loss is not None, "backward() first"
        nonfinite, stopping = self._agreement.result()
        loss, self._loss, self._agreement = self._loss, None, None
        if nonfinite:
            shown = str(float(loss.detach())) if not torch.isfinite(loss) else "non-finite on another rank"
            raise TrainingError(failure(shown))
        if self.scaler is None:
            self.optimizer.step()
        else:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        return stopping
