"""The ``vqtool`` command line: build, sample and inspect VQ-VAE models from registered components."""

from __future__ import annotations

import functools
import json
import logging
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from vqtoolkit import __version__
from vqtoolkit.cli_options import (
    PRECISIONS,
    FiniteFloat,
    compose,
    configure_logging,
    data_options,
    data_root_option,
    dataset_option,
    device_option,
    json_option,
    num_samples_option,
    output_option,
    quiet_option,
    reset_logging,
    seed_option,
    trust_option,
)
from vqtoolkit.errors import ConfigError, TrainingInterrupted, VQToolkitError
from vqtoolkit.schedule import DEFAULT_LR, DEFAULT_SCHEDULE, SCHEDULES

if TYPE_CHECKING:  # torch and the models load inside the commands, so --help and --version stay fast
    from torch import Tensor

    from vqtoolkit.data import ImageDataset
    from vqtoolkit.pipeline import Pipeline

log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])


def friendly_errors(command: F) -> F:
    """Turn vqtoolkit's own errors, failed writes and exhausted memory into a one-line ``Error: ...``."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except VQToolkitError as err:
            raise click.ClickException(str(err)) from err
        except OSError as err:  # a folder that vanished, a full disk, a read-only mount, ...
            where = f" {err.filename}" if err.filename else ""
            raise click.ClickException(f"cannot write or read{where}: {err.strerror or err}") from err
        except (MemoryError, RuntimeError) as err:
            if not isinstance(err, MemoryError) and not _out_of_memory(err):
                raise
            raise click.ClickException(
                "ran out of memory; choose smaller sizes (--num-codes, --dim, --image-size, --batch-size, -n)"
            ) from err

    return wrapper  # type: ignore[return-value]


def _out_of_memory(err: BaseException) -> bool:
    """Whether ``err`` is torch's out-of-memory error (CPU or GPU), recognised without importing torch."""
    return type(err).__name__ == "OutOfMemoryError" or "can't allocate memory" in str(err)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="vqtool")
def main() -> None:
    """vqtool: train, sample and inspect modular VQ-VAEs.

    Results go to stdout (one JSON document with --json); progress bars and notes go to stderr.

    \b
    Example:
      vqtool build --encoder conv --prior gmm
      vqtool sample vqtool-out/model.safetensors -n 64 -o grid.png
    """
    configure_logging()
    click.get_current_context().call_on_close(reset_logging)


