"""Composition: ``build()`` wires registered components into a :class:`Pipeline`.

The pipeline trains in two stages (the autoencoder, then a prior on its codes), samples,
evaluates and saves.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from vqtoolkit import distributed, registry
from vqtoolkit.data import ImageDataset
from vqtoolkit.decoders.base import Decoder
from vqtoolkit.encoders.base import Encoder
from vqtoolkit.errors import ConfigError, ShapeError, VQToolkitError
from vqtoolkit.fit_checkpoint import FitCheckpoint
from vqtoolkit.memory import check_fits
from vqtoolkit.metrics import bits_per_code
from vqtoolkit.model import VQVAE
from vqtoolkit.priors.base import Prior
from vqtoolkit.quantize.base import Quantizer
from vqtoolkit.schedule import DEFAULT_LR, DEFAULT_SCHEDULE
from vqtoolkit.streaming import Images
from vqtoolkit.train import evaluate_autoencoder, stop_requests, train_autoencoder

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

log = logging.getLogger(__name__)

#: build()'s shared options, and the constructor option each component receives them as.
SHARED_OPTIONS: dict[str, dict[str, str]] = {
    "encoder": {"in_channels": "in_channels", "dim": "dim"},
    "quantizer": {"dim": "dim", "num_codes": "num_codes", "beta": "beta"},
    "decoder": {"in_channels": "out_channels", "dim": "dim"},
    "prior": {"num_codes": "num_codes", "num_classes": "num_classes"},
}


def _component(kind: str, spec: Any, shared: dict[str, Any], config: dict[str, Any] | None) -> Any:
    """A ready component: an instance is used as is; a name is created with shared + own options."""
    if not isinstance(spec, str):
        if config:
            raise ConfigError(f"{kind}_config applies to a {kind} given by name, not to an instance")
        return spec
    accepted = registry.accepted_options(registry.get_class(kind, spec))
    options = {
        option: shared[key]
        for key, option in SHARED_OPTIONS[kind].items()
        if shared.get(key) is not None and (accepted is None or option in accepted)
    }
    options.update(config or {})
    return registry.create(kind, spec, **options)


def check_wiring(encoder: Encoder, quantizer: Quantizer, decoder: Decoder) -> None:
    """Raise a :class:`ShapeError` naming both sides of any mismatch between components."""

    def label(c: Any) -> str:
        return f"{c.kind} {getattr(c, 'registered_name', None) or type(c).__name__!r}"

    same_dim = f"pass the quantizer's dim to every component, build(dim={getattr(quantizer, 'dim', None)})"
    pairs = [
        (encoder, "dim", quantizer, "dim", same_dim),
        (quantizer, "dim", decoder, "dim", same_dim),
        (encoder, "in_channels", decoder, "out_channels", "the decoder must output the images' channels"),
        (encoder, "downsample", decoder, "upsample", "give them the same number of stages"),
    ]
    for a, a_attr, b, b_attr, fix in pairs:
        va, vb = getattr(a, a_attr, None), getattr(b, b_attr, None)
        if va is not None and vb is not None and va != vb:
            raise ShapeError(f"{label(a)} has {a_attr}={va} but {label(b)} has {b_attr}={vb}: {fix}")


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

    Shared options (``in_channels``, ``dim``, ``num_codes``, ``beta``) go to every component whose
    constructor takes them; ``*_config`` dicts pass anything else to one component. Without ``dim``,
    the encoder and decoder take the quantizer's own (64 for codebook quantizers, ``len(levels)`` for
    ``fsq``). Mismatched components, and models too large for the memory available, fail here,
    before any training.

    ``seed`` fixes the initial weights (drawn from a private random stream, so the caller's is
    untouched): the same call builds the same weights, bit for bit. With the ``seed`` of
    :meth:`Pipeline.fit` (shuffling and every random draw in training) a whole run is reproducible.

    >>> pipe = build("conv", "vq", "conv", "gmm", dim=16, num_codes=32)
    >>> pipe.model.quantizer.num_codes
    32
    """
    shared = {"in_channels": in_channels, "dim": dim, "num_codes": num_codes, "beta": beta}
    configs = (encoder_config, quantizer_config, decoder_config, prior_config)
    with torch.random.fork_rng(devices=[]):  # the caller's random stream is left as it was
        _check_model_fits(lambda: _components(encoder, quantizer, decoder, prior, dict(shared), configs))
        torch.manual_seed(seed)
        enc, quant, dec, pri = _components(encoder, quantizer, decoder, prior, dict(shared), configs)
    return Pipeline(VQVAE(enc, quant, dec), pri)


