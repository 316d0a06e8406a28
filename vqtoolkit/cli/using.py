"""Commands that use a trained bundle: ``sample``, ``reconstruct``, ``interpolate`` and ``eval``."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from vqtoolkit.cli.common import (
    check_image_output,
    check_sample_memory,
    emit_json,
    friendly_errors,
    text,
)
from vqtoolkit.cli.options import (
    BundleSource,
    bundle_source,
    count_option,
    data_options,
    json_option,
    output_option,
    seed_option,
    temperature_option,
)
from vqtoolkit.cli.sampling import Sampling, drawing_options, sampling_options
from vqtoolkit.errors import ConfigError

if TYPE_CHECKING:
    from torch import Tensor

    from vqtoolkit.data.datasets import ImageDataset
    from vqtoolkit.pipeline import Pipeline


@click.command()
@drawing_options(
    64,
    "How many images.",
    "Same seed, same images.",
    "Every prior: below 1, cleaner, less varied samples; above 1, more varied.",
)
@click.option("--label", type=int, default=None, help="Class to draw (needs a prior fitted --conditional).")
@output_option(Path("samples.png"), "A .png or .jpg grid, or .npy for the raw images (N, C, H, W) in [0, 1].")
@json_option()
@bundle_source()
@friendly_errors
def sample(
    bundle: BundleSource,
    num_samples: int,
    seed: int,
    temperature: float,
    sampling: Sampling,
    label: int | None,
    output: Path,
    as_json: bool,
) -> None:
    """Draw new images from a bundle's prior.

    Which prior takes which sampling option: --temperature every prior; --guidance pixelcnn,
    transformer and maskgit fitted with a label or clusters; --steps and --top-k maskgit alone
    (a prior that does not take one refuses it).

    \b
    Example:
      vqtool sample vqtool-out/model.safetensors -n 64 -o grid.png
      vqtool sample cond.safetensors -n 16 --label 3 --temperature 0.8 --seed 1 -o threes.npy
      vqtool sample cond.safetensors -n 16 --label 3 --guidance 2 -o threes.png
      vqtool sample maskgit.safetensors -n 64 --steps 12 --top-k 32 -o grid.png
    """
    check_image_output(output)
    pipe = sampling.apply(bundle.load())  # before importing torch: a file that is no bundle fails fast
    import torch

    from vqtoolkit.data.images import save_grid

    check_sample_memory(num_samples, pipe.info.get("image_shape") or (1, 28, 28))
    images = pipe.sample(
        num_samples, label=label, temperature=temperature, generator=torch.Generator().manual_seed(seed)
    )
    save_grid(images, output)
    if as_json:
        emit_json({"output": str(output), "num_samples": num_samples, "seed": seed, "label": label})
    else:
        click.echo(f"wrote {num_samples} samples to {output}")


@click.command()
@count_option("-n", "--num-images", "num_images", default=32, help="How many held-out images.")
@data_options(None)
@output_option(
    Path("reconstructions.png"),
    "A .png or .jpg grid (originals above, reconstructions below), or .npy.",
)
@json_option()
@bundle_source()
@friendly_errors
def reconstruct(
    bundle: BundleSource,
    num_images: int,
    dataset: str | None,
    data_root: Path | None,
    output: Path,
    as_json: bool,
) -> None:
    """Encode and decode held-out images through a bundle's stage 1, to see what it keeps.

    \b
    Example:
      vqtool reconstruct vqtool-out/model.safetensors -n 16 -o recon.png
    """
    import torch

    from vqtoolkit.data.images import save_grid
    from vqtoolkit.data.streaming import as_tensor
    from vqtoolkit.scoring import metrics

    check_image_output(output)
    pipe = bundle.load()
    originals = as_tensor(pipe.dataset(data_root, name=dataset).test_images[:num_images])
    recon = pipe.reconstruct(originals).cpu()
    images = recon if output.suffix == ".npy" else torch.cat([originals, recon])
    save_grid(images, output, nrow=min(8, len(originals)), sections=1 if output.suffix == ".npy" else 2)
    mse = metrics.mse(recon, originals)
    if as_json:
        emit_json({"output": str(output), "num_images": len(originals), "test_mse": mse})
    else:
        click.echo(f"wrote {len(originals)} reconstructions to {output} (test mse {mse:.5f})")


def pick_image(spec: str, pipe: Pipeline, data: Callable[[], ImageDataset]) -> Tensor:
    """An image given as a test-split index of the bundle's dataset or as an image file path."""
    from vqtoolkit.data.images import load_image
    from vqtoolkit.data.streaming import as_tensor

    if spec.lstrip("-").isdigit():
        images = data().test_images
        index = int(spec)
        if not 0 <= index < len(images):
            raise ConfigError(f"image index {index} is outside the test split (0 to {len(images) - 1})")
        return as_tensor(images[index : index + 1])[0]
    shape = pipe.info.get("image_shape")
    if shape is None:
        raise ConfigError("the bundle does not record its image shape; pass test-split indices instead")
    return load_image(spec, shape)


