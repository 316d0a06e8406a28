"""The Hugging Face folder layout: save_pretrained / from_pretrained, the Hub cache offline, push, pull."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import ClassVar

import pytest
import torch
from bundle_edit import tiny_pipeline
from click.testing import CliRunner

import vqtoolkit
from vqtoolkit.cli import main
from vqtoolkit.errors import ConfigError
from vqtoolkit.sharing import hub, pretrained

REPO = "someone/tiny-vqvae"
OFFLINE_PUSH = "HF_HUB_OFFLINE is set, and pushing to the Hub needs the network: unset it"
FILES = {"model.safetensors", "config.json", "README.md", "samples.png"}


@pytest.fixture(scope="module")
def pipe() -> vqtoolkit.Pipeline:
    return tiny_pipeline("gmm", n_components=2, pca_dim=3)


@pytest.fixture(scope="module")
def folder(pipe: vqtoolkit.Pipeline, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return pipe.save_pretrained(tmp_path_factory.mktemp("pretrained") / "tiny", samples=16)


@pytest.fixture
def no_hub_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """An environment naming no Hub cache or offline mode of the machine's own; returns a fresh cache dir."""
    for name in (
        "HF_HUB_CACHE",
        "HF_HOME",
        "HF_HUB_OFFLINE",
        "TRANSFORMERS_OFFLINE",
        "HUGGINGFACE_HUB_CACHE",
    ):
        monkeypatch.delenv(name, raising=False)
    return tmp_path / "hf-cache"


def samples(p: vqtoolkit.Pipeline) -> torch.Tensor:
    return p.sample(8, generator=torch.Generator().manual_seed(3))


