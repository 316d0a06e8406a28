"""How long `vqtool --version`, `vqtool --help` and `vqtool build --help` take, and whether they load torch.

Run: python benchmarks/cli_startup.py [--repeat 5]

Each command runs as a fresh process (what a user's shell does) with the interpreter of this venv, through
`vqtoolkit.cli.main` as the `vqtool` script does; the script prints the median wall time, the peak
resident memory of the child and whether torch got imported. For comparison it also times
`python -c "import torch"`, the floor any command that needs torch pays. Timings on a shared
machine are noisy: compare within one run.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

#: What each child process runs: a vqtool command line, or plain Python code.
COMMANDS = {
    "vqtool --version": ["--version"],
    "vqtool --help": ["--help"],
    "vqtool build --help": ["build", "--help"],
    'python -c "import torch"': None,
}
REPORT = """
import resource, sys
print('torch' in sys.modules, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""
VQTOOL = """import sys
from vqtoolkit.cli import main
try:
    main(sys.argv[1:], prog_name="vqtool")
except SystemExit:
    pass
"""


def child(args: list[str] | None) -> tuple[float, bool, float]:
    """Wall seconds, whether torch got imported, and the peak RSS (MB) of one fresh process."""
    code = (VQTOOL if args is not None else "import torch") + REPORT
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", code, *(args or [])], check=True, capture_output=True, text=True
    )
    seconds = time.perf_counter() - start
    torch_loaded, peak_kb = out.stdout.strip().splitlines()[-1].split()
    return seconds, torch_loaded == "True", int(peak_kb) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    repeat = parser.parse_args().repeat
    print(f"{'command':<28} {'median s':>9} {'peak MB':>8}  torch loaded")
    for name, args in COMMANDS.items():
        runs = [child(args) for _ in range(repeat)]
        seconds = statistics.median(s for s, _, _ in runs)
        peak = max(m for _, _, m in runs)
        loaded = "yes" if any(t for _, t, _ in runs) else "no"
        print(f"{name:<28} {seconds:>9.3f} {peak:>8.0f}  {loaded}")


if __name__ == "__main__":
    main()
