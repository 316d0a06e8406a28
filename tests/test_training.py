"""The training loop: resume reproduces an uninterrupted run, Ctrl-C saves, bad settings fail early."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner
from safetensors import safe_open

import vqtoolkit
from vqtoolkit.cli import main
from vqtoolkit.errors import CheckpointError, ConfigError, ShapeError, TrainingError, TrainingInterrupted
from vqtoolkit.runtime.devices import autocast, resolve_device
from vqtoolkit.runtime.schedule import SCHEDULES, lr_at
from vqtoolkit.training import loop as train_module
from vqtoolkit.training.loop import calibrate_output_mean, train_autoencoder

TIMING = ("seconds", "images_per_s")


def tiny_model(seed: int = 0) -> vqtoolkit.VQVAE:
    """A one-stage conv VQ-VAE on 1×8×8 images: fast enough to train many times per test."""
    torch.manual_seed(seed)
    return vqtoolkit.build(
        "conv",
        "vq",
        "conv",
        None,
        dim=4,
        num_codes=16,
        encoder_config={"hidden_channels": [8]},
        decoder_config={"hidden_channels": [8]},
    ).model


@pytest.fixture(scope="module")
def images() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.rand(80, 1, 8, 8, generator=g), torch.rand(20, 1, 8, 8, generator=g)


def metrics_only(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k not in TIMING} for r in history]


def run(model: vqtoolkit.VQVAE, images: Any, **options: Any) -> list[dict[str, Any]]:
    train, test = images
    return train_autoencoder(model, train, test, batch_size=16, progress=False, seed=3, **options)


def fail_on_call(model: vqtoolkit.VQVAE, n: int, action: Any) -> Any:
    """Call ``action()`` in the encoder's n-th forward pass (a stand-in for a crash or a Ctrl-C)."""
    calls = {"n": 0}

    def hook(module: Any, inputs: Any) -> None:
        calls["n"] += 1
        if calls["n"] == n:
            action()

    return model.encoder.register_forward_pre_hook(hook)


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_resume_after_a_crash_matches_an_uninterrupted_run(images: Any, tmp_path: Path) -> None:
    reference = tiny_model()
    expected = run(reference, images, epochs=3)

    crashed = tiny_model()
    power_cut = lambda: (_ for _ in ()).throw(RuntimeError("power cut"))  # noqa: E731
    handle = fail_on_call(crashed, 1 + 2 * (5 + 1) + 2, power_cut)
    # dies in epoch 3, batch 2 (1 calibration pass, then each epoch: 5 batches and 1 test pass)
    with pytest.raises(RuntimeError, match="power cut"):
        run(crashed, images, epochs=3, checkpoint_path=tmp_path / "ckpt.safetensors")
    handle.remove()

    resumed = tiny_model(seed=99)  # different initial weights: everything must come from the checkpoint
    history = run(resumed, images, epochs=3, checkpoint_path=tmp_path / "ckpt.safetensors", resume=True)
    assert metrics_only(history) == metrics_only(expected)
    assert same_weights(resumed, reference)


def test_ctrl_c_saves_mid_epoch_and_resume_matches(images: Any, tmp_path: Path) -> None:
    reference = tiny_model()
    expected = run(reference, images, epochs=2)

    interrupted = tiny_model()
    fail_on_call(interrupted, 1 + 5 + 1 + 2, lambda: signal.raise_signal(signal.SIGINT))  # epoch 2, batch 2
    ckpt = tmp_path / "ckpt.safetensors"
    with pytest.raises(TrainingInterrupted, match=r"epoch 2, batch 2/5.*--resume"):
        run(interrupted, images, epochs=2, checkpoint_path=ckpt)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler restored

    resumed = tiny_model(seed=5)
    history = run(resumed, images, epochs=2, checkpoint_path=ckpt, resume=True)
    assert metrics_only(history) == metrics_only(expected)
    assert same_weights(resumed, reference)


