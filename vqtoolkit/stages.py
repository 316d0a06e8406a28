"""The two stages as plain functions: what :meth:`Pipeline.fit` and the ``vqtool`` CLI both call.

:func:`train_autoencoder_stage` trains encoder, quantizer and decoder from a
:class:`~vqtoolkit.training.config.TrainConfig` and returns a :class:`TrainingRecord` of how;
:func:`fit_prior_stage` encodes the images with the frozen model (each process its share under
torchrun) and fits a prior on the result, handing it what its ``fit`` asks for as arguments (the
code vectors, a checkpoint). The scoring helpers below (:func:`prior_inputs`, :func:`prior_nll`)
serve both stages' callers.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from vqtoolkit._util.modes import eval_mode, frozen
from vqtoolkit.components.base import component_name
from vqtoolkit.compose import component
from vqtoolkit.data.datasets import ImageDataset
from vqtoolkit.data.streaming import Images, as_tensor
from vqtoolkit.errors import ConfigError
from vqtoolkit.model.codes import check_prior_matches
from vqtoolkit.model.vqvae import VQVAE
from vqtoolkit.priors.base import Prior
from vqtoolkit.priors.neural.checkpoint import FitCheckpoint
from vqtoolkit.runtime import distributed
from vqtoolkit.runtime.devices import check_precision, resolve_device
from vqtoolkit.runtime.stopping import stop_requests
from vqtoolkit.scoring.metrics import bits_per_code
from vqtoolkit.training.config import TrainConfig
from vqtoolkit.training.loop import EpochCallback, train_autoencoder

log = logging.getLogger(__name__)

#: Version of the :class:`TrainingRecord` layout in a bundle's ``info`` (absent: written before 0.2).
INFO_SCHEMA_VERSION = 1


@dataclass(frozen=True)
class TrainingRecord:
    """How stage 1 was trained: what a bundle's ``info`` records, from Python and the CLI alike."""

    dataset: str
    image_shape: list[int]
    num_classes: int
    epochs: int
    batch_size: int
    lr: float
    lr_schedule: str
    seed: int
    #: Where it trained (``cpu``, ``cuda:0``, ...) and in which arithmetic (``32``, ``bf16``, ``16``).
    device: str
    precision: str
    #: Processes it trained in (1 without torchrun).
    world_size: int
    history: list[dict[str, Any]]
    metrics: dict[str, float]
    schema_version: int = INFO_SCHEMA_VERSION

    def as_info(self) -> dict[str, Any]:
        """The record as the JSON-ready entries of a pipeline's ``info``."""
        return dataclasses.asdict(self)


#: The ``info`` keys that describe how stage 1 was trained (what ``inspect`` and reports show).
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


def settle_device(config: TrainConfig, model: VQVAE) -> TrainConfig:
    """``config`` with its device resolved (joining torchrun's group) and its precision checked, once.

    Args:
        config: The run's options; ``device=None`` means where the model already is.
        model: The model to train (its device is the default).

    Returns:
        The same options with ``device`` a concrete :class:`torch.device`.

    Raises:
        ConfigError: The device does not exist here, or cannot compute in that precision.
    """
    device = next(model.parameters()).device if config.device is None else resolve_device(config.device)
    check_precision(config.precision, device)
    return dataclasses.replace(config, device=distributed.init_from_env(device))


def train_autoencoder_stage(
    model: VQVAE,
    data: ImageDataset,
    config: TrainConfig,
    *,
    on_epoch_end: EpochCallback | None = None,
) -> TrainingRecord:
    """Stage 1: train ``model`` on ``data`` as ``config`` says; returns the record of the run.

    Args:
        model: The autoencoder; trained in place.
        data: Training and held-out images (``epochs`` and ``batch_size`` default to the dataset's).
        config: How to train; with ``log_dir``, TensorBoard scalars, grids and code usage go there.
        on_epoch_end: Called with each epoch's metrics record.

    Returns:
        What the run was and what it measured, for the bundle's ``info``.
    """
    config = settle_device(config, model).with_dataset_defaults(data.default_epochs, data.default_batch_size)
    board = None
    on_step = None
    if config.log_dir is not None and distributed.is_main():  # under torchrun, rank 0 alone logs
        from vqtoolkit.training.tensorboard import USAGE_IMAGES, TensorBoardLogger

        board = TensorBoardLogger(config.log_dir, model, as_tensor(data.test_images[:USAGE_IMAGES]))
        on_step, on_epoch_end = board.on_step, chain(on_epoch_end, board.on_epoch_end)
    try:
        with torch.random.fork_rng():
            torch.manual_seed(config.seed)
            history = train_autoencoder(
                model, data.train_images, data.test_images, config, on_epoch_end=on_epoch_end, on_step=on_step
            )
    finally:
        if board is not None:
            board.close()
    assert config.epochs is not None and config.batch_size is not None  # the dataset's defaults
    return TrainingRecord(
        dataset=data.name,
        image_shape=list(data.image_shape),
        num_classes=data.num_classes,
        epochs=config.epochs,
        batch_size=config.batch_size,
        lr=config.lr,
        lr_schedule=config.lr_schedule,
        seed=config.seed,
        device=str(config.device),
        precision=config.precision,
        world_size=distributed.world_size(),
        history=history,
        metrics={k: v for k, v in history[-1].items() if k.startswith("test_")},
    )


