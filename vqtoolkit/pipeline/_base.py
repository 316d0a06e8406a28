"""The pipeline's parts and what a trained one does with them: sample, reconstruct, explore, score.

:class:`PipelineBase` holds the stage-1 model, the prior and the ``info`` record;
:class:`vqtoolkit.pipeline.Pipeline` adds training, saving and sharing. Sampling and exploring
check their inputs in :mod:`vqtoolkit.model.codes`; scoring runs :mod:`vqtoolkit.stages`' functions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from vqtoolkit import stages
from vqtoolkit._util.modes import eval_mode
from vqtoolkit.compose import describe
from vqtoolkit.data.streaming import Images
from vqtoolkit.model import codes
from vqtoolkit.model.vqvae import VQVAE
from vqtoolkit.priors import editing
from vqtoolkit.priors.base import Prior, SampleOptions
from vqtoolkit.training.evaluation import evaluate_autoencoder

if TYPE_CHECKING:
    from typing_extensions import Self, Unpack


class PipelineBase:
    """The parts of a :class:`~vqtoolkit.pipeline.Pipeline` (its docstring says what they are), in use."""

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

    def to(self, device: str | torch.device) -> Self:
        """Move the model and the prior to ``device``.

        Args:
            device: ``auto`` (cuda, then mps, then cpu), ``cpu``, ``cuda[:i]``, ``mps`` or a ``torch.device``.

        Returns:
            ``self``.

        Raises:
            ConfigError: A device that is not there.
        """
        from vqtoolkit.runtime.devices import resolve_device

        target = resolve_device(device)
        self.model.to(target)
        if self.prior is not None:
            self.prior.to(target)
        return self

    # -- using a trained pipeline: the checks live in vqtoolkit.model.codes ----------------------
    @torch.inference_mode()
    def sample_indices(self, n: int, **options: Unpack[SampleOptions]) -> Tensor:
        """Code indices of ``n`` new images drawn from the prior (latent samples snapped to codes).

        Args:
            n: How many.
            **options: As for :meth:`sample`.

        Returns:
            Indices in the quantizer's layout, as :meth:`encode` returns them.

        Raises:
            ConfigError: No fitted prior, one for another codebook size, or options it refuses.
        """
        return codes.sample_indices(self.model, self.prior, n, **options)

    @torch.inference_mode()
    def sample(self, n: int, **options: Unpack[SampleOptions]) -> Tensor:
        """``n`` new images: prior sample → codes → decoder.

        Args:
            n: How many.
            **options: :class:`~vqtoolkit.priors.base.SampleOptions`: ``label`` for a conditional
                prior, ``temperature`` (below 1: cleaner, less varied samples) and a ``generator``
                (same generator state, same images).

        Returns:
            Images ``(n, C, H, W)`` in [0, 1].

        Raises:
            ConfigError: No fitted prior, one for another codebook size, or options it refuses.
        """
        with eval_mode(self.model):
            indices = self.sample_indices(n, **options)
            return self.model.decode_indices(indices).clamp(0, 1)

    def reconstruct(self, images: Tensor) -> Tensor:
        """Images passed through encoder, quantizer and decoder.

        Args:
            images: ``(B, C, H, W)`` in [0, 1].

        Returns:
            Their reconstructions, same shape, on the pipeline's device.

        Raises:
            ShapeError: Images the model cannot encode (channels, or a size its factor does not divide).
        """
        with eval_mode(self.model):
            return self.model.reconstruct(images.to(self.device))

    # -- exploring the code space: encode and decode are a pair -------------------------------
    @torch.inference_mode()
    def encode(self, images: Tensor) -> Tensor:
        """Code grids of ``images``; :meth:`decode` turns them back, so a grid can be edited in between.

        Args:
            images: ``(B, C, H, W)`` in [0, 1].

        Returns:
            Code grids ``(B, h, w)`` (the quantizer's index layout).

        Raises:
            ShapeError: Images the model cannot encode.
        """
        with eval_mode(self.model):
            return self.model.encode(images.to(self.device))

    @torch.inference_mode()
    def decode(self, indices: Tensor) -> Tensor:
        """Images from code grids shaped like :meth:`encode`'s output.

        Args:
            indices: Code grids ``(B, h, w)``.

        Returns:
            Images ``(B, C, H, W)`` in [0, 1].

        Raises:
            ShapeError: Grids of another shape than this model's images give.
        """
        codes.check_grids(indices, self.grid_shape())
        with eval_mode(self.model):
            return self.model.decode_indices(indices.to(self.device)).clamp(0, 1)

    def inpaint(self, images: Tensor, mask: Tensor, **options: Unpack[SampleOptions]) -> Tensor:
        """Redraw the region under ``mask`` by the prior (:func:`vqtoolkit.priors.editing.inpaint`).

        Args:
            images: ``(N, C, H, W)`` in [0, 1].
            mask: Boolean ``(H, W)`` or ``(N, H, W)``, true for the pixels to redraw.
            **options: How the new codes are drawn, as for :meth:`sample`.

        Returns:
            The edited images ``(N, C, H, W)`` in [0, 1], the codes outside the region kept exactly.

        Raises:
            ConfigError: No fitted prior, or one that cannot edit (gmm, categorical).
            ShapeError: A mask that does not cover the images.
        """
        return editing.inpaint(self.model, self.prior, images.to(self.device), mask, **options)

    def grid_shape(self) -> tuple[int, ...] | None:
        """Shape of one image's code grid.

        Returns:
            ``(h, w)`` for one codebook, or ``None`` when ``info`` records no image shape.
        """
        if (image_shape := self.info.get("image_shape")) is None:
            return None
        with torch.inference_mode():
            return tuple(self.encode(torch.zeros(1, *image_shape)).shape[1:])

    def interpolate(self, a: Tensor, b: Tensor, steps: int = 8) -> Tensor:
        """Images walking from image ``a`` to image ``b`` through the latent space, snapped to codes.

        Args:
            a: The first image, ``(C, H, W)`` or ``(1, C, H, W)``.
            b: The last image, likewise.
            steps: Images in the walk, ends included (see :meth:`VQVAE.interpolate`).

        Returns:
            ``(steps, C, H, W)`` in [0, 1]; the ends are the two images' reconstructions.

        Raises:
            ConfigError: ``steps`` below 2.
            ShapeError: ``a`` or ``b`` is not one image.
        """
        return codes.walk(self.model, a, b, steps)

    # -- scoring ---------------------------------------------------------------------------------
    def prior_nll(self, images: Images, labels: Tensor | None = None) -> float | None:
        """Held-out NLL of the prior (:func:`~vqtoolkit.stages.prior_nll`).

        Args:
            images: Held-out images.
            labels: Their labels: a conditional prior is then scored by ``p(codes | label)``.

        Returns:
            Bits per code, or ``None`` for a prior without an index likelihood (gmm, maskgit).
        """
        return stages.prior_nll(self.model, self.prior, images, labels)

    def prior_metrics(self, images: Images, labels: Tensor | None = None) -> dict[str, float | None]:
        """The prior's held-out bits per code (:func:`~vqtoolkit.stages.prior_metrics`).

        Args:
            images: Held-out images.
            labels: Their labels, to add the per-label figure of a conditional prior.

        Returns:
            ``prior_bits_per_code`` and, with labels, ``prior_bits_per_code_given_label``.
        """
        return stages.prior_metrics(self.model, self.prior, images, labels)

    def evaluate(self, images: Images, labels: Tensor | None = None) -> dict[str, Any]:
        """Score the pipeline on held-out images.

        Args:
            images: Held-out images.
            labels: Their labels (a conditional prior's per-label bits).

        Returns:
            ``mse``, ``psnr``, ``perplexity`` and ``codes_used`` of the reconstructions, and
            :meth:`prior_metrics`' keys.
        """
        result: dict[str, Any] = dict(evaluate_autoencoder(self.model, images))
        result.update(self.prior_metrics(images, labels))
        return result
