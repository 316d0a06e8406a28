"""Training precision of the network priors: bfloat16 steps where the hardware has them, float32 scores."""

from __future__ import annotations

import math

import pytest
import torch

from vqtoolkit.components import registry
from vqtoolkit.errors import ConfigError
from vqtoolkit.priors.neural.loop import native_bfloat16, training_autocast

pytestmark = pytest.mark.usefixtures("one_thread")

K = 6
CPU = torch.device("cpu")


def autocasts(precision: str) -> bool:
    """Whether a training step of ``precision`` computes in bfloat16 on the CPU."""
    with training_autocast(precision, CPU):
        return torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16


def test_float32_never_autocasts_and_bfloat16_always_does():
    assert not autocasts("float32")
    assert autocasts("bfloat16")


def test_auto_uses_bfloat16_exactly_where_the_cpu_has_it(monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert native_bfloat16(CPU) and autocasts("auto")
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    assert not native_bfloat16(CPU) and not autocasts("auto")


def fit(name: str, precision: str):
    g = torch.Generator().manual_seed(0)
    data = torch.randint(0, K, (64, 1, 1), generator=g).expand(64, 3, 4).clone()
    small = {"pixelcnn": {"channels": 8, "layers": 3}, "transformer": {"dim": 16, "layers": 1, "heads": 2}}
    options = {**small[name], "epochs": 2, "batch_size": 16, "clusters": None, "precision": precision}
    return registry.create("prior", name, num_codes=K, **options).fit(data, progress=False), data


@pytest.mark.parametrize("name", ["pixelcnn", "transformer"])
def test_bfloat16_steps_train_a_different_but_sound_network_and_score_it_in_float32(name):
    exact, data = fit(name, "float32")
    fast, _ = fit(name, "bfloat16")
    exact_bits = [e["train_bits_per_code"] for e in exact.history]
    fast_bits = [e["train_bits_per_code"] for e in fast.history]
    assert exact_bits != fast_bits  # the steps really ran in bfloat16
    assert all(math.isfinite(b) for b in fast_bits) and fast_bits[-1] < fast_bits[0]
    log_prob = fast.log_prob(data)
    assert log_prob.dtype == torch.float32 and torch.isfinite(log_prob).all()
    assert abs(fast_bits[-1] - exact_bits[-1]) < 0.1 * exact_bits[-1]


def test_an_unknown_precision_is_refused_with_the_choices():
    with pytest.raises(ConfigError, match=r"precision='fp16'.*'auto', 'float32', 'bfloat16'"):
        registry.create("prior", "pixelcnn", num_codes=K, precision="fp16")
