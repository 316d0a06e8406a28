"""The VQGAN recipe under 2 gloo processes: the model and the discriminator stay identical on both ranks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file
from test_distributed import free_port
from test_distributed_training import assert_same, set_torchrun_environment, tiny_digits, tiny_pipeline

from vqtoolkit.training import objective

pytestmark = pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")


def worker(rank: int, port: int, tmp: str) -> None:
    """One rank: stage 1 with the recipe; saves its model's and its discriminator's weights."""
    set_torchrun_environment(rank, port)
    built: list[objective.Objective] = []
    original = objective.Objective.__init__

    def remember(self: objective.Objective, *args: object, **kwargs: object) -> None:
        original(self, *args, **kwargs)  # type: ignore[arg-type]
        built.append(self)

    objective.Objective.__init__ = remember  # type: ignore[method-assign]  # this process only
    data, pipe = tiny_digits(), tiny_pipeline()
    try:
        pipe.fit_autoencoder(
            data,
            epochs=1,
            batch_size=32,
            progress=False,
            device="cpu",
            adversarial_weight=0.5,
            adversarial_start=2,
            discriminator_channels=8,
        )
        (made,) = built
        assert made.discriminator is not None
        state = {f"model.{k}": v for k, v in pipe.model.state_dict().items()}
        state.update({f"discriminator.{k}": v for k, v in made.discriminator.state_dict().items()})
        save_file({k: v.contiguous() for k, v in state.items()}, f"{tmp}/state-rank{rank}.safetensors")
        Path(f"{tmp}/history-rank{rank}.json").write_text(json.dumps(pipe.info["history"]))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # one 2-process launch: about 20 s on a busy 2-core machine
def test_two_processes_keep_model_and_discriminator_identical(tmp_path: Path) -> None:
    mp.spawn(worker, args=(free_port(), str(tmp_path)), nprocs=2, join=True)
    rank0, rank1 = (load_file(tmp_path / f"state-rank{r}.safetensors") for r in (0, 1))
    assert any(k.startswith("discriminator.") for k in rank0)
    assert_same(rank0, rank1)
    histories = [json.loads((tmp_path / f"history-rank{r}.json").read_text()) for r in (0, 1)]
    record = histories[0][-1]
    assert record["train_disc"] > 0 and record["train_gan"] is not None
    assert record["train_disc"] == histories[1][-1]["train_disc"]  # reduced over ranks
