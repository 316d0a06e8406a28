"""The training half of :class:`~vqtoolkit.pipeline.Pipeline`: stage 1, stage 2, and scoring the prior.

:class:`TwoStageFitting` is a mixin :class:`~vqtoolkit.pipeline.Pipeline` inherits, so the public
methods stay on the pipeline while this module holds how they train: stage 1 hands a
:class:`~vqtoolkit.training.config.TrainConfig` to :func:`~vqtoolkit.training.loop.train_autoencoder`; stage 2
encodes the images with the frozen model (each process its share under torchrun) and fits the prior.
The mixin needs only ``model``, ``prior``, ``info`` and :meth:`TwoStageFitting.new_prior`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from vqtoolkit.runtime import distributed
from vqtoolkit.storage.checkpoint import component_name
from vqtoolkit.data.datasets import ImageDataset
from vqtoolkit.errors import ConfigError
from vqtoolkit.priors.neural.checkpoint import FitCheckpoint
from vqtoolkit.scoring.metrics import bits_per_code
from vqtoolkit.model.vqvae import VQVAE
from vqtoolkit._util.modes import eval_mode, frozen
from vqtoolkit.priors.base import IndexPrior, Prior
from vqtoolkit.runtime.stopping import stop_requests
from vqtoolkit.data.streaming import Images, as_tensor
from vqtoolkit.training.loop import EpochCallback, train_autoencoder
from vqtoolkit.training.config import TrainConfig

log = logging.getLogger(__name__)

#: The ``Pipeline.info`` keys that describe how stage 1 was trained (what ``inspect`` and reports show).
TRAINING_FACTS = (
    "dataset",
    "image_shape",
    "epochs",
    "batch_size",
    "lr",
    "lr_schedule",
    "seed",
    "device",
    "precision",
)


def chain(*callbacks: EpochCallback | None) -> Callable[[dict[str, Any]], None]:
    """One epoch callback calling each given one in turn (``None`` entries are skipped)."""
    present = [c for c in callbacks if c is not None]

    def call(record: dict[str, Any]) -> None:
        for callback in present:
            callback(record)

    return call


class TwoStageFitting:
    """Fitting and scoring methods of a pipeline holding ``model``, ``prior`` and ``info``."""

    model: VQVAE
    prior: Prior | None
    info: dict[str, Any]

    def new_prior(self, prior: str | Prior, shared: dict[str, Any], config: dict[str, Any]) -> Prior:
        """A prior from a name (with the ``shared`` options it takes) or an instance; see ``build``."""
        raise NotImplementedError  # the pipeline composes components

    def fit_autoencoder(
        self,
        data: ImageDataset,
        config: TrainConfig | None = None,
        *,
        on_epoch_end: EpochCallback | None = None,
        **options: Any,
    ) -> list[dict[str, Any]]:
        """Stage 1: train encoder, quantizer and decoder; returns the per-epoch history.

        ``config`` (a :class:`~vqtoolkit.training.config.TrainConfig`, or its fields as keywords:
        ``epochs``, ``batch_size``, ``lr``, ``device``, ``checkpoint_path``, ``resume``, ...) says
        how; ``epochs`` and ``batch_size`` default to the dataset's. ``seed`` fixes the shuffling and
        every random draw during training, from a private random stream: with :func:`~vqtoolkit.build`'s
        ``seed``, the same calls give the same weights and metrics bit for bit (same machine, torch
        version and threads). ``log_dir`` also writes TensorBoard scalars, grids and the code-usage
        histogram there; the JSON-lines ``log_path`` stays the default record.
        """
        config = TrainConfig.of(config, **options).with_dataset_defaults(
            data.default_epochs, data.default_batch_size
        )
        board = None
        on_step = None
        if config.log_dir is not None and distributed.is_main():  # under torchrun, rank 0 alone logs
            from vqtoolkit.training.tensorboard import USAGE_IMAGES, TensorBoardLogger

            board = TensorBoardLogger(config.log_dir, self.model, as_tensor(data.test_images[:USAGE_IMAGES]))
            on_step, on_epoch_end = board.on_step, chain(on_epoch_end, board.on_epoch_end)
        try:
            with torch.random.fork_rng():
                torch.manual_seed(config.seed)
                history = train_autoencoder(
                    self.model,
                    data.train_images,
                    data.test_images,
                    config,
                    on_epoch_end=on_epoch_end,
                    on_step=on_step,
                )
        finally:
            if board is not None:
                board.close()
        self.info.update(
            dataset=data.name,
            image_shape=list(data.image_shape),
            num_classes=data.num_classes,
            epochs=config.epochs,
            batch_size=config.batch_size,
            lr=config.lr,
            lr_schedule=config.lr_schedule,
            seed=config.seed,
            history=history,
        )
        self.info["metrics"] = {k: v for k, v in history[-1].items() if k.startswith("test_")}
        return history

    @torch.inference_mode()
    def prior_inputs(self, images: Images, *, space: str, batch_size: int = 1024) -> Tensor:
        """What a prior of ``space`` fits on: encoder latents or code indices of ``images``."""
        device = next(self.model.parameters()).device
        with eval_mode(self.model):
            encode = self.model.encode_latents if space == "latents" else self.model.encode_tokens
            return torch.cat([encode(batch.to(device)) for batch in images.split(batch_size)])

    def gathered_prior_inputs(self, images: Images, *, space: str, to_all: bool) -> Tensor | None:
        """:meth:`prior_inputs` of ``images``, each process encoding its share; see ``gather_rows``.

        In one process, simply :meth:`prior_inputs`; across processes the whole comes together on
        rank 0 (``None`` elsewhere) or, with ``to_all``, on every process.
        """
        world = distributed.world_size()
        share = images if world == 1 else images[distributed.rank() :: world]
        return distributed.gather_rows(self.prior_inputs(share, space=space), len(images), to_all=to_all)

    def fit_prior(
        self,
        data: ImageDataset,
        prior: str | Prior | None = None,
        *,
        progress: bool = True,
        checkpoint_path: str | Path | None = None,
        resume: bool = False,
        **prior_config: Any,
    ) -> Prior:
        """Stage 2: fit ``prior`` (a name, an instance, or the pipeline's own) on the frozen model's codes.

        ``prior_config`` goes to a prior given by name, e.g.
        ``fit_prior(data, "pixelcnn", conditional=True, epochs=5)``; a conditional prior learns
        ``p(codes | label)`` from ``data``'s labels so ``sample`` can take ``label=``. The model's
        parameters are frozen only while the prior fits. A prior given by name, or the pipeline's
        own, is moved to the model's device first; an instance passed in fits where it is.

        Across processes (torchrun) each one encodes its share of the images; a prior that
        :attr:`~vqtoolkit.priors.base.Prior.fits_on_every_rank` (pixelcnn) gets all the codes on
        every process and trains with DDP, any other (gmm) is fitted on rank 0 and copied to the rest.
        ``checkpoint_path`` gets a prior trained in epochs (pixelcnn) checkpointed after each one, and
        Ctrl-C stops it with :class:`~vqtoolkit.errors.TrainingInterrupted`; ``resume=True``
        continues from that checkpoint (:mod:`vqtoolkit.priors.neural.checkpoint`).
        """
        device = next(self.model.parameters()).device
        distributed.init_from_env(device)
        progress = progress and distributed.is_main()
        if prior is not None:
            shared = {"num_codes": self.model.quantizer.num_tokens}
            if prior_config.get("conditional"):
                shared["num_classes"] = data.num_classes
            self.prior = self.new_prior(prior, shared, prior_config)
        if self.prior is None:
            raise ConfigError("this pipeline has no prior; pass one, e.g. fit_prior(data, 'gmm')")
        if not isinstance(prior, Prior):  # one built here or by build() fits where the frozen model encodes
            self.prior.to(device)
        self.check_prior_matches(self.prior)
        with frozen(self.model):
            self._fit_prior_on_codes(self.prior, data, progress, checkpoint_path, resume)
        if not self.prior.fits_on_every_rank:
            prior_class = type(self.prior)
            self.prior = distributed.broadcast_module(self.prior, lambda config: prior_class(**config))
        self.info.pop("prior_history", None)  # facts about a replaced prior must not linger
        if getattr(self.prior, "history", None):
            self.info["prior_history"] = self.prior.history
        metrics = self.info.setdefault("metrics", {})
        for key in ("test_prior_bits_per_code", "test_prior_bits_per_code_given_label"):
            metrics.pop(key, None)
        for key, value in self.prior_metrics(data.test_images, data.test_labels).items():
            if value is not None:
                metrics[f"test_{key}"] = value
        return self.prior

    def _fit_prior_on_codes(
        self,
        prior: Prior,
        data: ImageDataset,
        progress: bool,
        checkpoint_path: str | Path | None,
        resume: bool,
    ) -> None:
        """Encode the training images (the prior's subsample of them) and fit ``prior`` on the result."""
        images, labels = data.train_images, data.train_labels
        rows = prior.fit_rows(len(images))
        if rows is not None:  # the prior learns from a subsample: encode only those images
            images, labels = images[rows], labels[rows]
        inputs = self.gathered_prior_inputs(images, space=prior.space, to_all=prior.fits_on_every_rank)
        if inputs is None:  # the ranks that leave the fit to rank 0
            return
        log.info(f"stage 2 · fitting {component_name(prior)} prior on {tuple(inputs.shape)} {prior.space}")
        clustered = prior if isinstance(prior, IndexPrior) and prior.clustered else None
        if clustered is not None:  # grids cluster by what they decode to
            clustered.code_vectors = self.token_vectors()
        saver = None if checkpoint_path is None else FitCheckpoint(Path(checkpoint_path), resume=resume)
        prior.fit_checkpoint = saver
        try:  # with a checkpoint, Ctrl-C stops the fit after a step and leaves it resumable
            with stop_requests(enabled=saver is not None) as stop:
                if saver is not None:
                    saver.stop = stop
                prior.fit(inputs, labels=labels, progress=progress)
        finally:
            prior.fit_checkpoint = None
            if clustered is not None:
                clustered.code_vectors = None

    @torch.inference_mode()
    def token_vectors(self, max_tokens: int = 65_536) -> Tensor | None:
        """The stage-1 vector ``(num_tokens, D)`` of every prior token; ``None`` past ``max_tokens``."""
        quantizer = self.model.quantizer
        if quantizer.num_tokens > max_tokens:
            return None
        device = next(self.model.parameters()).device
        tokens = torch.arange(quantizer.num_tokens, device=device)[:, None]
        return quantizer.lookup(quantizer.from_tokens(tokens))[..., 0].clone()

    def check_prior_matches(self, prior: Prior) -> None:
        """Refuse an index prior fitted for a codebook of another size."""
        prior_codes = prior.config.get("num_codes")
        num_codes = self.model.quantizer.num_tokens
        if prior.space == "indices" and prior_codes is not None and prior_codes != num_codes:
            raise ConfigError(
                f"the {component_name(prior)} prior models {prior_codes} codes but the quantizer has "
                f"{num_codes}; refit it with `vqtool fit-prior`"
            )

    @torch.inference_mode()
    def prior_nll(
        self, images: Images, labels: Tensor | None = None, *, batch_size: int = 1024
    ) -> float | None:
        """Held-out NLL of the prior in bits per code, or ``None`` where it has no index likelihood.

        Without ``labels`` a conditional prior is scored by its marginal ``p(codes)``, the number
        comparable across priors; with them, by ``p(codes | label)``. Unconditional priors ignore labels.
        """
        if self.prior is None or not self.prior.has_likelihood or not self.prior.is_fitted:
            return None
        indices = self.prior_inputs(images, space="indices")
        if not self.prior.conditional:
            labels = None
        label_batches = (
            [None] * len(indices.split(batch_size)) if labels is None else labels.split(batch_size)
        )
        total = sum(
            float(-self.prior.log_prob(batch, batch_labels).sum())
            for batch, batch_labels in zip(indices.split(batch_size), label_batches, strict=True)
        )
        return bits_per_code(total, indices.numel())

    def prior_metrics(self, images: Images, labels: Tensor | None = None) -> dict[str, float | None]:
        """The prior's held-out bits per code, marginal and (when labels are given) per label.

        ``prior_bits_per_code`` is marginal, comparable across priors (``None`` for latent priors
        such as gmm, whose density is over continuous latents); for a conditional prior given
        ``labels``, ``prior_bits_per_code_given_label`` adds the label.
        """
        result = {"prior_bits_per_code": self.prior_nll(images)}
        if self.prior is not None and self.prior.conditional and labels is not None:
            result["prior_bits_per_code_given_label"] = self.prior_nll(images, labels)
        return result
