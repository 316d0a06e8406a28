"""The patch encoder and decoder: vqtoolkit's conformance kit and a pipeline that uses them."""

from __future__ import annotations

import pytest
import torch
from vqtoolkit_patch import PatchDecoder, PatchEncoder

import vqtoolkit
from vqtoolkit.errors import ConfigError
from vqtoolkit.testing import check_decoder, check_encoder

SMALL = {"hidden": 16, "blocks": 1}


@pytest.mark.parametrize("patch", [1, 3, 7])
def test_conforms_to_the_encoder_and_decoder_contracts(patch: int) -> None:
    check_encoder("patch", {**SMALL, "patch": patch, "in_channels": 3, "dim": 8})
    check_decoder("patch", {**SMALL, "patch": patch, "out_channels": 3, "dim": 8})


def test_a_factor_no_power_of_two_gives() -> None:
    encoder, decoder = PatchEncoder(patch=7), PatchDecoder(patch=7)
    assert encoder(torch.rand(2, 1, 28, 28)).shape == (2, 64, 4, 4)
    assert decoder(torch.randn(2, 64, 4, 4)).shape == (2, 1, 28, 28)


def test_builds_into_a_pipeline_that_trains_and_round_trips(tmp_path) -> None:
    config = {**SMALL, "patch": 7}
    pipe = vqtoolkit.build(
        "patch", "vq", "patch", None, dim=8, num_codes=16, encoder_config=config, decoder_config=config
    )
    images = torch.rand(8, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    assert pipe.encode(images).shape == (8, 4, 4)
    before = pipe.model.encoder.net[0].weight.detach().clone()
    loss = torch.nn.functional.mse_loss(pipe.model(images).reconstruction, images)
    loss.backward()
    torch.optim.SGD(pipe.model.parameters(), lr=0.1).step()
    assert not torch.equal(before, pipe.model.encoder.net[0].weight)
    loaded = vqtoolkit.load(pipe.save(tmp_path / "patch.safetensors"))
    assert torch.equal(loaded.reconstruct(images), pipe.reconstruct(images))


def test_bad_options_are_refused() -> None:
    with pytest.raises(ConfigError, match="patch must be >= 1"):
        PatchEncoder(patch=0)
    with pytest.raises(ConfigError, match="no option 'patches' \\(did you mean 'patch'\\?\\)"):
        vqtoolkit.create("decoder", "patch", patches=2)
