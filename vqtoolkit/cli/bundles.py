"""Commands about a bundle as a whole: ``fit-prior``, ``report``, ``inspect``; and ``plugins``."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import click

from vqtoolkit.cli.common import emit_json, friendly_errors, hold_output, prior_seed, text
from vqtoolkit.cli.configs import component_config, config_option
from vqtoolkit.cli.options import (
    BundleSource,
    bundle_source,
    configure_logging,
    data_options,
    json_option,
    output_option,
    quiet_option,
    seed_option,
)
from vqtoolkit.errors import ConfigError, VQToolkitError

log = logging.getLogger(__name__)


@click.command("fit-prior")
@click.option(
    "--prior", required=True, help="Registered prior name: pixelcnn, transformer, categorical, gmm, ..."
)
@click.option("--conditional", is_flag=True, help="Learn p(codes | label) so `vqtool sample --label` works.")
@config_option("prior")
@data_options(None)
@output_option(None, "New bundle path (the input bundle is never modified).")
@seed_option("Seed of the prior's fit (for priors that take a seed).")
@quiet_option()
@json_option()
@bundle_source()
@friendly_errors
def fit_prior(
    bundle: BundleSource,
    prior: str,
    conditional: bool,
    prior_options: tuple[str, ...],
    dataset: str | None,
    data_root: Path | None,
    output: Path,
    seed: int,
    quiet: bool,
    as_json: bool,
) -> None:
    """Fit a new stage-2 prior on a trained bundle's frozen stage 1 and write it to a new bundle.

    The frozen stage 1 encodes the images on --device, and the new prior fits there.

    \b
    Example:
      vqtool fit-prior vqtool-out/model.safetensors --prior pixelcnn -o pixelcnn.safetensors
      vqtool fit-prior mnist.safetensors --prior pixelcnn --conditional \\
          --data-root ../shared/data -o cond.safetensors
    """
    from vqtoolkit._util.atomic import check_writable

    configure_logging(quiet=quiet or as_json)
    if output.resolve() == bundle.path.resolve():
        raise ConfigError(f"-o {output} is the input bundle; write the new prior to another file")
    check_writable(output)
    hold_output(output)
    pipe = bundle.load()
    data = pipe.dataset(data_root, name=dataset)
    options = {**prior_seed(prior, seed), **component_config("prior", prior, prior_options)}
    if conditional:
        options["conditional"] = True
    from vqtoolkit.runtime import distributed

    # Under torchrun every process fits (pixelcnn trains with DDP); rank 0 alone writes.
    pipe.fit_prior(data, prior, progress=not quiet and not as_json, **options)
    pipe.to("cpu").save(output)
    if not distributed.is_main():
        return
    nll = pipe.info["metrics"].get("test_prior_bits_per_code")
    if as_json:
        emit_json({"prior": prior, "bundle": str(output), "metrics": pipe.info["metrics"]})
        return
    score = f"held-out {nll:.4f} bits/code" if nll is not None else "no likelihood over code grids to report"
    click.echo(f"{prior} prior: {score}\nbundle: {output}")


@click.command("report")
@data_options(None)
@seed_option("Seed for the prior samples shown.")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="The .html page [default: BUNDLE-report.html beside the bundle].",
)
@bundle_source(device=False)
@friendly_errors
def report_page(
    bundle: BundleSource,
    dataset: str | None,
    data_root: Path | None,
    seed: int,
    output: Path | None,
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
    from vqtoolkit.reporting.report import write_report
    from vqtoolkit.reporting.runs import beside

    pipe = bundle.load()
    try:
        data = pipe.dataset(data_root, name=dataset)
    except VQToolkitError as err:  # the page still shows what the bundle alone holds
        log.warning(f"note: {err}; the page leaves out the sections that need held-out images")
        data = None
    path = write_report(
        pipe, output or beside(bundle.path, "report.html"), data, bundle=bundle.path, seed=seed
    )
    click.echo(str(path))


@click.command()
@json_option()
def plugins(as_json: bool) -> None:
    """List installed components per kind and the distribution that provides each.

    \b
    Example:
      vqtool plugins
    """
    from vqtoolkit.components import registry

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


@click.command()
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
    from vqtoolkit.stages import TRAINING_FACTS
    from vqtoolkit.storage.bundle import summary

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
        click.echo("training   " + ", ".join(f"{k} {text(v)}" for k, v in facts.items()))
    metrics = info.get("metrics") or {}
    if metrics:
        click.echo("metrics    " + ", ".join(f"{k} {text(v)}" for k, v in metrics.items()))
