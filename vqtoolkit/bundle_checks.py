"""Checks of a bundle that span its parts: training facts in ``info``, and what the prior samples.

Tensor shapes alone do not pin down everything a bundle decides: a PixelCNN's weights fit any
``grid_shape``, and a GMM's ``latent_shape`` of ``[64, 49]`` holds as many numbers as ``[64, 7, 7]``.
These fields only bite at sampling time (a hang, a 160 GB allocation, a raw reshape error), so the
loader checks them against the stage-1 model and against a sane bound instead.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from vqtoolkit.errors import BundleError
from vqtoolkit.model import VQVAE
from vqtoolkit.priors.base import Prior

#: Most latent positions a prior may sample per image (a 128×128 grid, e.g. 512×512 images at /4).
MAX_POSITIONS = 128 * 128
#: Most codes (and prior tokens) a quantizer may have: per-code counts are allocated on every step.
MAX_CODES = 2**31
#: Largest image side ``info.image_shape`` may record.
MAX_IMAGE_SIDE = 1 << 14


def _integer(low: int, high: int | None = None) -> Callable[[Any], bool]:
    return lambda v: (
        isinstance(v, int) and not isinstance(v, bool) and v >= low and (high is None or v < high)
    )


def _image_shape(value: Any) -> bool:
    side = _integer(1, MAX_IMAGE_SIDE + 1)
    return isinstance(value, list) and len(value) == 3 and all(side(v) for v in value)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


#: The ``info`` fields vqtoolkit reads back, each with a test and what it must be. Others are kept as is.
INFO_FIELDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "dataset": (lambda v: isinstance(v, str), "a string"),
    "image_shape": (_image_shape, f"three sizes [C, H, W] between 1 and {MAX_IMAGE_SIDE}"),
    "num_classes": (lambda v: v is None or _integer(1)(v), "a positive integer or null"),
    "epochs": (_integer(0), "a non-negative integer"),
    "batch_size": (_integer(1), "a positive integer"),
    "lr": (_number, "a number"),
    "lr_schedule": (lambda v: isinstance(v, str), "a string"),
    "seed": (_integer(-(2**63), 2**64), "an integer seed"),
    "device": (lambda v: isinstance(v, str), "a string"),
    "precision": (lambda v: isinstance(v, str), "a string"),
    "history": (lambda v: isinstance(v, list), "a list"),
    "prior_history": (lambda v: isinstance(v, list), "a list"),
    "metrics": (lambda v: isinstance(v, dict), "an object"),
}


def check_info(info: Any) -> None:
    """Raise a :class:`BundleError` naming the first ``info`` field vqtoolkit reads that has a bad value."""
    if not isinstance(info, dict):
        raise BundleError("the bundle's 'info' must be a JSON object")
    for key, (valid, what) in INFO_FIELDS.items():
        if key in info and not valid(info[key]):
            raise BundleError(f"the bundle's info.{key} is {info[key]!r}; it must be {what}")


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
    shape = prior.sample_shape if prior.is_fitted else None
    if shape is None:
        return
    field = "grid_shape" if prior.space == "indices" else "latent_shape"
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
