"""The resnet encoder and decoder: vqtoolkit's conformance kit and a pipeline that uses them."""

from __future__ import annotations

import pytest
import torch
from vqtoolkit_resnet import ResNetDecoder, ResNetEncoder

import vqtoolkit
from vqtoolkit.errors import ConfigError
from vqtoolkit.testing import check_decoder, check_encoder

SMALL = {"hidden": 16, "res_hidden": 8, "res_blocks": 1}


@pytest.mark.parametrize("stages", [1, 2, 3])
def test_conforms_to_the_encoder_and_decoder_contracts(stages: int) -> None:
    check_encoder("resnet", {**SMALL, "stages": stages, "in_channels": 3, "dim": 8})
    check_decoder("resnet", {**SMALL, "stages": stages, "out_channels": 3, "dim": 8})


def test_paper_architecture_by_default() -> None:
    encoder, decoder = ResNetEncoder(), ResNetDecoder()
    assert encoder(torch.rand(2, 1, 28, 28)).shape == (2, 64, 7, 7)
    assert decoder(torch.randn(2, 64, 7, 7)).shape == (2, 1, 28, 28)
    assert len(encoder.net[-2].blocks) == 2


def test_builds_into_a_pipeline_that_trains_and_round_trips(tmp_path) -> None:
    pipe = vqtoolkit.build(
        "resnet", "vq", "resnet", None, dim=8, num_codes=16, encoder_config=SMALL, decoder_config=SMALL
    )
    images = torch.rand(8, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    before = pipe.model.encoder.net[0].weight.detach().clone()
    loss = torch.nn.functional.mse_loss(pipe.model(images).reconstruction, images)
    loss.backward()
    torch.optim.SGD(pipe.model.parameters(), lr=0.1).step()
    assert not torch.equal(before, pipe.model.encoder.net[0].weight)
    loaded = vqtoolkit.load(pipe.save(tmp_path / "resnet.safetensors"))
    assert torch.equal(loaded.reconstruct(images), pipe.reconstruct(images))


def test_bad_options_are_refused() -> None:
    with pytest.raises(ConfigError, match="stages must be >= 1"):
        ResNetEncoder(stages=0)
    with pytest.raises(ConfigError, match="no option 'blocks'"):
        vqtoolkit.create("decoder", "resnet", blocks=2)
