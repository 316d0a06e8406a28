"""ONNX export: ``encoder.onnx`` (images → code indices) and ``decoder.onnx`` (code indices → images).

Both graphs have a dynamic batch axis; the image size is the one the bundle records. Beside them go
``codebook.npy`` (the code vectors, for the quantizers that store a codebook: ``vq``, ``ema``,
``residual``; ``fsq``'s codes are its grid, rebuilt from the levels) and ``onnx.json``, which names
every input, output, shape and dtype. After writing, the graphs run in ONNX Runtime on a batch of
images and must give PyTorch's indices exactly and its images within :data:`TOLERANCE`, else the
export fails. A prior's sampler is not exported: sampling stays in Python (see ``docs/sharing.md``).
Needs ``pip install "vqtoolkit[onnx]"`` (onnx, onnxruntime, onnxscript).
"""

from __future__ import annotations

import copy
import inspect
import io
import json
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from vqtoolkit._util.atomic import atomic_write
from vqtoolkit._version import __version__
from vqtoolkit.components.base import component_name
from vqtoolkit.errors import ConfigError, ShapeError
from vqtoolkit.model.vqvae import VQVAE
from vqtoolkit.sharing.extras import require
from vqtoolkit.sharing.graphs import Decode, Encode

if TYPE_CHECKING:
    from vqtoolkit.pipeline import Pipeline

#: Largest difference allowed between ONNX Runtime's images and PyTorch's.
TOLERANCE = 1e-5
#: Images the export is traced with (not 1: a batch of one would be fixed into the graph).
TRACE_BATCH = 2


def _export(module: nn.Module, example: Tensor, names: tuple[str, str], owner: Any, path: Path) -> None:
    """Write ``module`` as ONNX at ``path`` with a dynamic batch axis; a failure names ``owner``."""
    batch = torch.export.Dim("batch", min=1)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's notes on its own internals
            program = torch.onnx.export(
                module,
                (example,),
                input_names=[names[0]],
                output_names=[names[1]],
                dynamic_shapes=({0: batch},),
                dynamo=True,
                verbose=False,
            )
    except Exception as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(
            f"the {owner.kind} {component_name(owner)!r} cannot be exported to ONNX ({reason[:300]}); "
            f"keep this model in PyTorch (vqtoolkit.load)"
        ) from err
    if program is None:
        raise ConfigError(f"torch.onnx.export returned no program for the {owner.kind}; update torch")
    atomic_write(path, program.model_proto.SerializeToString())  # one file: weights inside (under 2 GB)


def _session(path: Path) -> Any:
    ort = require("onnxruntime", "onnx", "checking the exported graphs")
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def check_graphs(model: VQVAE, folder: str | Path, images: Tensor) -> dict[str, Any]:
    """Run ``encoder.onnx`` and ``decoder.onnx`` of ``folder`` in ONNX Runtime and compare with PyTorch.

    Args:
        model: The PyTorch model the graphs were exported from.
        folder: Where :func:`export_onnx` wrote them.
        images: A batch ``(B, C, H, W)`` in [0, 1] to compare on.

    Returns:
        ``images``, ``index_mismatches`` (positions where the indices differ) and
        ``max_image_difference`` (largest absolute pixel difference of the decoded images).

    Raises:
        ConfigError: ``onnxruntime`` is not installed.
    """
    folder = Path(folder)
    model = copy.deepcopy(model).to("cpu").eval()
    images = images.detach().to("cpu", torch.float32)
    with torch.inference_mode():
        indices = model.encode(images)
        decoded = model.decode_indices(indices).clamp(0, 1)
    onnx_indices = _session(folder / "encoder.onnx").run(None, {"images": images.numpy()})[0]
    onnx_images = _session(folder / "decoder.onnx").run(None, {"indices": indices.numpy()})[0]
    return {
        "images": len(images),
        "index_mismatches": int((torch.from_numpy(onnx_indices) != indices).sum()),
        "max_image_difference": float((torch.from_numpy(onnx_images) - decoded).abs().max()),
    }


