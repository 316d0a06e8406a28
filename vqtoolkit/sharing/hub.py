"""The Hugging Face Hub through ``huggingface_hub`` (the ``[hub]`` extra): download to the cache, upload.

``huggingface_hub`` reads ``HF_HUB_OFFLINE``, ``HF_HUB_CACHE`` and ``HF_HOME`` once, when it is first
imported; these functions read them on every call, so a process that sets them later (a notebook, a
test) is obeyed too. Offline, only the cache is read. Every failure the user can fix is a one-line
:class:`~vqtoolkit.errors.ConfigError` that says how.
"""

from __future__ import annotations

import os
from pathlib import Path

from vqtoolkit._version import __version__
from vqtoolkit.errors import ConfigError
from vqtoolkit.sharing.extras import require

TRUE = {"1", "on", "yes", "true"}
LOGIN = "log in with `hf auth login` (or set HF_TOKEN)"


def offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) is set to a true value now."""
    flags = (os.environ.get("HF_HUB_OFFLINE"), os.environ.get("TRANSFORMERS_OFFLINE"))
    return any((flag or "").strip().lower() in TRUE for flag in flags)


def cache_dir() -> str | None:
    """The Hub cache the environment names now (``HF_HUB_CACHE``, else ``HF_HOME/hub``; ``None``: default)."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.path.expanduser(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HF_HOME"):
        return os.path.join(os.path.expanduser(os.environ["HF_HOME"]), "hub")
    return None


def _network_error(err: BaseException) -> bool:
    """Whether ``err`` is a failed connection, whichever HTTP client (httpx, requests) the Hub client uses."""
    names = {cls.__name__ for cls in type(err).__mro__}
    return isinstance(err, (ConnectionError, TimeoutError)) or bool(
        names & {"TransportError", "ConnectionError", "Timeout"}
    )


def download(repo_id: str, revision: str | None = None) -> Path:
    """The snapshot folder of Hub model repo ``repo_id`` in the cache, downloading what is missing.

    Args:
        repo_id: ``"user/name"``.
        revision: A branch, tag or commit (default: ``main``).

    Returns:
        The snapshot folder (files are links into the cache's blobs).

    Raises:
        ConfigError: The ``hub`` extra is missing, the repo or revision does not exist (or is private),
            or the Hub cannot be reached (or ``HF_HUB_OFFLINE`` is set) and the cache has no copy.
    """
    purpose = f"loading {repo_id!r} from the Hugging Face Hub"
    hub, errors = require("huggingface_hub", "hub", purpose), require("huggingface_hub.utils", "hub", purpose)
    where = f"{repo_id!r}" + (f" at revision {revision!r}" if revision else "")
    cache = cache_dir() or require("huggingface_hub.constants", "hub", purpose).HF_HUB_CACHE
    try:
        folder = hub.snapshot_download(
            repo_id,
            revision=revision,
            cache_dir=cache,
            local_files_only=offline(),
            library_name="vqtoolkit",
            library_version=__version__,
        )
    except errors.RevisionNotFoundError:
        raise ConfigError(
            f"the Hub repo {repo_id!r} has no revision {revision!r}; check the branch, tag or commit"
        ) from None
    except errors.RepositoryNotFoundError:
        raise ConfigError(
            f"no model repo {repo_id!r} on the Hugging Face Hub (or it is private or gated: {LOGIN}); "
            f"check the id"
        ) from None
    except errors.LocalEntryNotFoundError:
        if offline():
            raise ConfigError(
                f"{where} is not in the Hugging Face cache ({cache}) and HF_HUB_OFFLINE is set: unset it to "
                f"download, or point HF_HUB_CACHE at a cache that holds it"
            ) from None
        raise ConfigError(
            f"cannot reach the Hugging Face Hub for {where}, and the cache ({cache}) has no copy; check the "
            f"connection, or copy the model folder here and load it by path"
        ) from None
    except errors.HFValidationError as err:
        raise ConfigError(f"{repo_id!r} is not a valid Hub repo id ({err}); use user/name") from None
    return Path(folder)


def upload(
    folder: Path,
    repo_id: str,
    *,
    private: bool | None = None,
    token: str | None = None,
    commit_message: str | None = None,
    revision: str | None = None,
) -> str:
    """Upload the files of ``folder`` to Hub model repo ``repo_id``, creating the repo if it does not exist.

    Args:
        folder: The folder to upload (a model folder, for vqtoolkit).
        repo_id: ``"user/name"``.
        private: Create a new repo as private (an existing repo keeps its visibility).
        token: A Hub token (default: the one ``hf auth login`` stored, or ``HF_TOKEN``).
        commit_message: The commit's message (default: one naming the vqtoolkit version).
        revision: The branch to commit to (default: ``main``).

    Returns:
        The URL of the commit.

    Raises:
        ConfigError: The ``hub`` extra is missing, ``HF_HUB_OFFLINE`` is set, no token, the Hub cannot
            be reached, or it refused the upload.
    """
    purpose = "pushing to the Hugging Face Hub"
    hub, errors = require("huggingface_hub", "hub", purpose), require("huggingface_hub.utils", "hub", purpose)
    if offline():
        raise ConfigError("HF_HUB_OFFLINE is set, and pushing to the Hub needs the network: unset it")
    api = hub.HfApi(token=token, library_name="vqtoolkit", library_version=__version__)
    message = commit_message or f"vqtoolkit {__version__}: upload {repo_id}"
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        commit = api.upload_folder(
            repo_id=repo_id, folder_path=folder, commit_message=message, revision=revision
        )
    except errors.LocalTokenNotFoundError:
        raise ConfigError(f"pushing to the Hub needs a token: {LOGIN}") from None
    except errors.HFValidationError as err:
        raise ConfigError(f"{repo_id!r} is not a valid Hub repo id ({err}); use user/name") from None
    except errors.HfHubHTTPError as err:
        reason = str(err).splitlines()[0]
        raise ConfigError(
            f"the Hub refused the upload to {repo_id!r} ({reason}); check the id and that your token "
            f"may write there ({LOGIN})"
        ) from None
    except Exception as err:
        if not _network_error(err):
            raise
        raise ConfigError(
            f"cannot reach the Hugging Face Hub to push {repo_id!r} ({type(err).__name__}: {err}); "
            f"check the connection and try again"
        ) from None
    return str(getattr(commit, "commit_url", commit))
