"""Bundles: exact round trips, and a clear BundleError for every way a file can be wrong."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from bundle_edit import rewrite, split, tiny_pipeline
from click.testing import CliRunner
from safetensors.torch import save as save_bytes

import vqtoolkit
from vqtoolkit._util import deadline
from vqtoolkit.cli import main
from vqtoolkit.errors import BundleError
from vqtoolkit.quantize.vq import VectorQuantizer
from vqtoolkit.storage import bundle


@pytest.fixture(scope="module")
def pipe():
    return tiny_pipeline(n_components=2, pca_dim=3)


@pytest.fixture()
def saved(pipe, tmp_path: Path) -> Path:
    return pipe.save(tmp_path / "model.safetensors")


def states_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_round_trip_is_exact(pipe, saved: Path) -> None:
    same = vqtoolkit.load(saved)
    assert states_equal(same.model, pipe.model) and states_equal(same.prior, pipe.prior)
    assert same.info == pipe.info
    for a, b in [(same.model.encoder, pipe.model.encoder), (same.prior, pipe.prior)]:
        assert a.config == b.config and a.registered_name == b.registered_name
    images = [p.sample(6, generator=torch.Generator().manual_seed(3)) for p in (pipe, same)]
    assert torch.equal(*images)


def test_metadata_records_providers_and_training_facts(saved: Path) -> None:
    document, tensors = split(saved.read_bytes())
    assert document["format_version"] == bundle.FORMAT_VERSION
    assert document["vqtoolkit_version"] == vqtoolkit.__version__
    assert document["torch_version"] == torch.__version__
    prior = document["components"]["prior"]
    assert (prior["kind"], prior["name"], prior["distribution"]) == ("prior", "gmm", "vqtoolkit")
    assert document["info"]["dataset"] == "tiny" and document["info"]["metrics"]["test_mse"] == 0.25
    assert all(k.split(".", 1)[0] in bundle.ROLES for k in tensors)


def test_directly_constructed_builtin_saves_under_its_registered_name(pipe, tmp_path: Path) -> None:
    quantizer = VectorQuantizer(num_codes=8, dim=4)
    pipe2 = vqtoolkit.Pipeline(vqtoolkit.VQVAE(pipe.model.encoder, quantizer, pipe.model.decoder))
    loaded = vqtoolkit.load(pipe2.save(tmp_path / "direct.safetensors"))
    assert loaded.model.quantizer.registered_name == "vq"


def test_refuses_to_save_unregistered_or_non_json_components(pipe, tmp_path: Path) -> None:
    class Unregistered(VectorQuantizer):
        pass

    odd = vqtoolkit.Pipeline(vqtoolkit.VQVAE(pipe.model.encoder, Unregistered(8, 4), pipe.model.decoder))
    with pytest.raises(BundleError, match="not registered"):
        odd.save(tmp_path / "x.safetensors")
    quantizer = VectorQuantizer(8, 4)
    quantizer._config["beta"] = torch.tensor(0.25)
    bad = vqtoolkit.Pipeline(vqtoolkit.VQVAE(pipe.model.encoder, quantizer, pipe.model.decoder))
    with pytest.raises(BundleError, match="not plain JSON"):
        bad.save(tmp_path / "x.safetensors")
    assert not (tmp_path / "x.safetensors").exists()


def _edit(saved: Path, tmp_path: Path, **kwargs) -> Path:
    return rewrite(saved, tmp_path / "edited.safetensors", **kwargs)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.update(format_version=2), "format version 2 is not supported"),
        (lambda d: d.update(format="something"), "does not describe"),
        (lambda d: d["components"].pop("decoder"), "missing \\['decoder'\\]"),
        (lambda d: d["components"].update(critic=d["components"]["prior"]), "unknown component role"),
        (lambda d: d["components"]["prior"].update(kind="encoder"), "has kind 'encoder'"),
        (lambda d: d["components"]["prior"].update(distribution="x; rm -rf ~"), "invalid distribution"),
        (lambda d: d["components"]["prior"].update(config=[1]), "needs a 'config' object"),
        (
            lambda d: d["components"]["quantizer"]["config"].update(num_codes="512"),
            "num_codes='512' is not of type int",
        ),
        (lambda d: d["components"]["quantizer"]["config"].update(num_codes=True), "is not of type int"),
        (lambda d: d["components"]["quantizer"]["config"].update(codes=8), "no option 'codes'"),
        (lambda d: d["components"]["quantizer"]["config"].update(beta=10**30), "beta=.* beyond 64 bits"),
        (lambda d: d["components"]["quantizer"]["config"].update(num_codes=-3), "num_codes.*must be >= 1"),
        (
            lambda d: d["components"]["quantizer"]["config"].update(num_codes=10**12),
            "implies 16,000,000,000,000 bytes .* check num_codes=1000000000000",
        ),
        (lambda d: d["components"]["encoder"]["config"].update(hidden_channels=[8, "x"]), "hidden_channels"),
        (lambda d: d["components"]["encoder"]["config"].update(dim=5), "do not match|tensor"),
        (lambda d: d.update(info=[]), "'info' must be a JSON object"),
    ],
)
def test_edited_metadata_is_refused_with_the_reason(saved: Path, tmp_path: Path, edit, message: str) -> None:
    with pytest.raises(BundleError, match=message):
        vqtoolkit.load(_edit(saved, tmp_path, edit_document=edit))


def test_missing_plugin_names_the_package_to_install(saved: Path, tmp_path: Path) -> None:
    def edit(d):
        d["components"]["prior"].update(name="bigram", distribution="vqtoolkit-bigram")

    with pytest.raises(
        BundleError,
        match=r"prior 'bigram' from the package 'vqtoolkit-bigram'.*comes from the bundle.*source you trust"
        r".*pip install vqtoolkit-bigram",
    ):
        vqtoolkit.load(_edit(saved, tmp_path, edit_document=edit))


def test_a_declared_provider_other_than_the_installed_one_needs_trust(saved: Path, tmp_path: Path) -> None:
    def edit(d):
        d["components"]["encoder"]["distribution"] = "evil-typosquat"

    crafted = _edit(saved, tmp_path, edit_document=edit)
    with pytest.raises(BundleError, match=r"'evil-typosquat'.*provided by vqtoolkit.*--trust-provider"):
        vqtoolkit.load(crafted)
    assert vqtoolkit.load(crafted, trust_provider=True).model.encoder.registered_name == "conv"
    runner = CliRunner()
    refused = runner.invoke(main, ["sample", str(crafted), "-n", "2", "-o", str(tmp_path / "no.png")])
    assert refused.exit_code == 1 and "--trust-provider" in refused.output
    args = ["sample", str(crafted), "-n", "2", "--trust-provider", "-o", str(tmp_path / "ok.png")]
    assert runner.invoke(main, args).exit_code == 0


def test_a_config_asking_for_absurd_work_is_stopped(saved: Path, tmp_path: Path, monkeypatch) -> None:
    """A billion residual stages would allocate nothing on meta but build modules for hours: cut short."""
    monkeypatch.setattr(deadline, "BUILD_SECONDS", 0.5)

    def edit(d):
        d["components"]["quantizer"].update(
            name="residual", config={"num_codes": 8, "dim": 4, "num_stages": 10**9}
        )

    start = time.monotonic()
    with pytest.raises(BundleError, match=r"took more than 0\.5 s"):
        vqtoolkit.load(_edit(saved, tmp_path, edit_document=edit))
    assert time.monotonic() - start < 30


def _spin(cpu_seconds: float) -> None:
    """Burn CPU in Python, where a signal handler can interrupt it."""
    end = time.process_time() + cpu_seconds
    while time.process_time() < end:
        pass


def test_the_build_deadline_outlasts_code_that_swallows_it() -> None:
    """Torch may catch an exception raised mid-build and carry on: the refusal comes again, and a
    block that swallows every one and still finishes late is refused when it leaves."""
    swallowed = 0
    late = pytest.raises(BundleError, match=r"took more than 0\.2 s")
    with late, deadline.build_deadline("test component", 0.2):
        try:
            _spin(5)
        except BundleError:
            swallowed += 1
        _spin(5)
    assert swallowed == 1

    with (
        pytest.raises(BundleError, match=r"took more than 0\.2 s"),
        deadline.build_deadline("test component", 0.2),
    ):
        for _ in range(3):
            with contextlib.suppress(BundleError):
                _spin(5)
    assert signal.getitimer(signal.ITIMER_PROF) == (0.0, 0.0)


def _drop_first(prefix: str):
    return lambda t: t.pop(next(k for k in sorted(t) if k.startswith(prefix)))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (_drop_first("encoder."), "missing \\['net.0.bias'\\]"),
        (lambda t: t.update({"prior.extra": torch.zeros(2)}), "unexpected \\['extra'\\]"),
        (lambda t: t.update({"critic.weight": torch.zeros(2)}), "belong to no component"),
        (
            lambda t: t.update({"quantizer.embedding.weight": torch.zeros(8, 5)}),
            "is \\(8, 5\\) torch.float32, expected \\(8, 4\\)",
        ),
        (
            lambda t: t.update({"quantizer.embedding.weight": torch.zeros(8, 4, dtype=torch.float64)}),
            "float64",
        ),
        (
            lambda t: t.update({"prior.fitted": torch.ones((), dtype=torch.uint8)}),
            "torch.uint8, expected \\(\\) torch.bool",
        ),
    ],
)
def test_edited_tensors_are_refused_with_the_reason(saved: Path, tmp_path: Path, edit, message: str) -> None:
    with pytest.raises(BundleError, match=message):
        vqtoolkit.load(_edit(saved, tmp_path, edit_tensors=edit))


def test_a_bundle_without_checksum_is_refused_with_the_reason(saved: Path, tmp_path: Path) -> None:
    document, tensors = split(saved.read_bytes())
    path = tmp_path / "old.safetensors"
    path.write_bytes(save_bytes(tensors, metadata={bundle.METADATA_KEY: json.dumps(document)}))
    with pytest.raises(BundleError, match=r"no 'vqtoolkit\.sha256' checksum"):
        vqtoolkit.load(path)


def test_corruption_fails_the_checksum(saved: Path, tmp_path: Path) -> None:
    data = bytearray(saved.read_bytes())
    data[-5] ^= 0x10  # inside the last tensor's bytes: still a valid safetensors file
    (tmp_path / "flipped.safetensors").write_bytes(bytes(data))
    with pytest.raises(BundleError, match="checksum mismatch"):
        vqtoolkit.load(tmp_path / "flipped.safetensors")
    unsigned = _edit(saved, tmp_path, sign=False, edit_document=lambda d: d["info"].update(epochs=99))
    with pytest.raises(BundleError, match="checksum mismatch"):
        vqtoolkit.load(unsigned)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "not a readable safetensors file"),
        (b"PK\x03\x04 a zip, say a pickle-based torch checkpoint", "not a readable safetensors file"),
        (save_bytes({"w": torch.zeros(2)}), "not a vqtoolkit bundle"),
        (save_bytes({"w": torch.zeros(2)}, metadata={"vqtoolkit": "{not json"}), "not valid JSON"),
        (save_bytes({"w": torch.zeros(2)}, metadata={"vqtoolkit": "[" * 100_000}), "not valid JSON"),
    ],
)
def test_foreign_files_are_refused(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "foreign.safetensors"
    path.write_bytes(content)
    with pytest.raises(BundleError, match=message):
        vqtoolkit.load(path)


def test_missing_file_and_directory(tmp_path: Path, pipe) -> None:
    with pytest.raises(BundleError, match="does not exist"):
        vqtoolkit.load(tmp_path / "nope.safetensors")
    with pytest.raises(BundleError, match="is a directory"):
        pipe.save(tmp_path)


def test_saved_file_has_the_usual_permissions(saved: Path) -> None:
    mask = os.umask(0)
    os.umask(mask)
    assert saved.stat().st_mode & 0o777 == 0o666 & ~mask


def test_interrupted_save_leaves_the_previous_file_intact(pipe, saved: Path, monkeypatch) -> None:
    before = saved.read_bytes()

    def interrupted(fd: int) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        pipe.save(saved)
    assert saved.read_bytes() == before
    assert sorted(p.name for p in saved.parent.iterdir()) == [saved.name]  # no temporary file left


def test_killed_writer_never_leaves_a_broken_bundle(tmp_path: Path) -> None:
    """SIGKILL a process that keeps rewriting a bundle: whenever it dies, the file still loads."""
    target = tmp_path / "model.safetensors"
    script = textwrap.dedent(f"""
        import sys, torch
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from bundle_edit import tiny_pipeline
        pipe = tiny_pipeline(None)
        pipe.model.quantizer = type(pipe.model.quantizer)(num_codes=100_000, dim=4)  # a ~1.6 MB bundle
        pipe.save({str(target)!r})
        print("ready", flush=True)
        while True:
            pipe.model.quantizer.embedding.weight.data.add_(1.0)
            pipe.save({str(target)!r})
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(0.5)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert vqtoolkit.load(target).model.quantizer.num_codes == 100_000


