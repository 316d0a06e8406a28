"""Editing by codes: keep an image's codes outside a region and draw the codes inside it again.

:func:`inpaint` encodes images with a stage-1 model, turns a pixel mask into the code positions it
touches (:func:`code_region`), asks the prior to :meth:`~EditablePrior.resample` those given the
kept ones, and decodes. A prior offers editing by subclassing :class:`EditablePrior`:

* ``maskgit`` fills the region natively: its bidirectional network sees every kept code, on both
  sides of the region, in a few parallel steps;
* the autoregressive priors (``pixelcnn``, ``transformer``) subclass :class:`RasterEditing`: each
  masked position is drawn in raster order given every position before it, kept or drawn. This is
  a weaker form: a code never sees the kept codes after it (the bottom of a digit whose top is
  being redrawn), so the region joins its past smoothly and its future only by chance;
* ``gmm`` (whole-image latents) and ``categorical`` (independent positions) cannot edit, and
  :func:`inpaint` says so.

The condition of an edit: ``label`` if given (with the prior's guidance). Else maskgit draws a
label or cluster from its posterior given the kept codes (:meth:`~EditablePrior._groups_given`),
so the region is drawn as part of the digit the kept codes show. Else the network's "no
condition" row, where it learned one (``condition_dropout``), so the kept codes alone steer the
region. Else a label or cluster drawn by frequency.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

from vqtoolkit._util.modes import eval_mode
from vqtoolkit.components.base import component_name
from vqtoolkit.errors import ConfigError, ShapeError
from vqtoolkit.priors.base import Prior, SampleOptions
from vqtoolkit.priors.neural.base import NeuralIndexPrior, single_thread

if TYPE_CHECKING:
    from typing_extensions import Unpack


class CodeModel(Protocol):
    """What :func:`inpaint` needs of a stage-1 model (a :class:`~vqtoolkit.model.vqvae.VQVAE`)."""

    quantizer: Any

    def encode_tokens(self, x: Tensor) -> Tensor:
        """One prior token per latent position ``(B, h, w)``."""
        ...

    def decode_indices(self, indices: Tensor) -> Tensor:
        """Images from code indices."""
        ...


@dataclass(frozen=True)
class FillOptions:
    """How :meth:`EditablePrior._resample` draws the codes it fills in."""

    #: The condition of each row the network sees (``None``: unconditional); when guided, twice as
    #: many rows as grids, the second half "no condition".
    groups: Tensor | None
    #: Divides the logits.
    temperature: float
    #: The random stream of the draws.
    generator: torch.Generator | None


class EditablePrior(NeuralIndexPrior):
    """A network prior that can draw the codes of a region again given the rest (:meth:`resample`).

    Subclasses implement :meth:`_resample`; the guided twin rows are set up here.
    """

    def resample(
        self,
        indices: Tensor,
        keep: Tensor,
        *,
        label: int | None = None,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """``indices`` with the codes where ``keep`` is false drawn again given the kept ones.

        Args:
            indices: Code grids ``(N, H, W)``.
            keep: Boolean ``(H, W)`` or ``(N, H, W)``: true where a code stays exactly as it is.
            label: Class to steer the new codes to (a conditional prior); see the module docstring.
            temperature: Divides the logits (below 1: likelier codes).
            generator: Random stream of the draws (same state, same result).

        Returns:
            The edited grids ``(N, H, W)``, long; equal to ``indices`` wherever ``keep`` is true.

        Raises:
            ConfigError: Unfitted prior, or bad ``label``/``temperature``.
            ShapeError: ``indices`` or ``keep`` of the wrong shape.
        """
        n = len(indices)
        self.check_sample_args(max(n, 1), label, temperature)
        self.check_indices(indices)
        keep = torch.as_tensor(keep, device=indices.device)
        if keep.dtype != torch.bool or keep.shape not in (indices.shape, indices.shape[1:]):
            raise ShapeError(
                f"keep must be a boolean mask (H, W) or (N, H, W) for grids {tuple(indices.shape)}; got "
                f"{keep.dtype} {tuple(keep.shape)}"
            )
        device = self.class_log_prior.device
        tokens = indices.to(device, torch.long)
        masked = (~keep).expand_as(tokens).to(device)
        self.net.eval()  # the condition's inference and the draws both run the network for sampling
        with torch.inference_mode(), single_thread() if device.type == "cpu" else nullcontext():
            groups = self._edit_groups(tokens, ~masked, label, generator)
            guided = label is not None and self.guidance != 1
            if guided:
                assert groups is not None and self.groups is not None  # guidance needs a condition
                groups = torch.cat([groups, torch.full_like(groups, self.groups)])
            self._guided = guided
            try:
                return self._resample(tokens.clone(), masked, FillOptions(groups, temperature, generator))
            finally:
                self._guided = False

    def _edit_groups(
        self, indices: Tensor, keep: Tensor, label: int | None, generator: torch.Generator | None
    ) -> Tensor | None:
        """The condition of each edited grid (see the module docstring)."""
        n = len(indices)
        if self.groups is None or label is not None:
            return self.draw_groups(n, label, generator)
        inferred = self._groups_given(indices, keep, generator)
        if inferred is not None:
            return inferred
        if not self._config["condition_dropout"]:
            return self.draw_groups(n, label, generator)
        return torch.full((n,), self.groups, dtype=torch.long, device=self.class_log_prior.device)

    def _groups_given(
        self, indices: Tensor, keep: Tensor, generator: torch.Generator | None
    ) -> Tensor | None:
        """A label or cluster per grid given its kept codes, where the network can tell (else ``None``)."""
        return None

    def _resample(self, tokens: Tensor, masked: Tensor, fill: FillOptions) -> Tensor:
        """Fill ``tokens`` ``(N, H, W)`` where ``masked``, drawing as ``fill`` says."""
        raise NotImplementedError


class RasterEditing(EditablePrior):
    """Editing for autoregressive priors: masked positions drawn in raster order (one network pass each).

    The network's logits at a position depend only on the positions before it, so each masked
    position is drawn given every earlier one, kept or already drawn; later kept codes are not seen.
    """

    def _resample(self, tokens: Tensor, masked: Tensor, fill: FillOptions) -> Tensor:
        n, _, width = tokens.shape
        twins = 2 if self._guided else 1
        for position in masked.flatten(1).any(0).nonzero().flatten().tolist():
            i, j = divmod(position, width)
            logits = self.net(tokens.repeat(twins, 1, 1), fill.groups)[:, :, i, j]
            drawn = self._draw(logits, fill.temperature, fill.generator)[:n]
            rows = masked[:, i, j]
            tokens[rows, i, j] = drawn[rows]
        return tokens


def code_region(mask: Tensor, grid_shape: tuple[int, ...]) -> Tensor:
    """The code positions ``(N or 1, h, w)`` whose patch of the image overlaps a pixel ``mask``.

    Args:
        mask: Boolean ``(H, W)`` or ``(N, H, W)``: true for the pixels to redraw.
        grid_shape: ``(h, w)`` of the code grid.

    Returns:
        A boolean code mask: a code is redrawn if any pixel of its patch is.

    Raises:
        ShapeError: ``mask`` is not a 2-D or 3-D boolean tensor.
    """
    mask = torch.as_tensor(mask)
    if mask.dtype != torch.bool or mask.ndim not in (2, 3):
        raise ShapeError(f"mask must be a boolean (H, W) or (N, H, W); got {mask.dtype} {tuple(mask.shape)}")
    batch = mask if mask.ndim == 3 else mask[None]
    return F.adaptive_max_pool2d(batch[:, None].float(), tuple(grid_shape))[:, 0] > 0


def _cannot_edit(prior: Prior) -> str:
    why = (
        "it models whole-image latents, not codes one by one"
        if prior.space == "latents"
        else "it draws every position on its own, so the kept codes could not shape the new ones"
    )
    return (
        f"the {component_name(prior)} prior cannot inpaint: {why}; fit maskgit (or pixelcnn, transformer) "
        f"with `vqtool fit-prior BUNDLE --prior maskgit -o NEW`"
    )


def inpaint(
    model: CodeModel,
    prior: Prior | None,
    images: Tensor,
    mask: Tensor,
    **options: Unpack[SampleOptions],
) -> Tensor:
    """Images with the region under ``mask`` redrawn by ``prior``, the codes outside it kept exactly.

    Args:
        model: The stage-1 model (encodes and decodes).
        prior: A fitted :class:`EditablePrior` over ``model``'s codes (others are refused).
        images: ``(N, C, H, W)`` in [0, 1].
        mask: Boolean ``(H, W)`` or ``(N, H, W)``, true for the pixels to redraw; every code whose
            patch it touches is drawn again (:func:`code_region`).
        **options: How the new codes are drawn, as :meth:`EditablePrior.resample` takes them
            (:class:`~vqtoolkit.priors.base.SampleOptions`): a ``label`` to steer the region to (a
            conditional prior), a ``temperature``, a ``generator`` (same state, same images).

    Returns:
        The decoded edited images ``(N, C, H, W)`` in [0, 1].

    Raises:
        ConfigError: No fitted prior, one that cannot edit (gmm, categorical), or one for another
            codebook size.
        ShapeError: ``mask`` does not cover the images' height and width.
    """
    if prior is None or not prior.is_fitted:
        raise ConfigError(
            "this model has no fitted prior to inpaint with; fit one with "
            "`vqtool fit-prior BUNDLE --prior maskgit -o NEW_BUNDLE`"
        )
    if not isinstance(prior, EditablePrior):
        raise ConfigError(_cannot_edit(prior))
    if prior.num_codes != model.quantizer.num_tokens:
        raise ConfigError(
            f"the {component_name(prior)} prior models {prior.num_codes} codes but the quantizer has "
            f"{model.quantizer.num_tokens}; refit it with `vqtool fit-prior`"
        )
    if images.ndim != 4 or torch.as_tensor(mask).shape[-2:] != images.shape[-2:]:
        raise ShapeError(
            f"mask {tuple(torch.as_tensor(mask).shape)} must cover the images' (H, W) = "
            f"{tuple(images.shape[-2:])}, for images (N, C, H, W)"
        )
    with eval_mode(model), torch.inference_mode():  # type: ignore[arg-type]
        tokens = model.encode_tokens(images.to(prior.class_log_prior.device))
        region = code_region(mask, tuple(tokens.shape[1:])).to(tokens.device)
        edited = prior.resample(tokens, ~region.expand_as(tokens), **options)
        return model.decode_indices(model.quantizer.from_tokens(edited.to(tokens.device))).clamp(0, 1)
