"""The decoder contract: what ``build()`` reads to wire and check components."""

from __future__ import annotations

from torch import Tensor, nn

from vqtoolkit.components.base import Component


class Decoder(Component):
    """Maps latents ``(B, dim, h, w)`` to images ``(B, out_channels, h·upsample, w·upsample)``."""

    kind = "decoder"
    out_channels: int
    dim: int
    upsample: int

    def output_logit_bias(self) -> Tensor | None:
        """The per-channel bias added just before a final sigmoid, or ``None`` if there is none.

        Training shifts it once, before the first step of a fresh run, so that the mean output
        matches the training images' mean (:func:`vqtoolkit.training.loop.calibrate_output_mean`): a
        decoder starting at 0.5 on mostly-black images is otherwise pushed so hard toward 0 in its
        first steps that the sigmoid saturates and stops learning.
        """
        return None

    def last_layer(self) -> Tensor:
        """The weight of the layer that produces the image.

        The VQGAN recipe's adaptive weight compares the reconstruction and adversarial gradients
        there (:mod:`vqtoolkit.training.discriminator`). The default is the weight of the last module
        (in registration order) that has one; a decoder whose output layer comes earlier in that
        order overrides this.

        Returns:
            A parameter of this decoder.

        Raises:
            TypeError: The decoder has no module with a ``weight`` parameter.
        """
        for module in reversed(list(self.modules())):
            weight = getattr(module, "weight", None)
            if isinstance(weight, nn.Parameter):
                return weight
        raise TypeError(f"{type(self).__name__} has no layer with a weight; override Decoder.last_layer()")