def test_inspect_prints_components_sizes_and_metrics(saved: Path) -> None:
    result = CliRunner().invoke(main, ["inspect", str(saved)])
    assert result.exit_code == 0, result.output
    for text in ("prior", "gmm", "vqtoolkit", "tensors", "test_mse", "checksum ok", "n_components"):
        assert text in result.output
    as_json = json.loads(CliRunner().invoke(main, ["inspect", str(saved), "--json"]).output)
    quantizer = as_json["components"]["quantizer"]
    assert quantizer["tensors"] == 1 and quantizer["values"] == 8 * 4 and quantizer["bytes"] == 8 * 4 * 4
    assert as_json["info"]["metrics"]["test_mse"] == 0.25


def test_inspect_reports_a_bad_bundle_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.safetensors"
    path.write_bytes(b"garbage")
    result = CliRunner().invoke(main, ["inspect", str(path)])
    assert result.exit_code == 1
    assert result.output.startswith("Error:") and result.output.count("\n") == 1


@pytest.mark.parametrize(
    ("prior", "field", "message"),
    [
        ("pixelcnn", "grid_shape", "marked fitted but its config has no grid_shape"),
        ("gmm", "latent_shape", "tensor pca_basis is"),  # its tensors' shapes follow latent_shape
    ],
)
def test_a_fitted_prior_without_its_learned_shape_is_refused(
    tmp_path: Path, prior: str, field: str, message: str
) -> None:
    """A fitted prior whose config lost the shape it learned would load, then fail on first use."""
    from bundle_edit import tiny_pipeline

    # without clusters: a clustered prior's k-means tensors follow grid_shape, refused like gmm's
    options = (
        {"layers": 3, "channels": 8, "epochs": 1, "clusters": None}
        if prior == "pixelcnn"
        else {"n_components": 2}
    )
    path = tiny_pipeline(prior, **options).save(tmp_path / "fitted.safetensors")

    def edit(d):
        d["components"]["prior"]["config"][field] = None

    with pytest.raises(BundleError, match=message):
        vqtoolkit.load(_edit(path, tmp_path, edit_document=edit))


