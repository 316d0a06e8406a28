"""Composition: ``build()`` wires registered components into a :class:`Pipeline`.

The pipeline trains in two stages (the autoencoder, then a prior on its codes), samples,
evaluates and saves. Its parts and what a trained one does with them (sample, reconstruct,
explore the codes, score) are a base class beside it, ``vqtoolkit.pipeline._base``; training,
saving and sharing are here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from vqtoolkit import stages
from vqtoolkit.components import registry
from vqtoolkit.compose import SHARED_OPTIONS, check_model_fits, components
from vqtoolkit.data.datasets import ImageDataset, load_dataset
from vqtoolkit.data.streaming import Images
from vqtoolkit.decoders.base import Decoder
from vqtoolkit.encoders.base import Encoder
from vqtoolkit.errors import ConfigError
from vqtoolkit.model.assemble import load_parts, save_parts
from vqtoolkit.model.vqvae import VQVAE
from vqtoolkit.pipeline._base import PipelineBase
from vqtoolkit.priors.base import Prior
from vqtoolkit.quantize.base import Quantizer
from vqtoolkit.runtime import distributed
from vqtoolkit.sharing import onnx as onnx_export
from vqtoolkit.sharing import pretrained
from vqtoolkit.training.config import TrainConfig
from vqtoolkit.training.loop import EpochCallback


def build(
    encoder: str | Encoder = "conv",
    quantizer: str | Quantizer = "ema",
    decoder: str | Decoder = "conv",
    prior: str | Prior | None = "gmm",
    *,
    in_channels: int | None = None,
    dim: int | None = None,
    num_codes: int | None = None,
    beta: float | None = None,
    encoder_config: dict[str, Any] | None = None,
    quantizer_config: dict[str, Any] | None = None,
    decoder_config: dict[str, Any] | None = None,
    prior_config: dict[str, Any] | None = None,
    seed: int = 0,
) -> Pipeline:
    """Assemble a VQ-VAE and its prior from registered names (or ready instances).

    Mismatched components, and models too large for the memory available, fail here, before any
    training. With the ``seed`` of :meth:`Pipeline.fit` as well, a whole run is reproducible.

    Args:
        encoder: A registered encoder name, or an instance (likewise ``quantizer`` and ``decoder``).
        quantizer: See ``encoder``.
        decoder: See ``encoder``.
        prior: A registered prior, an instance, or ``None`` for stage 1 alone.
        in_channels: Shared options (with ``dim``, ``num_codes``, ``beta``): each goes to every
            component whose constructor takes it; one that no chosen component takes is refused.
        dim: Shared; without it the encoder and decoder take the quantizer's own.
        num_codes: Shared (``fsq`` has none).
        beta: Shared: the commitment weight.
        encoder_config: Any other options of one component (likewise the other ``*_config``).
        quantizer_config: See ``encoder_config``.
        decoder_config: See ``encoder_config``.
        prior_config: See ``encoder_config``.
        seed: The initial weights, drawn from a private random stream (the caller's is untouched).

    Returns:
        The untrained :class:`Pipeline`.

    Raises:
        ComponentNotFoundError: A name that is not registered (with close matches).
        ConfigError: An option no component takes, parts that do not fit together, or too little memory.

    >>> pipe = build("conv", "vq", "conv", "gmm", dim=16, num_codes=32)
    >>> pipe.model.quantizer.num_codes
    32
    """
    shared = {"in_channels": in_channels, "dim": dim, "num_codes": num_codes, "beta": beta}
    registry.check_taken(
        shared, {"encoder": encoder, "quantizer": quantizer, "decoder": decoder}, SHARED_OPTIONS
    )
    configs = (encoder_config, quantizer_config, decoder_config, prior_config)
    with torch.random.fork_rng(devices=[]):  # the caller's random stream is left as it was
        check_model_fits(lambda: components(encoder, quantizer, decoder, prior, dict(shared), configs))
        torch.manual_seed(seed)
        enc, quant, dec, pri = components(encoder, quantizer, decoder, prior, dict(shared), configs)
    return Pipeline(VQVAE(enc, quant, dec), pri)


class Pipeline(PipelineBase):
    """A stage-1 :class:`VQVAE` plus an optional stage-2 :class:`Prior`: trained, saved and shared here.

    ``info`` records training facts (dataset, image shape, epochs, per-epoch history, metrics)
    and travels in saved bundles. Sampling, reconstructing, exploring the codes and scoring are
    inherited from the base class beside it.

    Args:
        model: The stage-1 model.
        prior: The prior over its codes, or ``None``.
        info: The training record (copied).
    """

    # -- training: the stages live in vqtoolkit.stages ------------------------------------------
    def fit(
        self,
        data: ImageDataset,
        config: TrainConfig | None = None,
        *,
        on_epoch_end: EpochCallback | None = None,
        **options: Any,
    ) -> Pipeline:
        """Both stages: train the autoencoder on ``data``, then fit the prior on its codes.

        Args:
            data: Training and held-out images (and labels, for a conditional prior).
            config: How stage 1 trains (see :meth:`fit_autoencoder`).
            on_epoch_end: Called with each stage-1 epoch's metrics record.
            **options: ``TrainConfig`` fields instead of ``config``; with ``log_dir``, prior
                samples are logged there too.

        Returns:
            ``self``, trained.

        Raises:
            ConfigError: Options ``TrainConfig`` refuses, or images the model cannot encode.
            TrainingError: Stage 1 diverged (unless ``allow_divergence``).
        """
        config = TrainConfig.of(config, **options)
        self.fit_autoencoder(data, config, on_epoch_end=on_epoch_end)
        if self.prior is not None:
            self.fit_prior(data, progress=config.progress)
            if config.log_dir is not None and distributed.is_main():
                self.log_samples(config.log_dir, seed=config.seed)
        return self

    def fit_autoencoder(
        self,
        data: ImageDataset,
        config: TrainConfig | None = None,
        *,
        on_epoch_end: EpochCallback | None = None,
        **options: Any,
    ) -> list[dict[str, Any]]:
        """Stage 1: train encoder, quantizer and decoder (:func:`~vqtoolkit.stages.train_autoencoder_stage`).

        ``seed`` fixes every random draw of training from a private stream: with :func:`build`'s, the
        same calls give the same weights bit for bit (same machine, torch version and threads).

        Args:
            data: Training and held-out images.
            config: A :class:`~vqtoolkit.training.config.TrainConfig`, or ``None`` for ``options``.
            on_epoch_end: Called with each epoch's metrics record.
            **options: ``TrainConfig`` fields (``epochs``, ``batch_size``, ``lr``, ``device``,
                ``checkpoint_path``, ``resume``, ...).

        Returns:
            The per-epoch history (also kept in ``info``, with the rest of the training record).

        Raises:
            ConfigError: Options ``TrainConfig`` refuses, or images the model cannot encode.
            TrainingError: Training diverged (unless ``allow_divergence``).
        """
        record = stages.train_autoencoder_stage(
            self.model, data, TrainConfig.of(config, **options), on_epoch_end=on_epoch_end
        )
        self.info.update(record.as_info())
        return record.history

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

        See :func:`~vqtoolkit.stages.prior_to_fit` and :func:`~vqtoolkit.stages.fit_prior_stage`.

        Args:
            data: Training images (and labels: a conditional prior learns ``p(codes | label)``, so
                ``sample`` can take ``label=``); its test split scores the fitted prior.
            prior: A registered name, a :class:`~vqtoolkit.priors.base.Prior`, or ``None`` for the
                pipeline's own.
            progress: Show progress.
            checkpoint_path: A prior trained in epochs (pixelcnn) is checkpointed here after each
                one, and Ctrl-C stops it with :class:`~vqtoolkit.errors.TrainingInterrupted`.
            resume: Continue from that checkpoint.
            **prior_config: Options of a prior given by name, e.g.
                ``fit_prior(data, "pixelcnn", conditional=True, epochs=5)``.

        Returns:
            The fitted prior, now the pipeline's.

        Raises:
            ConfigError: No prior given and none in the pipeline, or one for another codebook size.
        """
        self.prior = stages.prior_to_fit(self.model, prior, self.prior, data, prior_config)
        self.prior = stages.fit_prior_stage(
            self.model, self.prior, data, progress=progress, checkpoint_path=checkpoint_path, resume=resume
        )
        stages.record_prior_fit(self.info, self.model, self.prior, data)
        return self.prior

    def prior_inputs(self, images: Images, *, space: str, batch_size: int = 1024) -> Tensor:
        """What a prior of ``space`` fits on (:func:`~vqtoolkit.stages.prior_inputs`).

        Args:
            images: Images ``(N, C, H, W)`` in [0, 1].
            space: ``"indices"`` for code grids, ``"latents"`` for the encoder's latents.
            batch_size: Images encoded at a time.

        Returns:
            Code grids ``(N, h, w)`` or latents ``(N, D, h, w)``.
        """
        return stages.prior_inputs(self.model, images, space=space, batch_size=batch_size)

    def code_vectors(self) -> Tensor | None:
        """The stage-1 vector of every code a prior models (what clustered priors group grids by).

        Returns:
            ``(num_tokens, D)``, or ``None`` for a codebook too large to list.
        """
        return stages.code_vectors(self.model)

    def log_samples(self, log_dir: str | Path, *, n: int = 32, seed: int = 0) -> None:
        """Write a grid of prior samples to TensorBoard's ``images/samples`` at the last epoch.

        Args:
            log_dir: The TensorBoard log folder.
            n: How many samples.
            seed: Their seed.

        Raises:
            ConfigError: No fitted prior.
        """
        from vqtoolkit.training.tensorboard import log_samples

        samples = self.sample(n, generator=torch.Generator().manual_seed(seed))
        log_samples(log_dir, samples, int(self.info.get("epochs", 0)))

    def dataset(self, root: str | Path | None = None, *, name: str | None = None) -> ImageDataset:
        """The dataset this pipeline was trained on, loaded again with the same held-out split.

        Args:
            root: Where its files are (see :func:`~vqtoolkit.data.datasets.load_dataset`).
            name: Another dataset instead (e.g. to score on it).

        Returns:
            The dataset, split with the seed and resized to the image size :meth:`fit_autoencoder`
            recorded.

        Raises:
            ConfigError: No ``name`` and none recorded.
            DataError: The dataset's files are not under ``root``.
        """
        name = name or self.info.get("dataset")
        if name is None:
            raise ConfigError("the bundle does not record its dataset; pass --data (and --data-root)")
        shape = self.info.get("image_shape")
        size = shape[-1] if name == self.info.get("dataset") and shape and shape[-1] == shape[-2] else None
        return load_dataset(name, root, seed=int(self.info.get("seed", 0)), image_size=size)

    def save(self, path: str | Path) -> Path:
        """Write one ``.safetensors`` bundle, atomically (:mod:`vqtoolkit.storage.bundle`).

        Args:
            path: Where.

        Returns:
            The path written; across processes only rank 0 writes (the others hold the same weights).
        """
        if not distributed.is_main():
            return Path(path)
        return save_parts(path, self.model, self.prior, self.info)

    @classmethod
    def load(cls, path: str | Path, *, trust_provider: bool = False) -> Pipeline:
        """Rebuild the pipeline saved at ``path``, validated first.

        Args:
            path: A bundle written by :meth:`save`.
            trust_provider: As for :func:`vqtoolkit.load`.

        Returns:
            The pipeline.

        Raises:
            BundleError: What is wrong and what to do, from a truncated file to a plugin not installed.
        """
        return cls(*load_parts(path, trust_provider=trust_provider))

    def save_pretrained(self, folder: str | Path, **options: Any) -> Path:
        """Write a Hugging Face model folder (:func:`~vqtoolkit.sharing.pretrained.save_pretrained`).

        Args:
            folder: Where.
            **options: As :func:`~vqtoolkit.sharing.pretrained.save_pretrained` takes them.

        Returns:
            The folder.
        """
        return pretrained.save_pretrained(self, folder, **options)

    def push_to_hub(self, repo_id: str, **options: Any) -> str:
        """Upload the model folder to the Hub (:func:`~vqtoolkit.sharing.pretrained.push_to_hub`).

        Args:
            repo_id: ``"user/name"``.
            **options: As :func:`~vqtoolkit.sharing.pretrained.push_to_hub` takes them.

        Returns:
            The commit's URL.
        """
        return pretrained.push_to_hub(self, repo_id, **options)

    def export_onnx(self, folder: str | Path, **options: Any) -> dict[str, Any]:
        """Encoder and decoder as checked ONNX graphs (:func:`~vqtoolkit.sharing.onnx.export_onnx`).

        Args:
            folder: Where the graphs go.
            **options: As :func:`~vqtoolkit.sharing.onnx.export_onnx` takes them.

        Returns:
            What was written and checked, as that function reports it.
        """
        return onnx_export.export_onnx(self, folder, **options)


def load(path: str | Path, *, trust_provider: bool = False) -> Pipeline:
    """Rebuild the :class:`Pipeline` saved at ``path``, every part validated before anything is allocated.

    Args:
        path: A ``.safetensors`` bundle written by :meth:`Pipeline.save`.
        trust_provider: Accept a component installed from another distribution than the one the
            bundle declares (a fork or a renamed package you trust).

    Returns:
        The pipeline, in eval mode.

    Raises:
        BundleError: What is wrong and what to do, from a truncated file to a plugin not installed.
    """
    return Pipeline.load(path, trust_provider=trust_provider)
