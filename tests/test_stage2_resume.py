"""Stage 2 is resumable: a network prior's fit checkpoints every epoch, Ctrl-C saves and says how to go on."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import vqtoolkit
from vqtoolkit.cli import main
from vqtoolkit.data.datasets import ImageDataset
from vqtoolkit.errors import TrainingInterrupted
from vqtoolkit.priors.neural import base as neural
from vqtoolkit.priors.neural import loop as training

PRIOR = {"channels": 4, "layers": 3, "epochs": 3, "batch_size": 8}
#: Every network prior trains in the shared loop, so every one checkpoints and resumes the same way.
PRIORS = {
    "pixelcnn": PRIOR,
    "transformer": {"dim": 16, "layers": 1, "heads": 2, "epochs": 3, "batch_size": 8, "patience": 5},
}


def ctrl_c_at_step(monkeypatch: pytest.MonkeyPatch, step: int) -> None:
    """Press Ctrl-C (a real SIGINT) during the ``step``-th training step of a network prior."""
    original = neural.cross_entropy_loss
    calls = {"n": 0}

    def counting(net, indices, labels):  # type: ignore[no-untyped-def]
        if torch.is_grad_enabled():
            calls["n"] += 1
            if calls["n"] == step:
                os.kill(os.getpid(), signal.SIGINT)
        return original(net, indices, labels)

    monkeypatch.setattr(neural, "cross_entropy_loss", counting)


@pytest.fixture(scope="module")
def stage1() -> tuple[vqtoolkit.Pipeline, ImageDataset]:
    torch.manual_seed(0)
    pipe = vqtoolkit.build("conv", "vq", "conv", None, dim=4, num_codes=8)
    images = torch.rand(48, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    labels = torch.arange(48) % 3
    return pipe, ImageDataset("tiny", images[:40], labels[:40], images[40:], labels[40:], 3, 1)


@pytest.mark.parametrize("name", sorted(PRIORS))
def test_an_interrupted_prior_fit_resumes_exactly(name: str, stage1, tmp_path: Path, monkeypatch) -> None:
    pipe, data = stage1
    options = PRIORS[name]
    reference = pipe.fit_prior(data, name, progress=False, **options).state_dict()
    ckpt = tmp_path / "prior.safetensors"
    with monkeypatch.context() as patch:
        ctrl_c_at_step(patch, 7)  # epoch 2 of 3 (5 steps per epoch)
        with pytest.raises(TrainingInterrupted, match=r"interrupted in epoch 2.*holds the 1 finished"):
            pipe.fit_prior(data, name, progress=False, checkpoint_path=ckpt, **options)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    resumed = pipe.fit_prior(data, name, progress=False, checkpoint_path=ckpt, resume=True, **options)
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]
    state = resumed.state_dict()
    assert all(torch.equal(state[k], reference[k]) for k in reference)


@pytest.mark.slow  # two `vqtool build` runs on digits: about a minute on 2 cores
def test_build_resumes_in_stage_2_without_retraining_stage_1(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(training, "AUTO_GRIDS", 20)  # the fewest epochs: 2 short prior epochs on digits
    out = tmp_path / "m.safetensors"
    args = ["build", "--prior", "pixelcnn", "--epochs", "1", "--num-codes", "8", "--dim", "4"]
    args += ["-n", "4", "--quiet", "-o", str(out)]
    runner = CliRunner()
    with monkeypatch.context() as patch:
        ctrl_c_at_step(patch, 50)  # in the prior's second epoch (43 batches of 32 each)
        interrupted = runner.invoke(main, args)
    assert interrupted.exit_code == 1 and not out.exists()
    assert "prior fit interrupted in epoch 2" in interrupted.output and "--resume" in interrupted.output
    stage1 = out.with_name("m-checkpoint.safetensors")
    before = stage1.stat().st_mtime_ns, stage1.read_bytes()
    resumed = runner.invoke(main, [*args, "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert (stage1.stat().st_mtime_ns, stage1.read_bytes()) == before  # stage 1 was not trained again
    assert [h["epoch"] for h in vqtoolkit.load(out).info["prior_history"]] == [1, 2]
