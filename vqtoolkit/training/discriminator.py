"""The VQGAN recipe's critic: a PatchGAN discriminator, its two losses and the adaptive weight.

:class:`PatchDiscriminator` scores overlapping patches of an image as real or reconstructed (pix2pix's
PatchGAN, as taming-transformers uses it). :func:`discriminator_loss` and :func:`generator_loss` are
the ``hinge`` and ``non-saturating`` objectives; :func:`adaptive_weight` is taming-transformers'
λ = ‖∇L_rec‖ / (‖∇L_gan‖ + ε) on the decoder's last layer, which keeps the adversarial term's gradient
on the scale of the reconstruction's whatever the losses' magnitudes. The stage-1 loop uses them
through :mod:`vqtoolkit.training.objective`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vqtoolkit.errors import ConfigError

#: The adaptive weight is clamped to [0, ADAPTIVE_WEIGHT_MAX] (taming-transformers' 1e4).
ADAPTIVE_WEIGHT_MAX = 1e4
#: Added to the GAN gradient's norm so a vanishing GAN gradient gives a large, finite λ.
EPSILON = 1e-4


class PatchDiscriminator(nn.Module):
    """A PatchGAN: strided 4×4 convolutions to a map of real/fake logits, one per image patch.

    ``Conv(in, C, 4, 2) → LeakyReLU``, then ``layers - 1`` stride-2 and one stride-1 convolution
    doubling the width (at most 8·C), each normalised and activated, then ``Conv(·, 1, 4, 1)``. On
    28×28 images the default two layers leave a 5×5 map of logits (patches of about 22 pixels);
    three layers suit 256×256 images (taming-transformers' setting).

    Args:
        in_channels: Image channels.
        layers: Stride-2 convolutions (each halves the resolution).
        channels: Width of the first convolution.
        spectral_norm: Spectral normalisation on every convolution instead of a per-image
            normalisation layer (GroupNorm with one group).

    Raises:
        ConfigError: ``layers`` or ``channels`` below 1.
    """

    def __init__(
        self, in_channels: int, layers: int = 2, channels: int = 16, spectral_norm: bool = False
    ) -> None:
        super().__init__()
        if layers < 1 or channels < 1:
            raise ConfigError(
                f"discriminator_layers and discriminator_channels must be >= 1; got {layers} and {channels}"
            )
        widths = [channels * min(2**i, 8) for i in range(layers + 1)]

        def conv(c_in: int, c_out: int, stride: int) -> nn.Module:
            layer = nn.Conv2d(c_in, c_out, 4, stride, 1)
            return nn.utils.parametrizations.spectral_norm(layer) if spectral_norm else layer

        blocks: list[nn.Module] = [conv(in_channels, widths[0], 2), nn.LeakyReLU(0.2)]
        for i in range(1, layers + 1):
            blocks.append(conv(widths[i - 1], widths[i], 2 if i < layers else 1))
            blocks += [nn.Identity() if spectral_norm else nn.GroupNorm(1, widths[i]), nn.LeakyReLU(0.2)]
        blocks.append(conv(widths[-1], 1, 1))
        self.net = nn.Sequential(*blocks)

    def forward(self, images: Tensor) -> Tensor:
        """Logits ``(B, 1, h, w)``: one per patch, positive for "real"."""
        return self.net(images)


def discriminator_loss(real: Tensor, fake: Tensor, kind: str) -> Tensor:
    """The discriminator's loss on the logits of real and of reconstructed images.

    Args:
        real: Logits of real images.
        fake: Logits of reconstructions (detached from the generator).
        kind: ``hinge``: ``mean(relu(1 - real)) + mean(relu(1 + fake))``; ``non-saturating``:
            ``mean(softplus(-real)) + mean(softplus(fake))`` (binary cross-entropy).

    Returns:
        The scalar loss, halved as in taming-transformers.
    """
    if kind == "hinge":
        return 0.5 * (F.relu(1 - real).mean() + F.relu(1 + fake).mean())
    return 0.5 * (F.softplus(-real).mean() + F.softplus(fake).mean())


def generator_loss(fake: Tensor, kind: str) -> Tensor:
    """The generator's adversarial loss on the logits of its reconstructions.

    Args:
        fake: Logits of reconstructions (with the generator's graph).
        kind: ``hinge``: ``-mean(fake)``; ``non-saturating``: ``mean(softplus(-fake))``.

    Returns:
        The scalar loss.
    """
    return -fake.mean() if kind == "hinge" else F.softplus(-fake).mean()


def adaptive_weight(reconstruction: Tensor, adversarial: Tensor, last_layer: Tensor) -> Tensor:
    """λ = ‖∇L_rec‖ / (‖∇L_gan‖ + ε), both gradients taken on ``last_layer``, clamped and detached.

    Args:
        reconstruction: The reconstruction (plus perceptual) loss, with its graph.
        adversarial: The generator's adversarial loss, with its graph.
        last_layer: The decoder's last weight (:meth:`vqtoolkit.decoders.base.Decoder.last_layer`).

    Returns:
        A float32 scalar in ``[0, ADAPTIVE_WEIGHT_MAX]``, outside the autograd graph.
    """
    rec_grad = torch.autograd.grad(reconstruction, last_layer, retain_graph=True)[0]
    adv_grad = torch.autograd.grad(adversarial, last_layer, retain_graph=True)[0]
    weight = rec_grad.float().norm() / (adv_grad.float().norm() + EPSILON)
    return weight.clamp(0, ADAPTIVE_WEIGHT_MAX).detach()
