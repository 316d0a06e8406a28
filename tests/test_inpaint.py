"""Editing by codes: kept codes stay exactly, every prior that can edits, the others say they cannot."""

from __future__ import annotations

import factories
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from vqtoolkit.cli import main
from vqtoolkit.components import registry
from vqtoolkit.data.images import save_grid
from vqtoolkit.errors import ConfigError
from vqtoolkit.priors.editing import code_region, inpaint

pytestmark = pytest.mark.usefixtures("one_thread")

K = 6
EDITING = [
    ("maskgit", {"dim": 16, "layers": 1, "heads": 2, "epochs": 1, "batch_size": 32}),
    ("pixelcnn", {"channels": 8, "layers": 3, "epochs": 1, "batch_size": 32}),
    ("transformer", {"dim": 16, "layers": 1, "heads": 2, "epochs": 1, "batch_size": 32}),
]


def grids(n: int = 48) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(n) % 3
    return labels[:, None, None] + torch.randint(0, 2, (n, 5, 6), generator=g), labels


@pytest.mark.parametrize(("name", "options"), EDITING)
@pytest.mark.parametrize("conditional", [False, True])
def test_resampling_keeps_every_unmasked_code_exactly(name, options, conditional):
    data, labels = grids()
    extra = {"conditional": True, "num_classes": 3} if conditional else {"clusters": 2}
    prior = registry.create("prior", name, num_codes=K, **options, **extra).fit(data, labels, progress=False)
    keep = torch.rand(data.shape, generator=torch.Generator().manual_seed(1)) < 0.6
    edited = prior.resample(data, keep, label=1 if conditional else None, generator=torch.Generator())
    assert edited.shape == data.shape and edited.dtype == torch.long
    assert torch.equal(edited[keep], data[keep])
    assert not torch.equal(edited, data)  # the masked codes were drawn again, not copied
    assert int(edited.min()) >= 0 and int(edited.max()) < K
    top = torch.zeros(5, 6, dtype=torch.bool)
    top[:2] = True  # one (H, W) mask for every grid
    again = [prior.resample(data, top, generator=torch.Generator().manual_seed(3)) for _ in range(2)]
    assert torch.equal(*again) and torch.equal(again[0][:, :2], data[:, :2])


def test_a_pixel_box_redraws_the_codes_whose_patches_it_touches():
    mask = torch.zeros(28, 28, dtype=torch.bool)
    mask[14:, :] = True  # the bottom half
    region = code_region(mask, (7, 7))
    assert region.shape == (1, 7, 7) and bool(region[0, 4:].all()) and not bool(region[0, :3].any())
    mask[:, 13] = True  # one column of pixels reaches every code of its column
    assert bool(code_region(mask, (7, 7))[0, :, 3].all())


@pytest.fixture(scope="module")
def fitted_pipeline():
    pipe = factories.tiny_pipeline(num_codes=16, dim=8)
    pipe.info.update(dataset="digits", seed=0, image_shape=[1, 28, 28])
    pipe.fit_prior(factories.tiny_data(), "maskgit", progress=False, **EDITING[0][1])
    return pipe


def test_inpaint_with_an_empty_mask_is_the_reconstruction(fitted_pipeline):
    images = factories.tiny_data().test_images[:3]
    nothing = torch.zeros(28, 28, dtype=torch.bool)
    edited = inpaint(fitted_pipeline.model, fitted_pipeline.prior, images, nothing)
    assert torch.allclose(edited, fitted_pipeline.reconstruct(images).clamp(0, 1))
    half = nothing.clone()
    half[14:] = True
    completed = inpaint(
        fitted_pipeline.model, fitted_pipeline.prior, images, half, generator=torch.Generator()
    )
    assert completed.shape == images.shape and float(completed.min()) >= 0 and float(completed.max()) <= 1


@pytest.mark.parametrize(("name", "options", "why"), [
    ("gmm", {"n_components": 2, "pca_dim": 4}, "whole-image latents"),
    ("categorical", {}, "every position on its own"),
])  # fmt: skip
def test_priors_that_cannot_edit_say_so_in_one_line(name, options, why):
    pipe = factories.tiny_pipeline(num_codes=16, dim=8)
    pipe.fit_prior(factories.tiny_data(), name, progress=False, **options)
    mask = torch.ones(28, 28, dtype=torch.bool)
    with pytest.raises(ConfigError, match=f"the {name} prior cannot inpaint: it .*{why}") as error:
        inpaint(pipe.model, pipe.prior, factories.tiny_data().test_images[:2], mask)
    assert "\n" not in str(error.value) and "--prior maskgit" in str(error.value)


def test_cli_inpaint_writes_a_png(tmp_path, fitted_pipeline):
    bundle = fitted_pipeline.save(tmp_path / "maskgit.safetensors")
    image = save_grid(factories.tiny_data().test_images[:1], tmp_path / "digit.png")
    out = tmp_path / "completed.png"
    args = [
        "inpaint",
        str(bundle),
        str(image),
        "--box",
        "14,0,14,28",
        "-n",
        "3",
        "--steps",
        "4",
        "-o",
        str(out),
    ]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert Image.open(out).size[0] > 5 * 28  # the image, its blanked copy and 3 completions in a row
    result = CliRunner().invoke(main, [*args[:4], "14,0", "-o", str(tmp_path / "x.png")])
    assert result.exit_code == 1 and "--box takes top,left,height,width" in result.output
    assert "Traceback" not in result.output


def test_the_pipeline_inpaints_as_the_editing_function_does(fitted_pipeline):
    images = factories.tiny_data().test_images[:3]
    bottom = torch.zeros(28, 28, dtype=torch.bool)
    bottom[14:] = True
    direct = inpaint(
        fitted_pipeline.model,
        fitted_pipeline.prior,
        images,
        bottom,
        generator=torch.Generator().manual_seed(5),
    )
    edited = fitted_pipeline.inpaint(images, bottom, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(edited, direct, rtol=0, atol=0)
    assert not torch.equal(edited[:, :, 14:], fitted_pipeline.reconstruct(images).clamp(0, 1)[:, :, 14:])


class GroupEchoNet(torch.nn.Module):
    """A stand-in network whose every position predicts code ``c`` under condition ``c``."""

    def forward(self, tokens: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
        logits = torch.full((len(tokens), K, *tokens.shape[1:]), -20.0)
        logits[torch.arange(len(tokens)), groups.clamp(max=K - 1)] = 20.0
        return logits


def test_maskgit_draws_an_edits_condition_from_the_kept_codes():
    data, labels = grids()
    options = dict(EDITING)["maskgit"]
    prior = registry.create("prior", "maskgit", num_codes=K, conditional=True, num_classes=3, **options)
    prior.fit(data, labels, progress=False)
    prior.net = GroupEchoNet()
    shown = torch.tensor([0, 2, 1, 2]).repeat_interleave(5 * 6).view(4, 5, 6)  # each grid shows one code
    keep = torch.zeros(5, 6, dtype=torch.bool)
    keep[:2] = True
    groups = prior._groups_given(shown, keep.expand_as(shown), torch.Generator().manual_seed(0))
    assert groups.tolist() == [0, 2, 1, 2]
    edited = prior.resample(shown, keep, generator=torch.Generator().manual_seed(0))
    assert torch.equal(edited, shown), "the region is drawn under the condition the kept codes show"
