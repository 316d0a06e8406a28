"""Training needs no registry: components that no entry point names train, checkpoint and resume.

Only a bundle needs registered names (it must rebuild the components elsewhere); saving one with an
unregistered component is a clear error. Also: what a pipeline switches for a while (eval mode,
frozen parameters) is switched back, even when the work inside fails.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import vqtoolkit
from vqtoolkit.data.datasets import ImageDataset
from vqtoolkit.decoders.base import Decoder
from vqtoolkit.encoders.base import Encoder
from vqtoolkit.errors import BundleError
from vqtoolkit.priors.categorical import CategoricalPrior
from vqtoolkit.quantize.base import Quantizer, QuantizerOutput


class PatchEncoder(Encoder):
    """One 4×4 stride-4 convolution: 28×28 images to 7×7 latents."""

    def __init__(self, in_channels: int = 1, dim: int = 8) -> None:
        super().__init__()
        self.in_channels, self.dim, self.downsample = in_channels, dim, 4
        self.conv = nn.Conv2d(in_channels, dim, 4, 4)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class PatchDecoder(Decoder):
    """One 4×4 stride-4 transposed convolution and a sigmoid."""

    def __init__(self, out_channels: int = 1, dim: int = 8) -> None:
        super().__init__()
        self.out_channels, self.dim, self.upsample = out_channels, dim, 4
        self.conv = nn.ConvTranspose2d(dim, out_channels, 4, 4)

    def forward(self, q: Tensor) -> Tensor:
        return torch.sigmoid(self.conv(q))


class PlainQuantizer(Quantizer):
    """Nearest code by ``cdist``, codebook and commitment losses, straight-through gradients."""

    def __init__(self, num_codes: int = 16, dim: int = 8) -> None:
        super().__init__()
        self.num_codes, self.dim = num_codes, dim
        self.codes = nn.Parameter(torch.randn(num_codes, dim))

    @property
    def codebook(self) -> Tensor:
        return self.codes

    def nearest(self, flat: Tensor) -> Tensor:
        return torch.cdist(flat, self.codes.detach()).argmin(dim=1)

    def forward(self, z: Tensor) -> QuantizerOutput:
        flat = z.permute(0, 2, 3, 1).reshape(-1, self.dim)
        indices = self.nearest(flat)
        q = self.codes[indices].view(z.shape[0], *z.shape[2:], self.dim).permute(0, 3, 1, 2)
        loss = F.mse_loss(q, z.detach()) + 0.25 * F.mse_loss(z, q.detach())
        counts = torch.bincount(indices, minlength=self.num_codes)
        return QuantizerOutput(z + (q - z).detach(), indices.view(z.shape[0], *z.shape[2:]), loss, counts)


def unregistered_pipeline() -> vqtoolkit.Pipeline:
    torch.manual_seed(0)  # instances bring their own weights: the same ones for every call
    return vqtoolkit.build(PatchEncoder(), PlainQuantizer(), PatchDecoder(), CategoricalPrior(num_codes=16))


def test_unregistered_components_train_through_build_and_fit(small_digits: ImageDataset) -> None:
    pipe = unregistered_pipeline()
    pipe.fit(small_digits, epochs=2, batch_size=64, progress=False)
    history = pipe.info["history"]
    assert len(history) == 2
    assert history[-1]["train_recon"] < history[0]["train_recon"]
    assert pipe.sample(4, generator=torch.Generator().manual_seed(0)).shape == (4, 1, 28, 28)


def test_unregistered_components_checkpoint_and_resume(small_digits: ImageDataset, tmp_path: Path) -> None:
    path = tmp_path / "run.safetensors"
    options = {"batch_size": 64, "progress": False, "lr_schedule": "constant", "checkpoint_path": path}
    straight = unregistered_pipeline()
    straight.fit_autoencoder(small_digits, epochs=2, **options)
    resumed = unregistered_pipeline()
    resumed.fit_autoencoder(small_digits, epochs=1, **options)
    again = unregistered_pipeline()
    again.fit_autoencoder(small_digits, epochs=2, resume=True, **options)
    for a, b in zip(straight.model.parameters(), again.model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_a_bundle_is_where_the_name_is_needed(small_digits: ImageDataset, tmp_path: Path) -> None:
    pipe = unregistered_pipeline()
    with pytest.raises(BundleError, match="not registered"):
        pipe.save(tmp_path / "x.safetensors")


def test_sampling_and_reconstructing_restore_the_model_mode(small_digits: ImageDataset) -> None:
    pipe = unregistered_pipeline()
    pipe.fit(small_digits, epochs=1, batch_size=256, progress=False)
    pipe.model.train()
    pipe.model.quantizer.eval()  # a submodule's own mode survives too
    pipe.sample(2, generator=torch.Generator().manual_seed(0))
    pipe.reconstruct(torch.rand(2, 1, 28, 28))
    pipe.decode(pipe.encode(torch.rand(2, 1, 28, 28)))
    pipe.interpolate(torch.rand(1, 28, 28), torch.rand(1, 28, 28), steps=3)
    assert pipe.model.training and pipe.model.encoder.training
    assert not pipe.model.quantizer.training


def test_fit_prior_unfreezes_the_model_even_when_the_fit_fails(small_digits: ImageDataset) -> None:
    pipe = unregistered_pipeline()
    seen_frozen = []

    class FailingPrior(CategoricalPrior):
        def fit(self, data: Tensor, **options: object) -> CategoricalPrior:
            seen_frozen.append(not any(p.requires_grad for p in pipe.model.parameters()))
            raise RuntimeError("fit failed")

    kept_frozen = next(pipe.model.encoder.parameters())
    kept_frozen.requires_grad_(False)  # frozen by the user before: stays frozen
    with pytest.raises(RuntimeError, match="fit failed"):
        pipe.fit_prior(small_digits, FailingPrior(num_codes=16))
    assert seen_frozen == [True]
    assert not kept_frozen.requires_grad
    assert all(p.requires_grad for p in pipe.model.decoder.parameters())
    assert pipe.model.quantizer.codes.requires_grad
