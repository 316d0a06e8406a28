"""The ``vqtool`` command line: build, sample and inspect VQ-VAE models from registered components."""

from __future__ import annotations

import functools
import json
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
import torch

import vqtoolkit
from vqtoolkit import registry
from vqtoolkit.data import DATASETS, ImageDataset, load_dataset
from vqtoolkit.devices import PRECISIONS
from vqtoolkit.errors import ConfigError, TrainingInterrupted, VQToolkitError
from vqtoolkit.images import save_grid
from vqtoolkit.schedule import DEFAULT_LR, DEFAULT_SCHEDULE, SCHEDULES

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


def stage1_options(command: F) -> F:
    """The options ``build`` and ``train`` share: components, data, training, device and outputs."""
    options = [
        click.option(
            "--encoder",
            default="conv",
            show_default=True,
            help="Registered encoder name (see `vqtool plugins`).",
        ),
        click.option(
            "--quantizer",
            default="ema",
            show_default=True,
            help="Registered quantizer name (`vq` is the classic tutorial layer).",
        ),
        click.option("--decoder", default="conv", show_default=True, help="Registered decoder name."),
        click.option(
            "--data",
            "dataset",
            type=click.Choice(sorted(DATASETS)),
            default="digits",
            show_default=True,
            help="Dataset; `digits` is embedded and works offline.",
        ),
        click.option(
            "--data-root",
            type=click.Path(file_okay=False, path_type=Path),
            default=None,
            help="Folder holding the dataset (ROOT/MNIST/raw, ROOT/FashionMNIST/raw, "
            "ROOT/cifar-10-batches-py, or a folder of images for --data folder).",
        ),
        click.option(
            "--image-size",
            type=click.IntRange(min=1),
            default=None,
            help="Resize images to this square size [default: as stored; 32 for --data folder].",
        ),
        click.option(
            "--stream/--no-stream",
            default=None,
            help="--data folder: read images from disk batch by batch (DataLoader workers) instead of "
            "into memory [default: stream when they would not fit comfortably in RAM].",
        ),
        click.option(
            "--epochs",
            type=click.IntRange(min=1),
            default=None,
            help="Stage-1 epochs [default: per dataset; the total when resuming].",
        ),
        click.option(
            "--num-codes",
            "--codes",
            type=click.IntRange(min=1),
            default=None,
            help="Codebook size K [default: per dataset: 64 for digits, 512 otherwise].",
        ),
        click.option(
            "--dim", type=click.IntRange(min=1), default=64, show_default=True, help="Code dimension D."
        ),
        click.option(
            "--beta",
            type=click.FloatRange(min=0),
            default=0.25,
            show_default=True,
            help="Commitment weight β.",
        ),
        click.option("--batch-size", type=click.IntRange(min=1), default=128, show_default=True),
        click.option(
            "--lr",
            type=click.FloatRange(min=0, min_open=True),
            default=DEFAULT_LR,
            show_default=True,
            help="Adam's peak learning rate.",
        ),
        click.option(
            "--lr-schedule",
            type=click.Choice(SCHEDULES),
            default=DEFAULT_SCHEDULE,
            show_default=True,
            help="cosine: 5% warm-up, then down to zero at the last epoch; constant: --lr throughout.",
        ),
        click.option(
            "--seed", type=int, default=0, show_default=True, help="Seed for weights, shuffling and sampling."
        ),
        click.option(
            "--device",
            default="auto",
            show_default=True,
            help="auto, cpu, cuda, cuda:N or mps (auto picks cuda, then mps, then cpu).",
        ),
        click.option(
            "--precision",
            type=click.Choice(PRECISIONS),
            default="32",
            show_default=True,
            help="Mixed precision for training: 32, bf16 (CPU/CUDA) or 16 (CUDA/MPS).",
        ),
        click.option(
            "--checkpoint",
            type=click.Path(dir_okay=False, path_type=Path),
            default=None,
            help="Checkpoint written each epoch [default: OUTPUT-checkpoint.safetensors].",
        ),
        click.option(
            "--resume", is_flag=True, help="Continue from --checkpoint (same options; --epochs may grow)."
        ),
        click.option(
            "--allow-divergence",
            is_flag=True,
            help="Keep a run whose loss diverged (worse than predicting the mean) instead of failing.",
        ),
        click.option(
            "-o",
            "--output",
            type=click.Path(dir_okay=False, path_type=Path),
            default=Path("vqtool-out/model.safetensors"),
            show_default=True,
            help="Bundle path; checkpoint, metrics log, plots and grids go beside it.",
        ),
        click.option(
            "--log",
            "log",
            type=(click.Choice(["tensorboard"]), click.Path(file_okay=False, path_type=Path)),
            default=None,
            metavar="tensorboard DIR",
            help="Also log scalars, image grids and code usage for TensorBoard in DIR "
            '(pip install "vqtoolkit[tensorboard]"); the JSON-lines metrics log is always written.',
        ),
        click.option("--quiet", is_flag=True, help="No progress bars or per-epoch lines."),
        click.option("--json", "as_json", is_flag=True, help="Print only a final machine-readable summary."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def beside(output: Path, suffix: str) -> Path:
    """A file next to the bundle: ``runs/m.safetensors`` → ``runs/m-<suffix>``."""
    return output.with_name(f"{output.stem}-{suffix}")


def trust_option(command: F) -> F:
    """``--trust-provider``, for commands that load a bundle (see :func:`vqtoolkit.bundle.load`)."""
    return click.option(
        "--trust-provider",
        is_flag=True,
        help="Load components installed from another distribution than the bundle declares.",
    )(command)


def hold_output(output: Path) -> None:
    """Lock ``output`` until the command ends: a second run writing it is refused (:mod:`vqtoolkit.lock`)."""
    from vqtoolkit.lock import output_lock

    click.get_current_context().with_resource(output_lock(output))


def resume_hint() -> str:
    """The command line that was run, with ``--resume`` added (under torchrun, with torchrun in front)."""
    import os

    world, local = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    args = [sys.argv[0] if world > 1 else "vqtool", *sys.argv[1:]]
    command = shlex.join(args if "--resume" in args else [*args, "--resume"])
    if world == 1:
        return command
    launcher = f"torchrun --nproc_per_node {local}" if world == local else "torchrun <the same options>"
    return f"{launcher} {command}"


def train_stage1(
    prior: str | None,
    *,
    encoder: str,
    quantizer: str,
    decoder: str,
    dataset: str,
    data_root: Path | None,
    image_size: int | None,
    stream: bool | None,
    epochs: int | None,
    num_codes: int | None,
    dim: int,
    beta: float,
    batch_size: int,
    lr: float,
    lr_schedule: str,
    seed: int,
    device: str,
    precision: str,
    checkpoint: Path | None,
    resume: bool,
    output: Path,
    quiet: bool,
    as_json: bool,
    log: tuple[str, Path] | None = None,
    allow_divergence: bool = False,
    prior_config: dict[str, Any] | None = None,
) -> tuple[vqtoolkit.Pipeline, ImageDataset, dict[str, Path]]:
    """Load data, build, check everything, train stage 1 (checkpointed), then write the run's pictures.

    Under torchrun every process runs this; rank 0 alone prints, draws and writes.
    """
    from vqtoolkit import distributed, plots
    from vqtoolkit.devices import check_precision, resolve_device
    from vqtoolkit.streaming import as_tensor
    from vqtoolkit.train import code_counts

    torch_device = resolve_device(device)  # bad device or precision: fail before loading anything
    check_precision(precision, torch_device)
    torch_device = distributed.init_from_env(torch_device)  # torchrun: join the group, GPU per LOCAL_RANK
    main = distributed.is_main()
    quiet = quiet or not main
    if main:  # one lock per run: rank 0 holds it for all processes
        hold_output(output)
    torch.manual_seed(seed)
    data = load_dataset(dataset, data_root, seed=seed, image_size=image_size, stream=stream)
    num_codes = data.default_num_codes if num_codes is None else num_codes
    pipe = vqtoolkit.build(
        encoder,
        quantizer,
        decoder,
        prior,
        in_channels=data.image_shape[0],
        dim=dim,
        num_codes=num_codes,
        beta=beta,
        prior_config=prior_config,
    )
    files = {
        "checkpoint": checkpoint or beside(output, "checkpoint.safetensors"),
        "metrics": beside(output, "metrics.jsonl"),
    }
    if log is not None:
        files["tensorboard"] = log[1]
    if not quiet and not as_json:
        click.echo(
            f"{data.describe()}; {encoder} → {quantizer} (K={pipe.model.quantizer.num_codes}, D={dim}) → "
            f"{decoder}"
            f"{f', prior {prior}' if prior else ''}; {torch_device}, precision {precision}"
        )
    try:
        pipe.fit_autoencoder(
            data,
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            lr_schedule=lr_schedule,
            seed=seed,
            progress=not quiet and not as_json,
            device=torch_device,
            precision=precision,
            checkpoint_path=files["checkpoint"],
            resume=resume,
            log_path=files["metrics"],
            log_dir=None if log is None else log[1],
            allow_divergence=allow_divergence,
        )
    except TrainingInterrupted as err:
        if not main:  # every rank stopped at the same step; rank 0 says how to resume
            raise SystemExit(1) from err
        raise click.ClickException(f"{err}\n  {resume_hint()}") from err
    pipe.info.update(device=str(torch_device), precision=precision)
    if distributed.is_distributed():
        pipe.info["world_size"] = distributed.world_size()
    pipe.model.cpu()  # stage 2, grids and the bundle run on the CPU (scikit-learn priors live there)
    if not main:
        return pipe, data, files
    originals = as_tensor(data.test_images[:32])
    files["reconstructions"] = save_grid(
        torch.cat([originals, pipe.reconstruct(originals)]), beside(output, "reconstructions.png"), nrow=8
    )
    try:
        files["curves"] = plots.training_curves(
            pipe.info["history"], beside(output, "training.png"), title=data.describe()
        )
        usage = code_counts(pipe.model, data.test_images)
        files["code_usage"] = plots.code_usage(usage, beside(output, "codes.png"))
    except VQToolkitError as err:  # matplotlib missing: the metrics log holds the same numbers
        if not as_json:
            click.echo(f"note: {err}; skipping plots")
    return pipe, data, files


def report(pipe: vqtoolkit.Pipeline, files: dict[str, Path], as_json: bool) -> None:
    """Final metrics and where every file went, for people or (``--json``) for machines."""
    m = pipe.info["metrics"]
    if as_json:
        summary = {
            "metrics": m,
            "files": {k: str(v) for k, v in files.items()},
            **{key: pipe.info[key] for key in ("epochs", "device", "precision", "history")},
        }
        click.echo(json.dumps(summary, indent=2))
        return
    click.echo(
        f"test mse {m['test_mse']:.5f} (psnr {m['test_psnr']:.2f} dB), "
        f"perplexity {m['test_perplexity']:.1f}, "
        f"codes used {m['test_codes_used']}/{pipe.model.quantizer.num_codes}"
        + (
            f", prior {m['test_prior_bits_per_code']:.3f} bits/code"
            if "test_prior_bits_per_code" in m
            else ""
        )
    )
    for name, path in files.items():
        click.echo(f"{name + ':':<17}{path}")


@main.command()
@click.option(
    "--prior", default="gmm", show_default=True, help="Registered prior: gmm, categorical, pixelcnn."
)
@click.option(
    "--conditional", is_flag=True, help="Fit a class-conditional prior (enables `vqtool sample --label`)."
)
@click.option(
    "--samples",
    "num_samples",
    type=click.IntRange(min=1),
    default=64,
    show_default=True,
    help="Images in the sample grid.",
)
@stage1_options
@friendly_errors
def build(
    prior: str,
    conditional: bool,
    num_samples: int,
    output: Path,
    seed: int,
    num_codes: int | None,
    as_json: bool,
    quiet: bool,
    **options: Any,
) -> None:
    """Train both stages end to end and write a bundle plus everything to judge the run.

    Beside the bundle: sample and reconstruction grids, training curves, a codebook-usage
    histogram, a metrics log (JSON lines) and a resumable checkpoint.

    \b
    Example:
      vqtool build --encoder conv --prior gmm
      vqtool build --prior pixelcnn --conditional
      vqtool build --data mnist --data-root ../shared/data --epochs 1 -o runs/mnist.safetensors
      vqtool build --data mnist --data-root ../shared/data --epochs 3 -o runs/mnist.safetensors --resume
    """
    pipe, data, files = train_stage1(
        prior,
        output=output,
        seed=seed,
        num_codes=num_codes,
        as_json=as_json,
        quiet=quiet,
        prior_config={"conditional": True} if conditional else None,
        **options,
    )
    from vqtoolkit import distributed

    prior_checkpoint = beside(output, "prior-checkpoint.safetensors")
    try:  # every process: pixelcnn trains with DDP
        pipe.fit_prior(
            data,
            progress=not quiet and not as_json,
            checkpoint_path=prior_checkpoint,
            resume=options["resume"],
        )
    except TrainingInterrupted as err:
        raise click.ClickException(f"{err}\n  {resume_hint()}") from err
    if prior_checkpoint.exists():  # priors trained in epochs (pixelcnn) write one
        files["prior_checkpoint"] = prior_checkpoint
    if "tensorboard" in files and distributed.is_main():
        pipe.log_samples(files["tensorboard"], seed=seed)
    files = {"bundle": pipe.save(output), **files}
    if not distributed.is_main():
        return
    files["samples"] = save_grid(
        pipe.sample(num_samples, generator=torch.Generator().manual_seed(seed)), beside(output, "samples.png")
    )
    from vqtoolkit.report import write_report

    files["report"] = write_report(pipe, beside(output, "report.html"), data, bundle=output, seed=seed)
    report(pipe, files, as_json)


@main.command()
@stage1_options
@friendly_errors
def train(output: Path, num_codes: int | None, as_json: bool, **options: Any) -> None:
    """Train stage 1 only (encoder, quantizer, decoder) and write a bundle without a prior.

    Beside it: checkpoint, metrics log, training curves, codebook-usage histogram and
    reconstruction grid.

    Ctrl-C finishes the current step, saves a checkpoint and prints the command that resumes.

    \b
    Example:
      vqtool train --data mnist --data-root ../shared/data --epochs 5 -o runs/mnist.safetensors
      vqtool train --data mnist --data-root ../shared/data --epochs 5 -o runs/mnist.safetensors --resume
      vqtool train --data cifar10 --data-root ~/datasets --device cuda --precision bf16
    """
    from vqtoolkit import distributed

    pipe, _, files = train_stage1(None, output=output, num_codes=num_codes, as_json=as_json, **options)
    files = {"bundle": pipe.save(output), **files}
    if distributed.is_main():
        report(pipe, files, as_json)


@main.command()
@click.argument("bundle", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "-n", "num_samples", type=click.IntRange(min=1), default=64, show_default=True, help="How many images."
)
@click.option("--seed", type=int, default=0, show_default=True, help="Same seed, same images.")
@click.option(
    "--temperature",
    type=click.FloatRange(min=0, min_open=True),
    default=1.0,
    show_default=True,
    help="Below 1: cleaner, less varied samples; above 1: more varied.",
)
@click.option("--label", type=int, default=None, help="Class to draw (needs a prior fitted --conditional).")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("samples.png"),
    show_default=True,
    help="A .png grid, or .npy for the raw images (N, C, H, W) in [0, 1].",
)
@trust_option
@friendly_errors
def sample(
    bundle: Path,
    num_samples: int,
    seed: int,
    temperature: float,
    label: int | None,
    output: Path,
    trust_provider: bool,
) -> None:
    """Draw new images from a bundle's prior.

    \b
    Example:
      vqtool sample vqtool-out/model.safetensors -n 64 -o grid.png
      vqtool sample cond.safetensors -n 16 --label 3 --temperature 0.8 --seed 1 -o threes.npy
    """
    pipe = vqtoolkit.load(bundle, trust_provider=trust_provider)
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
    click.option(
        "--data",
        "dataset",
        type=click.Choice(sorted(DATASETS)),
        default=None,
        help="Dataset [default: the one the bundle was trained on].",
    ),
    click.option(
        "--data-root",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help="Folder holding the dataset in torchvision's layout (needed for mnist).",
    ),
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
@click.option(
    "--prior-option",
    "prior_options",
    multiple=True,
    metavar="KEY=VALUE",
    help="Extra prior option (repeatable), e.g. --prior-option epochs=5.",
)
@data_options
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="New bundle path (the input bundle is never modified).",
)
@click.option("--quiet", is_flag=True, help="No progress bars or per-epoch lines.")
@trust_option
@friendly_errors
def fit_prior(
    bundle: Path,
    prior: str,
    conditional: bool,
    prior_options: tuple[str, ...],
    dataset: str | None,
    data_root: Path | None,
    output: Path,
    quiet: bool,
    trust_provider: bool,
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
    hold_output(output)
    pipe = vqtoolkit.load(bundle, trust_provider=trust_provider)
    data = _bundle_dataset(pipe, dataset, data_root)
    options = _parse_options(prior_options)
    if conditional:
        options["conditional"] = True
    from vqtoolkit import distributed

    pipe.fit_prior(data, prior, progress=not quiet, **options)  # under torchrun: every process
    pipe.save(output)  # rank 0 writes
    if not distributed.is_main():
        return
    nll = pipe.info["metrics"].get("test_prior_bits_per_code")
    score = f"held-out {nll:.4f} bits/code" if nll is not None else "no index likelihood (a latent prior)"
    click.echo(f"{prior} prior: {score}\nbundle: {output}")


@main.command("eval")
@click.argument("bundle", type=click.Path(dir_okay=False, path_type=Path))
@data_options
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@trust_option
@friendly_errors
def evaluate(
    bundle: Path, dataset: str | None, data_root: Path | None, as_json: bool, trust_provider: bool
) -> None:
    """Score a bundle on held-out images: recon MSE/PSNR, perplexity, codes used, prior bits per code.

    The prior's NLL is in bits per code position, marginal over classes for a conditional prior
    (``prior_bits_per_code_given_label`` adds the label); a latent prior (gmm) reports null.

    \b
    Example:
      vqtool eval vqtool-out/model.safetensors --json
    """
    pipe = vqtoolkit.load(bundle, trust_provider=trust_provider)
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
@click.argument("bundle", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "-n",
    "num_images",
    type=click.IntRange(min=1),
    default=32,
    show_default=True,
    help="How many held-out images.",
)
@data_options
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("reconstructions.png"),
    show_default=True,
    help="A .png grid (originals above, reconstructions below), or .npy.",
)
@trust_option
@friendly_errors
def reconstruct(
    bundle: Path,
    num_images: int,
    dataset: str | None,
    data_root: Path | None,
    output: Path,
    trust_provider: bool,
) -> None:
    """Encode and decode held-out images through a bundle's stage 1, to see what it keeps.

    \b
    Example:
      vqtool reconstruct vqtool-out/model.safetensors -n 16 -o recon.png
    """
    pipe = vqtoolkit.load(bundle, trust_provider=trust_provider)
    from vqtoolkit.streaming import as_tensor

    originals = as_tensor(_bundle_dataset(pipe, dataset, data_root).test_images[:num_images])
    recon = pipe.reconstruct(originals)
    images = recon if output.suffix == ".npy" else torch.cat([originals, recon])
    save_grid(images, output, nrow=min(8, len(originals)))
    mse = float(((recon - originals) ** 2).mean())
    click.echo(f"wrote {len(originals)} reconstructions to {output} (test mse {mse:.5f})")


