"""Crafted bundle headers: each refused within 1 s and 100 MB of extra memory.

Builds a small valid bundle per prior, rewrites its header as an attacker would (checksum
recomputed), and loads each in a forked child whose address space is capped at 1 GB above what it
already maps, so a loader that allocated what the header asks for would die instead of answering.
Prints the time and peak extra resident memory (Linux ``VmHWM`` after resetting it) per case, and
exits non-zero if any case loads, fails otherwise than with a ``BundleError``, or exceeds a bound.

    python benchmarks/hostile_bundles.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from bundle_edit import HOSTILE_EDITS, TINY_PRIORS, load_message, rewrite, tiny_pipeline
from forked import run_forked

MAX_SECONDS = 1.0
MAX_EXTRA_BYTES = 100 << 20
ADDRESS_SPACE = 1 << 30


def main() -> int:
    folder = Path(tempfile.mkdtemp(prefix="hostile-"))
    valid = {
        prior: tiny_pipeline(prior, **options).save(folder / f"{prior}.safetensors")
        for prior, options in TINY_PRIORS.items()
    }
    print(f"{'case':<42} {'seconds':>8} {'extra MB':>9}  answer")
    failures = 0
    for case, (prior, edit, field) in HOSTILE_EDITS.items():
        path = rewrite(valid[prior], folder / "crafted.safetensors", edit_document=edit)
        out = run_forked(lambda path=path: load_message(path), timeout=60, address_space=ADDRESS_SPACE)
        ok = (
            out.result.startswith("BundleError")
            and field in out.result
            and out.seconds < MAX_SECONDS
            and out.extra_bytes < MAX_EXTRA_BYTES
        )
        failures += not ok
        answer = out.result.replace(str(path) + ": ", "")
        print(
            f"{case:<42} {out.seconds:>8.3f} {out.extra_bytes / 2**20:>9.1f}  "
            f"{'ok  ' if ok else 'FAIL'} {answer}"
        )
    print(
        f"{len(HOSTILE_EDITS) - failures}/{len(HOSTILE_EDITS)} refused within {MAX_SECONDS:g} s "
        f"and {MAX_EXTRA_BYTES >> 20} MB"
    )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
