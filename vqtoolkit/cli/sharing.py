"""Commands that share and deploy a model: ``push`` and ``pull`` (the Hugging Face Hub), ``export`` (ONNX)."""

from __future__ import annotations

from pathlib import Path

import click

from vqtoolkit.cli.common import emit_json, friendly_errors
from vqtoolkit.cli.options import BundleSource, bundle_source, json_option
from vqtoolkit.errors import ConfigError


@click.command()
@click.option(
    "--private", is_flag=True, help="Create the repo as private (an existing one keeps its visibility)."
)
@click.option("--message", default=None, help="Commit message [default: one naming the vqtoolkit version].")
@click.option("--revision", default=None, help="Branch to commit to [default: main].")
@click.option(
    "--samples", type=click.IntRange(min=0), default=64, show_default=True, help="Images in samples.png."
)
@bundle_source(device=False)
@click.argument("repo_id")  # applied before BUNDLE, so it comes after it: `vqtool push BUNDLE REPO_ID`
@friendly_errors
def push(
    bundle: BundleSource, repo_id: str, private: bool, message: str | None, revision: str | None, samples: int
) -> None:
    """Upload a bundle to the Hugging Face Hub as a model folder with a model card.

    The folder holds model.safetensors (the bundle), config.json, README.md (the model card) and
    samples.png; `vqtool pull` and vqtoolkit.from_pretrained read it back. Needs
    `pip install "vqtoolkit[hub]"` and a token (`hf auth login`, or HF_TOKEN).

    \b
    Example:
      vqtool push vqtool-out/model.safetensors your-name/vqvae-digits
    """
    from vqtoolkit.sharing.pretrained import push_to_hub

    url = push_to_hub(
        bundle.load(),
        repo_id,
        private=private or None,
        commit_message=message,
        revision=revision,
        samples=samples,
    )
    click.echo(url)


@click.command()
@click.argument("repo_id")
@click.option(
    "-o", "--output", type=click.Path(file_okay=False, path_type=Path), required=True, help="Folder to write."
)
@click.option("--revision", default=None, help="Branch, tag or commit [default: main].")
@friendly_errors
def pull(repo_id: str, output: Path, revision: str | None) -> None:
    """Download a model folder from the Hugging Face Hub (through its cache) into a folder.

    With HF_HUB_OFFLINE=1 only the cache (HF_HUB_CACHE, or HF_HOME/hub) is read. The bundle's
    checksum and structure are checked before it is copied. Needs `pip install "vqtoolkit[hub]"`.

    \b
    Example:
      vqtool pull your-name/vqvae-digits -o model/
      vqtool sample model/model.safetensors -n 64 -o grid.png
    """
    import shutil

    from vqtoolkit.sharing.pretrained import check_folder, resolve
    from vqtoolkit.storage import bundle

    source = resolve(repo_id, revision)
    bundle.read(check_folder(source))
    if output.resolve() == source.resolve():
        raise ConfigError(f"-o {output} is the model's own folder; give another folder")
    output.mkdir(parents=True, exist_ok=True)
    for path in sorted(source.iterdir()):
        if path.is_file():  # a cache snapshot's files are links into its blobs: copy what they point to
            shutil.copyfile(path, output / path.name)
    click.echo(f"model:  {output / 'model.safetensors'}\nfolder: {output}")


@click.command("export")
@click.option(
    "-o", "--output", type=click.Path(file_okay=False, path_type=Path), required=True, help="Folder to write."
)
@click.option(
    "--image-shape",
    type=click.IntRange(min=1),
    nargs=3,
    default=None,
    metavar="C H W",
    help="Image shape, for a bundle that does not record it [default: the bundle's].",
)
@click.option("--no-verify", is_flag=True, help="Skip running the graphs in ONNX Runtime against PyTorch.")
@json_option()
@bundle_source(device=False)
@friendly_errors
def export(
    bundle: BundleSource,
    output: Path,
    image_shape: tuple[int, int, int] | None,
    no_verify: bool,
    as_json: bool,
) -> None:
    """Export a bundle's encoder and decoder to ONNX, checked in ONNX Runtime.

    Writes encoder.onnx (images -> code indices), decoder.onnx (code indices -> images in [0, 1]),
    both with a dynamic batch axis, codebook.npy for quantizers that store a codebook, and onnx.json
    naming every input and output. A prior's sampler is not exported (sampling stays in Python).
    Needs `pip install "vqtoolkit[onnx]"`.

    \b
    Example:
      vqtool export vqtool-out/model.safetensors -o onnx/
    """
    from vqtoolkit.sharing.onnx import export_onnx

    manifest = export_onnx(bundle.load(), output, image_shape=image_shape or None, verify=not no_verify)
    if as_json:
        emit_json({"folder": str(output), **manifest})
        return
    files = [manifest["encoder"]["file"], manifest["decoder"]["file"], manifest["codebook"], "onnx.json"]
    for name in filter(None, files):
        click.echo(str(output / name))
    check = manifest.get("check")
    if check:
        click.echo(
            f"checked in ONNX Runtime on {check['images']} images: "
            f"{check['index_mismatches']} indices differ, "
            f"images within {check['max_image_difference']:.2g}"
        )