def _pick_image(spec: str, pipe: vqtoolkit.Pipeline, data: Callable[[], ImageDataset]) -> torch.Tensor:
    """An image given as a test-split index of the bundle's dataset or as an image file path."""
    from vqtoolkit.images import load_image
    from vqtoolkit.streaming import as_tensor

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


@main.command()
@click.argument("bundle", type=click.Path(dir_okay=False, path_type=Path))
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
@click.option(
    "--steps",
    type=click.IntRange(min=2),
    default=10,
    show_default=True,
    help="Images in the strip, ends included.",
)
@data_options
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("strip.png"),
    show_default=True,
    help="A .png strip, or .npy for the raw images (STEPS, C, H, W) in [0, 1].",
)
@friendly_errors
def interpolate(
    bundle: Path,
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
    pipe = vqtoolkit.load(bundle)
    data = functools.cache(lambda: _bundle_dataset(pipe, dataset, data_root))
    strip = pipe.interpolate(_pick_image(start, pipe, data), _pick_image(end, pipe, data), steps)
    save_grid(strip, output, nrow=steps)
    click.echo(f"wrote {steps} images from {start} to {end} to {output}")


@main.command("report")
@click.argument("bundle", type=click.Path(dir_okay=False, path_type=Path))
@data_options
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for the prior samples shown.")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="The .html page [default: BUNDLE-report.html beside the bundle].",
)
@friendly_errors
def report_page(
    bundle: Path, dataset: str | None, data_root: Path | None, seed: int, output: Path | None
) -> None:
    """Write one self-contained HTML page showing what a bundle's model learned.

    Model card, metrics, training curves, codebook usage with the most and least used codes
    decoded, originals beside reconstructions, prior samples and an interpolation strip; every
    image is inside the file (no server, no network, no JavaScript).

    \b
    Example:
      vqtool report vqtool-out/model.safetensors -o report.html
      vqtool report mnist.safetensors --data-root ../shared/data
    """
    from vqtoolkit.report import write_report

    pipe = vqtoolkit.load(bundle)
    try:
        data = _bundle_dataset(pipe, dataset, data_root)
    except VQToolkitError as err:  # the page still shows what the bundle alone holds
        click.echo(f"note: {err}; the page leaves out the sections that need held-out images", err=True)
        data = None
    path = write_report(pipe, output or beside(bundle, "report.html"), data, bundle=bundle, seed=seed)
    click.echo(str(path))


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def plugins(as_json: bool) -> None:
    """List installed components per kind and the distribution that provides each.

    \b
    Example:
      vqtool plugins
    """
    listing = {
        kind: [
            {"name": s.name, "distribution": s.distribution, "version": s.version, "object": s.value}
            for s in registry.specs(kind)
        ]
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


def _size(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return ""  # unreachable


@main.command()
@click.argument("bundle", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (training history included).")
@friendly_errors
def inspect(bundle: Path, as_json: bool) -> None:
    """Show what a bundle holds, without building it or needing its plugins installed.

    Components with their providers and configs, tensor counts and sizes, training facts and
    stored metrics. The bundle's checksum and structure are verified first.

    \b
    Example:
      vqtool inspect vqtool-out/model.safetensors
      vqtool inspect vqtool-out/model.safetensors --json | jq .info.metrics
    """
    from vqtoolkit.bundle import summary
    from vqtoolkit.pipeline import TRAINING_FACTS

    s = summary(bundle)
    if as_json:
        click.echo(json.dumps(s, indent=2))
        return
    click.echo(
        f"{s['path']}: {_size(s['file_bytes'])}, bundle format {s['format_version']}, written by "
        f"vqtoolkit {s['vqtoolkit_version']} (torch {s['torch_version']}), checksum {s['checksum']}"
    )
    for role, c in s["components"].items():
        installed = c["installed"]
        status = (
            "installed " + ", ".join(f"{d} {v}" for d, v in installed.items())
            if installed
            else f"NOT INSTALLED: pip install {c['distribution']}"
        )
        click.echo(f"{role:<10} {c['name']:<12} from {c['distribution']} {c['version']} ({status})")
        click.echo(
            f"{'':<10} {c['tensors']} tensors, {c['values']:,} values, {_size(c['bytes'])}; "
            f"config {json.dumps(c['config'])}"
        )
    info = s["info"]
    facts = {k: info[k] for k in TRAINING_FACTS if k in info}
    if facts:
        click.echo("training   " + ", ".join(f"{k} {v}" for k, v in facts.items()))
    metrics = info.get("metrics") or {}
    if metrics:
        click.echo(
            "metrics    "
            + ", ".join(f"{k} {v:.5g}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items())
        )
