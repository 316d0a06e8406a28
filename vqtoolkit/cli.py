"""The ``vqtool`` command line: build, sample and inspect VQ-VAE models from registered components."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
import torch

import vqtoolkit
from vqtoolkit import registry
from vqtoolkit.data import DATASETS, ImageDataset, load_dataset
from vqtoolkit.errors import ConfigError, VQToolkitError
from vqtoolkit.images import save_grid

F = TypeVar("F", bound=Callable[..., Any])


def friendly_errors(command: F) -> F:
    """Turn vqtoolkit's own errors into a one-line ``Error: ...`` and exit status 1."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except VQToolkitError as err:
            raise click.ClickException(str(err)) from err

    return wrapper  # type: ignore[return-value]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(vqtoolkit.__version__, prog_name="vqtool")
def main() -> None:
    """vqtool: train, sample and inspect modular VQ-VAEs.

    \b
    Example:
      vqtool build --encoder conv --prior gmm
      vqtool sample vqtool-out/model.safetensors -n 64 -o grid.png
    """


@main.command()
@click.option("--encoder", default="conv", show_default=True, help="Registered encoder name (see `vqtool plugins`).")
@click.option("--quantizer", default="vq", show_default=True, help="Registered quantizer name.")
@click.option("--decoder", default="conv", show_default=True, help="Registered decoder name.")
@click.option("--prior", default="gmm", show_default=True, help="Registered prior: gmm, categorical, pixelcnn.")
@click.option("--conditional", is_flag=True, help="Fit a class-conditional prior (enables `vqtool sample --label`).")
@click.option("--data", "dataset", type=click.Choice(sorted(DATASETS)), default="digits", show_default=True,
              help="Dataset; `digits` is embedded and works offline.")
