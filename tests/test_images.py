"""Image grids: tiling, the gap between sections, and refusing unknown suffixes."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vqtoolkit.data.images import grid_bytes, save_grid
from vqtoolkit.errors import ConfigError


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("L"))  # make_grid writes grey as RGB


def test_sections_start_new_rows_with_a_white_gap_between_them() -> None:
    black = torch.zeros(16, 1, 28, 28)
    one = pixels(grid_bytes(black, nrow=8, padding=2))
    two = pixels(grid_bytes(black, nrow=8, padding=2, sections=2))
    assert one.shape == (2 * 30 + 2, 8 * 30 + 2)  # make_grid: two rows of 8, 2-pixel padding
    assert two.shape == (2 * 32 + 3 * 2, one.shape[1])  # each section padded all round, a 6-pixel gap
    gap = two[32 : 32 + 6]
    assert (gap == 255).all()
    assert (two[2:30, 2:30] == 0).all() and (two[-30:-2, 2:30] == 0).all()  # images either side


def test_a_reconstructions_file_keeps_originals_and_reconstructions_apart(tmp_path: Path) -> None:
    path = save_grid(torch.rand(8, 1, 8, 8), tmp_path / "r.png", nrow=4, sections=2)
    assert pixels(path.read_bytes()).shape == (2 * 12 + 6, 4 * 10 + 2)


def test_an_unknown_suffix_is_refused_before_writing(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"suffix '\.gif'"):
        save_grid(torch.rand(4, 1, 8, 8), tmp_path / "x.gif")
    assert not (tmp_path / "x.gif").exists()