def stage1_options(command: F) -> F:
    """The options ``build`` and ``train`` share: components, data, training, device and outputs."""
    return compose(
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
        dataset_option("digits", "Dataset; `digits` is embedded and works offline."),
        data_root_option(
            "Folder holding the dataset (ROOT/MNIST/raw, ROOT/FashionMNIST/raw, "
            "ROOT/cifar-10-batches-py, or a folder of images for --data folder)."
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
            "--dim",
            type=click.IntRange(min=1),
            default=None,
            help="Code dimension D [default: the quantizer's: 64, or len(levels) = 4 for fsq].",
        ),
        click.option(
            "--beta",
            type=FiniteFloat(min=0),
            default=0.25,
            show_default=True,
            help="Commitment weight β.",
        ),
        click.option("--batch-size", type=click.IntRange(min=1), default=128, show_default=True),
        click.option(
            "--lr",
            type=FiniteFloat(min=0, min_open=True),
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
        seed_option("Seed for weights, shuffling, the prior's fit and sampling."),
        device_option(),
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
        output_option(
            Path("vqtool-out/model.safetensors"),
            "Bundle path; checkpoint, metrics log, plots and grids go beside it.",
        ),
        click.option(
            "--log",
            "log_to",
            type=(click.Choice(["tensorboard"]), click.Path(file_okay=False, path_type=Path)),
            default=None,
            metavar="tensorboard DIR",
            help="Also log scalars, image grids and code usage for TensorBoard in DIR "
            '(pip install "vqtoolkit[tensorboard]"); the JSON-lines metrics log is always written.',
        ),
        quiet_option(),
        json_option("Print only a final machine-readable summary on stdout."),
    )(command)


def beside(output: Path, suffix: str) -> Path:
    """A file next to the bundle: ``runs/m.safetensors`` → ``runs/m-<suffix>``."""
    return output.with_name(f"{output.stem}-{suffix}")


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
    dim: int | None,
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
    log_to: tuple[str, Path] | None = None,
    allow_divergence: bool = False,
    prior_config: dict[str, Any] | None = None,
    num_samples: int = 0,
) -> tuple[Pipeline, ImageDataset, dict[str, Path]]:
    """Load data, build, check everything, train stage 1 (checkpointed), then write the run's pictures.

    Under torchrun every process runs this; rank 0 alone prints, draws and writes.
    """
    import torch

    import vqtoolkit
    from vqtoolkit import distributed, plots
    from vqtoolkit.atomic import check_writable
    from vqtoolkit.data import load_dataset
    from vqtoolkit.devices import check_precision, resolve_device
    from vqtoolkit.images import save_grid
    from vqtoolkit.streaming import as_tensor
    from vqtoolkit.evaluation import code_counts

    configure_logging(quiet=quiet or as_json)
    files = {
        "checkpoint": checkpoint or beside(output, "checkpoint.safetensors"),
        "metrics": beside(output, "metrics.jsonl"),
    }
    for path in (output, *files.values()):  # an unwritable -o fails now, not after an hour of training
        check_writable(path)
    torch_device = resolve_device(device)  # bad device or precision: fail before loading anything
    check_precision(precision, torch_device)
    torch_device = distributed.init_from_env(torch_device)  # torchrun: join the group, GPU per LOCAL_RANK
    main = distributed.is_main()
    quiet = quiet or not main
    if main:  # one lock per run: rank 0 holds it for all processes
        hold_output(output)
    data = load_dataset(dataset, data_root, seed=seed, image_size=image_size, stream=stream)
    check_sample_memory(num_samples, data.image_shape)
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
        seed=seed,
    )
    log.info(
        f"{data.describe()}; {encoder} → {quantizer} (K={pipe.model.quantizer.num_codes}, "
        f"D={pipe.model.quantizer.dim}) → {decoder}"
        f"{f', prior {prior}' if prior else ''}; {torch_device}, precision {precision}"
    )
    if log_to is not None:
        files["tensorboard"] = log_to[1]
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
            log_dir=None if log_to is None else log_to[1],
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
    files["curves"] = plots.training_curves(
        pipe.info["history"], beside(output, "training.png"), title=data.describe()
    )
    files["code_usage"] = plots.code_usage(
        code_counts(pipe.model, data.test_images), beside(output, "codes.png")
    )
    return pipe, data, files


def check_sample_memory(num_samples: int, image_shape: Any) -> None:
    """Refuse a sample count whose images (and the decoder's activations, ~8× as much) cannot fit."""
    import math

    from vqtoolkit.memory import check_fits

    check_fits(
        f"{num_samples} samples of {'×'.join(map(str, image_shape))} pixels",
        num_samples * math.prod(image_shape) * 4 * 8,
        "draw fewer with a smaller -n",
    )


def _text(value: Any) -> str:
    """A value for people: floats to 5 significant digits, ``None`` as ``n/a`` (never Python's ``None``)."""
    if value is None:
        return "n/a"
    return f"{value:.5g}" if isinstance(value, float) else str(value)


def emit_json(document: Any) -> None:
    """The command's one JSON document, on stdout."""
    click.echo(json.dumps(document, indent=2))


def report(pipe: Pipeline, files: dict[str, Path], as_json: bool) -> None:
    """Final metrics and where every file went, for people or (``--json``) for machines."""
    m = pipe.info["metrics"]
    if as_json:
        summary = {
            "metrics": m,
            "files": {k: str(v) for k, v in files.items()},
            **{key: pipe.info[key] for key in ("epochs", "device", "precision", "history")},
        }
        emit_json(summary)
        return
    click.echo(
        f"test mse {m['test_mse']:.5f} (psnr {m['test_psnr']:.2f} dB), "
        f"perplexity {m['test_perplexity']:.1f}, "
        f"codes used {m['test_codes_used']}/{pipe.model.quantizer.num_codes}"
        + (
            f", prior {m['test_prior_bits_per_code']:.3f} bits/code"
            if m.get("test_prior_bits_per_code") is not None
            else ""
        )
    )
    for name, path in files.items():
        click.echo(f"{name + ':':<17}{path}")


def _prior_seed(prior: str | None, seed: int) -> dict[str, Any]:
    """``{"seed": seed}`` for a prior that takes a seed (gmm, pixelcnn, ...), else nothing."""
    from vqtoolkit import registry

    if prior is None:
        return {}
    accepted = registry.accepted_options(registry.get_class("prior", prior))
    return {"seed": seed} if accepted is None or "seed" in accepted else {}