def test_resume_can_extend_training(images: Any, tmp_path: Path) -> None:
    # a constant rate: the cosine curve spans the requested epochs, so extending a run changes it
    ckpt = tmp_path / "ckpt.safetensors"
    expected = run(tiny_model(), images, epochs=3, lr_schedule="constant")
    run(tiny_model(), images, epochs=1, checkpoint_path=ckpt, lr_schedule="constant")
    history = run(tiny_model(), images, epochs=3, checkpoint_path=ckpt, resume=True, lr_schedule="constant")
    assert metrics_only(history) == metrics_only(expected)
    with pytest.raises(TrainingError, match="already holds 3 trained epochs"):
        run(tiny_model(), images, epochs=2, checkpoint_path=ckpt, resume=True, lr_schedule="constant")
    finished = tiny_model()  # resuming a finished run trains nothing and restores its weights
    again = run(finished, images, epochs=3, checkpoint_path=ckpt, resume=True, lr_schedule="constant")
    assert metrics_only(again) == metrics_only(expected)


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_each_step_uses_the_scheduled_learning_rate(
    schedule: str, images: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    used: list[float] = []
    adam_step = torch.optim.Adam.step

    def recording_step(self: torch.optim.Adam, *args: Any, **kwargs: Any) -> Any:
        used.append(self.param_groups[0]["lr"])
        return adam_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", recording_step)
    run(tiny_model(), images, epochs=4, lr=0.01, lr_schedule=schedule)
    total = 4 * 5  # 80 images in batches of 16
    assert used == pytest.approx([lr_at(step, total, 0.01, schedule) for step in range(total)])
    if schedule == "cosine":
        assert max(used) == pytest.approx(0.01) and used[-1] < 1e-4  # peaks, then decays to ~0


def test_a_fresh_decoder_starts_at_the_images_mean() -> None:
    model = tiny_model()
    images = torch.rand(256, 1, 8, 8, generator=torch.Generator().manual_seed(2)) * 0.3  # mean ~0.15
    with torch.no_grad():
        before = model(images).reconstruction.mean()
        calibrate_output_mean(model, images)
        after = model(images).reconstruction.mean()
    assert abs(float(before) - 0.5) < 0.1 and abs(float(after) - float(images.mean())) < 0.01
    bias = model.decoder.output_logit_bias().clone()
    calibrate_output_mean(model, images)  # already at the mean: (almost) nothing moves
    assert torch.allclose(model.decoder.output_logit_bias(), bias, atol=0.02)


def test_training_calibrates_only_fresh_runs_and_only_when_asked(
    images: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    real = train_module.calibrate_output_mean

    def spy(model: vqtoolkit.VQVAE, images: torch.Tensor) -> None:
        calls.append(len(images))
        real(model, images)

    monkeypatch.setattr(train_module, "calibrate_output_mean", spy)
    ckpt = tmp_path / "ckpt.safetensors"
    run(tiny_model(), images, epochs=1, checkpoint_path=ckpt)
    assert calls == [80]  # all 80 training images (fewer than CALIBRATION_IMAGES)
    run(tiny_model(), images, epochs=2, checkpoint_path=ckpt, resume=True)  # weights from the checkpoint
    run(tiny_model(), images, epochs=1, start_at_mean=False)
    assert calls == [80]


def test_unknown_schedule_fails_before_training(images: Any) -> None:
    with pytest.raises(ConfigError, match=r"unknown learning-rate schedule 'cosin'; choose one of cosine"):
        run(tiny_model(), images, epochs=1, lr_schedule="cosin")


def test_checkpoint_is_pickle_free_and_holds_buffers(images: Any, tmp_path: Path) -> None:
    model = tiny_model()
    model.quantizer.register_buffer("ema_cluster_size", torch.zeros(16))  # stands in for EMA statistics
    ckpt = tmp_path / "ckpt.safetensors"
    run(model, images, epochs=1, checkpoint_path=ckpt)
    with safe_open(str(ckpt), framework="pt") as f:  # safetensors: tensors + JSON, no pickle
        keys = set(f.keys())
        document = json.loads(f.metadata()["vqtoolkit_checkpoint"])
    assert {f"model.{k}" for k in model.state_dict()} <= keys
    assert "model.quantizer.ema_cluster_size" in keys
    assert {"rng.shuffle", "rng.torch"} <= keys and any(k.startswith("optimizer.") for k in keys)
    assert document["position"] == {"epoch": 2, "batches_done": 0, "step": 5}


def test_checkpoint_of_another_configuration_is_refused_first(images: Any, tmp_path: Path) -> None:
    ckpt = tmp_path / "ckpt.safetensors"
    run(tiny_model(), images, epochs=1, lr=1e-3, checkpoint_path=ckpt)
    other = tiny_model()
    before = {k: v.clone() for k, v in other.state_dict().items()}
    with pytest.raises(CheckpointError, match=r"lr is 0\.001 there but 0\.01"):
        run(other, images, epochs=2, lr=1e-2, checkpoint_path=ckpt, resume=True)
    torch.manual_seed(0)
    hidden = {"hidden_channels": [8]}
    wider = vqtoolkit.build(
        "conv", "vq", "conv", None, dim=4, num_codes=32, encoder_config=hidden, decoder_config=hidden
    ).model
    with pytest.raises(CheckpointError, match=r"quantizer\.config\.num_codes is 16 there but 32"):
        run(wider, images, epochs=2, lr=1e-3, checkpoint_path=ckpt, resume=True)
    assert all(torch.equal(v, before[k]) for k, v in other.state_dict().items())
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        run(tiny_model(), images, epochs=1, checkpoint_path=tmp_path / "missing.safetensors", resume=True)
    (tmp_path / "junk.safetensors").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable"):
        run(tiny_model(), images, epochs=1, checkpoint_path=tmp_path / "junk.safetensors", resume=True)


def test_metrics_log_has_one_json_line_per_epoch_and_resume_rewrites_it(images: Any, tmp_path: Path) -> None:
    log, ckpt = tmp_path / "metrics.jsonl", tmp_path / "ckpt.safetensors"
    history = run(tiny_model(), images, epochs=2, log_path=log, checkpoint_path=ckpt)
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert lines == history and [r["epoch"] for r in lines] == [1, 2]
    run(tiny_model(), images, epochs=3, log_path=log, checkpoint_path=ckpt, resume=True)
    assert [json.loads(line)["epoch"] for line in log.read_text().splitlines()] == [1, 2, 3]


@pytest.mark.parametrize("device", ["nonsense", "tpu"])
def test_unknown_device_is_a_config_error(device: str) -> None:
    with pytest.raises(ConfigError, match="unknown device"):
        resolve_device(device)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_unavailable_cuda_fails_before_training(images: Any) -> None:
    model = tiny_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ConfigError, match="CUDA is not available"):
        run(model, images, epochs=1, device="cuda")
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_float16_on_cpu_is_refused_and_bf16_trains(images: Any) -> None:
    with pytest.raises(ConfigError, match="not supported on cpu"):
        run(tiny_model(), images, epochs=1, device="cpu", precision="16")
    history = run(tiny_model(), images, epochs=1, device="cpu", precision="bf16")
    assert torch.isfinite(torch.tensor(history[-1]["train_recon"]))


def test_bf16_autocast_keeps_the_code_search_in_float32() -> None:
    model = tiny_model().eval()
    x = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), autocast(torch.device("cpu"), "bf16"):
        z = model.encoder(x)
        indices = model.quantizer(z).indices
    assert z.dtype == torch.bfloat16
    flat = z.float().permute(0, 2, 3, 1).reshape(-1, 4)
    exact = torch.cdist(flat, model.quantizer.codebook.float()).argmin(1)
    assert torch.equal(indices.reshape(-1), exact)