@click.option("--data-root", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder holding the dataset in torchvision's layout (e.g. ROOT/MNIST/raw).")
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="Stage-1 epochs [default: per dataset].")
@click.option("--num-codes", "--codes", type=click.IntRange(min=1), default=512, show_default=True, help="Codebook size K.")
@click.option("--dim", type=click.IntRange(min=1), default=64, show_default=True, help="Code dimension D.")
@click.option("--beta", type=click.FloatRange(min=0), default=0.25, show_default=True, help="Commitment weight β.")
@click.option("--batch-size", type=click.IntRange(min=1), default=128, show_default=True)
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=1e-3, show_default=True, help="Adam learning rate.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for weights, shuffling and sampling.")
@click.option("--samples", "num_samples", type=click.IntRange(min=1), default=64, show_default=True,
              help="Images in the sample grid.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              default=Path("vqtool-out/model.safetensors"), show_default=True, help="Bundle path; grids go beside it.")
@click.option("--quiet", is_flag=True, help="No progress bars or per-epoch lines.")
@friendly_errors
def build(
    encoder: str, quantizer: str, decoder: str, prior: str, conditional: bool, dataset: str, data_root: Path | None,
    epochs: int | None, num_codes: int, dim: int, beta: float, batch_size: int, lr: float, seed: int,
    num_samples: int, output: Path, quiet: bool,
) -> None:
    """Train both stages end to end and write a bundle plus sample and reconstruction grids.

    \b
    Example:
      vqtool build --encoder conv --prior gmm
      vqtool build --prior pixelcnn --conditional
      vqtool build --data mnist --data-root ../shared/data --epochs 1 -o runs/mnist.safetensors
    """
    torch.manual_seed(seed)
    data = load_dataset(dataset, data_root, seed=seed)
    pipe = vqtoolkit.build(
        encoder, quantizer, decoder, prior, in_channels=data.image_shape[0], dim=dim,
        num_codes=num_codes, beta=beta, prior_config={"conditional": True} if conditional else None,
    )
    if not quiet:
        click.echo(f"{data.describe()}; {encoder} → {quantizer} (K={num_codes}, D={dim}) → {decoder}, prior {prior}")
    pipe.fit(data, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, progress=not quiet)
    bundle = pipe.save(output)
    samples_png = output.with_name(f"{output.stem}-samples.png")
    recon_png = output.with_name(f"{output.stem}-reconstructions.png")
    save_grid(pipe.sample(num_samples, generator=torch.Generator().manual_seed(seed)), samples_png)
    originals = data.test_images[:32]
    save_grid(torch.cat([originals, pipe.reconstruct(originals)]), recon_png, nrow=8)
    m = pipe.info["metrics"]
    click.echo(
        f"test mse {m['test_mse']:.5f} (psnr {m['test_psnr']:.2f} dB), perplexity {m['test_perplexity']:.1f}, "
        f"codes used {m['test_codes_used']}/{num_codes}"
        + (f", prior {m['test_prior_bits_per_code']:.3f} bits/code" if "test_prior_bits_per_code" in m else "")
    )
    click.echo(f"bundle:          {bundle}\nsamples:         {samples_png}\nreconstructions: {recon_png}")


@main.command()
@click.argument("bundle", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-n", "num_samples", type=click.IntRange(min=1), default=64, show_default=True, help="How many images.")
@click.option("--seed", type=int, default=0, show_default=True, help="Same seed, same images.")
@click.option("--temperature", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True,
              help="Below 1: cleaner, less varied samples; above 1: more varied.")
@click.option("--label", type=int, default=None, help="Class to draw (needs a prior fitted --conditional).")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=Path("samples.png"),
              show_default=True, help="A .png grid, or .npy for the raw images (N, C, H, W) in [0, 1].")
@friendly_errors
def sample(
    bundle: Path, num_samples: int, seed: int, temperature: float, label: int | None, output: Path
) -> None:
    """Draw new images from a bundle's prior.

    \b
    Example:
      vqtool sample vqtool-out/model.safetensors -n 64 -o grid.png
      vqtool sample cond.safetensors -n 16 --label 3 --temperature 0.8 --seed 1 -o threes.npy
    """
    pipe = vqtoolkit.load(bundle)
    images = pipe.sample(
        num_samples, label=label, temperature=temperature, generator=torch.Generator().manual_seed(seed)
    )
    save_grid(images, output)
    click.echo(f"wrote {num_samples} samples to {output}")


def _bundle_dataset(pipe: vqtoolkit.Pipeline, dataset: str | None, data_root: Path | None) -> ImageDataset:
    """The bundle's dataset (same name and seed, so the same held-out split) unless overridden."""
    name = dataset or pipe.info.get("dataset")
    if name is None:
        raise ConfigError("the bundle does not record its dataset; pass --data (and --data-root if needed)")
    return load_dataset(name, data_root, seed=int(pipe.info.get("seed", 0)))


def _parse_options(pairs: tuple[str, ...]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs with JSON values (``epochs=3``, ``lr=0.001``); bare words stay strings."""
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--prior-option takes KEY=VALUE, e.g. --prior-option epochs=5; got {pair!r}")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


_data_options = [
    click.option("--data", "dataset", type=click.Choice(sorted(DATASETS)), default=None,
                 help="Dataset [default: the one the bundle was trained on]."),
    click.option("--data-root", type=click.Path(file_okay=False, path_type=Path), default=None,
                 help="Folder holding the dataset in torchvision's layout (needed for mnist)."),
]


def data_options(command: F) -> F:
    """``--data`` and ``--data-root`` for commands that read a bundle's dataset again."""
    for option in reversed(_data_options):
        command = option(command)
    return command


@main.command("fit-prior")
@click.argument("bundle", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--prior", required=True, help="Registered prior name: pixelcnn, categorical, gmm, ...")
@click.option("--conditional", is_flag=True, help="Learn p(codes | label) so `vqtool sample --label` works.")
@click.option("--prior-option", "prior_options", multiple=True, metavar="KEY=VALUE",
              help="Extra prior option (repeatable), e.g. --prior-option epochs=5.")
@data_options
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="New bundle path (the input bundle is never modified).")
@click.option("--quiet", is_flag=True, help="No progress bars or per-epoch lines.")
@friendly_errors
def fit_prior(
    bundle: Path, prior: str, conditional: bool, prior_options: tuple[str, ...], dataset: str | None,
    data_root: Path | None, output: Path, quiet: bool,
) -> None:
    """Fit a new stage-2 prior on a trained bundle's frozen stage 1 and write it to a new bundle.

    \b
    Example:
      vqtool fit-prior vqtool-out/model.safetensors --prior pixelcnn -o pixelcnn.safetensors
      vqtool fit-prior mnist.safetensors --prior pixelcnn --conditional \\
          --data-root ../shared/data -o cond.safetensors
    """
    if output.resolve() == bundle.resolve():
        raise ConfigError(f"-o {output} is the input bundle; write the new prior to another file")
    pipe = vqtoolkit.load(bundle)
    data = _bundle_dataset(pipe, dataset, data_root)
    options = _parse_options(prior_options)
    if conditional:
        options["conditional"] = True
    pipe.fit_prior(data, prior, progress=not quiet, **options)
    pipe.save(output)
    nll = pipe.info["metrics"].get("test_prior_bits_per_code")
    score = f"held-out {nll:.4f} bits/code" if nll is not None else "no index likelihood (a latent prior)"
    click.echo(f"{prior} prior: {score}\nbundle: {output}")


@main.command("eval")
@click.argument("bundle", type=click.Path(dir_okay=False, path_type=Path))
@data_options
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@friendly_errors
def evaluate(bundle: Path, dataset: str | None, data_root: Path | None, as_json: bool) -> None:
    """Score a bundle on held-out images: recon MSE/PSNR, perplexity, codes used, prior bits per code.

    The prior's NLL is in bits per code position, marginal over classes for a conditional prior
    (``prior_bits_per_code_given_label`` adds the label); a latent prior (gmm) reports null.

    \b
    Example:
      vqtool eval vqtool-out/model.safetensors --json
    """
    pipe = vqtoolkit.load(bundle)
    data = _bundle_dataset(pipe, dataset, data_root)
    result = {
        "dataset": data.name,
        "test_images": len(data.test_images),
        "num_codes": pipe.model.quantizer.num_codes,
        "prior": None if pipe.prior is None else registry.name_of(pipe.prior),
    }
    result.update(pipe.evaluate(data.test_images, data.test_labels))
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    for key, value in result.items():
        click.echo(f"{key:<34} {value:.5g}" if isinstance(value, float) else f"{key:<34} {value}")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def plugins(as_json: bool) -> None:
    """List installed components per kind and the distribution that provides each.

    \b
    Example:
      vqtool plugins
    """
    listing = {
        kind: [{"name": s.name, "distribution": s.distribution, "version": s.version, "object": s.value}
               for s in registry.specs(kind)]
        for kind in registry.KINDS
    }
    problems = [vars(p) for p in registry.problems()]
    if as_json:
        click.echo(json.dumps({"components": listing, "problems": problems}, indent=2))
        return
    for kind, entries in listing.items():
        click.echo(f"{kind}s:")
        for e in entries:
            click.echo(f"  {e['name']:<14} {e['distribution']} {e['version']}  ({e['object']})")
    if problems:
        click.echo("problems:")
        for p in problems:
            click.echo(f"  {p['kind']} {p['name']!r} ({p['distribution']}): {p['reason']}")
