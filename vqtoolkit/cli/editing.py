"""Commands that edit images by their codes: ``inpaint``."""

from __future__ import annotations

import functools
from pathlib import Path

import click

from vqtoolkit.cli.common import check_image_output, emit_json, friendly_errors
from vqtoolkit.cli.options import BundleSource, bundle_source, data_options, json_option, output_option
from vqtoolkit.cli.sampling import Sampling, drawing_options
from vqtoolkit.cli.using import pick_image
from vqtoolkit.errors import ConfigError


def parse_box(spec: str) -> tuple[int, int, int, int]:
    """``top,left,height,width`` in pixels as four whole numbers (height and width at least 1).

    Raises:
        ConfigError: Not four comma-separated whole numbers, or an empty box.
    """
    parts = spec.split(",")
    if len(parts) != 4 or not all(part.strip().isdigit() for part in parts):
        raise ConfigError(f"--box takes top,left,height,width in pixels, e.g. --box 14,0,14,28; got {spec!r}")
    top, left, height, width = (int(part) for part in parts)
    if height < 1 or width < 1:
        raise ConfigError(f"--box needs a height and width of at least 1 pixel; got {spec!r}")
    return top, left, height, width


@click.command()
@click.option(
    "--box",
    required=True,
    metavar="TOP,LEFT,HEIGHT,WIDTH",
    help="The pixel box to redraw, e.g. 14,0,14,28 for the bottom half of a 28×28 digit.",
)
@drawing_options(
    4,
    "How many completions of the image to draw.",
    "Same seed, same completions.",
    "Every prior: below 1, likelier codes in the box; above 1, more varied.",
)
@click.option("--label", type=int, default=None, help="Class to steer the box to (a --conditional prior).")
@data_options(None)
@output_option(
    Path("inpainted.png"),
    "A .png or .jpg row (the image, the image with the box blanked, the completions), or .npy "
    "for the completions (N, C, H, W) in [0, 1].",
)
@json_option()
@bundle_source()
@click.argument("image", metavar="IMAGE")
@friendly_errors
def inpaint(
    bundle: BundleSource,
    image: str,
    box: str,
    num_samples: int,
    seed: int,
    temperature: float,
    sampling: Sampling,
    label: int | None,
    dataset: str | None,
    data_root: Path | None,
    output: Path,
    as_json: bool,
) -> None:
    """Redraw a box of an image with the bundle's prior, keeping the codes outside it exactly.

    IMAGE is an image file or an index into the bundle's test split. Every code whose patch the box
    touches is drawn again given the others: a maskgit prior sees the codes on every side of the box;
    pixelcnn and transformer draw in raster order, seeing only the codes before each one (a weaker
    form); gmm and categorical cannot inpaint.

    \b
    Example:
      vqtool inpaint maskgit.safetensors 7 --box 14,0,14,28 -n 8 -o completed.png
      vqtool inpaint maskgit.safetensors digit.png --box 0,0,14,28 --steps 12 --data-root ../shared/data
    """
    import torch

    from vqtoolkit.data.images import save_grid
    from vqtoolkit.priors.editing import inpaint as inpaint_images

    check_image_output(output)
    top, left, height, width = parse_box(box)
    pipe = sampling.apply(bundle.load())
    original = pick_image(image, pipe, functools.cache(lambda: pipe.dataset(data_root, name=dataset)))
    size = original.shape[-2:]
    if top >= size[0] or left >= size[1]:
        raise ConfigError(f"--box {box} starts outside the {size[0]}×{size[1]} image")
    mask = torch.zeros(*size, dtype=torch.bool)
    mask[top : top + height, left : left + width] = True
    images = original.expand(num_samples, *original.shape).to(pipe.device)
    completed = inpaint_images(
        pipe.model, pipe.prior, images, mask, label=label, temperature=temperature,
        generator=torch.Generator(pipe.device).manual_seed(seed),
    ).cpu()  # fmt: skip
    if output.suffix == ".npy":
        save_grid(completed, output)
    else:
        blanked = original.masked_fill(mask, 0.5)[None]
        save_grid(torch.cat([original[None], blanked, completed]), output, nrow=num_samples + 2)
    if as_json:
        emit_json({"output": str(output), "num_samples": num_samples, "box": [top, left, height, width]})
    else:
        click.echo(f"wrote {num_samples} completions of {image} (box {box}) to {output}")
