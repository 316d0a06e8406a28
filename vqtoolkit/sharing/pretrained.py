"""The Hugging Face folder layout: ``save_pretrained`` writes a model folder, ``from_pretrained`` reads one.

A folder holds ``model.safetensors`` (the vqtoolkit bundle, unchanged: :func:`vqtoolkit.load` reads it
alone), ``config.json`` (the components and their configs as plain JSON, for readers without
vqtoolkit), a ``README.md`` model card (:mod:`.card`) and, when the model has a fitted prior, a
``samples.png`` grid drawn with a fixed seed. :func:`from_pretrained` takes such a folder (read with no
network), or a Hub repo id, which :mod:`.hub` resolves to a folder in the Hugging Face cache. The
bundle is the model; ``config.json`` describes it and is never what gets loaded.
"""

from __future__ import annotations

import json
import math
import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from vqtoolkit._util.atomic import atomic_write
from vqtoolkit._version import __version__
from vqtoolkit.errors import ConfigError
from vqtoolkit.runtime import distributed
from vqtoolkit.sharing import hub
from vqtoolkit.sharing.card import model_card
from vqtoolkit.storage import bundle

if TYPE_CHECKING:
    from vqtoolkit.pipeline import Pipeline

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
CARD = "README.md"
SAMPLES = "samples.png"
#: ``config.json``'s ``format``; a folder whose config says otherwise is not a vqtoolkit model.
FORMAT = "vqtoolkit.pretrained"
FORMAT_VERSION = 1
#: What a Hub repo id looks like: ``name`` or ``user/name`` (letters, digits, ``-``, ``_``, ``.``).
REPO_ID = re.compile(r"^(?:[A-Za-z0-9][\w.-]*/)?[A-Za-z0-9][\w.-]*$")


def config_document(document: dict[str, Any]) -> dict[str, Any]:
    """``config.json``: the bundle's components and the training facts a reader needs, as plain JSON.

    Args:
        document: The bundle's validated metadata document (:func:`vqtoolkit.storage.bundle.read`).

    Returns:
        The document to write as ``config.json``.
    """
    info = dict(document.get("info", {}))
    if isinstance(info.get("metrics"), dict):  # standard JSON has no inf/nan: such a metric becomes null
        info["metrics"] = {
            k: v if not isinstance(v, float) or math.isfinite(v) else None for k, v in info["metrics"].items()
        }
    return {
        "library_name": "vqtoolkit",
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "vqtoolkit_version": __version__,
        "weights": WEIGHTS,
        "components": document["components"],
        "info": {
            k: info[k] for k in ("dataset", "image_shape", "num_classes", "epochs", "metrics") if k in info
        },
    }


def save_pretrained(
    pipe: Pipeline, folder: str | Path, *, repo_id: str | None = None, samples: int = 64, seed: int = 0
) -> Path:
    """Write ``pipe`` as a Hugging Face model folder: bundle, ``config.json``, model card, sample grid.

    Every file is written atomically; under ``torchrun`` only rank 0 writes.

    Args:
        pipe: The pipeline to write.
        folder: The folder (created if needed; files of an earlier save are replaced).
        repo_id: The Hub id the card's usage snippet names (default: the folder's name).
        samples: Images in ``samples.png`` (drawn only when the prior is fitted; 0 for none).
        seed: Seed of those samples.

    Returns:
        The folder.

    Raises:
        ConfigError: ``folder`` is an existing file.
    """
    folder = Path(folder)
    if folder.is_file():
        raise ConfigError(f"{folder} is a file; save_pretrained writes a folder, give a folder name")
    if not distributed.is_main():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    weights = pipe.save(folder / WEIGHTS)
    document, _ = bundle.read(weights)  # what was written, validated: config and card describe exactly it
    grid = None
    if samples > 0 and pipe.prior is not None and pipe.prior.is_fitted:
        from vqtoolkit.data.images import save_grid

        drawn = pipe.sample(samples, generator=torch.Generator().manual_seed(seed))  # as `vqtool build` draws
        grid = save_grid(drawn, folder / SAMPLES).name
    else:
        (folder / SAMPLES).unlink(missing_ok=True)  # a grid of an earlier save would show another model
    text = json.dumps(config_document(document), indent=2, allow_nan=False) + "\n"
    atomic_write(folder / CONFIG, text.encode())
    card = model_card(document, repo_id or folder.resolve().name, samples=grid)
    atomic_write(folder / CARD, card.encode())
    return folder


