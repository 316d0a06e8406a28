"""A trained model's code space, checked: prior samples as codes, grids of the right shape, walks.

What :class:`~vqtoolkit.pipeline.Pipeline`'s sampling and exploring methods do, as functions of the
stage-1 :class:`~vqtoolkit.model.vqvae.VQVAE` (and a prior): each refuses what it cannot use with a
message that says what to do instead.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from vqtoolkit._util.modes import eval_mode
from vqtoolkit.components.base import component_name
from vqtoolkit.errors import ConfigError, ShapeError
from vqtoolkit.model.vqvae import VQVAE
from vqtoolkit.priors.base import Prior, SampleOptions

if TYPE_CHECKING:
    from typing_extensions import Unpack


def check_prior_matches(model: VQVAE, prior: Prior) -> None:
    """Refuse an index prior fitted for a codebook of another size than ``model``'s.

    Args:
        model: The stage-1 model.
        prior: A prior over its codes (a latent prior always matches).

    Raises:
        ConfigError: The prior models another number of codes than the quantizer has.
    """
    prior_codes = prior.config.get("num_codes")
    num_codes = model.quantizer.num_tokens
    if prior.space == "indices" and prior_codes is not None and prior_codes != num_codes:
        raise ConfigError(
            f"the {component_name(prior)} prior models {prior_codes} codes but the quantizer has "
            f"{num_codes}; refit it with `vqtool fit-prior`"
        )


def sample_indices(model: VQVAE, prior: Prior | None, n: int, **options: Unpack[SampleOptions]) -> Tensor:
    """Code indices of ``n`` images drawn from ``prior`` (latent samples snapped to ``model``'s codes).

    Args:
        model: The stage-1 model whose codes the prior models.
        prior: The fitted prior.
        n: How many.
        **options: How to draw (:class:`~vqtoolkit.priors.base.SampleOptions`).

    Returns:
        Indices in the quantizer's layout, ``(n, h, w)`` for one codebook.

    Raises:
        ConfigError: No fitted prior, one for another codebook size, or options it refuses.
    """
    if prior is None or not prior.is_fitted:
        raise ConfigError(
            "this model has no fitted prior to sample from; fit one with "
            "`vqtool fit-prior BUNDLE --prior pixelcnn -o NEW_BUNDLE` or "
            "pipeline.fit_prior(data, 'pixelcnn')"
        )
    check_prior_matches(model, prior)
    drawn = prior.sample(n, **options)
    if prior.space == "latents":
        return model.quantizer.quantize_indices(drawn)
    return model.quantizer.from_tokens(drawn)


def check_grids(indices: Tensor, expected: tuple[int, ...] | None) -> None:
    """Refuse code grids that are not shaped as one image's grid, ``expected`` (``None``: unknown).

    Args:
        indices: Code grids ``(B, *grid)``.
        expected: One image's grid shape.

    Raises:
        ShapeError: ``indices`` are not ``(B, *expected)``.
    """
    if expected is not None and tuple(indices.shape[1:]) != expected:
        raise ShapeError(
            f"expected code grids (B, {', '.join(map(str, expected))}) as pipe.encode returns; "
            f"got shape {tuple(indices.shape)}"
        )


def walk(model: VQVAE, a: Tensor, b: Tensor, steps: int) -> Tensor:
    """``steps`` images from image ``a`` to image ``b`` (:meth:`~vqtoolkit.model.vqvae.VQVAE.interpolate`).

    Args:
        model: The stage-1 model.
        a: The first image, ``(C, H, W)`` or ``(1, C, H, W)``.
        b: The last image, likewise.
        steps: Images in the walk, both ends included.

    Returns:
        ``(steps, C, H, W)`` in [0, 1], on the model's device.

    Raises:
        ConfigError: ``steps`` below 2.
        ShapeError: ``a`` or ``b`` is not one image.
    """
    if steps < 2:
        raise ConfigError(f"interpolate needs steps >= 2 (both ends included); got {steps}")
    device = next(model.parameters()).device
    ends = []
    for name, image in (("a", a), ("b", b)):
        batch = image.unsqueeze(0) if image.ndim == 3 else image
        if batch.ndim != 4 or len(batch) != 1:
            raise ShapeError(f"{name} must be one image (C, H, W); got shape {tuple(image.shape)}")
        ends.append(batch.to(device))
    with eval_mode(model), torch.inference_mode():
        return model.interpolate(ends[0], ends[1], steps).clamp(0, 1)
