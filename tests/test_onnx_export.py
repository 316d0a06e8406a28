"""ONNX export: the graphs run in ONNX Runtime and give PyTorch's indices exactly, its images within 1e-5."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from bundle_edit import tiny_pipeline
from click.testing import CliRunner
from torch import Tensor

import vqtoolkit
from vqtoolkit.cli import main
from vqtoolkit.encoders.conv import ConvEncoder
from vqtoolkit.errors import ConfigError
from vqtoolkit.model.vqvae import VQVAE
from vqtoolkit.quantize.vq import VectorQuantizer

ort = pytest.importorskip(
    "onnxruntime", reason='ONNX tests need the onnx extra: pip install "vqtoolkit[onnx]"'
)
pytest.importorskip("onnxscript", reason='ONNX tests need the onnx extra: pip install "vqtoolkit[onnx]"')


def run(folder: Path, graph: str, value: Tensor) -> Tensor:
    session = ort.InferenceSession(str(folder / f"{graph}.onnx"), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(None, {session.get_inputs()[0].name: value.numpy()})[0])


def assert_reproduces(pipe: vqtoolkit.Pipeline, folder: Path, images: Tensor) -> None:
    """Indices identical and images within 1e-5, for the whole batch and for a batch of one."""
    for batch in (images, images[:1]):
        indices = pipe.encode(batch)
        assert torch.equal(run(folder, "encoder", batch), indices)
        difference = (run(folder, "decoder", indices) - pipe.decode(indices)).abs().max()
        assert difference <= 1e-5


@pytest.mark.parametrize("quantizer", ["vq", "ema", "fsq", "residual"])
def test_every_built_in_quantizer_exports_and_reproduces_pytorch(quantizer, digits, tmp_path) -> None:
    pipe = tiny_pipeline(None, quantizer)
    manifest = pipe.export_onnx(tmp_path, verify=False)
    assert_reproduces(pipe, tmp_path, digits.test_images[:64])
    session = ort.InferenceSession(str(tmp_path / "encoder.onnx"), providers=["CPUExecutionProvider"])
    assert isinstance(session.get_inputs()[0].shape[0], str)  # the batch axis is dynamic
    assert json.loads((tmp_path / "onnx.json").read_text()) == manifest
    grid = list(pipe.encode(digits.test_images[:1]).shape[1:])
    assert manifest["encoder"]["output"]["shape"] == ["batch", *grid]
    if quantizer == "fsq":  # an implicit codebook: nothing to ship
        assert manifest["codebook"] is None and not (tmp_path / "codebook.npy").exists()
    else:
        codebook = np.load(tmp_path / "codebook.npy")
        assert np.array_equal(codebook, pipe.model.quantizer.codebook.detach().numpy())


def test_the_trained_digits_model_exports_through_the_cli(trained, digits, tmp_path) -> None:
    bundle = trained.save(tmp_path / "m.safetensors")
    out = tmp_path / "onnx"
    result = CliRunner().invoke(main, ["export", str(bundle), "-o", str(out), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["check"]["index_mismatches"] == 0 and report["check"]["max_image_difference"] <= 1e-5
    assert report["prior"].startswith("not exported")
    assert_reproduces(vqtoolkit.load(bundle), out, digits.test_images)


class PluginQuantizer(VectorQuantizer):
    """A plugin's quantizer: its search could be anything, so the exporter cannot assume vq's."""


class BranchingEncoder(ConvEncoder):
    """A plugin's encoder whose output depends on its input's values: no static graph expresses it."""

    def forward(self, x: Tensor) -> Tensor:
        z = self.net(x)
        return z if float(z.sum()) > 0 else -z


def pipeline_with(encoder=None, quantizer=None) -> vqtoolkit.Pipeline:
    pipe = tiny_pipeline(None)
    model = pipe.model
    model = VQVAE(encoder or model.encoder, quantizer or model.quantizer, model.decoder)
    return vqtoolkit.Pipeline(model, None, pipe.info)


def test_an_unsupported_plugin_component_is_named(tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"quantizer '.*PluginQuantizer' .* cannot be exported to ONNX"):
        pipeline_with(quantizer=PluginQuantizer(num_codes=8, dim=4)).export_onnx(tmp_path)
    encoder = BranchingEncoder(dim=4, hidden_channels=[8, 8])
    with pytest.raises(
        ConfigError, match=r"the encoder '.*BranchingEncoder' cannot be exported to ONNX"
    ) as err:
        pipeline_with(encoder=encoder).export_onnx(tmp_path)
    assert "\n" not in str(err.value)


def test_missing_extra_and_unknown_image_shape_are_one_line_errors(monkeypatch, tmp_path) -> None:
    pipe = tiny_pipeline(None)
    pipe.info.pop("image_shape")
    with pytest.raises(ConfigError, match=r"does not record its image shape; pass image_shape"):
        pipe.export_onnx(tmp_path)
    monkeypatch.setitem(sys.modules, "onnxscript", None)
    with pytest.raises(ConfigError, match=r'ONNX export needs onnxscript, .*pip install "vqtoolkit\[onnx\]"'):
        pipe.export_onnx(tmp_path, image_shape=(1, 28, 28))


@pytest.mark.slow
def test_the_default_digits_build_exports_and_reproduces_pytorch(digits, tmp_path) -> None:
    """The acceptance run: `vqtool build` with its defaults (one epoch), then `vqtool export`."""
    bundle = tmp_path / "model.safetensors"
    result = CliRunner().invoke(main, ["build", "--epochs", "1", "-o", str(bundle), "-q"])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(main, ["export", str(bundle), "-o", str(tmp_path / "onnx")])
    assert result.exit_code == 0, result.output
    assert "0 indices differ" in result.output
    assert_reproduces(vqtoolkit.load(bundle), tmp_path / "onnx", digits.test_images)
