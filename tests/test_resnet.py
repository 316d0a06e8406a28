"""The built-in ``resnet`` encoder and decoder: factors 2-16, the kit at each, options checked."""

from __future__ import annotations

import pytest
import torch

import vqtoolkit
from vqtoolkit.decoders.resnet import ResNetDecoder
from vqtoolkit.encoders import _blocks
from vqtoolkit.encoders.resnet import ResNetEncoder
from vqtoolkit.errors import ConfigError
from vqtoolkit.testing import check_decoder, check_encoder


@pytest.mark.parametrize(
    ("widths", "factor"), [([4, 4], 2), ([4, 4, 8], 4), ([4, 4, 8, 8], 8), ([4] * 5, 16)]
)
def test_each_level_after_the_first_halves_the_image(widths: list[int], factor: int) -> None:
    config = {"widths": widths, "groups": 2, "dim": 3}
    encoder, decoder = ResNetEncoder(**config), ResNetDecoder(**config, middle=True)
    assert encoder.downsample == decoder.upsample == factor
    z = encoder(torch.rand(2, 3, 16, 32))
    assert z.shape == (2, 3, 16 // factor, 32 // factor)
    out = decoder(z)
    assert out.shape == (2, 3, 16, 32) and out.min() >= 0 and out.max() <= 1


def test_the_deepest_layout_passes_the_kit() -> None:  # test_conformance checks the shallowest
    config = {"widths": [2] * 5, "groups": 2, "dim": 2, "middle": True}
    check_encoder("resnet", config)
    check_decoder("resnet", config)


def test_the_layout_is_residual_blocks_with_groupnorm_and_silu() -> None:
    encoder = ResNetEncoder(widths=[8, 16], blocks=2, groups=4)
    blocks = [m for m in encoder.modules() if isinstance(m, _blocks.ResBlock)]
    assert len(blocks) == 4  # two per level
    norms = [m for m in encoder.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert {m.num_groups for m in norms} == {4} and any(
        isinstance(m, torch.nn.SiLU) for m in encoder.modules()
    )
    assert isinstance(blocks[2].skip, torch.nn.Conv2d) and isinstance(blocks[3].skip, torch.nn.Identity)
    x = torch.rand(1, 8, 4, 4)
    assert torch.allclose(blocks[0](x), x + blocks[0].body(x))  # the identity skip adds the input


def test_middle_adds_one_block_at_the_bottom_of_each_half() -> None:
    def count(module: torch.nn.Module) -> int:
        return sum(isinstance(m, _blocks.ResBlock) for m in module.modules())

    assert count(ResNetEncoder(middle=True)) == count(ResNetEncoder()) + 1
    assert count(ResNetDecoder(middle=True)) == count(ResNetDecoder()) + 1


def test_the_decoder_calibrates_its_last_bias() -> None:
    decoder = ResNetDecoder(widths=[4, 8], out_channels=3)
    assert decoder.output_logit_bias() is decoder.net[-2].bias and decoder.output_logit_bias().shape == (3,)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"widths": [8]}, r"needs 2-5 levels \(f = 2, 4, 8 or 16\); got 1"),
        ({"widths": [8] * 6}, "got 6"),
        ({"widths": []}, "at least one width"),
        ({"widths": [8, 0]}, "widths must all be >= 1"),
        ({"blocks": 0}, "blocks must be >= 1"),
        ({"widhts": [8, 8]}, r"no option 'widhts' \(did you mean 'widths'\?\)"),
    ],
)
def test_bad_options_are_refused(config: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        vqtoolkit.create("encoder", "resnet", **config)
