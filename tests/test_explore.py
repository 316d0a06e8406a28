"""Exploring the code space: encode/decode as a pair, code edits, interpolation (API and CLI)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

import vqtoolkit
from vqtoolkit.cli import main
from vqtoolkit.data.datasets import ImageDataset
from vqtoolkit.errors import ConfigError, ShapeError


def test_encode_and_decode_are_a_pair(trained: vqtoolkit.Pipeline, small_digits: ImageDataset) -> None:
    images = small_digits.test_images[:6]
    grids = trained.encode(images)
    assert grids.shape == (6, 7, 7) and grids.dtype == torch.long
    assert trained.grid_shape() == (7, 7)
    decoded = trained.decode(grids)
    assert torch.allclose(decoded, trained.reconstruct(images).clamp(0, 1), atol=1e-6)


def test_decode_refuses_grids_of_the_wrong_shape_or_range(trained: vqtoolkit.Pipeline) -> None:
    with pytest.raises(ShapeError, match=r"expected code grids \(B, 7, 7\).*got shape \(2, 6, 7\)"):
        trained.decode(torch.zeros(2, 6, 7, dtype=torch.long))
    with pytest.raises(ConfigError, match=r"indices must lie in \[0, 32\)"):
        trained.decode(torch.full((1, 7, 7), 32))


def test_a_code_edit_changes_only_the_region_it_touches(
    trained: vqtoolkit.Pipeline, small_digits: ImageDataset
) -> None:
    grids = trained.encode(small_digits.test_images[:2])
    edited = grids[0].clone()
    edited[:, :3] = grids[1][:, :3]  # the left three code columns of image 1 into image 0
    before, after = trained.decode(grids[:1])[0, 0], trained.decode(edited[None])[0, 0]
    changed = (before - after).abs().amax(dim=0) > 1e-6  # per pixel column
    assert changed[:8].any() and not changed[-4:].any()  # the conv decoder's reach is a few pixels


def test_interpolation_ends_at_the_reconstructions(
    trained: vqtoolkit.Pipeline, small_digits: ImageDataset
) -> None:
    a, b = small_digits.test_images[0], small_digits.test_images[1]
    strip = trained.interpolate(a, b, 6)
    assert strip.shape == (6, 1, 28, 28) and strip.min() >= 0 and strip.max() <= 1
    ends = trained.decode(trained.encode(torch.stack([a, b])))
    assert torch.allclose(strip[0], ends[0], atol=1e-6) and torch.allclose(strip[-1], ends[1], atol=1e-6)
    codes = trained.encode(strip)
    assert (codes[1:] != codes[:-1]).any()  # the walk moves through other code grids
    with pytest.raises(ConfigError, match="steps >= 2"):
        trained.interpolate(a, b, 1)
    with pytest.raises(ShapeError, match="one image"):
        trained.interpolate(small_digits.test_images[:2], b)


def test_cli_interpolate_from_indices_and_files(trained: vqtoolkit.Pipeline, tmp_path: Path) -> None:
    bundle = trained.save(tmp_path / "m.safetensors")
    picture = tmp_path / "big.png"
    Image.fromarray(np.full((64, 48, 3), 200, dtype=np.uint8)).save(picture)  # RGB, wrong size
    runner = CliRunner()
    result = runner.invoke(
        main,
        [
            "interpolate",
            str(bundle),
            "--from",
            "0",
            "--to",
            str(picture),
            "--steps",
            "5",
            "-o",
            str(tmp_path / "s.npy"),
        ],
    )
    assert result.exit_code == 0, result.output
    strip = np.load(tmp_path / "s.npy")
    assert strip.shape == (5, 1, 28, 28)
    data = vqtoolkit.load_dataset("digits")
    expected = trained.interpolate(data.test_images[0], torch.full((1, 28, 28), 200 / 255), 5)
    assert np.allclose(strip, expected.numpy(), atol=1e-4)

    result = runner.invoke(
        main, ["interpolate", str(bundle), "--from", "1", "--to", "2", "-o", str(tmp_path / "s.png")]
    )
    assert result.exit_code == 0 and Image.open(tmp_path / "s.png").size == (10 * 30 + 2, 32)
    for bad, message in [("100000", "outside the test split"), (str(tmp_path / "none.png"), "no image file")]:
        result = runner.invoke(main, ["interpolate", str(bundle), "--from", bad, "--to", "2"])
        assert result.exit_code == 1 and message in result.output
