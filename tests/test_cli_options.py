"""One grammar for component options (``--KIND-option KEY=VALUE``), per-dataset autoencoders, bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import vqtoolkit
from vqtoolkit.cli import main
from vqtoolkit.data.datasets import ImageDataset
from vqtoolkit.errors import ShapeError
from vqtoolkit.reporting.runs import autoencoder_names

SMALL_RESNET = ["widths=[4,8]", "groups=2"]


def images(channels: int, size: int, n: int = 24) -> ImageDataset:
    pictures = torch.rand(n, channels, size, size, generator=torch.Generator().manual_seed(channels))
    labels = torch.arange(n) % 2
    return ImageDataset("tiny", pictures[:16], labels[:16], pictures[16:], labels[16:], 2, 1)


@pytest.fixture()
def use_data(monkeypatch: pytest.MonkeyPatch):
    """Make every command read the given dataset (and skip the plots and the report, tested elsewhere)."""
    monkeypatch.setattr("vqtoolkit.reporting.plots.training_curves", lambda history, path, **kwargs: path)
    monkeypatch.setattr("vqtoolkit.reporting.plots.code_usage", lambda counts, path, **kwargs: path)
    monkeypatch.setattr("vqtoolkit.reporting.runs.report_page", lambda pipe, data, output, **kwargs: output)

    def use(data: ImageDataset) -> None:
        monkeypatch.setattr("vqtoolkit.data.datasets.load_dataset", lambda *args, **kwargs: data)
        monkeypatch.setattr("vqtoolkit.pipeline.load_dataset", lambda *args, **kwargs: data)

    return use


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, [*args, "--epochs", "1", "--num-codes", "8", "--dim", "4", "--quiet"])
    return result.exit_code, result.output


def pairs(flag: str, values: list[str]) -> list[str]:
    return [arg for value in values for arg in (flag, value)]


def test_every_kind_of_option_reaches_the_bundle(use_data, tmp_path: Path) -> None:
    use_data(images(1, 28))
    bundle = tmp_path / "m.safetensors"
    code, output = run(
        "build",
        "--encoder",
        "resnet",  # the decoder follows the encoder's name
        *pairs("--encoder-option", [*SMALL_RESNET, "middle=true"]),
        *pairs("--decoder-option", SMALL_RESNET),
        *pairs("--quantizer-option", ["decay=0.8", "kmeans_init=false"]),
        "--prior",
        "categorical",
        *pairs("--prior-option", ["smoothing=0.25"]),
        "-n",
        "4",
        "-o",
        str(bundle),
    )
    assert code == 0, output
    pipe = vqtoolkit.load(bundle)
    encoder, quantizer, decoder = pipe.model.encoder, pipe.model.quantizer, pipe.model.decoder
    assert (type(encoder).__name__, type(decoder).__name__) == ("ResNetEncoder", "ResNetDecoder")
    assert encoder.config["widths"] == [4, 8] and encoder.config["middle"] is True
    assert decoder.config["widths"] == [4, 8] and decoder.config["middle"] is False
    assert quantizer.config["decay"] == 0.8 and quantizer.config["kmeans_init"] is False
    assert pipe.prior.config["smoothing"] == 0.25
    assert encoder.downsample == 2 and pipe.encode(images(1, 28).test_images).shape == (8, 14, 14)


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        (
            "--encoder-option",
            "widht=[4,8]",
            "Error: --encoder-option: encoder 'resnet' has no option 'widht' (did you mean 'widths'?); "
            "valid options: blocks, dim, groups, in_channels, middle, widths.",
        ),
        (
            "--quantizer-option",
            "decay=fast",
            "Error: --quantizer-option: quantizer 'ema' option decay='fast' is not of type float",
        ),
        (
            "--decoder-option",
            "blocks=0",
            "Error: --decoder-option: decoder 'resnet' option blocks must be >= 1",
        ),
        (
            "--encoder-option",
            "widths",
            "Error: --encoder-option takes KEY=VALUE, e.g. --encoder-option widths=[32,64,64]; got 'widths'",
        ),
        (
            "--prior-option",
            "smoothin=1",
            "prior 'categorical' has no option 'smoothin' (did you mean 'smoothing'?)",
        ),
    ],
)
def test_a_bad_option_is_one_line_naming_the_flag(use_data, tmp_path, flag, value, message) -> None:
    use_data(images(3, 8))
    code, output = run(
        "build",
        "--encoder",
        "resnet",
        "--prior",
        "categorical",
        flag,
        value,
        "-o",
        str(tmp_path / "m.safetensors"),
    )
    assert code == 1 and message in output and "Traceback" not in output
    assert not (tmp_path / "m-checkpoint.safetensors").exists()  # refused before any training


def test_train_fits_no_prior_so_takes_no_prior_option() -> None:
    code, output = run("train", "--prior-option", "epochs=2")
    assert code == 2 and "No such option '--prior-option'" in output


def test_the_dataset_picks_the_autoencoder_unless_told(use_data, tmp_path: Path) -> None:
    assert vqtoolkit.load_dataset("digits").default_autoencoder == "conv"
    colour = images(3, 8)
    assert colour.default_autoencoder == "conv"  # every built-in dataset, colour too (docs/training.md)
    assert autoencoder_names(colour, None, None) == ("conv", "conv")
    assert autoencoder_names(colour, "resnet", None) == ("resnet", "resnet")  # the decoder follows
    assert autoencoder_names(colour, None, "resnet") == ("conv", "resnet")

    colour.default_autoencoder = "resnet"  # a dataset that prefers the residual pair
    use_data(colour)
    bundle = tmp_path / "colour.safetensors"
    code, output = run(
        "train",
        *pairs("--encoder-option", SMALL_RESNET),
        *pairs("--decoder-option", SMALL_RESNET),
        "-o",
        str(bundle),
    )
    assert code == 0, output
    assert type(vqtoolkit.load(bundle).model.encoder).__name__ == "ResNetEncoder"


def test_grey_and_colour_bundles_refuse_each_others_images(use_data, tmp_path: Path) -> None:
    use_data(images(1, 8))
    grey = tmp_path / "grey.safetensors"
    code, output = run(
        "train",
        "--encoder-option",
        "hidden_channels=[4]",
        "--decoder-option",
        "hidden_channels=[4]",
        "-o",
        str(grey),
    )
    assert code == 0, output
    pipe = vqtoolkit.load(grey)
    with pytest.raises(ShapeError, match=r"encodes greyscale images \(1 channel\) but the images are RGB"):
        pipe.reconstruct(torch.rand(2, 3, 8, 8))
    with pytest.raises(ShapeError, match=r"convert them to greyscale"):
        pipe.encode(torch.rand(2, 3, 8, 8))

    use_data(images(3, 8))
    result = CliRunner().invoke(main, ["reconstruct", str(grey), "-n", "2", "-o", str(tmp_path / "r.png")])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output.startswith("Error: this model encodes greyscale images (1 channel) but the images")
    assert len(result.output.strip().splitlines()) == 1

    colour = vqtoolkit.build(
        "resnet",
        "vq",
        "resnet",
        None,
        dim=4,
        num_codes=8,
        encoder_config={"widths": [4, 8]},
        decoder_config={"widths": [4, 8]},
    )
    with pytest.raises(ShapeError, match=r"encodes RGB images \(3 channels\) but the images are greyscale"):
        colour.reconstruct(torch.rand(2, 1, 8, 8))


def test_an_image_size_the_encoder_cannot_halve_is_refused_before_training(use_data, tmp_path) -> None:
    use_data(images(3, 28))  # resnet with 4 levels: f = 8, and 8 does not divide 28
    widths = ["widths=[4,4,8,8]", "groups=2"]
    code, output = run(
        "train",
        "--encoder",
        "resnet",
        *pairs("--encoder-option", widths),
        *pairs("--decoder-option", widths),
        "-o",
        str(tmp_path / "m.safetensors"),
    )
    assert code == 1 and "Traceback" not in output
    assert "images of size 28×28 cannot be downsampled evenly by the encoder's factor 8" in output
    assert "(e.g. 24×24)" in output and not (tmp_path / "m-checkpoint.safetensors").exists()


@pytest.mark.parametrize(
    ("size", "code", "message"),
    [
        ("0", 2, "Invalid value for '--image-size': 0 is not in the range x>=1."),
        ("100000", 1, "Error: 1797 images resized to 100000×100000 needs about"),
    ],
)
def test_absurd_image_sizes_are_one_line(size: str, code: int, message: str, tmp_path: Path) -> None:
    exit_code, output = run("train", "--image-size", size, "-o", str(tmp_path / "m.safetensors"))
    assert exit_code == code and message in output and "Traceback" not in output
