"""What a fresh `vqtool sample` imports: no torch._dynamo, scikit-learn, matplotlib or torchvision.

Each of these takes from a fraction of a second to seconds to import, more than drawing a few samples
from a small bundle. The checks run `vqtool sample` in a fresh process on bundles of every built-in
prior and quantizer, and time nothing.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from bundle_edit import rewrite
from factories import tiny_data, tiny_pipeline
from safetensors.torch import save as save_bytes

#: Modules nothing on the load-and-sample path of a built-in bundle needs.
HEAVY = ("torch._dynamo", "sklearn", "matplotlib", "torchvision")
TINY_NET = {"dim": 16, "layers": 1, "heads": 2, "epochs": 1, "batch_size": 32, "clusters": None}
#: (prior, quantizer, prior options) of each bundle sampled.
BUNDLES = [
    ("categorical", "vq", {}),
    ("gmm", "vq", {"n_components": 2, "pca_dim": 3}),
    ("pixelcnn", "vq", {"channels": 4, "layers": 3, "epochs": 1, "conditional": True}),
    ("transformer", "vq", TINY_NET),
    ("maskgit", "vq", TINY_NET),
    *[("categorical", quantizer, {}) for quantizer in ("ema", "fsq", "lfq", "bsq", "residual")],
]
#: Runs `vqtool sample` on each path, then prints what it imported of HEAVY, and whether torch.
SAMPLE = f"""
import sys
from vqtoolkit.cli import main
for path in sys.argv[1:]:
    try:
        main(["sample", path, "-n", "2", "-o", path + ".png"], prog_name="vqtool")
    except SystemExit as exit:
        if exit.code:
            print("exit", exit.code)
print(sorted(m for m in sys.modules if m.startswith({HEAVY!r})), "torch" in sys.modules)
"""


def sample_fresh(paths: list[Path]) -> tuple[list[str], str]:
    """The stdout lines and the stderr of a fresh process that runs `vqtool sample` on each of ``paths``."""
    out = subprocess.run(
        [sys.executable, "-c", SAMPLE, *map(str, paths)], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines(), out.stderr


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("bundles")
    paths = []
    for prior, quantizer, options in BUNDLES:
        torch.manual_seed(0)
        pipe = tiny_pipeline(None, quantizer)
        pipe.fit_prior(tiny_data(), prior, progress=False, **options)
        paths.append(pipe.save(folder / f"{prior}-{quantizer}.safetensors"))
    return paths


def test_sampling_built_in_bundles_imports_nothing_heavy(bundles: list[Path]) -> None:
    lines, _ = sample_fresh(bundles)
    assert lines == [f"wrote 2 samples to {path}.png" for path in bundles] + ["[] True"]


def test_a_file_that_is_no_bundle_is_refused_before_torch(tmp_path: Path) -> None:
    foreign = tmp_path / "foreign.safetensors"
    foreign.write_bytes(save_bytes({"w": torch.zeros(2)}))
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(save_bytes({"w": torch.zeros(2)}, metadata={"vqtoolkit": "{}"})[:-1])
    lines, errors = sample_fresh([foreign, truncated])
    assert lines == ["exit 1", "exit 1", "[] False"]
    assert "not a vqtoolkit bundle" in errors and "not a readable safetensors file" in errors


def test_a_crafted_config_is_refused_without_heavy_imports(bundles: list[Path], tmp_path: Path) -> None:
    def edit(document: dict) -> None:
        document["components"]["quantizer"]["config"]["num_codes"] = 10**12

    crafted = rewrite(bundles[0], tmp_path / "crafted.safetensors", edit_document=edit)
    lines, errors = sample_fresh([crafted])
    assert lines == ["exit 1", "[] True"]
    assert "check num_codes=1000000000000" in errors
