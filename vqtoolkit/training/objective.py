"""Stage 1's loss: the reconstruction, and optionally the VQGAN recipe's perceptual and adversarial terms.

With the defaults (``reconstruction_loss="mse"``, ``perceptual_weight=0``, ``adversarial_weight=0``)
:meth:`Objective.generator` returns ``mse(x̂, x)`` itself and nothing else is built, so the plain loop
is the same computation as before the recipe existed. With the recipe (taming-transformers' VQGAN):

    nll  = rec(x̂, x) + perceptual_weight · perceptual(x̂, x)          # rec: mse or l1
    loss = nll + adversarial_weight · λ · gan(D(x̂))   from step adversarial_start on
    λ    = ‖∇_w nll‖ / (‖∇_w gan‖ + ε), clamped, w the decoder's last layer

and after each generator step the :class:`~vqtoolkit.training.discriminator.PatchDiscriminator` takes
its own Adam step on real images against the (detached) reconstructions, from the first step on, so
it has warmed up when the generator's term starts. The discriminator is wrapped for DDP like the
model; its weights, optimizer and scaler travel in the stage-1 checkpoint, never in a bundle.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from vqtoolkit.model.vqvae import VQVAE
from vqtoolkit.runtime import distributed
from vqtoolkit.runtime.devices import autocast
from vqtoolkit.runtime.schedule import lr_at
from vqtoolkit.runtime.step import AgreedStep
from vqtoolkit.storage.checkpoint import Trainable
from vqtoolkit.training.config import TrainConfig
from vqtoolkit.training.discriminator import (
    ADAPTIVE_WEIGHT_MAX,
    PatchDiscriminator,
    adaptive_weight,
    discriminator_loss,
    generator_loss,
)
from vqtoolkit.training.perceptual import PerceptualLoss, perceptual_loss

log = logging.getLogger(__name__)

#: A discriminator loss below this, averaged over a whole epoch, is a collapse (it wins outright).
COLLAPSED_DISCRIMINATOR_LOSS = 1e-3
#: The config fields that make up the recipe (a checkpoint's fingerprint holds them when it is on).
RECIPE_FIELDS = (
    "reconstruction_loss",
    "perceptual_weight",
    "perceptual_features",
    "adversarial_weight",
    "adversarial_start",
    "adversarial_loss",
    "discriminator_lr",
    "discriminator_layers",
    "discriminator_channels",
    "discriminator_spectral_norm",
)


@dataclass
class Terms:
    """One step's generator loss (without the quantizer's) and what of it is tallied and logged."""

    loss: Tensor
    mse: Tensor  # the reconstruction MSE: the metrics' ``train_recon``, whatever is optimised
    logged: dict[str, Tensor]  # detached per-step values: l1, perceptual, gan, adaptive_weight


class Objective:
    """The stage-1 loss of one run, and the discriminator's training when the recipe is on.

    Args:
        model: The autoencoder, already on ``device``.
        config: The run's options (the recipe's fields above).
        device: Where the discriminator trains.
        precision: The run's autocast precision (``32``, ``bf16`` or ``16``).
    """

    def __init__(self, model: VQVAE, config: TrainConfig, device: torch.device, precision: str) -> None:
        self.config, self.device, self.precision = config, device, precision
        self.model = model
        self.perceptual: PerceptualLoss | None = None
        if config.perceptual_weight > 0:
            self.perceptual = perceptual_loss(config.perceptual_features, device)
        self.discriminator: PatchDiscriminator | None = None
        if config.adversarial_weight > 0:
            self.discriminator = PatchDiscriminator(
                model.decoder.out_channels,
                layers=config.discriminator_layers,
                channels=config.discriminator_channels,
                spectral_norm=config.discriminator_spectral_norm,
            ).to(device)
            self.network = distributed.wrap(self.discriminator, device)
            self.optimizer = torch.optim.Adam(self.discriminator.parameters(), betas=(0.5, 0.9))
            self.scaler = torch.amp.GradScaler(device.type, enabled=precision == "16")
            self.stepper = AgreedStep(self.optimizer, self.scaler)

    @property
    def plain(self) -> bool:
        """Whether this is the plain ``mse + quantizer`` loss (no recipe option set)."""
        c = self.config
        return c.reconstruction_loss == "mse" and self.perceptual is None and self.discriminator is None

    def fingerprint(self) -> dict[str, object]:
        """The recipe's options, which a checkpoint must match to resume (empty for the plain loss)."""
        return {} if self.plain else {"objective": {f: getattr(self.config, f) for f in RECIPE_FIELDS}}

    def trainable(self) -> Trainable | None:
        """The discriminator with its optimizer and scaler, for the checkpoint (``None`` without one)."""
        if self.discriminator is None:
            return None
        return Trainable(self.discriminator, self.optimizer, self.scaler)

    def sum_names(self) -> tuple[str, ...]:
        """The running sums an epoch's tally keeps for this objective (beyond recon, vq and counts)."""
        names: tuple[str, ...] = ("l1",) if self.config.reconstruction_loss == "l1" else ()
        names += ("perceptual",) if self.perceptual is not None else ()
        if self.discriminator is not None:
            names += ("gan", "adaptive_weight", "clamped", "gan_steps", "disc", "disc_steps")
        return names

    def generator(self, x: Tensor, x_hat: Tensor, step: int) -> Terms:
        """The generator's loss on step ``step`` (0-based), called inside the run's autocast.

        Args:
            x: The real images.
            x_hat: Their reconstructions, with the model's graph.
            step: Optimizer steps already taken.

        Returns:
            The loss to add the quantizer's to, the MSE and the values to log.
        """
        mse = F.mse_loss(x_hat.float(), x)
        if self.plain:
            return Terms(mse, mse, {})
        c, logged = self.config, {}
        nll = mse
        if c.reconstruction_loss == "l1":
            nll = logged["l1"] = F.l1_loss(x_hat.float(), x)
        if self.perceptual is not None:
            logged["perceptual"] = self.perceptual(x_hat, x)
            nll = nll + c.perceptual_weight * logged["perceptual"]
        loss = nll
        if self.discriminator is not None and step >= c.adversarial_start:
            self.discriminator.requires_grad_(False)  # the generator's step leaves D's gradients alone
            gan = generator_loss(self.discriminator(x_hat).float(), c.adversarial_loss)
            self.discriminator.requires_grad_(True)
            weight = adaptive_weight(nll, gan, self.model.decoder.last_layer())
            loss = nll + c.adversarial_weight * weight * gan
            logged.update(gan=gan, adaptive_weight=weight)
        return Terms(loss, mse, {k: v.detach() for k, v in logged.items()})

    def after_step(
        self, x: Tensor, x_hat: Tensor, terms: Terms, sums: dict[str, Tensor], *, step: int, total: int
    ) -> dict[str, Tensor]:
        """Tally ``terms`` into ``sums``, then train the discriminator one step (when there is one).

        Args:
            x: The step's real images.
            x_hat: Their reconstructions (detached here).
            terms: What :meth:`generator` returned for them.
            sums: The epoch's running sums, named by :meth:`sum_names`.
            step: The step just taken (0-based), for the learning rate schedule.
            total: Optimizer steps in the whole run.

        Returns:
            The per-step values to log (``disc`` among them with a discriminator).

        Raises:
            TrainingError: The discriminator's loss was not finite (on any rank).
        """
        logged = dict(terms.logged)
        for name in ("l1", "perceptual"):
            if name in logged:
                sums[name] += logged[name] * len(x)
        if "gan" in logged:
            sums["gan"] += logged["gan"]
            sums["adaptive_weight"] += logged["adaptive_weight"]
            sums["clamped"] += (logged["adaptive_weight"] >= ADAPTIVE_WEIGHT_MAX).to(sums["clamped"])
            sums["gan_steps"] += 1
        if self.discriminator is None:
            return logged
        c = self.config
        with autocast(self.device, self.precision):
            real, fake = self.network(torch.cat([x, x_hat.detach().to(x.dtype)])).float().chunk(2)
            loss = discriminator_loss(real, fake, c.adversarial_loss)
        lr = lr_at(step, total, c.discriminator_lr or c.lr, c.lr_schedule)
        self.stepper.backward(loss, lr=lr, stop_requested=False)
        self.stepper.finish(
            lambda value: (
                f"the discriminator's loss became {value} at step {step + 1}: lower --discriminator-lr "
                f"(now {c.discriminator_lr or c.lr}) or --adversarial-weight, or add "
                "--discriminator-spectral-norm"
            )
        )
        logged["disc"] = loss.detach()
        sums["disc"] += logged["disc"]
        sums["disc_steps"] += 1
        return logged

    def summary(self, sums: dict[str, Tensor], seen: int, epoch: int) -> dict[str, float | None]:
        """The epoch's metrics from ``sums`` (already summed over ranks); warns of a GAN collapse.

        Args:
            sums: The epoch's running sums.
            seen: Images trained on in the epoch, over all ranks.
            epoch: The epoch, for the warning.

        Returns:
            ``train_l1``, ``train_perceptual``, ``train_gan``, ``train_disc`` and
            ``train_adaptive_weight``, those this objective has (``None`` for a term not yet active).
        """
        record: dict[str, float | None] = {
            f"train_{k}": float(sums[k]) / seen for k in ("l1", "perceptual") if k in sums
        }
        if self.discriminator is None:
            return record
        active, steps = float(sums["gan_steps"]), float(sums["disc_steps"])
        record["train_gan"] = float(sums["gan"]) / active if active else None
        record["train_adaptive_weight"] = float(sums["adaptive_weight"]) / active if active else None
        record["train_disc"] = disc = float(sums["disc"]) / max(steps, 1)
        collapsed = disc < COLLAPSED_DISCRIMINATOR_LOSS
        clamped = active == steps and float(sums["clamped"]) == active
        if (collapsed or clamped) and distributed.is_main():
            what = (
                f"the discriminator's loss is {disc:.2g}"
                if collapsed
                else f"the adaptive weight sat at its clamp ({ADAPTIVE_WEIGHT_MAX:g}) on every step"
            )
            log.warning(
                f"GAN collapse in epoch {epoch}: {what}, so the adversarial term no longer teaches the "
                "decoder. Lower --discriminator-lr or --adversarial-weight, start it later "
                "(--adversarial-start), or add --discriminator-spectral-norm"
            )
        return record