@torch.inference_mode()
def prior_inputs(model: VQVAE, images: Images, *, space: str, batch_size: int = 1024) -> Tensor:
    """What a prior of ``space`` fits on: encoder latents (``"latents"``) or code indices of ``images``."""
    device = next(model.parameters()).device
    with eval_mode(model):
        encode = model.encode_latents if space == "latents" else model.encode_tokens
        return torch.cat([encode(batch.to(device)) for batch in images.split(batch_size)])


def gathered_prior_inputs(model: VQVAE, images: Images, *, space: str, to_all: bool) -> Tensor | None:
    """:func:`prior_inputs` of ``images``, each process encoding its share.

    In one process, simply :func:`prior_inputs`; across processes the whole comes together on rank 0
    (``None`` elsewhere) or, with ``to_all``, on every process.
    """
    world = distributed.world_size()
    share = images if world == 1 else images[distributed.rank() :: world]
    return distributed.gather_rows(prior_inputs(model, share, space=space), len(images), to_all=to_all)


@torch.inference_mode()
def code_vectors(model: VQVAE, max_tokens: int = 65_536) -> Tensor | None:
    """The stage-1 vector ``(num_tokens, D)`` of every prior token; ``None`` past ``max_tokens``."""
    quantizer = model.quantizer
    if quantizer.num_tokens > max_tokens:
        return None
    device = next(model.parameters()).device
    tokens = torch.arange(quantizer.num_tokens, device=device)[:, None]
    return quantizer.lookup(quantizer.from_tokens(tokens))[..., 0].clone()


def fit_inputs_taken(prior: Prior, **inputs: Any) -> dict[str, Any]:
    """The fit-time ``inputs`` that ``prior.fit`` names as keyword parameters: the ones it asks for."""
    parameters = inspect.signature(prior.fit).parameters
    return {name: value for name, value in inputs.items() if name in parameters}


def prior_to_fit(
    model: VQVAE, prior: str | Prior | None, own: Prior | None, data: ImageDataset, config: dict[str, Any]
) -> Prior:
    """The prior stage 2 fits: ``prior`` by name (with ``config``) or instance, else the pipeline's ``own``.

    One made by name is sized for ``model``'s codes (and ``data``'s classes, if conditional); it and
    ``own`` (``build()``'s) move to the model's device; an instance passed in fits where it is.

    Raises:
        ConfigError: No prior at all, or ``config`` given with an instance.
    """
    device = next(model.parameters()).device
    if prior is None:
        if own is None:
            raise ConfigError("this pipeline has no prior; pass one, e.g. fit_prior(data, 'gmm')")
        return own.to(device)
    shared = {"num_codes": model.quantizer.num_tokens}
    if config.get("conditional"):
        shared["num_classes"] = data.num_classes
    chosen: Prior = component("prior", prior, shared, config)
    return chosen if isinstance(prior, Prior) else chosen.to(device)