def _components(
    encoder: str | Encoder,
    quantizer: str | Quantizer,
    decoder: str | Decoder,
    prior: str | Prior | None,
    shared: dict[str, Any],
    configs: tuple[dict[str, Any] | None, ...],
) -> tuple[Any, Any, Any, Any]:
    """Create the four components; the quantizer first, so its ``dim`` is the default for the others."""
    quant = _component("quantizer", quantizer, shared, configs[1])
    if shared.get("dim") is None:  # e.g. fsq's dim is len(levels): the encoder and decoder follow it
        shared["dim"] = getattr(quant, "dim", None)
    enc = _component("encoder", encoder, shared, configs[0])
    dec = _component("decoder", decoder, shared, configs[2])
    check_wiring(enc, quant, dec)
    shared["num_codes"] = quant.num_tokens
    pri = None if prior is None else _component("prior", prior, shared, configs[3])
    return enc, quant, dec, pri


def _display_name(component: Any) -> str:
    """The registered name, or the class name of a component not registered (yet): for messages only."""
    try:
        return registry.name_of(component)
    except ConfigError:
        return type(component).__name__


def _check_model_fits(make: Callable[[], tuple[Any, ...]]) -> None:
    """Refuse components whose training state (weights, gradients, Adam's two moments) cannot fit.

    ``make()`` creates them; here it runs on the ``meta`` device, which allocates nothing. Components
    that cannot be built there are left to the real build.
    """
    try:
        with torch.device("meta"):
            components = make()
    except VQToolkitError:
        raise
    except Exception:
        return
    modules = [c for c in components if isinstance(c, torch.nn.Module)]
    values = sum(t.numel() for m in modules for t in (*m.parameters(), *m.buffers()))
    config = getattr(components[1], "config", {})
    described = ", ".join(f"{k}={v}" for k, v in config.items() if k in ("num_codes", "dim"))
    check_fits(
        f"a model of {values:.3g} values ({described})",
        values * 4 * 4,
        "choose a smaller num_codes or dim (--num-codes, --dim)",
    )


