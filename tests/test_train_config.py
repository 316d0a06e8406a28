"""TrainConfig: every training option checked once, when the config is made."""

from __future__ import annotations

from pathlib import Path

import pytest

from vqtoolkit import TrainConfig
from vqtoolkit.errors import ConfigError


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"epochs": 0}, "epochs must be an integer >= 1; got 0"),
        ({"batch_size": 0}, "batch_size must be an integer >= 1; got 0"),
        ({"lr": float("nan")}, "lr must be a finite number > 0; got nan"),
        ({"lr": -1.0}, "lr must be a finite number > 0"),
        ({"lr_schedule": "cosin"}, "unknown learning-rate schedule 'cosin'"),
        ({"precision": "8"}, "unknown precision '8'; choose one of 32, bf16, 16"),
        ({"resume": True}, "resume=True needs a checkpoint_path"),
    ],
)
def test_impossible_values_fail_when_the_config_is_made(options: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        TrainConfig(**options)


def test_of_replaces_fields_and_refuses_unknown_options_with_the_closest_name() -> None:
    base = TrainConfig(epochs=2, lr=1e-3)
    changed = TrainConfig.of(base, batch_size=32, checkpoint_path="runs/c.safetensors")
    assert (changed.epochs, changed.lr, changed.batch_size) == (2, 1e-3, 32)
    assert changed.checkpoint_path == Path("runs/c.safetensors")  # a str path is stored as a Path
    assert base.batch_size is None  # frozen: the original is unchanged
    with pytest.raises(ConfigError, match="unknown training option 'batch'; did you mean 'batch_size'"):
        TrainConfig.of(base, batch=32)
    with pytest.raises(ConfigError, match="epochs must be an integer >= 1"):
        TrainConfig.of(base, epochs=-1)


def test_the_dataset_defaults_fill_only_missing_epochs_and_batch_size() -> None:
    filled = TrainConfig().with_dataset_defaults(7, 32)
    assert (filled.epochs, filled.batch_size) == (7, 32)
    chosen = TrainConfig(epochs=3, batch_size=64).with_dataset_defaults(7, 32)
    assert (chosen.epochs, chosen.batch_size) == (3, 64)
