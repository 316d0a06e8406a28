"""The straight-through core every codebook quantizer shares.

The small functions every quantizer builds on, each the formula from the VQ-VAE paper and nothing else:

* :func:`nearest_codes` - exact nearest-code search by squared L2 (:mod:`.search`), in tiles so
  its extra memory is bounded by ``chunk_bytes`` whatever the codebook size K;
* :func:`vq_losses` - the codebook loss ``mse(q, z.detach())`` and commitment loss
  ``mse(q.detach(), z)``;
* :func:`straight_through` - the estimator ``z + (q - z).detach()``: forward value ``q``,
  gradient the identity;
* :func:`straight_through_lookup` - the code lookup, the estimator and both losses fused into one
  autograd node (same values and gradients as the three above, far fewer passes over memory);
* :func:`rotation_trick` - the alternative estimator of Fifty et al. (2024): forward value ``q``,
  gradient rotated and scaled as if ``q`` were ``λ·R·z`` with ``R`` turning ``z`` onto ``q``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from vqtoolkit.errors import ShapeError
from vqtoolkit.quantize.core.search import DEFAULT_CHUNK_BYTES, nearest_codes

__all__ = [
    "DEFAULT_CHUNK_BYTES",
    "from_flat",
    "nearest_codes",
    "rotation_trick",
    "straight_through",
    "straight_through_lookup",
    "to_flat",
    "vq_losses",
]


def vq_losses(z: Tensor, quantized: Tensor) -> tuple[Tensor, Tensor]:
    """``(codebook_loss, commitment_loss)`` = ``(mse(q, z.detach()), mse(q.detach(), z))``.

    The codebook loss moves codes toward encoder outputs; the commitment loss (scaled by β by the
    caller) keeps the encoder near its codes.
    """
    return F.mse_loss(quantized, z.detach()), F.mse_loss(quantized.detach(), z)


def straight_through(z: Tensor, quantized: Tensor) -> Tensor:
    """``z + (q - z).detach()``: the value of ``q`` with the gradient of ``z`` (identity Jacobian)."""
    return z + (quantized - z).detach()


class _StraightThroughLookup(torch.autograd.Function):
    """``table[indices]`` with the straight-through gradient and both VQ losses, as one node."""

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx, z: Tensor, rows: Tensor, table: Tensor, indices: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        work = torch.promote_types(z.dtype, torch.float32)  # half-precision z: losses in float32
        codes = table.index_select(0, indices.reshape(-1)).to(work)
        diff = codes - rows.to(work)
        mse = torch.dot(diff.reshape(-1), diff.reshape(-1)) / diff.numel()  # one pass, no temporary
        ctx.save_for_backward(diff, indices)
        ctx.table_shape, ctx.table_dtype = table.shape, table.dtype  # type: ignore[attr-defined]
        quantized = from_flat(codes.to(z.dtype), indices).contiguous()
        return quantized, mse, mse.clone()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(
        ctx: torch.autograd.function.FunctionCtx,
        grad_quantized: Tensor,
        grad_codebook: Tensor,
        grad_commit: Tensor,
    ) -> tuple[Tensor | None, None, Tensor | None, None]:
        diff, indices = ctx.saved_tensors  # type: ignore[attr-defined]
        scale = 2.0 / diff.numel()
        grad_z = grad_table = None
        if ctx.needs_input_grad[0]:  # type: ignore[attr-defined]
            # one pass, reading diff through a channel-first view: no layout copy either way
            grad_z = torch.empty_like(grad_quantized, memory_format=torch.contiguous_format)
            torch.addcmul(grad_quantized, from_flat(diff, indices), grad_commit * -scale, out=grad_z)
        if ctx.needs_input_grad[2]:  # type: ignore[attr-defined]
            dtype = ctx.table_dtype  # type: ignore[attr-defined]
            grad_table = diff.new_zeros(ctx.table_shape, dtype=dtype)  # type: ignore[attr-defined]
            grad_table.index_add_(0, indices.reshape(-1), diff.to(dtype)).mul_(grad_codebook * scale)
        return grad_z, None, grad_table, None


def straight_through_lookup(
    z: Tensor, table: Tensor, indices: Tensor, rows: Tensor | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """``(quantized, codebook_loss, commitment_loss)`` for channel-first ``z`` and its code indices.

    ``z`` is ``(B, D, *spatial)``, ``indices`` ``(B, *spatial)`` rows of ``table`` ``(K, D)``;
    ``rows`` is ``to_flat(z)`` if the caller already has it (the search needed it). The values and
    gradients are those of ``q = table[indices]``, :func:`straight_through` and :func:`vq_losses`,
    fused into one autograd node: ``quantized`` (channel-first, contiguous) is exactly ``q``, and the
    backward is one pass for ``z`` and a scatter-add for ``table``, where the composition makes a
    dozen passes and two layout copies (most of a step at small K).
    """
    if (
        z.ndim < 2
        or table.ndim != 2
        or table.shape[1] != z.shape[1]
        or indices.shape != (z.shape[0], *z.shape[2:])
    ):
        raise ShapeError(
            f"straight_through_lookup needs z (B, D, *spatial), table (K, D) and indices (B, *spatial); "
            f"got {tuple(z.shape)}, {tuple(table.shape)} and {tuple(indices.shape)}"
        )
    if rows is None:
        rows = to_flat(z.detach(), z.shape[1])
    result: tuple[Tensor, Tensor, Tensor] = _StraightThroughLookup.apply(z, rows.detach(), table, indices)
    return result


def rotation_trick(z: Tensor, quantized: Tensor, eps: float = 1e-8) -> Tensor:
    """Rows ``(N, D)`` with the value of ``quantized`` and the rotation-trick gradient.

    With ``u = z/‖z‖``, ``v = q/‖q‖``, ``w = (u+v)/‖u+v‖`` (all constants), ``R = I − 2wwᵀ + 2vuᵀ``
    maps ``u`` onto ``v``; the output is ``λ·R·z`` with ``λ = ‖q‖/‖z‖`` (constant), so the gradient
    reaching ``z`` is ``λ·Rᵀ·g``: it keeps the angle between the gradient and the code, which the
    plain STE throws away. The forward value is ``q`` (to float rounding), as with the STE.
    """
    with torch.no_grad():
        z_norm, q_norm = z.norm(dim=1, keepdim=True), quantized.norm(dim=1, keepdim=True)
        u, v = z / z_norm.clamp_min(eps), quantized / q_norm.clamp_min(eps)
        w = F.normalize(u + v, dim=1, eps=eps)
        scale = q_norm / z_norm.clamp_min(eps)
    rotated = z - 2 * (z * w).sum(1, keepdim=True) * w + 2 * (z * u).sum(1, keepdim=True) * v
    rotated = rotated * scale
    result: Tensor = rotated + (quantized - rotated).detach()
    return result


def to_flat(z: Tensor, dim: int) -> Tensor:
    """Channel-first ``(B, D, *spatial)`` to rows ``(B·prod(spatial), D)``, checking D."""
    if z.ndim < 2 or z.shape[1] != dim:
        raise ShapeError(
            f"quantizer expects channel-first input (B, {dim}, *spatial); got shape {tuple(z.shape)}. "
            f"Check that the encoder's output channels equal the quantizer's dim ({dim})."
        )
    return rearrange(z, "b d ... -> (b ...) d")


def from_flat(vectors: Tensor, like_indices: Tensor) -> Tensor:
    """Rows ``(N, D)`` back to channel-first ``(B, D, *spatial)`` following ``indices``' shape."""
    return rearrange(vectors.reshape(*like_indices.shape, vectors.shape[-1]), "b ... d -> b d ...")
