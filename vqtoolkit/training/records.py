"""What each stage-1 epoch leaves behind: one human line, and the JSON-lines metrics log."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vqtoolkit._util.atomic import atomic_write


def write_log(path: str | Path | None, records: list[dict[str, Any]]) -> None:
    """Metrics as JSON lines (one per epoch), rewritten whole and atomically from the history so far."""
    if path is not None:
        atomic_write(Path(path), "".join(json.dumps(record) + "\n" for record in records).encode())


def format_epoch(record: dict[str, Any], epochs: int) -> str:
    """One human line per epoch."""
    line = (
        f"epoch {record['epoch']}/{epochs}  recon {record['train_recon']:.5f}  "
        f"vq {record['train_vq']:.5f}  perplexity {record['train_perplexity']:.1f}  "
        f"codes {record['train_codes_used']}  {record['images_per_s']:.0f} img/s"
    )
    if "test_mse" in record:
        line += (
            f"  | test mse {record['test_mse']:.5f}  perplexity {record['test_perplexity']:.1f}  "
            f"codes {record['test_codes_used']}"
        )
    return line