@click.command()
@click.option(
    "--from",
    "start",
    required=True,
    metavar="IMG_OR_INDEX",
    help="First image: a file or a test-split index.",
)
@click.option(
    "--to", "end", required=True, metavar="IMG_OR_INDEX", help="Last image: a file or a test-split index."
)
@count_option("--steps", default=10, minimum=2, help="Images in the strip, ends included.")
@data_options(None)
@output_option(
    Path("strip.png"), "A .png or .jpg strip, or .npy for the raw images (STEPS, C, H, W) in [0, 1]."
)
@bundle_source()
@friendly_errors
def interpolate(
    bundle: BundleSource,
    start: str,
    end: str,
    steps: int,
    dataset: str | None,
    data_root: Path | None,
    output: Path,
) -> None:
    """Walk from one image to another through the latent space, snapped to codes at every step.

    An index picks an image of the bundle's test split; a path reads an image file, converted
    to the model's channels and size. The strip's ends are the two images' reconstructions.

    \b
    Example:
      vqtool interpolate vqtool-out/model.safetensors --from 0 --to 7 -o strip.png
      vqtool interpolate mnist.safetensors --from three.png --to 12 --steps 8 --data-root ../shared/data
    """
    from vqtoolkit.data.images import save_grid

    check_image_output(output)
    pipe = bundle.load()
    data = functools.cache(lambda: pipe.dataset(data_root, name=dataset))
    strip = pipe.interpolate(pick_image(start, pipe, data), pick_image(end, pipe, data), steps)
    save_grid(strip.cpu(), output, nrow=steps)
    click.echo(f"wrote {steps} images from {start} to {end} to {output}")


@click.command("eval")
@data_options(None)
@count_option(
    "-n",
    "--num-samples",
    "num_samples",
    minimum=2,
    help="Also draw this many samples and score them with the dataset's classifier (trained and "
    "cached on first use) beside real images.",
)
@click.option("--samples", "samples_alias", type=click.IntRange(min=2), default=None, hidden=True)
@temperature_option("Sampling temperature for --num-samples.")
@sampling_options()
@seed_option("Seed for --num-samples.")
@json_option()
@bundle_source()
@friendly_errors
def evaluate(
    bundle: BundleSource,
    dataset: str | None,
    data_root: Path | None,
    num_samples: int | None,
    samples_alias: int | None,
    temperature: float,
    sampling: Sampling,
    seed: int,
    as_json: bool,
) -> None:
    """Score a bundle on held-out images: recon MSE/PSNR, perplexity, codes used, prior bits per code.

    Metric names are the ones build --json, inspect and the bundle use (test_mse, ...). The
    prior's NLL is in bits per code position, marginal over classes for a conditional prior
    (test_prior_bits_per_code_given_label adds the label); a latent prior (gmm) and maskgit (no
    exact likelihood) have none (null in --json, n/a in text). With -n/--num-samples N (or
    --samples N) it also scores N samples (classifier score, Fréchet distance to the test split,
    label accuracy of a conditional prior), each beside the same figure for real images, and the
    Fréchet distance of 5 random sets of N real images (how far it moves by chance alone). An
    unlabelled dataset (photos, a folder without class sub-folders) has no classifier: eval
    prints its reconstruction metrics and says the samples were not scored.

    \b
    Example:
      vqtool eval vqtool-out/model.safetensors --json
      vqtool eval vqtool-out/model.safetensors --samples 1000
    """
    from vqtoolkit.components import registry

    pipe = sampling.apply(bundle.load())
    data = pipe.dataset(data_root, name=dataset)
    result: dict[str, Any] = {
        "dataset": data.name,
        "test_images": len(data.test_images),
        "num_codes": pipe.model.quantizer.num_codes,
        "prior": None if pipe.prior is None else registry.name_of(pipe.prior),
    }
    metrics = pipe.evaluate(data.test_images, data.test_labels)
    result.update({f"test_{key}": value for key, value in metrics.items()})
    num_samples = num_samples or samples_alias
    if num_samples is not None:
        from vqtoolkit.scoring.classifier import unlabelled
        from vqtoolkit.scoring.sample_quality import format_scores, score_samples

        reason = unlabelled(data)
        if reason is None:
            result["sample_quality"] = score_samples(
                pipe, data, num_samples, temperature=temperature, seed=seed, progress=not as_json
            )
        else:  # unlabelled (photos): the reconstruction metrics are the whole score
            result["sample_quality"] = None
            result["sample_quality_note"] = f"not scored: {reason}"
    if as_json:
        emit_json(result)
        return
    for key, value in result.items():
        if key == "sample_quality":
            if value is not None:
                click.echo("\n".join(format_scores(value)))
        elif key == "sample_quality_note":
            click.echo(value)
        else:
            click.echo(f"{key:<39} {text(value)}")
