"""Perceptual losses for stage 1, none of which downloads anything.

``perceptual_features`` (a :class:`~vqtoolkit.training.config.TrainConfig` option) names the features:

* ``ssim`` (weight-free): ``1 - SSIM`` from pytorch-msssim, with the window shrunk to fit small
  images (``pip install "vqtoolkit[perceptual]"``);
* ``ms-ssim`` (weight-free): ``1 - MS-SSIM``, for images of at least 161 pixels a side;
* a path to torchvision VGG16 weights (a ``state_dict`` saved with ``torch.save``, e.g. the file of
  ``torchvision.models.VGG16_Weights.IMAGENET1K_V1``): LPIPS-style distances, the mean squared
  difference of unit-normalised features after each of VGG16's five blocks (no learned linear
  heads: those are LPIPS' own weights). Grey images are repeated to three channels.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

from vqtoolkit.errors import ConfigError

PerceptualLoss = Callable[[Tensor, Tensor], Tensor]
#: The built-in, weight-free choices of ``perceptual_features``.
WEIGHT_FREE = ("ssim", "ms-ssim")
#: Indices in ``torchvision.models.vgg16().features`` after which LPIPS reads features (relu1_2 … relu5_3).
VGG_TAPS = (3, 8, 15, 22, 29)
#: ImageNet's per-channel mean and standard deviation, which VGG16's weights expect.
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def check_features(features: str) -> None:
    """Refuse a ``perceptual_features`` value that names neither a built-in nor an existing file.

    Raises:
        ConfigError: Naming the option and what to pass instead.
    """
    if features not in WEIGHT_FREE and not Path(features).is_file():
        raise ConfigError(
            f"perceptual_features {features!r} is neither {' nor '.join(WEIGHT_FREE)} nor a file of "
            "torchvision VGG16 weights; pass a local weights path (nothing is downloaded) or use 'ssim'"
        )


def perceptual_loss(features: str, device: torch.device) -> PerceptualLoss:
    """The loss ``(reconstruction, images) -> scalar`` that ``features`` names (:func:`check_features`).

    Args:
        features: ``ssim``, ``ms-ssim`` or a path to VGG16 weights.
        device: Where a feature network is placed.

    Returns:
        A function of two image batches in [0, 1], 0 when they are equal.

    Raises:
        ConfigError: Unknown features, pytorch-msssim missing, or weights that are not VGG16's.
    """
    check_features(features)
    if features in WEIGHT_FREE:
        try:
            import pytorch_msssim
        except ImportError as err:
            raise ConfigError(
                f'perceptual_features={features!r} needs pytorch-msssim: pip install "vqtoolkit[perceptual]"'
            ) from err
        if features == "ms-ssim":
            return lambda x_hat, x: 1 - pytorch_msssim.ms_ssim(x_hat.float(), x.float(), data_range=1.0)

        def ssim_loss(x_hat: Tensor, x: Tensor) -> Tensor:
            window = min(11, (min(x.shape[-2:]) - 1) | 1)  # odd, no larger than the image
            return 1 - pytorch_msssim.ssim(x_hat.float(), x.float(), data_range=1.0, win_size=window)

        return ssim_loss
    return VGGDistance(Path(features)).to(device)


class VGGDistance(nn.Module):
    """LPIPS-style distance in a frozen VGG16's features, loaded from a local weights file.

    Args:
        weights: A torchvision VGG16 ``state_dict`` (``features.*`` keys are used, the rest ignored).

    Raises:
        ConfigError: The file is not a loadable VGG16 state dict.
    """

    def __init__(self, weights: Path) -> None:
        super().__init__()
        from torchvision.models import vgg16

        self.features = vgg16(weights=None).features[: VGG_TAPS[-1] + 1]
        try:
            state = torch.load(weights, map_location="cpu", weights_only=True)
            ours = {k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")}
            self.features.load_state_dict(ours)
        except (OSError, RuntimeError, AttributeError, ValueError) as err:
            raise ConfigError(
                f"perceptual_features {str(weights)!r} is not a torchvision VGG16 state dict ({err}); "
                "save one with torch.save(torchvision.models.vgg16(weights=...).state_dict(), path)"
            ) from err
        self.features.requires_grad_(False).eval()
        self.mean: Tensor
        self.std: Tensor
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def train(self, mode: bool = True) -> VGGDistance:
        """The feature network stays in eval mode (no dropout, fixed statistics)."""
        return self

    def forward(self, x_hat: Tensor, x: Tensor) -> Tensor:
        """Mean over VGG16's five blocks of the squared distance between unit-normalised features."""
        both = torch.cat([x_hat, x]).float().expand(-1, 3, -1, -1)  # grey → three channels
        h = (both - self.mean) / self.std
        total = h.new_zeros(())
        for i, layer in enumerate(self.features):
            h = layer(h)
            if i in VGG_TAPS:
                a, b = (h / (h.norm(dim=1, keepdim=True) + 1e-10)).chunk(2)
                total = total + (a - b).square().sum(dim=1).mean()
        return total / len(VGG_TAPS)
