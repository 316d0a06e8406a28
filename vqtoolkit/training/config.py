"""The stage-1 training options, stated once: :class:`TrainConfig` travels CLI → pipeline → loop.

``vqtool build/train`` builds one from its options, :meth:`vqtoolkit.pipeline.Pipeline.fit` builds
one from its keywords, and :func:`vqtoolkit.training.loop.train_autoencoder` reads it. Every option is
checked here, when the config is made, so a wrong value fails before any data is loaded.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vqtoolkit.errors import ConfigError
from vqtoolkit.runtime.devices import PRECISIONS
from vqtoolkit.runtime.schedule import DEFAULT_LR, DEFAULT_SCHEDULE, check_schedule

if TYPE_CHECKING:
    import torch


#: ``reconstruction_loss`` choices.
RECONSTRUCTION_LOSSES = ("mse", "l1")
#: ``adversarial_loss`` choices (:mod:`vqtoolkit.training.discriminator`).
ADVERSARIAL_LOSSES = ("hinge", "non-saturating")


@dataclass(frozen=True)
class TrainConfig:
    """How stage 1 trains: length, optimiser, randomness, device, and the files a run writes.

    Attributes:
        epochs: Passes over the training images (``None``: the dataset's default, see
            :meth:`with_dataset_defaults`); when resuming, the total including those already done.
        batch_size: The global batch (split across processes under torchrun); ``None``: the
            dataset's default.
        lr: Adam's peak learning rate.
        lr_schedule: ``cosine`` (warm-up, then down to zero at the last step) or ``constant``.
        seed: Shuffling and every random draw during training (k-means, revived codes).
        start_at_mean: Start a fresh decoder's output at the images' mean (see
            :func:`vqtoolkit.training.loop.calibrate_output_mean`).
        device: ``auto``/``cpu``/``cuda[:i]``/``mps``; ``None``: where the model already is.
        precision: ``32``, ``bf16`` or ``16`` (autocast; the code search stays float32).
        channels_last: Store images and weights NHWC during training (docs/training.md).
        checkpoint_path: A checkpoint written after every epoch and on Ctrl-C.
        resume: Continue from ``checkpoint_path`` instead of starting afresh.
        log_path: One JSON line of metrics per epoch.
        log_dir: TensorBoard scalars, image grids and code usage (:mod:`vqtoolkit.training.tensorboard`).
        allow_divergence: Keep training when an epoch diverged (:mod:`vqtoolkit.training.divergence`).
        progress: Show tqdm bars and one log line per epoch.
        reconstruction_loss: ``mse`` or ``l1`` (the metrics' ``train_recon`` stays the MSE).
        perceptual_weight: Weight of the perceptual loss (0: none).
        perceptual_features: ``ssim``, ``ms-ssim`` or a path to torchvision VGG16 weights
            (:mod:`vqtoolkit.training.perceptual`); never downloaded.
        adversarial_weight: Weight of the VQGAN recipe's adversarial term, times the adaptive weight
            λ (0: off, no discriminator; :mod:`vqtoolkit.training.objective`).
        adversarial_start: The optimizer step from which the generator's adversarial term counts;
            the discriminator trains from the first step (its warm-up).
        adversarial_loss: ``hinge`` or ``non-saturating``.
        discriminator_lr: The discriminator's peak learning rate (same schedule); ``None``: ``lr``.
        discriminator_layers: The PatchGAN's stride-2 convolutions.
        discriminator_channels: The PatchGAN's first width.
        discriminator_spectral_norm: Spectral normalisation in the discriminator.
    """

    epochs: int | None = None
    batch_size: int | None = None
    lr: float = DEFAULT_LR
    lr_schedule: str = DEFAULT_SCHEDULE
    seed: int = 0
    start_at_mean: bool = True
    device: str | torch.device | None = None
    precision: str = "32"
    channels_last: bool = False
    checkpoint_path: Path | None = None
    resume: bool = False
    log_path: Path | None = None
    log_dir: Path | None = None
    allow_divergence: bool = False
    progress: bool = True
    reconstruction_loss: str = "mse"
    perceptual_weight: float = 0.0
    perceptual_features: str = "ssim"
    adversarial_weight: float = 0.0
    adversarial_start: int = 0
    adversarial_loss: str = "hinge"
    discriminator_lr: float | None = None
    discriminator_layers: int = 2
    discriminator_channels: int = 16
    discriminator_spectral_norm: bool = False

    def __post_init__(self) -> None:
        """Refuse impossible values now, each with the option to change."""
        for name in ("checkpoint_path", "log_path", "log_dir"):  # accept str paths, store Path
            value = getattr(self, name)
            if value is not None and not isinstance(value, Path):
                object.__setattr__(self, name, Path(value))
        if self.epochs is not None and (not isinstance(self.epochs, int) or self.epochs < 1):
            raise ConfigError(f"epochs must be an integer >= 1; got {self.epochs!r}")
        if self.batch_size is not None and (not isinstance(self.batch_size, int) or self.batch_size < 1):
            raise ConfigError(f"batch_size must be an integer >= 1; got {self.batch_size!r}")
        if not isinstance(self.lr, int | float) or not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"lr must be a finite number > 0; got {self.lr!r}")
        check_schedule(self.lr_schedule)
        if self.precision not in PRECISIONS:
            raise ConfigError(f"unknown precision {self.precision!r}; choose one of {', '.join(PRECISIONS)}")
        if self.resume and self.checkpoint_path is None:
            raise ConfigError("resume=True needs a checkpoint_path to resume from")
        self._check_recipe()

    def _check_recipe(self) -> None:
        """The reconstruction, perceptual and adversarial options (the VQGAN recipe's)."""
        if self.reconstruction_loss not in RECONSTRUCTION_LOSSES:
            raise ConfigError(f"reconstruction_loss must be one of {', '.join(RECONSTRUCTION_LOSSES)}")
        if self.adversarial_loss not in ADVERSARIAL_LOSSES:
            raise ConfigError(f"adversarial_loss must be one of {', '.join(ADVERSARIAL_LOSSES)}")
        for name in ("perceptual_weight", "adversarial_weight"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not (value >= 0 and math.isfinite(value)):
                raise ConfigError(f"{name} must be a finite number >= 0 (0: off); got {value!r}")
        lr = self.discriminator_lr
        if lr is not None and (not isinstance(lr, int | float) or not (lr > 0 and math.isfinite(lr))):
            raise ConfigError(f"discriminator_lr must be a finite number > 0; got {lr!r}")
        for name in ("adversarial_start", "discriminator_layers", "discriminator_channels"):
            value, least = getattr(self, name), 0 if name == "adversarial_start" else 1
            if not isinstance(value, int) or value < least:
                raise ConfigError(f"{name} must be an integer >= {least}; got {value!r}")
        if self.perceptual_weight > 0:
            from vqtoolkit.training.perceptual import check_features

            check_features(self.perceptual_features)

    @classmethod
    def of(cls, config: TrainConfig | None = None, **options: Any) -> TrainConfig:
        """``config`` (or the defaults) with ``options`` replacing fields.

        Args:
            config: The config to start from (``None``: the defaults).
            **options: Fields to replace, e.g. ``TrainConfig.of(epochs=2, lr=1e-3)``.

        Returns:
            A new config, checked.

        Raises:
            ConfigError: An option that is not a field (with the closest name), or a value a field refuses.
        """
        fields = {f.name for f in dataclasses.fields(cls)}
        for name in options:
            if name not in fields:
                close = difflib.get_close_matches(name, sorted(fields), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(sorted(fields))}"
                raise ConfigError(f"unknown training option {name!r}{hint}")
        return dataclasses.replace(config or cls(), **options)

    def with_dataset_defaults(self, epochs: int, batch_size: int) -> TrainConfig:
        """This config with ``epochs`` and ``batch_size`` set to a dataset's defaults where left ``None``.

        Args:
            epochs: The dataset's default epochs.
            batch_size: The dataset's default batch size.

        Returns:
            A new config; fields already set are kept.
        """
        return dataclasses.replace(
            self,
            epochs=self.epochs if self.epochs is not None else epochs,
            batch_size=self.batch_size if self.batch_size is not None else batch_size,
        )