def cache_model(cache: Path, repo_id: str, folder: Path, sha: str = "a" * 40) -> str:
    """Put ``folder`` into a Hugging Face cache as the Hub client lays it out: blobs, snapshot links, refs."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / sha
    (repo / "blobs").mkdir(parents=True)
    snapshot.mkdir(parents=True)
    for file in folder.iterdir():
        data = file.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snapshot / file.name).symlink_to(Path("..", "..", "blobs", blob.name))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(sha)
    return sha


def front_matter(card: str) -> dict:
    yaml = pytest.importorskip("yaml")
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


# -- the folder ----------------------------------------------------------------------------------------
def test_save_pretrained_writes_the_layout_and_round_trips_with_identical_samples(pipe, folder) -> None:
    assert {p.name for p in folder.iterdir()} == FILES
    same = vqtoolkit.from_pretrained(folder)
    assert torch.equal(samples(same), samples(pipe))
    assert torch.equal(vqtoolkit.load(folder / "model.safetensors").sample_indices(4), same.sample_indices(4))
    config = json.loads((folder / "config.json").read_text(), parse_constant=pytest.fail)  # strict JSON
    assert config["info"]["metrics"] == {"test_mse": 0.25, "test_psnr": None}  # no inf in standard JSON
    assert config["library_name"] == "vqtoolkit" and config["weights"] == "model.safetensors"
    assert {role: e["name"] for role, e in config["components"].items()} == {
        "encoder": "conv",
        "quantizer": "vq",
        "decoder": "conv",
        "prior": "gmm",
    }
    assert config["components"]["quantizer"]["config"] == pipe.model.quantizer.config
    assert config["info"]["image_shape"] == [1, 28, 28]


def test_the_model_card_has_front_matter_the_hub_reads_and_the_samples(pipe, folder) -> None:
    card = (folder / "README.md").read_text()
    meta = front_matter(card)
    assert meta["library_name"] == "vqtoolkit"
    assert {"vqtoolkit", "quantizer-vq", "prior-gmm"} <= set(meta["tags"])
    assert meta["metrics"] == ["mse"]  # the tiny pipeline's psnr is infinite: no number for YAML
    (result,) = meta["model-index"][0]["results"]
    assert result["dataset"]["name"] == "tiny" and result["metrics"][0]["value"] == 0.25
    assert "![samples drawn from the prior](samples.png)" in card
    assert 'vqtoolkit.from_pretrained("tiny")' in card


def test_a_pipeline_without_prior_gets_no_sample_grid(tmp_path: Path) -> None:
    bare = tiny_pipeline(None)
    folder = bare.save_pretrained(tmp_path / "bare", repo_id=REPO)
    assert {p.name for p in folder.iterdir()} == FILES - {"samples.png"}
    card = (folder / "README.md").read_text()
    assert f'vqtoolkit.from_pretrained("{REPO}")' in card and "without a prior" in card
    assert "pipe.sample" not in card


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda d: None, "is not a vqtoolkit model: it has no config.json"),
        (lambda d: (d / "config.json").write_text('{"library_name": "timm"}'), "names library_name 'timm'"),
        (lambda d: (d / "config.json").write_text("{not json"), "config.json is unreadable"),
        (
            lambda d: (d / "config.json").write_text('{"library_name": "vqtoolkit"}'),
            "without its model.safetensors",
        ),
    ],
)
def test_a_folder_that_is_not_a_vqtoolkit_model_is_refused_in_one_line(
    tmp_path: Path, make, expected
) -> None:
    make(tmp_path)
    with pytest.raises(ConfigError, match=expected) as err:
        vqtoolkit.from_pretrained(tmp_path)
    assert "\n" not in str(err.value)


def test_a_name_that_is_neither_a_folder_nor_a_repo_id_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a Hub repo id"):
        vqtoolkit.from_pretrained(str(tmp_path / "no" / "such" / "folder"))
    with pytest.raises(ConfigError, match="applies to Hub repo ids only"):
        vqtoolkit.from_pretrained(tmp_path, revision="main")


# -- the Hub cache, offline ------------------------------------------------------------------------------
def test_a_folder_in_the_hub_cache_loads_by_repo_id_offline(pipe, folder, no_hub_env, monkeypatch) -> None:
    pytest.importorskip("huggingface_hub")
    sha = cache_model(no_hub_env, REPO, folder)
    monkeypatch.setenv("HF_HUB_CACHE", str(no_hub_env))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert torch.equal(samples(vqtoolkit.from_pretrained(REPO)), samples(pipe))
    assert torch.equal(samples(vqtoolkit.from_pretrained(REPO, revision=sha)), samples(pipe))


def test_hf_home_names_the_cache_too(pipe, folder, no_hub_env, monkeypatch, tmp_path) -> None:
    pytest.importorskip("huggingface_hub")
    cache_model(tmp_path / "home" / "hub", REPO, folder)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert torch.equal(samples(vqtoolkit.from_pretrained(REPO)), samples(pipe))


def test_offline_with_an_empty_cache_says_so(no_hub_env, monkeypatch) -> None:
    pytest.importorskip("huggingface_hub")
    monkeypatch.setenv("HF_HUB_CACHE", str(no_hub_env))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConfigError, match=r"not in the Hugging Face cache .* HF_HUB_OFFLINE is set") as err:
        vqtoolkit.from_pretrained(REPO)
    assert "\n" not in str(err.value)


def test_a_missing_repo_names_the_fix(no_hub_env, monkeypatch) -> None:
    huggingface_hub = pytest.importorskip("huggingface_hub")
    missing = pytest.importorskip("huggingface_hub.utils").RepositoryNotFoundError

    def not_found(*args, **kwargs):
        raise missing.__new__(missing)  # what the Hub answers (a 404) for a repo that does not exist

    monkeypatch.setattr(huggingface_hub, "snapshot_download", not_found)
    with pytest.raises(ConfigError, match=f"no model repo '{REPO}' on the Hugging Face Hub.*check the id"):
        vqtoolkit.from_pretrained(REPO)


def test_without_the_hub_extra_the_error_names_the_install(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # what an environment without it imports
    with pytest.raises(ConfigError, match=r'needs huggingface_hub, .*pip install "vqtoolkit\[hub\]"'):
        vqtoolkit.from_pretrained(REPO)


# -- pushing ---------------------------------------------------------------------------------------------
class FakeApi:
    """Stands in for ``huggingface_hub.HfApi``: records the calls and what the uploaded folder held."""

    calls: ClassVar[list] = []

    def __init__(self, token=None, **kwargs) -> None:
        self.token = token

    def create_repo(self, repo_id, private=None, exist_ok=False):
        FakeApi.calls.append(("create_repo", repo_id, private, exist_ok))

    def upload_folder(self, repo_id, folder_path, commit_message, revision=None):
        files = {p.name: p.read_bytes() for p in Path(folder_path).iterdir()}
        FakeApi.calls.append(("upload_folder", repo_id, files, commit_message, revision))
        return type("Commit", (), {"commit_url": f"https://huggingface.co/{repo_id}/commit/0"})()


def test_push_to_hub_uploads_the_folder(pipe, no_hub_env, monkeypatch) -> None:
    huggingface_hub = pytest.importorskip("huggingface_hub")
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    FakeApi.calls = []
    url = pipe.push_to_hub(REPO, private=True, samples=4)
    assert url == f"https://huggingface.co/{REPO}/commit/0"
    (create, upload) = FakeApi.calls
    assert create == ("create_repo", REPO, True, True)
    assert set(upload[2]) == FILES and f'from_pretrained("{REPO}")' in upload[2]["README.md"].decode()


def test_push_refuses_offline_and_cli_push_prints_the_url(pipe, no_hub_env, monkeypatch, tmp_path) -> None:
    huggingface_hub = pytest.importorskip("huggingface_hub")
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    bundle = pipe.save(tmp_path / "m.safetensors")
    result = CliRunner().invoke(main, ["push", str(bundle), REPO, "--samples", "0", "--message", "first"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"https://huggingface.co/{REPO}/commit/0"
    assert FakeApi.calls[-1][3] == "first" and "samples.png" not in FakeApi.calls[-1][2]
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = CliRunner().invoke(main, ["push", str(bundle), REPO])
    assert result.exit_code == 1
    assert result.output.strip() == f"Error: {OFFLINE_PUSH}"


# -- pulling ---------------------------------------------------------------------------------------------
def test_cli_pull_copies_the_cached_model_into_a_folder(
    pipe, folder, no_hub_env, monkeypatch, tmp_path
) -> None:
    pytest.importorskip("huggingface_hub")
    cache_model(no_hub_env, REPO, folder)
    monkeypatch.setenv("HF_HUB_CACHE", str(no_hub_env))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "pulled"
    result = CliRunner().invoke(main, ["pull", REPO, "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert {p.name for p in out.iterdir()} == FILES
    assert not any(p.is_symlink() for p in out.iterdir())
    assert torch.equal(samples(vqtoolkit.load(out / "model.safetensors")), samples(pipe))
    result = CliRunner().invoke(main, ["pull", "someone/absent", "-o", str(out)])
    assert result.exit_code == 1 and "HF_HUB_OFFLINE is set" in result.output


@pytest.mark.parametrize("command", ["push", "pull", "export"])
def test_each_sharing_command_has_help_with_an_example(command: str) -> None:
    result = CliRunner().invoke(main, [command, "--help"])
    assert result.exit_code == 0 and "Example:" in result.output and f"vqtool {command}" in result.output


def test_the_environment_is_read_at_each_call(monkeypatch, tmp_path) -> None:
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    assert hub.cache_dir() == str(tmp_path / "hub")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "elsewhere"))
    assert hub.cache_dir() == str(tmp_path / "elsewhere")
    for value, expected in (("1", True), ("true", True), ("0", False), ("", False)):
        monkeypatch.setenv("HF_HUB_OFFLINE", value)
        assert hub.offline() is expected
    assert pretrained.REPO_ID.match(REPO) and not pretrained.REPO_ID.match("a/b/c")
