"""The front door: what a new user types does what the README and docs/cli.md promise."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import click
import pytest
import torch
from click.testing import CliRunner

import vqtoolkit
from vqtoolkit.cli import main
from vqtoolkit.cli.options import DATASET_NAMES, PRECISIONS
from vqtoolkit.components import registry
from vqtoolkit.data.datasets import DATASETS
from vqtoolkit.runtime.devices import PRECISIONS as DEVICE_PRECISIONS

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str) -> click.testing.Result:
    return CliRunner().invoke(main, [str(a) for a in args])


def one_line_error(result: click.testing.Result, *fragments: str) -> None:
    """Exit status 1, a single ``Error:`` line naming every fragment, no traceback."""
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


# -- 1. the README's test command and plots by default --------------------------------------------
def test_ci_runs_the_readme_test_command_before_anything_else() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Run the tests", 1)[1]
    expected = re.search(r"```bash\n(.*?)\n```", section, re.S)[1]
    script = (ROOT / ".ci/run").read_text(encoding="utf-8")
    extractor = re.search(r"^readme_test_command\(\) \{.*?^\}", script, re.M | re.S)[0]
    extracted = subprocess.run(
        ["bash", "-c", f"{extractor}\nreadme_test_command"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert extracted == expected
    assert 'pip install -e ".[test]"' in expected and "python -m pytest -q" in expected
    assert script.index('bash -euo pipefail -c "$command"') < script.index('".[dev]"')
    assert "set -euo pipefail" in script.splitlines()  # any failing step fails CI


def test_plotting_is_part_of_the_default_install() -> None:
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert any(dep.startswith("matplotlib") for dep in project["dependencies"])


def test_readme_and_quickstart_say_how_to_get_the_cpu_build_of_torch() -> None:
    line = "pip install torch torchvision --index-url https://download.pytorch.org/whl/cpu"
    for page in ("README.md", "docs/quickstart.md"):
        assert line in (ROOT / page).read_text(encoding="utf-8"), page


# -- 2. --version and --help import no torch -----------------------------------------------------------
@pytest.mark.parametrize(
    "args", [["--version"], ["-V"], ["--help"], ["build", "--help"], ["sample", "--help"]]
)
def test_version_and_help_import_no_torch(args: list[str]) -> None:
    code = (
        "import sys\nfrom vqtoolkit.cli import main\n"
        f"try:\n    main({args!r})\nexcept SystemExit as e:\n    assert e.code == 0, e.code\n"
        "print('TORCH' if 'torch' in sys.modules else 'NO TORCH', file=sys.stderr)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stderr.strip().splitlines()[-1] == "NO TORCH"
    if "-V" in args or "--version" in args:
        assert out.stdout.strip() == f"vqtool, version {vqtoolkit.__version__}"


# -- 3. one grammar -------------------------------------------------------------------------------------
GRAMMAR = {
    "output": ["-o", "--output"],
    "num_samples": ["-n", "--num-samples"],
    "quiet": ["-q", "--quiet"],
    "as_json": ["--json"],
    "seed": ["--seed"],
    "device": ["--device"],
}
EXPECTED = {  # which ideas each command has (docs/cli.md's table)
    "build": {"output", "num_samples", "quiet", "as_json", "seed", "device"},
    "train": {"output", "quiet", "as_json", "seed", "device"},
    "fit-prior": {"output", "quiet", "as_json", "seed", "device"},
    "sample": {"output", "num_samples", "as_json", "seed", "device"},
    "eval": {"as_json", "device"},
    "reconstruct": {"output", "as_json", "device"},
    "interpolate": {"output", "device"},
    "report": {"output", "seed"},
    "inspect": {"as_json"},
    "plugins": {"as_json"},
    "push": set(),
    "pull": {"output"},
    "export": {"output", "as_json"},
    "inpaint": {"output", "num_samples", "seed"},
}


@pytest.mark.parametrize("name", sorted(main.commands))
def test_every_command_speaks_one_grammar(name: str) -> None:
    params = {p.name: p for p in main.commands[name].params if isinstance(p, click.Option)}
    for idea, spelling in GRAMMAR.items():
        if idea in params:
            assert params[idea].opts + params[idea].secondary_opts == spelling, (name, idea)
    assert EXPECTED[name] <= params.keys(), (name, EXPECTED[name] - params.keys())


def test_dataset_and_precision_choices_match_the_library() -> None:
    assert sorted(DATASET_NAMES) == sorted(DATASETS) and PRECISIONS == DEVICE_PRECISIONS


@pytest.mark.parametrize("name", sorted(main.commands))
def test_help_shows_no_rst_markup(name: str) -> None:
    result = run(name, "--help")
    assert result.exit_code == 0 and "``" not in result.output and "\\b" not in result.output


def test_no_rst_literal_blocks_in_docstrings() -> None:
    """mkdocstrings shows a reST ``here::`` literally: docstrings use Markdown."""
    for path in (ROOT / "vqtoolkit").rglob("*.py"):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            assert not line.rstrip().endswith("::"), f"{path.name}:{number}: {line.strip()}"


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, click.testing.Result]:
    out = tmp_path_factory.mktemp("build") / "m.safetensors"
    result = run("build", "--epochs", "1", "--num-codes", "16", "--dim", "8", "-n", "4", "--json", "-o", out)
    assert result.exit_code == 0, result.output
    return out, result


def test_build_json_is_alone_on_stdout_and_names_every_file(built) -> None:
    _, result = built
    summary = json.loads(result.stdout)  # nothing else on stdout
    assert set(summary["metrics"]) >= {"test_mse", "test_psnr", "test_perplexity", "test_codes_used"}
    files = summary["files"]
    for kind in ("bundle", "samples", "reconstructions", "curves", "code_usage", "metrics", "checkpoint"):
        assert Path(files[kind]).stat().st_size > 0, kind
    assert Path(files["curves"]).read_bytes()[:4] == b"\x89PNG"  # plots drawn, no 'skipping plots'
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    listed = re.findall(r"^(\w+):\s+vqtool-out/", readme, re.M)
    assert sorted(listed) == sorted(files), "the README's real run lists every file a build writes"
    words = {"five": 5, "six": 6, "seven": 7, "eight": 8}
    count = re.search(r"writes (\w+) files", (ROOT / "docs/quickstart.md").read_text(encoding="utf-8"))[1]
    assert words[count] == len(files)


def test_text_output_goes_to_stdout_progress_and_notes_to_stderr(built, tmp_path: Path) -> None:
    bundle, _ = built
    result = run("fit-prior", bundle, "--prior", "categorical", "-o", tmp_path / "c.safetensors")
    assert result.exit_code == 0, result.output
    assert "stage 2 · fitting categorical prior" in result.stderr
    assert "stage 2" not in result.stdout and "bits/code" in result.stdout
    quiet = run("fit-prior", bundle, "--prior", "categorical", "-q", "-o", tmp_path / "d.safetensors")
    assert quiet.exit_code == 0 and quiet.stderr == ""


def test_metric_names_are_the_same_everywhere_and_text_never_says_none(built) -> None:
    bundle, build_result = built
    build_metrics = set(json.loads(build_result.stdout)["metrics"])
    evaluated = json.loads(run("eval", bundle, "--json").stdout)
    inspected = json.loads(run("inspect", bundle, "--json").stdout)["info"]["metrics"]
    assert build_metrics <= set(evaluated) and set(inspected) <= set(evaluated)
    assert "mse" not in evaluated and evaluated["test_prior_bits_per_code"] is None  # gmm: none
    for command in ("eval", "inspect"):
        text = run(command, bundle).stdout
        assert "test_mse" in text and "None" not in text, text


def test_sample_and_fit_prior_speak_json(built, tmp_path: Path) -> None:
    bundle, _ = built
    sampled = json.loads(run("sample", bundle, "-n", "2", "--json", "-o", tmp_path / "s.npy").stdout)
    assert sampled["num_samples"] == 2 and Path(sampled["output"]).exists()
    fitted = run(
        "fit-prior", bundle, "--prior", "categorical", "--json", "--seed", "1", "-o", tmp_path / "c.st"
    )
    assert json.loads(fitted.stdout)["metrics"]["test_prior_bits_per_code"] > 0


# -- 4. one-line errors before work ---------------------------------------------------------------------
def unwritable_folder(tmp_path: Path) -> Path:
    """A folder no file can be created in: a read-only one, or /sys where the tests run as root."""
    if os.geteuid() == 0:
        return Path("/sys")
    folder = tmp_path / "locked"
    folder.mkdir(mode=0o500)
    return folder


def test_output_under_a_file_or_an_unwritable_folder_is_one_line(built, tmp_path: Path) -> None:
    bundle, _ = built
    (tmp_path / "afile").write_text("")
    target = tmp_path / "afile" / "m.safetensors"
    one_line_error(run("train", "-o", target), "afile is a file, not a folder")
    one_line_error(run("build", "-o", target), "afile is a file, not a folder")
    locked = unwritable_folder(tmp_path)
    one_line_error(run("train", "-o", locked / "m.safetensors"), "cannot write")
    one_line_error(run("train", "-o", locked / "sub" / "m.safetensors"), "cannot write")
    one_line_error(run("sample", bundle, "-o", locked / "s.png"), "cannot write")
    one_line_error(run("sample", bundle, "-o", target.with_suffix(".png")), "afile is a file")


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["build", "--num-codes", "1000000000000"], "choose a smaller num_codes or dim"),
        (["build", "--dim", "1000000000"], "choose a smaller num_codes or dim"),
        (["train", "--image-size", "100000"], "choose a smaller --image-size"),
        (["build", "-n", "100000000"], "smaller -n"),
    ],
)
def test_absurd_sizes_fail_before_allocating(args: list[str], fragment: str, tmp_path: Path) -> None:
    one_line_error(run(*args, "-o", tmp_path / "m.safetensors"), fragment, "of memory")


def test_absurd_sample_count_fails_before_allocating(built) -> None:
    one_line_error(run("sample", built[0], "-n", "100000000"), "smaller -n")


@pytest.mark.parametrize(("option", "value"), [("--lr", "nan"), ("--beta", "nan"), ("--lr", "inf")])
def test_non_finite_numbers_are_refused(option: str, value: str) -> None:
    result = run("train", option, value)
    assert result.exit_code == 2 and f"'{value}' is not a finite number" in result.stderr
    assert "Traceback" not in result.output


def test_library_refuses_nan_too() -> None:
    with pytest.raises(vqtoolkit.ConfigError, match="beta"):
        vqtoolkit.build(beta=float("nan"))


# -- 5. the suffix decides the format -------------------------------------------------------------------
def test_output_suffix_decides_the_image_format(built, tmp_path: Path) -> None:
    bundle, _ = built
    for name, magic in [("s.jpg", b"\xff\xd8\xff"), ("s.jpeg", b"\xff\xd8\xff"), ("s.png", b"\x89PNG")]:
        assert run("sample", bundle, "-n", "4", "-o", tmp_path / name).exit_code == 0
        assert (tmp_path / name).read_bytes()[: len(magic)] == magic, name
    one_line_error(run("sample", bundle, "-o", tmp_path / "s.jpgx"), "'.jpgx'", ".png")
    assert not (tmp_path / "s.jpgx").exists()
    one_line_error(run("reconstruct", bundle, "-o", tmp_path / "r.gif"), "'.gif'")


# -- 8. print(pipe) ------------------------------------------------------------------------------------
def test_pipeline_repr_names_components_and_options(trained: vqtoolkit.Pipeline) -> None:
    text = repr(trained)
    assert "object at" not in text
    for fragment in ("encoder=conv(", "quantizer=vq(num_codes=32, dim=16", "prior=gmm(n_components=4"):
        assert fragment in text, text
    assert "trained: dataset='digits'" in text.replace('"', "'") or "dataset=digits" in text
    assert "prior=None" in repr(vqtoolkit.build(prior=None, dim=4, num_codes=4))


# -- 10. the library logs, the CLI decides --------------------------------------------------------------
def test_library_is_silent_and_never_writes_to_stdout(small_digits, capsys, caplog) -> None:
    pipe = vqtoolkit.build("conv", "vq", "conv", "categorical", dim=4, num_codes=8)
    with caplog.at_level(logging.INFO, logger="vqtoolkit"):
        pipe.fit(small_digits, epochs=1, batch_size=256, progress=True)
    captured = capsys.readouterr()
    assert captured.out == ""  # bars go to stderr, epoch lines to the logger
    assert "recon " not in captured.err and "stage 2" not in captured.err  # no handler: silent
    assert any("epoch 1/1" in r.getMessage() and r.name == "vqtoolkit.training.loop" for r in caplog.records)
    assert any("stage 2" in r.getMessage() for r in caplog.records)
    assert any(isinstance(h, logging.NullHandler) for h in logging.getLogger("vqtoolkit").handlers)


# -- 13. every built-in works with build()'s defaults ---------------------------------------------------
@pytest.mark.parametrize("quantizer", registry.available("quantizer"))
def test_every_quantizer_works_with_build_defaults(quantizer: str) -> None:
    pipe = vqtoolkit.build(quantizer=quantizer, prior="categorical")
    out = pipe.model(torch.rand(2, 1, 28, 28))
    assert out.reconstruction.shape == (2, 1, 28, 28)
    assert pipe.prior.config["num_codes"] == pipe.model.quantizer.num_tokens


def test_a_dim_mismatch_suggests_a_dim_that_works() -> None:
    with pytest.raises(vqtoolkit.ConfigError, match=r"dim=4") as err:
        vqtoolkit.build(quantizer="fsq", dim=64)
    suggested = int(re.search(r"build\(dim=(\d+)\)", str(err.value))[1])
    vqtoolkit.build(quantizer="fsq", dim=suggested)  # the suggestion works


# -- 14. seed= reproduces a run bit for bit ---------------------------------------------------------------
def test_seed_makes_a_run_reproducible_bit_for_bit(small_digits) -> None:
    def run_once(seed: int) -> tuple[dict[str, torch.Tensor], float]:
        torch.rand(7)  # whatever the caller's global random state is, it must not matter
        pipe = vqtoolkit.build(prior=None, dim=8, num_codes=16, seed=seed)
        history = pipe.fit_autoencoder(small_digits, epochs=1, batch_size=64, seed=seed, progress=False)
        return pipe.model.state_dict(), history[-1]["test_mse"]

    (first, mse1), (second, mse2), (other, _) = run_once(0), run_once(0), run_once(1)
    assert mse1 == mse2
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert not all(torch.equal(first[k], other[k]) for k in first)


def test_build_leaves_the_callers_random_stream_alone() -> None:
    torch.manual_seed(3)
    expected = torch.rand(3)
    torch.manual_seed(3)
    vqtoolkit.build(dim=4, num_codes=8)
    assert torch.equal(torch.rand(3), expected)


# -- 9. the python-api recipe, run verbatim on the real digits, trains well ------------------------------
@pytest.mark.slow
def test_python_api_recipe_trains_well(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    page = (ROOT / "docs/python-api.md").read_text(encoding="utf-8")
    recipe = next(b for b in re.findall(r"```python\n(.*?)```", page, re.S) if "pipe.fit(" in b)
    namespace: dict[str, object] = {}
    exec(compile(recipe, "docs/python-api.md", "exec"), namespace)
    metrics = namespace["pipe"].info["metrics"]
    assert metrics["test_codes_used"] >= 96 and metrics["test_psnr"] > 22, metrics
