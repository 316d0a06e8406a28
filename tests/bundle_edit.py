"""Helpers that tamper with bundles the way corruption, hand edits or attackers would (tests only)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as load_bytes
from safetensors.torch import save as save_bytes

from vqtoolkit import bundle


def split(data: bytes) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The metadata document and tensors of a valid bundle's bytes."""
    header_len = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + header_len])
    return json.loads(header["__metadata__"][bundle.METADATA_KEY]), load_bytes(data)


def join(
    document: Any, tensors: dict[str, torch.Tensor], *, sign: bool = True, text: str | None = None
) -> bytes:
    """A bundle's bytes from a (possibly edited) document and tensors; ``sign`` recomputes the checksum,
    as someone who edits a bundle on purpose would."""
    text = json.dumps(document) if text is None else text
    checksum = bundle.digest(text, tensors) if sign else "0" * 64
    return save_bytes(tensors, metadata={bundle.METADATA_KEY: text, bundle.DIGEST_KEY: checksum})


def rewrite(path: Path, out: Path, *, sign: bool = True, edit_document=None, edit_tensors=None) -> Path:
    """Copy the bundle at ``path`` to ``out`` after applying the edit functions (which mutate in place)."""
    document, tensors = split(path.read_bytes())
    if edit_document is not None:
        edit_document(document)
    if edit_tensors is not None:
        edit_tensors(tensors)
    out.write_bytes(join(document, tensors, sign=sign))
    return out


def tiny_pipeline(prior: str | None = "gmm", **prior_config: Any):
    """An untrained, small pipeline with a fitted prior: a bundle of ~20 kB, built in well under a second."""
    import vqtoolkit
    from vqtoolkit.data import ImageDataset

    torch.manual_seed(0)
    pipe = vqtoolkit.build(
        "conv",
        "vq",
        "conv",
        None,
        dim=4,
        num_codes=8,
        encoder_config={"hidden_channels": [8, 8]},
        decoder_config={"hidden_channels": [8, 8]},
    )
    images = torch.rand(48, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    labels = torch.arange(48) % 3
    data = ImageDataset("tiny", images[:32], labels[:32], images[32:], labels[32:], 3, 1)
    pipe.info.update(dataset="tiny", epochs=0, metrics={"test_mse": 0.25, "test_psnr": float("inf")})
    if prior is not None:
        pipe.fit_prior(data, prior, progress=False, **prior_config)
    return pipe
