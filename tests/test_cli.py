"""The vqtool command line through click's CliRunner."""

from __future__ import annotations

import json
import os

import numpy as np
from click.testing import CliRunner

import vqtoolkit
from vqtoolkit.cli import main


def test_build_then_sample(tmp_path) -> None:
    runner = CliRunner()
    bundle = tmp_path / "m.safetensors"
    result = runner.invoke(
        main,
        [
            "build",
            "--encoder",
            "conv",
            "--prior",
            "gmm",
            "--epochs",
            "1",
            "--num-codes",
            "32",
            "--dim",
            "16",
            "-n",
            "9",
            "-o",
            str(bundle),
            "--quiet",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "test mse" in result.output and str(bundle) in result.output
    assert result.output.splitlines()[-1].split()[-1] == str(tmp_path / "m-report.html")  # printed last
    umask = os.umask(0o022)
    os.umask(umask)
    for name in [
        "m.safetensors",
        "m-samples.png",
        "m-reconstructions.png",
        "m-training.png",
        "m-report.html",
    ]:
        assert (tmp_path / name).stat().st_size > 0
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~umask  # as a plain open() would make
    assert vqtoolkit.load(bundle).model.quantizer.num_codes == 32

    result = runner.invoke(main, ["sample", str(bundle), "-n", "5", "-o", str(tmp_path / "s.npy")])
    assert result.exit_code == 0, result.output
    images = np.load(tmp_path / "s.npy")
    assert images.shape == (5, 1, 28, 28) and images.min() >= 0 and images.max() <= 1

    result = runner.invoke(main, ["reconstruct", str(bundle), "-n", "4", "-o", str(tmp_path / "r.npy")])
    assert result.exit_code == 0, result.output
    recon = np.load(tmp_path / "r.npy")
    assert recon.shape == (4, 1, 28, 28)
    originals = vqtoolkit.load_dataset("digits").test_images[:4].numpy()
    assert f"test mse {float(((recon - originals) ** 2).mean()):.5f}" in result.output


def test_unknown_encoder_is_one_line_listing_available() -> None:
    result = CliRunner().invoke(main, ["build", "--encoder", "nope"])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert lines == [
        "Error: unknown encoder 'nope'. Available encoders: "
        + ", ".join(vqtoolkit.available("encoder"))
        + "."
    ]


def test_sample_missing_bundle_is_clear(tmp_path) -> None:
    result = CliRunner().invoke(main, ["sample", str(tmp_path / "none.safetensors")])
    assert result.exit_code == 1
    assert "does not exist" in result.output and "Traceback" not in result.output


def test_plugins_lists_builtins_with_distribution() -> None:
    result = CliRunner().invoke(main, ["plugins", "--json"])
    assert result.exit_code == 0
    listing = json.loads(result.output)["components"]
    assert {"name": "vq", "distribution": "vqtoolkit"}.items() <= next(
        e for e in listing["quantizer"] if e["name"] == "vq"
    ).items()


def test_every_command_has_help_with_example() -> None:
    for command in main.commands:
        result = CliRunner().invoke(main, [command, "--help"])
        assert result.exit_code == 0
        assert "Example" in result.output, command
