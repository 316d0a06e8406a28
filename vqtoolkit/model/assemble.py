"""A model from a bundle's components and back: the checks that span the parts, then the parts.

Tensor shapes alone do not pin down everything a bundle decides: a PixelCNN's weights fit any
``grid_shape``, and a GMM's ``latent_shape`` of ``[64, 49]`` holds as many numbers as ``[64, 7, 7]``.
These fields only bite at sampling time (a hang, a huge allocation, a raw reshape error), so loading
checks them against the stage-1 model and against a sane bound. :meth:`vqtoolkit.pipeline.Pipeline.load`
and :meth:`~vqtoolkit.pipeline.Pipeline.save` call :func:`load_parts` and :func:`save_parts`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

from torch import nn

from vqtoolkit.errors import BundleError, VQToolkitError
from vqtoolkit.model.vqvae import VQVAE
from vqtoolkit.priors.base import Prior
from vqtoolkit.storage import bundle

#: Most latent positions a prior may sample per image (a 128×128 grid, e.g. 512×512 images at /4).
MAX_POSITIONS = 128 * 128
#: Most codes (and prior tokens) a quantizer may have: per-code counts are allocated on every step.
MAX_CODES = 2**31


def latent_grid(model: VQVAE, info: Mapping[str, Any]) -> tuple[int, int] | None:
    """The ``(h, w)`` latent grid the encoder makes of the bundle's images (``None``: no image shape)."""
    shape = info.get("image_shape")
    if shape is None:
        return None
    channels, height, width = shape
    factor = int(getattr(model.encoder, "downsample", 1))
    if channels != model.in_channels or height % factor or width % factor:
        raise BundleError(
            f"the bundle's info.image_shape {shape} does not fit its encoder ({model.in_channels} channels, "
            f"sizes divisible by {factor})"
        )
    return height // factor, width // factor


def check_prior_shapes(model: VQVAE, prior: Prior, info: Mapping[str, Any]) -> None:
    """Refuse a fitted prior whose samples do not fit the stage-1 model, or exceed :data:`MAX_POSITIONS`.

    Index priors sample ``grid_shape`` grids of tokens; latent priors sample ``latent_shape``
    latents ``[D, h, w]`` that the quantizer snaps to codes, so ``D`` must be the quantizer's dim.
    Where ``info`` records the image shape, ``(h, w)`` must be the encoder's grid for it.
    """
    if not prior.is_fitted:
        return
    field = "grid_shape" if prior.space == "indices" else "latent_shape"
    shape = prior.sample_shape
    if shape is None:
        if field in prior.config:  # a fitted prior always records the shape it learned
            raise BundleError(f"the prior is marked fitted but its config has no {field}; refit the prior")
        return
    spatial = list(shape)
    if prior.space == "latents":
        dim = model.quantizer.dim
        if len(shape) < 2 or shape[0] != dim:
            raise BundleError(
                f"the prior's {field} {list(shape)} must be [{dim}, *grid]: the quantizer snaps latents of "
                f"{dim} channels"
            )
        spatial = spatial[1:]
    grid = latent_grid(model, info)
    if grid is not None and tuple(spatial) != grid:
        raise BundleError(
            f"the prior's {field} {list(shape)} does not match the {grid[0]}×{grid[1]} latent grid the "
            f"encoder makes of the bundle's {info['image_shape']} images; refit the prior"
        )
    if math.prod(spatial) > MAX_POSITIONS:
        raise BundleError(
            f"the prior's {field} {list(shape)} asks for more than {MAX_POSITIONS} positions per sample"
        )


def check_codebook(model: VQVAE) -> None:
    """Refuse a quantizer whose codebook size (e.g. fsq's product of ``levels``) no tensor bounds."""
    quantizer = model.quantizer
    for what, size in (("codes", quantizer.num_codes), ("prior tokens", quantizer.num_tokens)):
        if size > MAX_CODES:
            raise BundleError(
                f"the quantizer's config implies {size} {what} (more than {MAX_CODES}); check its levels "
                f"or num_codes"
            )


def load_parts(
    path: str | Path, *, trust_provider: bool = False
) -> tuple[VQVAE, Prior | None, dict[str, Any]]:
    """The checked model (in eval mode), prior and ``info`` of the bundle at ``path``."""
    parts, info = bundle.load_components(path, trust_provider=trust_provider)
    prior = cast("Prior | None", parts.get("prior"))
    try:
        model = VQVAE(parts["encoder"], parts["quantizer"], parts["decoder"]).eval()  # type: ignore[arg-type]
        check_codebook(model)
        if prior is not None:
            check_prior_shapes(model, prior, info)
    except VQToolkitError as err:
        raise BundleError(f"{path}: {err}") from err
    return model, prior, info


def save_parts(path: str | Path, model: VQVAE, prior: Prior | None, info: Mapping[str, Any]) -> Path:
    """Write ``model``'s three components, ``prior`` (when there is one) and ``info`` as one bundle."""
    parts: dict[str, nn.Module] = {
        "encoder": model.encoder,
        "quantizer": model.quantizer,
        "decoder": model.decoder,
    }
    if prior is not None:
        parts["prior"] = prior
    return bundle.save(parts, info, path)