@main.command()
@click.option(
    "--prior",
    default="gmm",
    show_default=True,
    help="Registered prior: gmm, categorical, pixelcnn, transformer.",
)
@click.option(
    "--conditional", is_flag=True, help="Fit a class-conditional prior (enables `vqtool sample --label`)."
)
@num_samples_option(64, "Images in the sample grid.")
@click.option("--samples", "legacy_num_samples", type=click.IntRange(min=1), default=None, hidden=True)
@stage1_options
@friendly_errors
def build(
    prior: str,
    conditional: bool,
    num_samples: int,
    legacy_num_samples: int | None,
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
    import torch

    from vqtoolkit.images import save_grid

    if legacy_num_samples is not None:  # the spelling before the one grammar; kept working for now
        log.warning("--samples is deprecated: use -n/--num-samples")
        num_samples = legacy_num_samples
    prior_config = {**_prior_seed(prior, seed), **({"conditional": True} if conditional else {})}
    pipe, data, files = train_stage1(
        prior,
        output=output,
        seed=seed,
        num_codes=num_codes,
        as_json=as_json,
        quiet=quiet,
        prior_config=prior_config or None,
        num_samples=num_samples,
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


def check_image_output(output: Path) -> None:
    """Fail before any work on an image ``-o`` whose suffix is unknown or whose place is unwritable."""
    from vqtoolkit.atomic import check_writable
    from vqtoolkit.images import check_image_path

    check_image_path(output)
    check_writable(output)


def _load_on(bundle: Path, device: str, trust_provider: bool = False) -> Pipeline:
    """The bundle's pipeline, moved to ``device`` (``trust_provider``: see :func:`vqtoolkit.load`)."""
    import vqtoolkit

    return vqtoolkit.load(bundle, trust_provider=trust_provider).to(device)


@main.command()
@click.argument("bundle", type=click.Path(dir_okay=False, path_type=Path))
@num_samples_option(64, "How many images.")
@seed_option("Same seed, same images.")
@click.option(
    "--temperature",
    type=FiniteFloat(min=0, min_open=True),
    default=1.0,
    show_default=True,
    help="Below 1: cleaner, less varied samples; above 1: more varied.",
)
@click.option("--label", type=int, default=None, help="Class to draw (needs a prior fitted --conditional).")
@output_option(Path("samples.png"), "A .png or .jpg grid, or .npy for the raw images (N, C, H, W) in [0, 1].")
@device_option("cpu")
@json_option()
@trust_option
@friendly_errors
def sample(
    bundle: Path,
    num_samples: int,
    seed: int,
    temperature: float,
    label: int | None,
    output: Path,
    device: str,
    as_json: bool,
    trust_provider: bool,
) -> None:
    """Draw new images from a bundle's prior.

    \b
    Example:
      vqtool sample vqtool-out/model.safetensors -n 64 -o grid.png
      vqtool sample cond.safetensors -n 16 --label 3 --temperature 0.8 --seed 1 -o threes.npy
    """
    import torch

    from vqtoolkit.images import save_grid

    check_image_output(output)
    pipe = _load_on(bundle, device, trust_provider)
    check_sample_memory(num_samples, pipe.info.get("image_shape") or (1, 28, 28))
    images = pipe.sample(
        num_samples, label=label, temperature=temperature, generator=torch.Generator().manual_seed(seed)
    )
    save_grid(images, output)
    if as_json:
        emit_json({"output": str(output), "num_samples": num_samples, "seed": seed, "label": label})
    else:
        click.echo(f"wrote {num_samples} samples to {output}")


def _bundle_dataset(pipe: Pipeline, dataset: str | None, data_root: Path | None) -> ImageDataset:
    """The bundle's dataset (same name and seed, so the same held-out split) unless overridden."""
    from vqtoolkit.data import load_dataset

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


@main.command("fit-prior")
@click.argument("bundle", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--prior", required=True, help="Registered prior name: pixelcnn, transformer, categorical, gmm, ..."
)
@click.option("--conditional", is_flag=True, help="Learn p(codes | label) so `vqtool sample --label` works.")
@click.option(
    "--prior-option",
    "prior_options",
    multiple=True,
    metavar="KEY=VALUE",
    help="Extra prior option (repeatable), e.g. --prior-option epochs=5.",
)
@data_options
@output_option(None, "New bundle path (the input bundle is never modified).")
@seed_option("Seed of the prior's fit (for priors that take a seed).")
@device_option("cpu")
@quiet_option()
@json_option()
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
    seed: int,
    device: str,
    quiet: bool,
    as_json: bool,
    trust_provider: bool,
) -> None:
    """Fit a new stage-2 prior on a trained bundle's frozen stage 1 and write it to a new bundle.

    The frozen stage 1 encodes the images on --device, and the new prior fits there.

    \b
    Example:
      vqtool fit-prior vqtool-out/model.safetensors --prior pixelcnn -o pixelcnn.safetensors
      vqtool fit-prior mnist.safetensors --prior pixelcnn --conditional \\
          --data-root ../shared/data -o cond.safetensors
    """
    from vqtoolkit.atomic import check_writable

    configure_logging(quiet=quiet or as_json)
    if output.resolve() == bundle.resolve():
        raise ConfigError(f"-o {output} is the input bundle; write the new prior to another file")
    check_writable(output)
    hold_output(output)
    pipe = _load_on(bundle, device, trust_provider)
    data = _bundle_dataset(pipe, dataset, data_root)
    options = {**_prior_seed(prior, seed), **_parse_options(prior_options)}
    if conditional:
        options["conditional"] = True
    from vqtoolkit import distributed

    # Under torchrun every process fits (pixelcnn trains with DDP); rank 0 alone writes.
    pipe.fit_prior(data, prior, progress=not quiet and not as_json, **options)
    pipe.to("cpu").save(output)
    if not distributed.is_main():
        return
    nll = pipe.info["metrics"].get("test_prior_bits_per_code")
    if as_json:
        emit_json({"prior": prior, "bundle": str(output), "metrics": pipe.info["metrics"]})
        return
    score = f"held-out {nll:.4f} bits/code" if nll is not None else "no index likelihood (a latent prior)"
    click.echo(f"{prior} prior: {score}\nbundle: {output}")


@main.command("eval")
@click.argument("bundle", type=click.Path(dir_okay=False, path_type=Path))
@data_options
@click.option(
    "-n",
    "--num-samples",
    "num_samples",
    type=click.IntRange(min=2),
    default=None,
    help="Also draw this many samples and score them with the dataset's classifier (trained and "
    "cached on first use) beside real images.",
)
@click.option("--samples", "samples_alias", type=click.IntRange(min=2), default=None, hidden=True)
@click.option(
    "--temperature",
    type=FiniteFloat(min=0, min_open=True),
    default=1.0,
    show_default=True,
    help="Sampling temperature for --num-samples.",
)
@seed_option("Seed for --num-samples.")
@device_option("cpu")
@json_option()
@trust_option
@friendly_errors
def evaluate(
    bundle: Path,
    dataset: str | None,
    data_root: Path | None,
    num_samples: int | None,
    samples_alias: int | None,
    temperature: float,
    seed: int,
    device: str,
    as_json: bool,
    trust_provider: bool,
) -> None:
    """Score a bundle on held-out images: recon MSE/PSNR, perplexity, codes used, prior bits per code.

    Metric names are the ones build --json, inspect and the bundle use (test_mse, ...). The
    prior's NLL is in bits per code position, marginal over classes for a conditional prior
    (test_prior_bits_per_code_given_label adds the label); a latent prior (gmm) has none (null in
    --json, n/a in text). With -n/--num-samples N (or --samples N) it also scores N samples
    (classifier score, Fréchet distance to the test split, label accuracy of a conditional prior),
    each beside the same figure for real images.

    \b
    Example:
      vqtool eval vqtool-out/model.safetensors --json
      vqtool eval vqtool-out/model.safetensors --samples 1000
    """
    from vqtoolkit import registry

    pipe = _load_on(bundle, device, trust_provider)
    data = _bundle_dataset(pipe, dataset, data_root)
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
        from vqtoolkit.sample_quality import format_scores, score_samples

        result["sample_quality"] = score_samples(
            pipe, data, num_samples, temperature=temperature, seed=seed, progress=not as_json
        )
    if as_json:
        emit_json(result)
        return
    for key, value in result.items():
        if key == "sample_quality":
            click.echo("\n".join(format_scores(value)))
        else:
            click.echo(f"{key:<39} {_text(value)}")


@main.command()
@click.argument("bundle", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "-n",
    "--num-images",
    "num_images",
    type=click.IntRange(min=1),
    default=32,
    show_default=True,
    help="How many held-out images.",
)
@data_options
@output_option(
    Path("reconstructions.png"),
    "A .png or .jpg grid (originals above, reconstructions below), or .npy.",
)
@device_option("cpu")
@json_option()
@trust_option
@friendly_errors
def reconstruct(
    bundle: Path,
    num_images: int,
    dataset: str | None,
    data_root: Path | None,
    output: Path,
    device: str,
    as_json: bool,
    trust_provider: bool,
) -> None:
    """Encode and decode held-out images through a bundle's stage 1, to see what it keeps.

    \b
    Example:
      vqtool reconstruct vqtool-out/model.safetensors -n 16 -o recon.png
    """
    import torch

    from vqtoolkit.images import save_grid
    from vqtoolkit.streaming import as_tensor

    check_image_output(output)
    pipe = _load_on(bundle, device, trust_provider)
    originals = as_tensor(_bundle_dataset(pipe, dataset, data_root).test_images[:num_images])
    recon = pipe.reconstruct(originals).cpu()
    images = recon if output.suffix == ".npy" else torch.cat([originals, recon])
    save_grid(images, output, nrow=min(8, len(originals)))
    mse = float(((recon - originals) ** 2).mean())
    if as_json:
        emit_json({"output": str(output), "num_images": len(originals), "test_mse": mse})
    else:
        click.echo(f"wrote {len(originals)} reconstructions to {output} (test mse {mse:.5f})")


def _pick_image(spec: str, pipe: Pipeline, data: Callable[[], ImageDataset]) -> Tensor:
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
@output_option(
    Path("strip.png"), "A .png or .jpg strip, or .npy for the raw images (STEPS, C, H, W) in [0, 1]."
)
@device_option("cpu")
@trust_option
@friendly_errors
def interpolate(
    bundle: Path,
    start: str,
    end: str,
    steps: int,
    dataset: str | None,
    data_root: Path | None,
    output: Path,
    device: str,
    trust_provider: bool,
) -> None:
    """Walk from one image to another through the latent space, snapped to codes at every step.

    An index picks an image of the bundle's test split; a path reads an image file, converted
    to the model's channels and size. The strip's ends are the two images' reconstructions.

    \b
    Example:
      vqtool interpolate vqtool-out/model.safetensors --from 0 --to 7 -o strip.png
      vqtool interpolate mnist.safetensors --from three.png --to 12 --steps 8 --data-root ../shared/data
    """
    from vqtoolkit.images import save_grid

    check_image_output(output)
    pipe = _load_on(bundle, device, trust_provider)
    data = functools.cache(lambda: _bundle_dataset(pipe, dataset, data_root))
    strip = pipe.interpolate(_pick_image(start, pipe, data), _pick_image(end, pipe, data), steps)
    save_grid(strip.cpu(), output, nrow=steps)
    click.echo(f"wrote {steps} images from {start} to {end} to {output}")


@main.command("report")
@click.argument("bundle", type=click.Path(dir_okay=False, path_type=Path))
@data_options
@seed_option("Seed for the prior samples shown.")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="The .html page [default: BUNDLE-report.html beside the bundle].",
)
@trust_option
@friendly_errors
def report_page(
    bundle: Path,
    dataset: str | None,
    data_root: Path | None,
    seed: int,
    output: Path | None,
    trust_provider: bool,
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

    pipe = _load_on(bundle, "cpu", trust_provider)
    try:
        data = _bundle_dataset(pipe, dataset, data_root)
    except VQToolkitError as err:  # the page still shows what the bundle alone holds
        log.warning(f"note: {err}; the page leaves out the sections that need held-out images")
        data = None
    path = write_report(pipe, output or beside(bundle, "report.html"), data, bundle=bundle, seed=seed)
    click.echo(str(path))


@main.command()
@json_option()
def plugins(as_json: bool) -> None:
    """List installed components per kind and the distribution that provides each.

    \b
    Example:
      vqtool plugins
    """
    from vqtoolkit import registry

    listing = {
        kind: [
            {"name": s.name, "distribution": s.distribution, "version": s.version, "object": s.value}
            for s in registry.specs(kind)
        ]
        for kind in registry.KINDS
    }
    problems = [vars(p) for p in registry.problems()]
    if as_json:
        emit_json({"components": listing, "problems": problems})
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
@json_option("Machine-readable output (training history included).")
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
        emit_json(s)
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
        click.echo("training   " + ", ".join(f"{k} {_text(v)}" for k, v in facts.items()))
    metrics = info.get("metrics") or {}
    if metrics:
        click.echo("metrics    " + ", ".join(f"{k} {_text(v)}" for k, v in metrics.items()))
