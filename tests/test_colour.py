"""Colour images end to end: a folder of RGB PNGs built, sampled, scored and reported, and every
picture the toolkit writes (grids, report pages, TensorBoard images) keeping the channels apart."""

from __future__ import annotations

import base64
import io
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from vqtoolkit.cli import main
from vqtoolkit.data.images import grid_bytes
from vqtoolkit.reporting.html import grid_img

pytestmark = pytest.mark.usefixtures("one_thread")

#: Three pure colours and a grey, one image each: a grid must show them as they are.
SWATCHES = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.4, 0.4, 0.4]])


def swatches(size: int = 6) -> torch.Tensor:
    return SWATCHES[:, :, None, None].expand(-1, -1, size, size).clone()


def tile_centres(picture: Image.Image, count: int, size: int = 6, padding: int = 2, scale: int = 1) -> list:
    """RGB of the centre pixel of each tile of a one-row grid."""
    rgb = np.asarray(picture.convert("RGB"))
    step = (size + padding) * scale
    middle = (padding + size // 2) * scale
    return [tuple(int(v) for v in rgb[middle, middle + i * step]) for i in range(count)]


EXPECTED = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (102, 102, 102)]


def test_grid_keeps_rgb_channels_and_clamps_the_range() -> None:
    images = swatches()
    picture = Image.open(io.BytesIO(grid_bytes(images, nrow=4)))
    assert picture.mode == "RGB" and tile_centres(picture, 4) == EXPECTED
    overshoot = Image.open(io.BytesIO(grid_bytes(images * 3 - 1, nrow=4)))  # outside [0, 1]: clamped
    assert tile_centres(overshoot, 4) == [(255, 0, 0), (0, 255, 0), (0, 0, 255), (51, 51, 51)]


def test_report_pictures_are_rgb() -> None:
    tag = grid_img(swatches(), "swatches", nrow=4)
    png = base64.b64decode(re.search(r'src="data:image/png;base64,([^"]+)"', tag).group(1))
    from vqtoolkit.reporting.html import SCALE

    assert tile_centres(Image.open(io.BytesIO(png)), 4, scale=SCALE) == EXPECTED


def test_tensorboard_images_are_rgb(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from vqtoolkit.training.tensorboard import log_samples

    log_samples(tmp_path, swatches(), 3)
    events = EventAccumulator(str(tmp_path), size_guidance={"images": 0})
    events.Reload()
    (image,) = events.Images("images/samples")
    picture = Image.open(io.BytesIO(image.encoded_image_string))
    assert image.step == 3 and tile_centres(picture, 4) == EXPECTED


def write_folder(root: Path, per_class: int = 12, size: int = 12) -> None:
    """Two classes of RGB PNGs: noisy reddish and noisy bluish squares."""
    rng = np.random.default_rng(0)
    for name, base in (("red", (200, 40, 40)), ("blue", (40, 60, 210))):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            noise = rng.integers(-30, 30, (size, size, 3))
            pixels = np.clip(np.array(base) + noise, 0, 255).astype(np.uint8)
            Image.fromarray(pixels, "RGB").save(root / name / f"{i}.png")


def reddest_and_bluest(path: Path) -> tuple[int, int]:
    """How far the most red and most blue pixels of a picture lean to their colour."""
    rgb = np.asarray(Image.open(path).convert("RGB")).astype(int)
    return int((rgb[..., 0] - rgb[..., 2]).max()), int((rgb[..., 2] - rgb[..., 0]).max())


def test_colour_folder_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VQTOOLKIT_CACHE", str(tmp_path / "cache"))
    root, bundle = tmp_path / "pictures", tmp_path / "out" / "m.safetensors"
    write_folder(root)
    runner = CliRunner()
    folder = ["--data-root", str(root)]
    small = ["--num-codes", "8", "--dim", "4", "--epochs", "1", "--batch-size", "8", "--image-size", "12"]
    result = runner.invoke(
        main,
        [
            "build",
            "--data",
            "folder",
            *folder,
            *small,
            "--prior",
            "categorical",
            "-n",
            "4",
            "-o",
            str(bundle),
            "-q",
        ],
    )
    assert result.exit_code == 0, result.output
    assert min(reddest_and_bluest(tmp_path / "out" / "m-reconstructions.png")) > 100  # both colours shown

    result = runner.invoke(main, ["sample", str(bundle), "-n", "3", "-o", str(tmp_path / "s.npy")])
    assert result.exit_code == 0, result.output
    samples = np.load(tmp_path / "s.npy")
    assert samples.shape == (3, 3, 12, 12) and samples.min() >= 0 and samples.max() <= 1

    result = runner.invoke(main, ["eval", str(bundle), *folder, "--samples", "8"])
    assert result.exit_code == 0, result.output
    assert "classifier score" in result.output and "(at most 2)" in result.output

    page = tmp_path / "r.html"
    result = runner.invoke(main, ["report", str(bundle), *folder, "-o", str(page)])
    assert result.exit_code == 0, result.output
    original = re.search(r'src="data:image/png;base64,([^"]+)" alt="originals"', page.read_text()).group(1)
    (tmp_path / "originals.png").write_bytes(base64.b64decode(original))
    assert min(reddest_and_bluest(tmp_path / "originals.png")) > 100


def test_unlabelled_dataset_eval_prints_reconstruction_metrics_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, bundle = tmp_path / "flat", tmp_path / "m.safetensors"
    write_folder(tmp_path / "classes", per_class=4)
    root.mkdir()
    for i, path in enumerate(sorted((tmp_path / "classes").rglob("*.png"))):
        path.rename(root / f"{i}.png")  # no class sub-folders: one class, as photos has
    small = [
        "--num-codes",
        "8",
        "--dim",
        "4",
        "--epochs",
        "1",
        "--image-size",
        "8",
        "-q",
        "--allow-divergence",
    ]
    runner = CliRunner()
    result = runner.invoke(
        main, ["train", "--data", "folder", "--data-root", str(root), *small, "-o", str(bundle)]
    )
    assert result.exit_code == 0, result.output
    result = runner.invoke(main, ["eval", str(bundle), "--data-root", str(root), "--samples", "4"])
    assert result.exit_code == 0, result.output
    assert (
        "test_psnr" in result.output
        and "not scored:" in result.output
        and "photos has no labels" in result.output
    )


@pytest.mark.parametrize("make", ["empty", "unreadable"])
def test_bad_folder_is_one_line(tmp_path: Path, make: str) -> None:
    root = tmp_path / "pictures"
    root.mkdir()
    if make == "unreadable":
        for i in range(3):
            (root / f"{i}.png").write_bytes(b"not a png at all")
    result = CliRunner().invoke(
        main, ["train", "--data", "folder", "--data-root", str(root), "-o", str(tmp_path / "m.safetensors")]
    )
    assert result.exit_code != 0 and "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert ("found 0 image(s)" if make == "empty" else "cannot read") in lines[0]
