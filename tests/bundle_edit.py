"""Helpers that tamper with bundles the way corruption, hand edits or attackers would (tests only)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as load_bytes
from safetensors.torch import save as save_bytes

from vqtoolkit.storage import bundle


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


def tiny_pipeline(prior: str | None = "gmm", quantizer: str = "vq", **prior_config: Any):
    """An untrained, small pipeline with a fitted prior: a bundle of ~20 kB, built in well under a second."""
    from factories import tiny_data
    from factories import tiny_pipeline as untrained

    torch.manual_seed(0)
    pipe = untrained(None, quantizer)
    pipe.info.update(
        dataset="tiny",
        image_shape=[1, 28, 28],
        epochs=0,
        metrics={"test_mse": 0.25, "test_psnr": float("inf")},
    )
    if prior is not None:
        pipe.fit_prior(tiny_data(), prior, progress=False, **prior_config)
    return pipe


def load_message(path: Path) -> str:
    """``"loaded"``, or ``"BundleError: MESSAGE"`` when loading the bundle at ``path`` is refused."""
    import vqtoolkit

    try:
        vqtoolkit.load(path)
    except bundle.BundleError as err:
        return f"BundleError: {err}"
    return "loaded"


def _config(role: str, **changes: Any) -> Callable[[dict[str, Any]], None]:
    return lambda document: document["components"][role]["config"].update(changes)


#: Crafted headers: name -> (prior of the bundle, edit, field the refusal names).
#: Each once made the loader allocate gigabytes, or loaded and then failed at sampling or evaluation.
HOSTILE_EDITS: dict[str, tuple[str, Callable[[dict[str, Any]], None], str]] = {
    "gmm pca_dim=1e10 over latent_shape=[1e9]": (
        "gmm",
        _config("prior", latent_shape=[10**9], pca_dim=10**10),
        "pca_dim",
    ),
    "gmm latent_shape=[3e9]": ("gmm", _config("prior", latent_shape=[3 * 10**9]), "latent_shape"),
    "quantizer code_dim=1e9, dim=1e10": (
        "gmm",
        _config("quantizer", num_codes=1, code_dim=10**9, dim=10**10),
        "code_dim",
    ),
    "encoder hidden_channels=[6.25e7, 1e11]": (
        "gmm",
        _config("encoder", hidden_channels=[62_500_000, 10**11]),
        "hidden_channels",
    ),
    "pixelcnn grid_shape=[300, 300]": ("pixelcnn", _config("prior", grid_shape=[300, 300]), "grid_shape"),
    "pixelcnn grid_shape=[1e5, 1e5]": (
        "pixelcnn",
        _config("prior", grid_shape=[100_000, 100_000]),
        "grid_shape",
    ),
    "gmm latent_shape=[4, 49] for [4, 7, 7]": ("gmm", _config("prior", latent_shape=[4, 49]), "latent_shape"),
    "info seed='abc'": ("gmm", lambda document: document["info"].update(seed="abc"), "seed"),
}

#: Prior options that keep the tiny pipelines of HOSTILE_EDITS small and quick to fit.
TINY_PRIORS: dict[str, dict[str, Any]] = {
    "gmm": {"n_components": 2, "pca_dim": 3},
    "pixelcnn": {"channels": 4, "layers": 3, "epochs": 1},
}
