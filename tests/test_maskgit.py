"""The maskgit prior: masked training, parallel sampling in ``steps`` passes, conditions, bundles."""

from __future__ import annotations

import factories
import pytest
import torch
from click.testing import CliRunner

import vqtoolkit
from vqtoolkit.cli import main
from vqtoolkit.components import registry
from vqtoolkit.errors import ConfigError
from vqtoolkit.priors.maskgit import SCHEDULES, MaskGITPrior, random_masks

pytestmark = pytest.mark.usefixtures("one_thread")

K = 6
TINY = {"dim": 16, "layers": 1, "heads": 2, "epochs": 1, "batch_size": 32, "clusters": None}


def grids(n: int = 64, shape: tuple[int, int] = (7, 7), seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Grids whose every code is the label (0-2) or the label + 1: structure a network can learn."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 3
    codes = labels[:, None, None] + torch.randint(0, 2, (n, *shape), generator=g)
    return codes, labels


def fitted(shape: tuple[int, int] = (7, 7), **options) -> MaskGITPrior:
    data, labels = grids(shape=shape)
    prior = registry.create("prior", "maskgit", num_codes=K, **{**TINY, **options})
    return prior.fit(data, labels, progress=False)


class PassCounter:
    """Counts the network's forward passes (a forward hook)."""

    def __init__(self, net: torch.nn.Module) -> None:
        self.passes = 0
        net.register_forward_hook(self.count)

    def count(self, *_: object) -> None:
        self.passes += 1


@pytest.mark.parametrize("shape", [(7, 7), (16, 16)])
def test_fits_and_samples_valid_indices(shape):
    prior = fitted(shape)
    drawn = prior.sample(5, generator=torch.Generator().manual_seed(0))
    assert drawn.shape == (5, *shape) and drawn.dtype == torch.long
    assert int(drawn.min()) >= 0 and int(drawn.max()) < K
    assert torch.equal(drawn, prior.sample(5, generator=torch.Generator().manual_seed(0)))


@pytest.mark.parametrize(("steps", "shape", "passes"), [(1, (7, 7), 1), (5, (7, 7), 5), (8, (2, 3), 6)])
def test_a_sample_takes_steps_network_passes(steps, shape, passes):
    prior = fitted(shape, steps=steps)
    counter = PassCounter(prior.net)
    prior.sample(4, generator=torch.Generator().manual_seed(0))
    assert counter.passes == passes  # one pass per step; never more than the grid has codes
    prior.steps = 3  # a sampling option, settable after fitting
    counter.passes = 0
    prior.sample(4)
    assert counter.passes == 3


def test_guided_conditional_sampling_draws_the_label_in_steps_batched_passes():
    prior = fitted(conditional=True, num_classes=3, epochs=25, condition_dropout=0.1, guidance=2.0)
    counter = PassCounter(prior.net)
    drawn = prior.sample(16, label=2, generator=torch.Generator().manual_seed(0))
    assert counter.passes == prior.steps  # the unconditioned twins share each pass
    # the label-2 grids hold codes 2 and 3 only: the condition steers every position
    assert float(((drawn == 2) | (drawn == 3)).float().mean()) > 0.9
    assert float((prior.sample(16, label=0) <= 1).float().mean()) > 0.9


def test_the_training_masks_follow_the_schedule():
    indices = torch.zeros(4000, 4, 5, dtype=torch.long)
    for name, gamma in SCHEDULES.items():
        masked = random_masks(indices, name, torch.Generator().manual_seed(0))
        share = masked.flatten(1).float().mean(1)
        assert bool((share > 0).all())  # at least one masked code per grid
        expected = float(gamma(torch.linspace(0, 1, 10_001)).mean())  # E[γ(r)], r ~ U(0, 1)
        assert abs(float(share.mean()) - expected) < 0.03, name
    with pytest.raises(ConfigError, match="schedule='square' is not of type"):
        registry.create("prior", "maskgit", num_codes=K, schedule="square")


def test_no_likelihood_and_honestly_named_fit_scores():
    prior = fitted(epochs=2)
    assert not prior.has_likelihood
    record = prior.history[-1]
    assert "val_masked_bits" in record and "train_masked_bits" in record
    assert not any("bits_per_code" in key for key in record)
    with pytest.raises(NotImplementedError, match="no exact likelihood"):
        prior.log_prob(grids()[0])


def test_top_k_one_draws_the_likeliest_code_and_bad_options_are_refused():
    prior = fitted(epochs=3, top_k=1, choice_temperature=0.0)
    a, b = (prior.sample(4, generator=torch.Generator().manual_seed(seed)) for seed in (0, 1))
    assert torch.equal(a, b)  # no randomness left: argmax codes, confidence order without noise
    for bad in ({"top_k": 0}, {"steps": 0}, {"choice_temperature": -1.0}):
        with pytest.raises(ConfigError):
            registry.create("prior", "maskgit", num_codes=K, **bad)
    with pytest.raises(ConfigError, match="steps must be"):
        prior.steps = 0


def test_bundle_round_trip_gives_identical_samples_and_no_nll(tmp_path):
    pipe = factories.tiny_pipeline(num_codes=16, dim=8)
    pipe.info.update(dataset="digits", seed=0)
    data = factories.tiny_data()
    prior = pipe.fit_prior(data, "maskgit", progress=False, **{**TINY, "clusters": 2, "steps": 4})
    loaded = vqtoolkit.load(pipe.save(tmp_path / "m.safetensors"))
    assert loaded.prior.config == prior.config
    drawn = [p.sample(6, generator=torch.Generator().manual_seed(5)) for p in (pipe, loaded)]
    assert torch.equal(*drawn)
    assert loaded.prior_nll(data.test_images) is None
    assert "test_prior_bits_per_code" not in loaded.info["metrics"]
    assert "val_masked_bits" in loaded.info["prior_history"][-1]


def test_cli_sampling_options_reach_maskgit_and_are_refused_by_others(tmp_path):
    pipe = factories.tiny_pipeline(num_codes=16, dim=8)
    pipe.info.update(dataset="digits", seed=0)
    pipe.fit_prior(factories.tiny_data(), "maskgit", progress=False, **TINY)
    bundle = pipe.save(tmp_path / "maskgit.safetensors")
    runner = CliRunner()
    out = tmp_path / "s.npy"
    result = runner.invoke(
        main, ["sample", str(bundle), "-n", "3", "--steps", "2", "--top-k", "4", "-o", str(out)]
    )
    assert result.exit_code == 0, result.output and out.exists()
    pipe.fit_prior(factories.tiny_data(), "categorical", progress=False)
    other = pipe.save(tmp_path / "categorical.safetensors")
    result = runner.invoke(main, ["sample", str(other), "--steps", "2", "-o", str(tmp_path / "x.png")])
    assert (
        result.exit_code == 1 and "--steps sets how many parallel network passes a maskgit" in result.output
    )
    assert "Traceback" not in result.output and not (tmp_path / "x.png").exists()
