"""How much of MNIST's 7×7 latent grid is blank background, and what that caps perplexity at.

A latent position of the classic encoder (two stride-2 4×4 convolutions with padding 1) sees a 10×10
pixel window. Where that window is all zeros the encoder's output is a constant that depends only on
which zero padding the window overlaps: one value for the interior, one per edge and one per corner,
9 in all. Identical vectors always get the same code, so these positions can use at most 9 codes
whatever the quantizer does; this script measures their share of the test set and prints the
highest test perplexity a K-code quantizer can then reach (every other code used equally often),
with the 9 blank values on 9 codes, and with all of them on one code.

    python benchmarks/blank_positions.py --data-root ../shared/data
"""

from __future__ import annotations

import argparse
import math

import torch
import torch.nn.functional as F

import vqtoolkit

WINDOW, STRIDE, PAD = 10, 4, 3  # receptive field of Conv(4,2,1) → Conv(4,2,1) on 28×28: 7×7 positions


def perplexity_cap(blank_shares: list[float], num_codes: int) -> float:
    """exp(entropy) with the blank classes on their own codes and the rest spread evenly."""
    blank = sum(blank_shares)
    rest = 1.0 - blank
    entropy = -sum(p * math.log(p) for p in blank_shares if p > 0)
    entropy -= rest * math.log(rest / (num_codes - len(blank_shares)))
    return math.exp(entropy)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-root", default="../shared/data")
    parser.add_argument("--num-codes", type=int, default=512)
    args = parser.parse_args()
    images = vqtoolkit.load_dataset("mnist", args.data_root).test_images
    inked = F.max_pool2d(F.pad((images > 0).float(), (PAD,) * 4), WINDOW, STRIDE)[:, 0]
    blank = 1.0 - inked  # (N, 7, 7): 1 where the position's whole window is background
    side = blank.shape[-1]
    border = torch.tensor([0] + [1] * (side - 2) + [2])  # first row/column, interior, last
    classes = border[:, None] * 3 + border[None, :]  # 9 padding classes over the grid
    names = [
        "top-left",
        "top",
        "top-right",
        "left",
        "interior",
        "right",
        "bottom-left",
        "bottom",
        "bottom-right",
    ]
    shares = [float(blank[:, classes == c].sum()) / blank.numel() for c in range(9)]
    print(f"MNIST test set, {side}×{side} latent grid: {sum(shares):.1%} of positions are blank")
    for name, share in zip(names, shares, strict=True):
        print(f"  {name:<13} {share:.2%}")
    one, nine = perplexity_cap([sum(shares)], args.num_codes), perplexity_cap(shares, args.num_codes)
    print(
        f"perplexity cap, K = {args.num_codes}: {nine:.0f} with the 9 blank values on 9 codes, "
        f"{one:.0f} with all on one"
    )

    # the premise, checked on an encoder with random weights: one latent vector per class
    encoder = vqtoolkit.create("encoder", "conv", in_channels=1, dim=64)
    with torch.inference_mode():
        latents = torch.cat([encoder(batch) for batch in images.split(1000)]).movedim(1, -1)  # (N,7,7,D)
    spread = 0.0
    for c in range(9):
        vectors = latents[(blank > 0) & (classes == c)]
        spread = max(spread, float((vectors - vectors[0]).abs().max()))
    print(f"largest difference between two blank latents of the same class: {spread}")


if __name__ == "__main__":
    main()