def test_bad_image_size_fails_before_training() -> None:
    model = tiny_model()
    with pytest.raises(ShapeError, match="downsampled evenly"):
        train_autoencoder(model, torch.rand(8, 1, 9, 9), epochs=1, progress=False)


def test_cli_train_writes_bundle_log_plots_and_json_summary(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / "m.safetensors"
    args = [
        "train",
        "--epochs",
        "1",
        "--num-codes",
        "16",
        "--dim",
        "8",
        "--batch-size",
        "512",
        "--image-size",
        "8",
        "-o",
        str(out),
        "--device",
        "cpu",
        "--lr-schedule",
        "constant",
        "--json",
    ]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    for name in ("bundle", "checkpoint", "metrics", "curves", "code_usage", "reconstructions"):
        assert Path(summary["files"][name]).is_file(), name
    assert summary["metrics"]["test_mse"] > 0 and len(summary["history"]) == 1
    pipe = vqtoolkit.load(out)
    assert pipe.prior is None and pipe.device.type == "cpu"
    assert (pipe.info["lr"], pipe.info["lr_schedule"]) == (1e-2, "constant")
    bad = CliRunner().invoke(main, [*args[:-3], "--lr-schedule", "linear"])
    assert bad.exit_code == 2 and "'linear' is not one of 'cosine', 'constant'" in bad.output

    resumed = CliRunner().invoke(main, [*args[:2], "2", *args[3:], "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert [r["epoch"] for r in json.loads(resumed.output)["history"]] == [1, 2]


def test_cli_reports_an_unavailable_device_in_one_line(tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    result = CliRunner().invoke(main, ["train", "--device", "cuda", "-o", str(tmp_path / "m.safetensors")])
    assert result.exit_code == 1
    assert "CUDA is not available" in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("kind", ["cuda", "mps"])
def test_accelerator_run_saves_a_bundle_that_loads_on_cpu(kind: str, images: Any, tmp_path: Path) -> None:
    available = torch.cuda.is_available() if kind == "cuda" else torch.backends.mps.is_available()
    if not available:
        pytest.skip(f"no {kind} device")
    pipe = vqtoolkit.Pipeline(tiny_model())
    history = run(pipe.model, images, epochs=1, device=kind, precision="16")
    assert torch.isfinite(torch.tensor(history[-1]["train_recon"]))
    assert pipe.device.type == kind
    pipe.save(tmp_path / "m.safetensors")
    loaded = vqtoolkit.load(tmp_path / "m.safetensors")
    assert loaded.device.type == "cpu"
    x = images[1][:4]
    assert torch.allclose(loaded.reconstruct(x), pipe.reconstruct(x).cpu(), atol=1e-2)
