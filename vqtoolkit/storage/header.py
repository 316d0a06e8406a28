"""A bundle's header, read and checked without torch: the refusals that need no tensor.

A safetensors file starts with the length of a JSON header that lists the tensors and holds the
metadata. Reading that alone says whether a file is a vqtoolkit bundle of a format this vqtoolkit
reads, so a command can refuse any other file before it imports torch.
:func:`vqtoolkit.storage.bundle.read` starts here too, then checks the checksum and the rest.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vqtoolkit._version import __version__
from vqtoolkit.errors import BundleError

FORMAT = "vqtoolkit.bundle"
FORMAT_VERSION = 1
METADATA_KEY = "vqtoolkit"
DIGEST_KEY = "vqtoolkit.sha256"
#: The longest header safetensors reads.
MAX_HEADER_BYTES = 100_000_000


@dataclass(frozen=True)
class Header:
    """A bundle's metadata: the document, its text as stored, and the checksum stored beside it."""

    document: dict[str, Any]
    text: str
    checksum: str


def read_header(path: str | Path) -> Header:
    """The metadata of the bundle at ``path``, from its header alone, its format and version checked.

    Args:
        path: The bundle file.

    Returns:
        The document (format and version checked, the rest not yet), its text and its checksum.

    Raises:
        BundleError: No such file; not a safetensors file; no vqtoolkit document, or one that is not
            JSON, of another format or version, or without its checksum.
    """
    path = Path(path)
    if not path.is_file():
        raise BundleError(f"no bundle at {path}: the file does not exist")
    metadata = _metadata(path)
    if METADATA_KEY not in metadata:
        raise BundleError(
            f"{path} is a safetensors file but not a vqtoolkit bundle (no '{METADATA_KEY}' metadata)"
        )
    text = metadata[METADATA_KEY]
    try:
        document = json.loads(text)
    except (ValueError, RecursionError) as err:
        raise BundleError(f"{path}: the bundle metadata is not valid JSON ({err})") from err
    _check_format(path, document)
    if DIGEST_KEY not in metadata:
        raise BundleError(
            f"{path} has no '{DIGEST_KEY}' checksum (it was stripped, or written by a vqtoolkit without "
            f"checksums); rebuild it with this vqtoolkit"
        )
    return Header(document, text, metadata[DIGEST_KEY])


def _metadata(path: Path) -> dict[str, str]:
    """The metadata table of a safetensors file whose header is JSON and whose tensors fill the file."""
    try:
        with path.open("rb") as f:
            size = path.stat().st_size
            if size < 8:
                raise ValueError(f"{size} bytes, too few for a header's length")
            length = int.from_bytes(f.read(8), "little")
            if length > min(size - 8, MAX_HEADER_BYTES):
                raise ValueError(f"a header of {length:,} bytes in a file of {size:,}")
            header = json.loads(f.read(length))
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
        if end != size - 8 - length:
            raise ValueError(f"the tensors end at byte {end} of {size - 8 - length:,} after the header")
        metadata = header.get("__metadata__") or {}
        if not all(isinstance(value, str) for value in metadata.values()):
            raise ValueError("metadata values must be strings")
    except (OSError, ValueError, TypeError, LookupError, AttributeError, RecursionError) as err:
        raise BundleError(
            f"{path} is not a readable safetensors file ({type(err).__name__}: {err}); "
            f"it may be truncated or corrupt"
        ) from err
    return dict(metadata)


def _check_format(path: Path, document: Any) -> None:
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise BundleError(f"{path}: metadata does not describe a {FORMAT} document")
    version = document.get("format_version")
    if version != FORMAT_VERSION or isinstance(version, bool):
        raise BundleError(
            f"{path}: bundle format version {version!r} is not supported by vqtoolkit {__version__} "
            f"(it reads version {FORMAT_VERSION}); install the vqtoolkit that wrote it "
            f"({document.get('vqtoolkit_version', 'unknown')!r})"
        )