def load_as_older_release(pipe: vqtoolkit.Pipeline, tmp_path: Path, *options: str) -> vqtoolkit.Pipeline:
    """``pipe`` saved without its prior's ``options`` in the config (as a release before them wrote
    it) and loaded again; asserts the loaded prior draws exactly the samples ``pipe`` draws."""
    path = pipe.save(tmp_path / "now.safetensors")

    def forget(document):
        for key in options:
            document["components"]["prior"]["config"].pop(key)

    loaded = vqtoolkit.load(rewrite(path, tmp_path / "old.safetensors", edit_document=forget))
    before, after = (p.sample_indices(3, generator=torch.Generator().manual_seed(0)) for p in (pipe, loaded))
    assert torch.equal(before, after)
    return loaded


@pytest.mark.parametrize("prior", ["pixelcnn", "transformer"])
def test_a_bundle_written_before_clusters_existed_loads_as_it_was(tmp_path: Path, prior: str) -> None:
    """An index prior's config without ``clusters`` (older releases) means no clusters, whatever the
    default of today: the transformer's default is 16, which would ask for tensors the file lacks."""
    loaded = load_as_older_release(tiny_pipeline(prior, clusters=None, epochs=1), tmp_path, "clusters")
    assert loaded.prior.clusters is None


@pytest.mark.parametrize("prior", ["pixelcnn", "transformer"])
def test_a_bundle_written_before_guidance_existed_loads_unguided(tmp_path: Path, prior: str) -> None:
    """A clustered prior saved before condition dropout existed has no "no condition" row: rebuilt
    with today's defaults (dropout 0.1, guidance 1.5) it would ask for a tensor shape the file lacks."""
    pipe = tiny_pipeline(prior, clusters=3, condition_dropout=0, epochs=1)
    loaded = load_as_older_release(pipe, tmp_path, "condition_dropout", "guidance")
    assert (loaded.prior.config["condition_dropout"], loaded.prior.guidance) == (0, 1)


def test_a_transformer_written_before_conditioning_every_position_loads_as_it_was(tmp_path: Path) -> None:
    """A transformer saved before ``condition_every_position`` has no per-position condition embedding:
    rebuilt with today's default it would ask for a tensor the file lacks."""
    pipe = tiny_pipeline("transformer", clusters=3, condition_every_position=False, epochs=1)
    loaded = load_as_older_release(pipe, tmp_path, "condition_every_position")
    assert loaded.prior.config["condition_every_position"] is False
