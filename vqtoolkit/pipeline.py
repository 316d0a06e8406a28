"""Composition: ``build()`` wires registered components into a :class:`Pipeline`.

The pipeline trains in two stages (the autoencoder, then a prior on its codes), samples,
evaluates and saves.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

import torch
from torch import Tensor

from vqtoolkit.runtime import distributed
from vqtoolkit.components import registry
from vqtoolkit.model.assemble import load_parts, save_parts
from vqtoolkit.data.datasets import ImageDataset, load_dataset
from vqtoolkit.decoders.base import Decoder
from vqtoolkit.encoders.base import Encoder
from vqtoolkit.errors import ConfigError, ShapeError, VQToolkitError
from vqtoolkit.training.evaluation import evaluate_autoencoder
from vqtoolkit.stages import TwoStageFitting
from vqtoolkit._util.memory import check_fits
from vqtoolkit.model.vqvae import VQVAE, check_wiring
from vqtoolkit._util.modes import eval_mode
from vqtoolkit.priors.base import Prior
from vqtoolkit.quantize.base import Quantizer
from vqtoolkit.data.streaming import Images
from vqtoolkit.training.loop import EpochCallback
from vqtoolkit.training.config import TrainConfig

if TYPE_CHECKING:
    from typing_extensions import Unpack

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
    constructor takes them, and one that no chosen component takes is refused (``fsq`` has no
    ``num_codes``); ``*_config`` dicts pass anything else to one component. Without ``dim``,
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
    registry.check_taken(
        shared, {"encoder": encoder, "quantizer": quantizer, "decoder": decoder}, SHARED_OPTIONS
    )
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


class SampleOptions(TypedDict, total=False):
    """How :meth:`Pipeline.sample` draws: a conditional prior's ``label``, ``temperature``, ``generator``."""

    label: int | None
    temperature: float
    generator: torch.Generator | None


class Pipeline(TwoStageFitting):
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
        from vqtoolkit.runtime.devices import resolve_device

        target = resolve_device(device)
        self.model.to(target)
        if self.prior is not None:
            self.prior.to(target)
        return self

    def new_prior(self, prior: str | Prior, shared: dict[str, Any], config: dict[str, Any]) -> Prior:
        """A prior from a name (with the ``shared`` options it takes) or an instance, as in :func:`build`."""
        created: Prior = _component("prior", prior, shared, config)
        return created

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

        ``config`` (or its :class:`~vqtoolkit.training.config.TrainConfig` fields as keywords: epochs,
        batch_size, lr, seed, device, precision, checkpoint_path, resume, log_path, log_dir, ...)
        goes to :meth:`fit_autoencoder`; with ``log_dir``, prior samples are logged there too.
        """
        config = TrainConfig.of(config, **options)
        self.fit_autoencoder(data, config, on_epoch_end=on_epoch_end)
        if self.prior is not None:
            self.fit_prior(data, progress=config.progress)
            if config.log_dir is not None and distributed.is_main():
                self.log_samples(config.log_dir, seed=config.seed)
        return self

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
        self.check_prior_matches(prior)
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
        with eval_mode(self.model):
            za, zb = (self.model.encode_latents(x) for x in ends)
            t = torch.linspace(0, 1, steps, device=za.device).view(-1, 1, 1, 1)
            indices = self.model.quantizer.quantize_indices((1 - t) * za + t * zb)
            return self.model.decode_indices(indices).clamp(0, 1)

    def dataset(self, root: str | Path | None = None, *, name: str | None = None) -> ImageDataset:
        """The dataset this pipeline was trained on, loaded again with the same held-out split.

        Name, split seed and image size come from what :meth:`fit_autoencoder` recorded; ``name``
        picks another dataset instead (e.g. to score on a different one), ``root`` is where its
        files are (see :func:`~vqtoolkit.data.datasets.load_dataset`).
        """
        name = name or self.info.get("dataset")
        if name is None:
            raise ConfigError(
                "the bundle does not record its dataset; pass --data (and --data-root if needed)"
            )
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
        """Rebuild the pipeline saved at ``path``, every part validated before anything is allocated.

        ``trust_provider=True`` accepts a component whose name is installed from another distribution
        than the one the bundle declares (a fork or a renamed package you trust). Every problem, from a
        truncated file to a plugin that is not installed, raises a
        :class:`~vqtoolkit.errors.BundleError` that says what is wrong and what to do.
        """
        return cls(*load_parts(path, trust_provider=trust_provider))


def load(path: str | Path, *, trust_provider: bool = False) -> Pipeline:
    """Rebuild the :class:`Pipeline` saved at ``path`` (validated first); see :meth:`Pipeline.load`."""
    return Pipeline.load(path, trust_provider=trust_provider)