def check_folder(folder: Path) -> Path:
    """The bundle of a vqtoolkit model folder, after checking ``config.json`` says it is one.

    Args:
        folder: A folder written by :func:`save_pretrained` (or downloaded from the Hub).

    Returns:
        The path of its ``model.safetensors``.

    Raises:
        ConfigError: The folder is not a vqtoolkit model (no or foreign ``config.json``, no bundle).
    """
    fix = "save one with pipe.save_pretrained(DIR) or `vqtool pull REPO_ID -o DIR`"
    config_path = folder / CONFIG
    try:
        config = json.loads(config_path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{folder} is not a vqtoolkit model: it has no {CONFIG}; {fix}") from None
    except (OSError, ValueError) as err:
        raise ConfigError(
            f"{folder} is not a vqtoolkit model: {config_path} is unreadable ({err}); {fix}"
        ) from err
    if not isinstance(config, dict) or config.get("library_name") != "vqtoolkit":
        library = config.get("library_name") if isinstance(config, dict) else None
        raise ConfigError(
            f"{folder} is not a vqtoolkit model: its {CONFIG} names library_name {library!r}, "
            f"not 'vqtoolkit' "
            f"(load it with the library that made it)"
        )
    weights = folder / WEIGHTS
    if not weights.is_file():
        raise ConfigError(
            f"{folder} is a vqtoolkit model folder without its {WEIGHTS}; copy it again from its source"
        )
    return weights


def resolve(path_or_repo_id: str | Path, revision: str | None = None) -> Path:
    """The local folder of ``path_or_repo_id``: an existing folder as is, a repo id via the Hub cache.

    Args:
        path_or_repo_id: A folder, or a Hub repo id such as ``"user/name"``.
        revision: A branch, tag or commit of the Hub repo (a local folder takes none).

    Returns:
        The folder (for a repo id, its snapshot in the Hugging Face cache).

    Raises:
        ConfigError: Neither an existing folder nor a repo id, or a revision given for a folder.
    """
    path = Path(path_or_repo_id)
    if path.exists():
        if revision is not None:
            raise ConfigError(f"{path} is a local folder; revision={revision!r} applies to Hub repo ids only")
        return path if path.is_dir() else path.parent
    text = str(path_or_repo_id)
    if not REPO_ID.match(text):
        raise ConfigError(
            f"no folder {text!r} exists, and it is not a Hub repo id (user/name); check the path or the id"
        )
    return hub.download(text, revision)


def from_pretrained(
    path_or_repo_id: str | Path, revision: str | None = None, *, trust_provider: bool = False
) -> Pipeline:
    """Load a model folder written by :meth:`Pipeline.save_pretrained`, or a Hub repo holding one.

    A local folder is read with no network. A repo id goes through ``huggingface_hub``
    (``pip install "vqtoolkit[hub]"``): a cached copy is used when the Hub has nothing newer, and with
    ``HF_HUB_OFFLINE=1`` only the cache (``HF_HUB_CACHE``, or ``HF_HOME/hub``) is read.

    Args:
        path_or_repo_id: A folder (or its ``model.safetensors``), or a Hub repo id ``"user/name"``.
        revision: A branch, tag or commit of the Hub repo.
        trust_provider: As in :func:`vqtoolkit.load`.

    Returns:
        The pipeline, validated as :func:`vqtoolkit.load` validates every bundle.

    Raises:
        ConfigError: Not a vqtoolkit model, the ``hub`` extra missing, the repo or revision missing,
            or offline with the repo not in the cache; each message names the fix.
        BundleError: The bundle itself is corrupt or needs a plugin that is not installed.
    """
    import vqtoolkit  # the public loader (vqtoolkit.pipeline sits in this layer and delegates here)

    return vqtoolkit.load(check_folder(resolve(path_or_repo_id, revision)), trust_provider=trust_provider)


def push_to_hub(
    pipe: Pipeline,
    repo_id: str,
    *,
    samples: int = 64,
    seed: int = 0,
    **upload_options: Any,
) -> str:
    """Upload ``pipe`` to the Hub as a model folder (:func:`save_pretrained`), creating the repo if needed.

    The folder is written to a temporary place and uploaded; nothing is left behind locally.

    Args:
        pipe: The pipeline to upload.
        repo_id: ``"user/name"``.
        samples: Images in ``samples.png`` (see :func:`save_pretrained`).
        seed: Seed of those samples.
        **upload_options: ``private``, ``token``, ``commit_message``, ``revision``: see
            :func:`vqtoolkit.sharing.hub.upload`.

    Returns:
        The URL of the commit.

    Raises:
        ConfigError: The ``hub`` extra is missing, ``HF_HUB_OFFLINE`` is set, no token, the Hub cannot
            be reached, or it refused the upload.
    """
    with tempfile.TemporaryDirectory(prefix="vqtoolkit-push-") as tmp:
        folder = save_pretrained(pipe, Path(tmp) / "model", repo_id=repo_id, samples=samples, seed=seed)
        return hub.upload(folder, repo_id, **upload_options)