def fit_prior_stage(
    model: VQVAE,
    prior: Prior,
    data: ImageDataset,
    *,
    progress: bool = True,
    checkpoint_path: str | Path | None = None,
    resume: bool = False,
) -> Prior:
    """Stage 2: fit ``prior`` on the codes (or latents) of ``data``'s training images under ``model``.

    The model is frozen while the prior fits. A prior that fits on a subsample of the rows
    (:meth:`~vqtoolkit.priors.base.Prior.fit_rows`) has only those images encoded. Across processes
    each one encodes its share; a prior that
    :attr:`~vqtoolkit.priors.base.Prior.fits_on_every_rank` gets every code on every process and
    trains with DDP, any other is fitted on rank 0 and copied to the rest.

    Args:
        model: The trained stage-1 model.
        prior: The prior to fit, on the model's device.
        data: Training images (and labels, for a conditional prior).
        progress: Show progress (rank 0 only).
        checkpoint_path: A prior trained in epochs saves its fit here after each one; Ctrl-C then
            stops it with :class:`~vqtoolkit.errors.TrainingInterrupted`, leaving it resumable.
        resume: Continue from ``checkpoint_path``.

    Returns:
        The fitted prior (a copy received from rank 0 on the other processes, for closed-form fits).
    """
    distributed.init_from_env(next(model.parameters()).device)
    progress = progress and distributed.is_main()
    check_prior_matches(model, prior)
    with frozen(model):
        images, labels = data.train_images, data.train_labels
        rows = prior.fit_rows(len(images))
        if rows is not None:  # the prior learns from a subsample: encode only those images
            images, labels = images[rows], labels[rows]
        inputs = gathered_prior_inputs(model, images, space=prior.space, to_all=prior.fits_on_every_rank)
        if inputs is not None:  # None: the ranks that leave the fit to rank 0
            log.info(
                f"stage 2 · fitting {component_name(prior)} prior on {tuple(inputs.shape)} {prior.space}"
            )
            # with a checkpoint, Ctrl-C stops the fit after a step and leaves it resumable
            with stop_requests(enabled=checkpoint_path is not None) as stop:
                checkpoint = None
                if checkpoint_path is not None:
                    checkpoint = FitCheckpoint(Path(checkpoint_path), resume=resume, stop=stop)
                offered: dict[str, Any] = {} if checkpoint is None else {"checkpoint": checkpoint}
                if prior.space == "indices":  # grids cluster by what they decode to
                    offered["code_vectors"] = code_vectors(model)
                prior.fit(inputs, labels=labels, progress=progress, **fit_inputs_taken(prior, **offered))
    if not prior.fits_on_every_rank:
        prior_class = type(prior)
        prior = distributed.broadcast_module(prior, lambda config: prior_class(**config))
    return prior


@torch.inference_mode()
def prior_nll(
    model: VQVAE, prior: Prior | None, images: Images, labels: Tensor | None = None, *, batch_size: int = 1024
) -> float | None:
    """Held-out NLL of ``prior`` in bits per code, or ``None`` where it has no index likelihood.

    Without ``labels`` a conditional prior is scored by its marginal ``p(codes)``, the number
    comparable across priors; with them, by ``p(codes | label)``. Unconditional priors ignore labels.
    """
    if prior is None or not prior.has_likelihood or not prior.is_fitted:
        return None
    indices = prior_inputs(model, images, space="indices")
    if not prior.conditional:
        labels = None
    label_batches = [None] * len(indices.split(batch_size)) if labels is None else labels.split(batch_size)
    total = sum(
        float(-prior.log_prob(batch, batch_labels).sum())
        for batch, batch_labels in zip(indices.split(batch_size), label_batches, strict=True)
    )
    return bits_per_code(total, indices.numel())


def prior_metrics(
    model: VQVAE, prior: Prior | None, images: Images, labels: Tensor | None = None
) -> dict[str, float | None]:
    """The prior's held-out bits per code, marginal and (when labels are given) per label.

    ``prior_bits_per_code`` is marginal, comparable across priors (``None`` for latent priors such
    as gmm, whose density is over continuous latents); for a conditional prior given ``labels``,
    ``prior_bits_per_code_given_label`` adds the label.
    """
    result = {"prior_bits_per_code": prior_nll(model, prior, images)}
    if prior is not None and prior.conditional and labels is not None:
        result["prior_bits_per_code_given_label"] = prior_nll(model, prior, images, labels)
    return result


def record_prior_fit(info: dict[str, Any], model: VQVAE, prior: Prior, data: ImageDataset) -> None:
    """Write into ``info`` what a prior fit leaves: its history and its held-out scores on ``data``."""
    info.pop("prior_history", None)  # facts about a replaced prior must not linger
    if getattr(prior, "history", None):
        info["prior_history"] = prior.history
    metrics = info.setdefault("metrics", {})
    for key in ("test_prior_bits_per_code", "test_prior_bits_per_code_given_label"):
        metrics.pop(key, None)
    for key, value in prior_metrics(model, prior, data.test_images, data.test_labels).items():
        if value is not None:
            metrics[f"test_{key}"] = value
