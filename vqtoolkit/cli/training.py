"""``vqtool build`` (both stages) and ``vqtool train`` (stage 1): options in, a bundle and its files out."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from vqtoolkit.cli.common import emit_json, friendly_errors, hold_output, prior_seed, resume_hint
from vqtoolkit.cli.configs import component_config, config_option
from vqtoolkit.cli.options import configure_logging, num_samples_option
from vqtoolkit.cli.recipe import stage1_options
from vqtoolkit.errors import TrainingInterrupted

if TYPE_CHECKING:
    from vqtoolkit.data.datasets import ImageDataset
    from vqtoolkit.pipeline import Pipeline

log = logging.getLogger(__name__)


def train_stage1(
    prior: str | None,
    options: dict[str, Any],
    prior_config: dict[str, Any] | None = None,
    num_samples: int = 0,
) -> tuple[Pipeline, ImageDataset, dict[str, Path]]:
    """Load data, build, check everything, train stage 1 (checkpointed), then write the run's pictures.

    ``options`` are the command's :func:`~vqtoolkit.cli.recipe.stage1_options`; ``num_samples``
    images drawn later must fit in memory. Under torchrun every process runs this; rank 0 alone
    prints, draws and writes.
    """
    from vqtoolkit._util.atomic import check_writable
    from vqtoolkit.cli.common import check_sample_memory
    from vqtoolkit.data.datasets import load_dataset
    from vqtoolkit.reporting import runs
    from vqtoolkit.runtime import distributed
    from vqtoolkit.runtime.devices import check_precision, resolve_device
    from vqtoolkit.training.config import TrainConfig

    output: Path = options["output"]
    quiet = options["quiet"] or options["as_json"]
    configure_logging(quiet=quiet)
    files = {
        "checkpoint": options["checkpoint_path"] or runs.beside(output, "checkpoint.safetensors"),
        "metrics": runs.beside(output, "metrics.jsonl"),
    }
    for path in (output, *files.values()):  # an unwritable -o fails now, not after an hour of training
        check_writable(path)
    device = resolve_device(options["device"])  # bad device or precision: fail before loading anything
    check_precision(options["precision"], device)
    device = distributed.init_from_env(device)  # torchrun: join the group, GPU per LOCAL_RANK
    main = distributed.is_main()
    if main:  # one lock per run: rank 0 holds it for all processes
        hold_output(output)
    if options["log_to"] is not None:
        files["tensorboard"] = options["log_to"][1]
    given = {f.name: options[f.name] for f in dataclasses.fields(TrainConfig) if f.name in options}
    config = TrainConfig.of(
        **{
            **given,  # the command's options named like TrainConfig's fields, then what it settled
            "device": device,
            "checkpoint_path": files["checkpoint"],
            "log_path": files["metrics"],
            "log_dir": files.get("tensorboard"),
            "progress": main and not quiet,
        }
    )
    data = load_dataset(
        options["dataset"],
        options["data_root"],
        seed=config.seed,
        image_size=options["image_size"],
        stream=options["stream"],
    )
    check_sample_memory(num_samples, data.image_shape)
    encoder, decoder = runs.autoencoder_names(data, options["encoder"], options["decoder"])
    names = {"encoder": encoder, "quantizer": options["quantizer"], "decoder": decoder}
    configs = {kind: component_config(kind, name, options[f"{kind}_options"]) for kind, name in names.items()}
    pipe = runs.build_for(
        data,
        encoder,
        names["quantizer"],
        decoder,
        prior=prior,
        prior_config=prior_config,
        seed=config.seed,
        encoder_config=configs["encoder"],
        quantizer_config=configs["quantizer"],
        decoder_config=configs["decoder"],
        **{k: options[k] for k in ("num_codes", "dim", "beta")},
    )
    pipe.model.check_image_shape(data.image_shape)  # before any training: channels and size fit
    log.info(
        f"{data.describe()}; {names['encoder']} → {names['quantizer']} "
        f"(K={pipe.model.quantizer.num_codes}, D={pipe.model.quantizer.dim}) → {names['decoder']}"
        f"{f', prior {prior}' if prior else ''}; {device}, precision {config.precision}"
    )
    try:
        pipe.fit_autoencoder(data, config)
    except TrainingInterrupted as err:
        if not main:  # every rank stopped at the same step; rank 0 says how to resume
            raise SystemExit(1) from err
        raise click.ClickException(f"{err}\n  {resume_hint()}") from err
    pipe.model.cpu()  # stage 2, grids and the bundle run on the CPU (scikit-learn priors live there)
    if main:
        files.update(runs.stage1_pictures(pipe, data, output))
    return pipe, data, files


def print_summary(pipe: Pipeline, files: dict[str, Path], as_json: bool) -> None:
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
    prior_bits = m.get("test_prior_bits_per_code")
    click.echo(
        f"test mse {m['test_mse']:.5f} (psnr {m['test_psnr']:.2f} dB), "
        f"perplexity {m['test_perplexity']:.1f}, "
        f"codes used {m['test_codes_used']}/{pipe.model.quantizer.num_codes}"
        + (f", prior {prior_bits:.3f} bits/code" if prior_bits is not None else "")
    )
    for name, path in files.items():
        click.echo(f"{name + ':':<17}{path}")


@click.command()
@click.option(
    "--prior",
    default="gmm",
    show_default=True,
    help="Registered prior: gmm, categorical, pixelcnn, transformer.",
)
@click.option(
    "--conditional", is_flag=True, help="Fit a class-conditional prior (enables `vqtool sample --label`)."
)
@config_option("prior")
@num_samples_option(64, "Images in the sample grid.")
@click.option("--samples", "legacy_num_samples", type=click.IntRange(min=1), default=None, hidden=True)
@stage1_options
@friendly_errors
def build(
    prior: str,
    conditional: bool,
    prior_options: tuple[str, ...],
    num_samples: int,
    legacy_num_samples: int | None,
    **options: Any,
) -> None:
    """Train both stages end to end and write a bundle plus everything to judge the run.

    Beside the bundle: sample and reconstruction grids, training curves, a codebook-usage
    histogram, a metrics log (JSON lines) and a resumable checkpoint.

    \b
    Example:
      vqtool build --encoder conv --prior gmm
      vqtool build --prior pixelcnn --conditional --prior-option epochs=5
      vqtool build --data shapes --encoder resnet --lr 0.002 --encoder-option middle=true
      vqtool build --data mnist --data-root ../shared/data --epochs 1 -o runs/mnist.safetensors
      vqtool build --data mnist --data-root ../shared/data --epochs 3 -o runs/mnist.safetensors --resume
    """
    from vqtoolkit.reporting import runs
    from vqtoolkit.runtime import distributed

    if legacy_num_samples is not None:  # the spelling before the one grammar; kept working for now
        log.warning("--samples is deprecated: use -n/--num-samples")
        num_samples = legacy_num_samples
    output, seed, quiet = options["output"], options["seed"], options["quiet"] or options["as_json"]
    prior_config = {
        **prior_seed(prior, seed),
        **({"conditional": True} if conditional else {}),
        **component_config("prior", prior, prior_options),
    }
    pipe, data, files = train_stage1(prior, options, prior_config or None, num_samples)
    prior_checkpoint = runs.beside(output, "prior-checkpoint.safetensors")
    try:  # every process: pixelcnn trains with DDP
        pipe.fit_prior(data, progress=not quiet, checkpoint_path=prior_checkpoint, resume=options["resume"])
    except TrainingInterrupted as err:
        raise click.ClickException(f"{err}\n  {resume_hint()}") from err
    if prior_checkpoint.exists():  # priors trained in epochs (pixelcnn) write one
        files["prior_checkpoint"] = prior_checkpoint
    if "tensorboard" in files and distributed.is_main():
        pipe.log_samples(files["tensorboard"], seed=seed)
    files = {"bundle": pipe.save(output), **files}
    if not distributed.is_main():
        return
    files["samples"] = runs.sample_grid(pipe, num_samples, output, seed=seed)
    files["report"] = runs.report_page(pipe, data, output, seed=seed)
    print_summary(pipe, files, options["as_json"])


@click.command()
@stage1_options
@friendly_errors
def train(**options: Any) -> None:
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
    from vqtoolkit.runtime import distributed

    pipe, _, files = train_stage1(None, options)
    files = {"bundle": pipe.save(options["output"]), **files}
    if distributed.is_main():
        print_summary(pipe, files, options["as_json"])
