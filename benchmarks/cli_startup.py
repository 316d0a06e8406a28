"""How long fresh `vqtool` processes take: --version and --help, a first sample, and refusing bad files.

Run: python benchmarks/cli_startup.py [--repeats 5] [--bundle BUNDLE]

Each command runs as a fresh process (what a user's shell does) with the interpreter of this venv, through
`vqtoolkit.cli.main` as the `vqtool` script does; the script prints the median wall time, the peak
resident memory of the child, whether torch got imported and which of the slow imports a sample needs
none of (torch._dynamo, scikit-learn, matplotlib, torchvision) did. It also times `python -c "import
torch"`, the floor any command that needs torch pays, and checks the performance issue's targets against it:
`vqtool sample BUNDLE -n 8` and refusing a crafted bundle each within 1.0 s of that floor.

BUNDLE is a small digits bundle this script builds (`vqtool build --prior categorical --epochs 1`)
unless given. The crafted bundle is a copy of it whose quantizer config asks for 10^12 codes, checksum
recomputed, as an attacker would write it; the foreign file is a safetensors file without vqtoolkit's
metadata. Timings on a shared machine are noisy: compare within one run, on a quiet machine.
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

#: The issue's bound on a first sample, and on refusing a crafted bundle, beyond `import torch`.
TARGET_SECONDS = 1.0
TORCH = 'python -c "import torch"'
HEAVY = ("torch._dynamo", "sklearn", "matplotlib", "torchvision")
REPORT = f"""
import resource, sys
heavy = ",".join(m for m in {HEAVY!r} if m in sys.modules) or "-"
print(code, "torch" in sys.modules, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, heavy)
"""
VQTOOL = """import sys
from vqtoolkit.cli import main
code = 0
try:
    main(sys.argv[1:], prog_name="vqtool")
except SystemExit as exit:
    code = exit.code or 0
"""


def child(args: list[str] | None) -> tuple[float, int, bool, float, str]:
    """Wall seconds, exit code, whether torch got imported, peak RSS (MB) and slow imports of one process."""
    code = (VQTOOL if args is not None else "import torch\ncode = 0") + REPORT
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code, *(args or [])], capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if out.returncode:
        raise SystemExit(f"{args}: the child failed\n{out.stderr}")
    status, torch_loaded, peak_kb, heavy = out.stdout.strip().splitlines()[-1].split()
    return seconds, int(status), torch_loaded == "True", int(peak_kb) / 1024, heavy


def files(folder: Path, bundle: Path | None) -> tuple[Path, Path, Path]:
    """The bundle sampled (built here unless given), a crafted copy of it and a foreign safetensors file."""
    import torch
    from bundle_edit import rewrite
    from safetensors.torch import save_file

    if bundle is None:
        bundle = folder / "small.safetensors"
        print(f"building {bundle} (vqtool build --prior categorical --epochs 1) ...", flush=True)
        command = ["build", "--prior", "categorical", "--epochs", "1", "-q", "-o", str(bundle)]
        subprocess.run([sys.executable, "-c", VQTOOL, *command], check=True, capture_output=True)

    def huge_codebook(document: dict) -> None:
        document["components"]["quantizer"]["config"]["num_codes"] = 10**12

    crafted = rewrite(bundle, folder / "crafted.safetensors", edit_document=huge_codebook)
    foreign = folder / "foreign.safetensors"
    save_file({"weight": torch.zeros(4)}, str(foreign))
    return bundle, crafted, foreign


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", "--repeat", type=int, default=5, help="Fresh processes per command.")
    parser.add_argument("--bundle", type=Path, help="A small bundle to sample [default: build one].")
    options = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="cli-startup-"))
    with multiprocessing.get_context("spawn").Pool(1) as pool:  # this process stays without torch
        bundle, crafted, foreign = pool.apply(files, (folder, options.bundle))
    out = str(folder / "samples.png")
    commands: dict[str, tuple[list[str] | None, int]] = {  # name -> (vqtool arguments, exit code expected)
        "vqtool --version": (["--version"], 0),
        "vqtool --help": (["--help"], 0),
        "vqtool build --help": (["build", "--help"], 0),
        TORCH: (None, 0),
        "vqtool sample BUNDLE -n 8": (["sample", str(bundle), "-n", "8", "-o", out], 0),
        "vqtool sample CRAFTED (refused)": (["sample", str(crafted), "-n", "8", "-o", out], 1),
        "vqtool sample FOREIGN (refused)": (["sample", str(foreign), "-n", "8", "-o", out], 1),
    }
    print(f"{'command':<34} {'median s':>9} {'- torch s':>10} {'peak MB':>8}  torch  slow imports")
    medians = {}
    for name, (args, expected) in commands.items():
        runs = [child(args) for _ in range(options.repeats)]
        wrong = [status for _, status, _, _, _ in runs if status != expected]
        if wrong:
            raise SystemExit(f"{name}: exit code {wrong[0]}, expected {expected}")
        medians[name] = statistics.median(r[0] for r in runs)
        beyond = f"{medians[name] - medians[TORCH]:>+10.3f}" if TORCH in medians else f"{'':>10}"
        peak = max(r[3] for r in runs)
        loaded = "yes" if any(r[2] for r in runs) else "no"
        heavy = ",".join(sorted({r[4] for r in runs}))
        print(f"{name:<34} {medians[name]:>9.3f} {beyond} {peak:>8.0f}  {loaded:<5}  {heavy}", flush=True)
    missed = 0
    for name in ("vqtool sample BUNDLE -n 8", "vqtool sample CRAFTED (refused)"):
        beyond = medians[name] - medians[TORCH]
        ok = beyond <= TARGET_SECONDS
        missed += not ok
        verdict = "MET" if ok else "MISSED"
        print(f"  [{verdict}] {name}: {beyond:+.3f} s beyond `import torch` (<= {TARGET_SECONDS:g} s)")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
