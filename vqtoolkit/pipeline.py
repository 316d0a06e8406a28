"""Composition: ``build()`` wires registered components into a :class:`Pipeline`.

The pipeline trains in two stages (the autoencoder, then a prior on its codes), samples,
evaluates and saves.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from vqtoolkit import stages
from vqtoolkit._util.modes import eval_mode
from vqtoolkit.components import registry
from vqtoolkit.compose import SHARED_OPTIONS, check_model_fits, components, describe
from vqtoolkit.data.datasets import ImageDataset, load_dataset
from vqtoolkit.data.streaming import Images
from vqtoolkit.decoders.base import Decoder
from vqtoolkit.encoders.base import Encoder
from vqtoolkit.errors import ConfigError, ShapeError
from vqtoolkit.model.assemble import load_parts, save_parts
from vqtoolkit.model.vqvae import VQVAE
from vqtoolkit.priors import editing
from vqtoolkit.priors.base import Prior, SampleOptions
from vqtoolkit.quantize.base import Quantizer
from vqtoolkit.runtime import distributed
from vqtoolkit.sharing import onnx as onnx_export
from vqtoolkit.sharing import pretrained
from vqtoolkit.training.config import TrainConfig
from vqtoolkit.training.evaluation import evaluate_autoencoder
from vqtoolkit.training.loop import EpochCallback

if TYPE_CHECKING:
    from typing_extensions import Unpack


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


class Pipeline:
    """A stage-1 :class:`VQVAE` plus an optional stage-2 :class:`Prior`.

    ``info`` records training facts (dataset, image shape, epochs, per-epoch history, metrics)
    and travels in saved bundles.
    """

    def __init__(self, model: VQVAE, prior: Prior | None = None, info: dict[str, Any] | None = None) -> None:
        self.model = model
        self.prior = prior
        self.info: dict[str, Any] = dict(info or {})

    def __repr__(self) -> str:
        """Each component by registered name with its config, and what training recorded."""
        return describe(self.model, self.prior, self.info)

    @property
    def device(self) -> torch.device:
        """Where the model's weights live."""
        return next(self.model.parameters()).device

    def to(self, device: str | torch.device) -> Pipeline:
        """Move model and prior to ``device`` (``auto``, ``cpu``, ``cuda[:i]``, ``mps``); returns self."""
        from vqtoolkit.runtime.devices import resolve_device

        target = resolve_device(device)
        self.model.to(target)
        if self.prior is not None:
            self.prior.to(target)
        return self

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
        """What a prior of ``space`` fits on: encoder latents or code indices of ``images``."""
        return stages.prior_inputs(self.model, images, space=space, batch_size=batch_size)

    def code_vectors(self) -> Tensor | None:
        """The stage-1 vector of every code a prior models (what clustered priors group grids by)."""
        return stages.code_vectors(self.model)

    def prior_nll(self, images: Images, labels: Tensor | None = None) -> float | None:
        """Held-out NLL of the prior in bits per code (see :func:`~vqtoolkit.stages.prior_nll`)."""
        return stages.prior_nll(self.model, self.prior, images, labels)

    def prior_metrics(self, images: Images, labels: Tensor | None = None) -> dict[str, float | None]:
        """The prior's held-out bits per code, marginal and per label (see :func:`stages.prior_metrics`)."""
        return stages.prior_metrics(self.model, self.prior, images, labels)

    def log_samples(self, log_dir: str | Path, *, n: int = 32, seed: int = 0) -> None:
        """Write a grid of ``n`` prior samples to TensorBoard's ``images/samples`` at the last epoch."""
        from vqtoolkit.training.tensorboard import log_samples

        samples = self.sample(n, generator=torch.Generator().manual_seed(seed))
        log_samples(log_dir, samples, int(self.info.get("epochs", 0)))

    # -- using a trained pipeline -----------------------------------------------------------
    def _require_prior(self) -> Prior:
        if self.prior is None or not self.prior.is_fitted:
            raise ConfigError(
                "this model has no fitted prior to sample from; fit one with "
                "`vqtool fit-prior BUNDLE --prior pixelcnn -o NEW_BUNDLE` or "
                "pipeline.fit_prior(data, 'pixelcnn')"
            )
        return self.prior

    @torch.inference_mode()
    def sample_indices(self, n: int, **options: Unpack[SampleOptions]) -> Tensor:
        """Code indices of ``n`` new images drawn from the prior (latent samples snapped to codes)."""
        prior = self._require_prior()
        stages.check_prior_matches(self.model, prior)
        drawn = prior.sample(n, **options)
        if prior.space == "latents":
            return self.model.quantizer.quantize_indices(drawn)
        return self.model.quantizer.from_tokens(drawn)

    @torch.inference_mode()
    def sample(self, n: int, **options: Unpack[SampleOptions]) -> Tensor:
        """``n`` new images ``(n, C, H, W)`` in [0, 1]: prior sample → codes → decoder.

        ``options`` (:class:`SampleOptions`): ``label`` for a conditional prior, ``temperature``
        (below 1: cleaner, less varied samples) and a ``generator`` (same generator state, same images).
        """
        with eval_mode(self.model):
            indices = self.sample_indices(n, **options)
            return self.model.decode_indices(indices).clamp(0, 1)

    def reconstruct(self, images: Tensor) -> Tensor:
        """Images passed through encoder, quantizer and decoder."""
        with eval_mode(self.model):
            return self.model.reconstruct(images.to(self.device))

    # -- exploring the code space: encode and decode are a pair -------------------------------
    @torch.inference_mode()
    def encode(self, images: Tensor) -> Tensor:
        """Code grids ``(B, h, w)`` (the quantizer's index layout) of ``images`` ``(B, C, H, W)``.

        :meth:`decode` turns them back into images, so a grid can be edited in between (copy a
        region of one grid into another) and decoded.
        """
        with eval_mode(self.model):
            return self.model.encode(images.to(self.device))

    @torch.inference_mode()
    def decode(self, indices: Tensor) -> Tensor:
        """Images ``(B, C, H, W)`` in [0, 1] from code grids shaped like :meth:`encode`'s output."""
        expected = self.grid_shape()
        if expected is not None and tuple(indices.shape[1:]) != expected:
            raise ShapeError(
                f"expected code grids (B, {', '.join(map(str, expected))}) as pipe.encode returns; "
                f"got shape {tuple(indices.shape)}"
            )
        with eval_mode(self.model):
            return self.model.decode_indices(indices.to(self.device)).clamp(0, 1)

    def inpaint(self, images: Tensor, mask: Tensor, **options: Any) -> Tensor:
        """Redraw the region under ``mask`` by the prior (see :func:`vqtoolkit.priors.editing.inpaint`)."""
        return editing.inpaint(self.model, self.prior, images.to(self.device), mask, **options)

    def grid_shape(self) -> tuple[int, ...] | None:
        """Shape of one image's code grid (``(h, w)`` for one codebook), or ``None`` if unrecorded."""
        if (image_shape := self.info.get("image_shape")) is None:
            return None
        with torch.inference_mode():
            return tuple(self.encode(torch.zeros(1, *image_shape)).shape[1:])

    @torch.inference_mode()
    def interpolate(self, a: Tensor, b: Tensor, steps: int = 8) -> Tensor:
        """``steps`` images walking from image ``a`` to image ``b`` through the latent space.

        Both images ``(C, H, W)`` (or ``(1, C, H, W)``): see :meth:`VQVAE.interpolate`.
        """
        if steps < 2:
            raise ConfigError(f"interpolate needs steps >= 2 (both ends included); got {steps}")
        ends = []
        for name, image in (("a", a), ("b", b)):
            batch = image.unsqueeze(0) if image.ndim == 3 else image
            if batch.ndim != 4 or len(batch) != 1:
                raise ShapeError(f"{name} must be one image (C, H, W); got shape {tuple(image.shape)}")
            ends.append(batch.to(self.device))
        with eval_mode(self.model):
            return self.model.interpolate(ends[0], ends[1], steps).clamp(0, 1)

    def dataset(self, root: str | Path | None = None, *, name: str | None = None) -> ImageDataset:
        """The dataset this pipeline was trained on, loaded again with the same held-out split.

        Name, split seed and image size come from what :meth:`fit_autoencoder` recorded; ``name``
        picks another dataset instead (e.g. to score on a different one), ``root`` is where its
        files are (see :func:`~vqtoolkit.data.datasets.load_dataset`).
        """
        name = name or self.info.get("dataset")
        if name is None:
            raise ConfigError("the bundle does not record its dataset; pass --data (and --data-root)")
        shape = self.info.get("image_shape")
        size = shape[-1] if name == self.info.get("dataset") and shape and shape[-1] == shape[-2] else None
        return load_dataset(name, root, seed=int(self.info.get("seed", 0)), image_size=size)

    def evaluate(self, images: Images, labels: Tensor | None = None) -> dict[str, Any]:
        """Held-out reconstruction MSE/PSNR, perplexity, codes used and the prior's bits per code."""
        result: dict[str, Any] = dict(evaluate_autoencoder(self.model, images))
        result.update(self.prior_metrics(images, labels))
        return result

    def save(self, path: str | Path) -> Path:
        """Write one ``.safetensors`` bundle (atomically); see :mod:`vqtoolkit.storage.bundle`.

        Across processes only rank 0 writes (the others hold the same weights and return the path).
        """
        if not distributed.is_main():
            return Path(path)
        return save_parts(path, self.model, self.prior, self.info)

    @classmethod
    def load(cls, path: str | Path, *, trust_provider: bool = False) -> Pipeline:
        """Rebuild the pipeline saved at ``path``, validated first (see :func:`vqtoolkit.load`)."""
        return cls(*load_parts(path, trust_provider=trust_provider))

    def save_pretrained(self, folder: str | Path, **options: Any) -> Path:
        """Write a Hugging Face model folder (:func:`~vqtoolkit.sharing.pretrained.save_pretrained`)."""
        return pretrained.save_pretrained(self, folder, **options)

    def push_to_hub(self, repo_id: str, **options: Any) -> str:
        """Upload the model folder to the Hub, returning the commit URL (see :mod:`vqtoolkit.sharing`)."""
        return pretrained.push_to_hub(self, repo_id, **options)

    def export_onnx(self, folder: str | Path, **options: Any) -> dict[str, Any]:
        """Encoder and decoder as checked ONNX graphs (:func:`~vqtoolkit.sharing.onnx.export_onnx`)."""
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