def chain(*callbacks: Callable[[dict[str, Any]], None] | None) -> Callable[[dict[str, Any]], None]:
    """One epoch callback calling each given one in turn (``None`` entries are skipped)."""
    present = [c for c in callbacks if c is not None]

    def call(record: dict[str, Any]) -> None:
        for callback in present:
            callback(record)

    return call


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

        def describe(component: Any) -> str:
            name = getattr(component, "registered_name", None) or type(component).__name__
            config = ", ".join(f"{k}={v!r}" for k, v in getattr(component, "config", {}).items())
            return f"{name}({config})"

        parts = [
            f"  {role}={describe(component)}"
            for role, component in (
                ("encoder", self.model.encoder),
                ("quantizer", self.model.quantizer),
                ("decoder", self.model.decoder),
                ("prior", self.prior),
            )
            if component is not None
        ]
        if self.prior is None:
            parts.append("  prior=None")
        elif not self.prior.is_fitted:
            parts.append("  prior_fitted=False")
        facts: dict[str, Any] = {k: self.info[k] for k in ("dataset", "epochs", "seed") if k in self.info}
        metrics = self.info.get("metrics", {})
        facts.update(
            {k: round(v, 5) for k in ("test_mse", "test_perplexity") if (v := metrics.get(k)) is not None}
        )
        if facts:
            parts.append("  trained: " + ", ".join(f"{k}={v}" for k, v in facts.items()))
        return "Pipeline(\n" + ",\n".join(parts) + ",\n)"

    @property
    def device(self) -> torch.device:
        """Where the model's weights live."""
        return next(self.model.parameters()).device

    def to(self, device: str | torch.device) -> Pipeline:
        """Move model and prior to ``device`` (``auto``, ``cpu``, ``cuda[:i]``, ``mps``); returns self."""
        from vqtoolkit.devices import resolve_device

        target = resolve_device(device)
        self.model.to(target)
        if self.prior is not None:
            self.prior.to(target)
        return self

    # -- training ---------------------------------------------------------------------------
    def fit(
        self,
        data: ImageDataset,
        *,
        epochs: int | None = None,
        batch_size: int = 128,
        lr: float = DEFAULT_LR,
        lr_schedule: str = DEFAULT_SCHEDULE,
        seed: int = 0,
        progress: bool = True,
        **train_options: Any,
    ) -> Pipeline:
        """Both stages: train the autoencoder on ``data``, then fit the prior on its codes.

        ``train_options`` (device, precision, checkpoint_path, resume, log_path, log_dir, ...) go to
        :meth:`fit_autoencoder`; with ``log_dir``, prior samples are logged there too.
        """
        self.fit_autoencoder(
            data,
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            lr_schedule=lr_schedule,
            seed=seed,
            progress=progress,
            **train_options,
        )
        if self.prior is not None:
            self.fit_prior(data, progress=progress)
            if train_options.get("log_dir") is not None and distributed.is_main():
                self.log_samples(train_options["log_dir"], seed=seed)
        return self

    def log_samples(self, log_dir: str | Path, *, n: int = 32, seed: int = 0) -> None:
        """Write a grid of ``n`` prior samples to TensorBoard's ``images/samples`` at the last epoch."""
        from vqtoolkit.tensorboard import log_samples

        samples = self.sample(n, generator=torch.Generator().manual_seed(seed))
        log_samples(log_dir, samples, int(self.info.get("epochs", 0)))

    def fit_autoencoder(
        self,
        data: ImageDataset,
        *,
        epochs: int | None = None,
        batch_size: int = 128,
        lr: float = DEFAULT_LR,
        lr_schedule: str = DEFAULT_SCHEDULE,
        seed: int = 0,
        progress: bool = True,
        **train_options: Any,
    ) -> list[dict[str, Any]]:
        """Stage 1: train encoder, quantizer and decoder; returns the per-epoch history.

        ``seed`` fixes the shuffling and every random draw during training (k-means initialisation,
        revived codes), from a private random stream: with :func:`build`'s ``seed``, the same calls
        give the same weights and metrics bit for bit (same machine, torch version and threads).
        ``train_options`` go to :func:`~vqtoolkit.train.train_autoencoder` (device, precision, ...).
        ``log_dir`` (optional) also writes TensorBoard scalars, grids and the code-usage histogram there
        (:mod:`vqtoolkit.tensorboard`); the JSON-lines ``log_path`` stays the default record.
        """
        epochs = data.default_epochs if epochs is None else epochs
        log_dir = train_options.pop("log_dir", None)
        board = None
        if log_dir is not None and distributed.is_main():  # under torchrun, rank 0 alone logs
            from vqtoolkit.streaming import as_tensor
            from vqtoolkit.tensorboard import USAGE_IMAGES, TensorBoardLogger

            board = TensorBoardLogger(log_dir, self.model, as_tensor(data.test_images[:USAGE_IMAGES]))
            train_options["on_step"] = board.on_step
            train_options["on_epoch_end"] = chain(train_options.get("on_epoch_end"), board.on_epoch_end)
        try:
            with torch.random.fork_rng():
                torch.manual_seed(seed)
                history = train_autoencoder(
                    self.model,
                    data.train_images,
                    data.test_images,
                    epochs=epochs,
                    batch_size=batch_size,
                    lr=lr,
                    lr_schedule=lr_schedule,
                    seed=seed,
                    progress=progress,
                    **train_options,
                )
        finally:
            if board is not None:
                board.close()
        self.info.update(
            dataset=data.name,
            image_shape=list(data.image_shape),
            num_classes=data.num_classes,
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            lr_schedule=lr_schedule,
            seed=seed,
            history=history,
        )
        self.info["metrics"] = {k: v for k, v in history[-1].items() if k.startswith("test_")}
        return history

    @torch.inference_mode()
    def prior_inputs(self, images: Images, *, space: str, batch_size: int = 1024) -> Tensor:
        """What a prior of ``space`` fits on: encoder latents or code indices of ``images``."""
        self.model.eval()
        encode = self.model.encode_latents if space == "latents" else self.model.encode_tokens
        return torch.cat([encode(batch.to(self.device)) for batch in images.split(batch_size)])

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
        ``p(codes | label)`` from ``data``'s labels so :meth:`sample` can take ``label=``.

        Across processes (torchrun) each one encodes its share of the images; a prior that
        :attr:`~vqtoolkit.priors.base.Prior.fits_on_every_rank` (pixelcnn) gets all the codes on
        every process and trains with DDP, any other (gmm) is fitted on rank 0 and copied to the rest.
        ``checkpoint_path`` gets a prior trained in epochs (pixelcnn) checkpointed after each one, and
        Ctrl-C stops it with :class:`~vqtoolkit.errors.TrainingInterrupted`; ``resume=True``
        continues from that checkpoint (:mod:`vqtoolkit.fit_checkpoint`).
        """
        distributed.init_from_env(self.device)
        progress = progress and distributed.is_main()
        if prior is not None:
            shared = {"num_codes": self.model.quantizer.num_tokens}
            if prior_config.get("conditional"):
                shared["num_classes"] = data.num_classes
            self.prior = _component("prior", prior, shared, prior_config)
            if isinstance(prior, str):  # a new prior fits where the frozen model encodes
                self.prior.to(self.device)
        if self.prior is None:
            raise ConfigError("this pipeline has no prior; pass one, e.g. fit_prior(data, 'gmm')")
        self.check_prior_matches(self.prior)
        for p in self.model.parameters():
            p.requires_grad_(False)
        images, labels = data.train_images, data.train_labels
        rows = self.prior.fit_rows(len(images))
        if rows is not None:  # the prior learns from a subsample: encode only those images
            images, labels = images[rows], labels[rows]
        every_rank = self.prior.fits_on_every_rank
        inputs = self.gathered_prior_inputs(images, space=self.prior.space, to_all=every_rank)
        if inputs is not None:  # None on the ranks that leave the fit to rank 0
            shape = tuple(inputs.shape)
            log.info(f"stage 2 · fitting {_display_name(self.prior)} prior on {shape} {self.prior.space}")
            if checkpoint_path is None:
                self.prior.fit(inputs, labels=labels, progress=progress)
            else:
                saver = FitCheckpoint(Path(checkpoint_path), resume=resume)
                self.prior.fit_checkpoint = saver
                try:
                    with stop_requests(enabled=True) as saver.stop:
                        self.prior.fit(inputs, labels=labels, progress=progress)
                finally:
                    self.prior.fit_checkpoint = None
        if not every_rank:
            prior_class = type(self.prior)
            self.prior = distributed.broadcast_module(self.prior, lambda config: prior_class(**config))
        for p in self.model.parameters():
            p.requires_grad_(True)
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

    def check_prior_matches(self, prior: Prior) -> None:
        """Refuse an index prior fitted for a codebook of another size."""
        prior_codes = prior.config.get("num_codes")
        if (
            prior.space == "indices"
            and prior_codes is not None
            and prior_codes != self.model.quantizer.num_tokens
        ):
            raise ConfigError(
                f"the {registry.name_of(prior)} prior models {prior_codes} codes but the quantizer has "
                f"{self.model.quantizer.num_tokens}; refit it with `vqtool fit-prior`"
            )

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
    def sample_indices(
        self,
        n: int,
        *,
        label: int | None = None,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Code indices of ``n`` new images drawn from the prior (latent samples snapped to codes)."""
        prior = self._require_prior()
        self.check_prior_matches(prior)
        drawn = prior.sample(n, label=label, temperature=temperature, generator=generator)
        if prior.space == "latents":
            return self.model.quantizer.quantize_indices(drawn)
        return self.model.quantizer.from_tokens(drawn)

    @torch.inference_mode()
    def sample(
        self,
        n: int,
        *,
        label: int | None = None,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """``n`` new images ``(n, C, H, W)`` in [0, 1]: prior sample → codes → decoder."""
        self.model.eval()
        indices = self.sample_indices(n, label=label, temperature=temperature, generator=generator)
        return self.model.decode_indices(indices).clamp(0, 1)

    def reconstruct(self, images: Tensor) -> Tensor:
        """Images passed through encoder, quantizer and decoder."""
        self.model.eval()
        return self.model.reconstruct(images.to(self.device))

    # -- exploring the code space: encode and decode are a pair -------------------------------
    @torch.inference_mode()
    def encode(self, images: Tensor) -> Tensor:
        """Code grids ``(B, h, w)`` (the quantizer's index layout) of ``images`` ``(B, C, H, W)``.

        :meth:`decode` turns them back into images, so a grid can be edited in between (copy a
        region of one grid into another) and decoded.
        """
        self.model.eval()
        return self.model.encode(images.to(self.device))

    @torch.inference_mode()
    def decode(self, indices: Tensor) -> Tensor:
        """Images ``(B, C, H, W)`` in [0, 1] from code grids shaped like :meth:`encode`'s output."""
        self.model.eval()
        expected = self.grid_shape()
        if expected is not None and tuple(indices.shape[1:]) != expected:
            raise ShapeError(
                f"expected code grids (B, {', '.join(map(str, expected))}) as pipe.encode returns; "
                f"got shape {tuple(indices.shape)}"
            )
        return self.model.decode_indices(indices.to(self.device)).clamp(0, 1)

    def grid_shape(self) -> tuple[int, ...] | None:
        """Shape of one image's code grid (``(h, w)`` for one codebook), or ``None`` if unrecorded."""
        image_shape = self.info.get("image_shape")
        if image_shape is None:
            return None
        with torch.inference_mode():
            return tuple(self.encode(torch.zeros(1, *image_shape)).shape[1:])

    @torch.inference_mode()
    def interpolate(self, a: Tensor, b: Tensor, steps: int = 8) -> Tensor:
        """``steps`` images walking from image ``a`` to image ``b`` through the latent space.

        Both images ``(C, H, W)`` (or ``(1, C, H, W)``) are encoded to continuous latents; each point
        on the straight line between them is snapped to its nearest codes by the quantizer and
        decoded. The ends are the reconstructions of ``a`` and ``b``. Returns ``(steps, C, H, W)``.
        """
        if steps < 2:
            raise ConfigError(f"interpolate needs steps >= 2 (both ends included); got {steps}")
        ends = []
        for name, image in (("a", a), ("b", b)):
            batch = image.unsqueeze(0) if image.ndim == 3 else image
            if batch.ndim != 4 or len(batch) != 1:
                raise ShapeError(f"{name} must be one image (C, H, W); got shape {tuple(image.shape)}")
            ends.append(batch.to(self.device))
        self.model.eval()
        za, zb = (self.model.encode_latents(x) for x in ends)
        t = torch.linspace(0, 1, steps, device=za.device).view(-1, 1, 1, 1)
        indices = self.model.quantizer.quantize_indices((1 - t) * za + t * zb)
        return self.model.decode_indices(indices).clamp(0, 1)

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

    def evaluate(self, images: Images, labels: Tensor | None = None) -> dict[str, Any]:
        """Held-out reconstruction MSE/PSNR, perplexity, codes used and the prior's bits per code."""
        result: dict[str, Any] = dict(evaluate_autoencoder(self.model, images))
        result.update(self.prior_metrics(images, labels))
        return result

    def save(self, path: str | Path) -> Path:
        """Write one ``.safetensors`` bundle (atomically); see :mod:`vqtoolkit.bundle`.

        Across processes only rank 0 writes (the others hold the same weights and return the path).
        """
        from vqtoolkit.bundle import save

        return save(self, path) if distributed.is_main() else Path(path)