def _manifest(model: VQVAE, image_shape: list[int], grid: list[int], codebook: str | None) -> dict[str, Any]:
    quantizer = model.quantizer
    return {
        "format": "vqtoolkit.onnx",
        "vqtoolkit_version": __version__,
        "quantizer": {
            "name": component_name(quantizer),
            "num_codes": quantizer.num_codes,
            "dim": quantizer.dim,
            "config": getattr(quantizer, "config", {}),
        },
        "encoder": {
            "file": "encoder.onnx",
            "input": {
                "name": "images",
                "shape": ["batch", *image_shape],
                "dtype": "float32",
                "range": [0, 1],
            },
            "output": {"name": "indices", "shape": ["batch", *grid], "dtype": "int64"},
        },
        "decoder": {
            "file": "decoder.onnx",
            "input": {"name": "indices", "shape": ["batch", *grid], "dtype": "int64"},
            "output": {
                "name": "images",
                "shape": ["batch", *image_shape],
                "dtype": "float32",
                "range": [0, 1],
            },
        },
        "codebook": codebook,
        "prior": "not exported: sampling new code grids stays in Python (vqtoolkit.load(...).sample_indices)",
    }


def export_onnx(
    pipe: Pipeline,
    folder: str | Path,
    *,
    image_shape: tuple[int, int, int] | None = None,
    verify: bool = True,
) -> dict[str, Any]:
    """Export ``pipe``'s encoder and decoder to ONNX in ``folder`` (see the module docstring for the files).

    Args:
        pipe: The pipeline; its model is copied to the CPU for the export, and is left as it was.
        folder: Where the files go (created if needed).
        image_shape: ``(C, H, W)`` of the images, when the pipeline does not record it (``info``).
        verify: Run the graphs in ONNX Runtime on a batch of images and compare with PyTorch.

    Returns:
        The manifest written as ``onnx.json``, with ``check`` (from :func:`check_graphs`) when verified.

    Raises:
        ConfigError: The ``onnx`` extra is missing, the image shape is unknown, a component cannot be
            exported (the message names it), or the graphs disagree with PyTorch.
    """
    require("onnxscript", "onnx", "ONNX export")
    require("onnx", "onnx", "ONNX export")
    if "dynamo" not in inspect.signature(torch.onnx.export).parameters:
        raise ConfigError(
            f"ONNX export needs torch 2.5 or later (torch.export); this is torch {torch.__version__}"
        )
    shape = list(image_shape or pipe.info.get("image_shape") or [])
    if len(shape) != 3:
        raise ConfigError(
            "the model does not record its image shape; pass image_shape=(C, H, W) (--image-shape C H W)"
        )
    model = copy.deepcopy(pipe.model).to("cpu").eval()
    example = torch.rand(TRACE_BATCH, *shape, generator=torch.Generator().manual_seed(0))
    try:
        model.check_images(example)
    except ShapeError as err:
        raise ConfigError(f"cannot export for images {shape}: {err}") from err
    folder = Path(folder)
    if folder.is_file():
        raise ConfigError(f"{folder} is a file; the ONNX export writes a folder, give a folder name")
    folder.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        indices = model.encode(example)
        _export(Encode(model), example, ("images", "indices"), model.encoder, folder / "encoder.onnx")
        _export(Decode(model), indices, ("indices", "images"), model.decoder, folder / "decoder.onnx")
    codebook = None
    if next(model.quantizer.parameters(), None) is not None:  # a stored codebook (fsq's is implicit)
        buffer = io.BytesIO()
        np.save(buffer, model.quantizer.codebook.detach().float().numpy())
        atomic_write(folder / "codebook.npy", buffer.getvalue())
        codebook = "codebook.npy"
    manifest = _manifest(model, shape, list(indices.shape[1:]), codebook)
    atomic_write(folder / "onnx.json", (json.dumps(manifest, indent=2) + "\n").encode())
    if verify:
        batch = torch.rand(TRACE_BATCH + 3, *shape, generator=torch.Generator().manual_seed(1))
        check = check_graphs(model, folder, batch)
        if check["index_mismatches"] or check["max_image_difference"] > TOLERANCE:
            raise ConfigError(
                f"the exported graphs in {folder} disagree with PyTorch ({check['index_mismatches']} indices "
                f"differ, images by up to {check['max_image_difference']:.3g}); report it with the bundle"
            )
        manifest["check"] = check
    return manifest
