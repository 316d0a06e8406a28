"""Priors over codes: categorical and PixelCNN likelihoods, causality, sampling, bundles, CLI errors."""

from __future__ import annotations

import json
import math

import factories
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

import vqtoolkit
from vqtoolkit.cli import main
from vqtoolkit.components import registry
from vqtoolkit.data.datasets import ImageDataset
from vqtoolkit.errors import ConfigError, ShapeError
from vqtoolkit.priors.pixelcnn import GatedPixelCNN, dilations

K = 6
TINY_PIXELCNN = {"channels": 8, "layers": 3, "epochs": 1, "batch_size": 32}
TINY_TRANSFORMER = {"dim": 16, "layers": 2, "heads": 2, "epochs": 1, "batch_size": 32}
INDEX_PRIORS = [
    ("categorical", {}),
    ("categorical", {"conditional": True}),
    ("pixelcnn", TINY_PIXELCNN),
    ("pixelcnn", {**TINY_PIXELCNN, "conditional": True}),
    ("transformer", TINY_TRANSFORMER),
    ("transformer", {**TINY_TRANSFORMER, "conditional": True}),
]
TINY = {"pixelcnn": TINY_PIXELCNN, "transformer": TINY_TRANSFORMER, "gmm": {"n_components": 2, "pca_dim": 4}}


pytestmark = pytest.mark.usefixtures("one_thread")


def grids(n: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Index grids (n, 3, 4) with structure (each row copies a per-image code) and labels 0-2."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 3, (n,), generator=g)
    base = (labels[:, None, None] + torch.randint(0, 2, (n, 3, 1), generator=g)) % K
    return base.expand(n, 3, 4).clone(), labels


def fitted(name: str, options: dict, **extra) -> vqtoolkit.priors.Prior:
    data, labels = grids()
    return registry.create("prior", name, num_codes=K, **options, **extra).fit(data, labels, progress=False)


def tiny_pipeline(prior=None, num_codes: int = 16) -> vqtoolkit.Pipeline:
    pipe = factories.tiny_pipeline(prior, num_codes=num_codes, dim=8)
    pipe.info.update(dataset="digits", seed=0)
    return pipe


def tiny_images(seed: int = 0) -> ImageDataset:
    return factories.tiny_data(seed, random_labels=True)


# -- sampling returns valid indices -------------------------------------------------------------
@pytest.mark.parametrize(("name", "options"), INDEX_PRIORS)
def test_index_prior_samples_valid_indices(name, options):
    prior = fitted(name, options)
    label = 1 if prior.conditional else None
    drawn = prior.sample(5, label=label, generator=torch.Generator().manual_seed(0))
    assert drawn.shape == (5, 3, 4) and drawn.dtype == torch.long
    assert int(drawn.min()) >= 0 and int(drawn.max()) < K


@pytest.mark.parametrize("name", ["gmm", "categorical", "pixelcnn", "transformer"])
def test_pipeline_samples_images_from_each_prior(name):
    pipe = tiny_pipeline()
    pipe.fit_prior(tiny_images(), name, progress=False, **TINY.get(name, {}))
    indices = pipe.sample_indices(4, generator=torch.Generator().manual_seed(0))
    assert indices.shape == (4, 7, 7) and int(indices.min()) >= 0 and int(indices.max()) < 16
    images = pipe.sample(4, generator=torch.Generator().manual_seed(0))
    assert images.shape == (4, 1, 28, 28) and float(images.min()) >= 0 and float(images.max()) <= 1


# -- likelihoods --------------------------------------------------------------------------------
def test_categorical_log_prob_matches_hand_computation():
    data = torch.tensor([[[0, 1]], [[0, 2]], [[1, 2]]])  # three 1×2 grids over K=3 codes
    prior = registry.create("prior", "categorical", num_codes=3, smoothing=0.5).fit(data, progress=False)
    x = torch.tensor([[[0, 2]], [[2, 0]]])
    expected = []
    for grid in x.reshape(2, -1).tolist():
        total = 0.0
        for position, code in enumerate(grid):
            seen = data.reshape(3, -1)[:, position].tolist()
            total += math.log((seen.count(code) + 0.5) / (len(seen) + 3 * 0.5))
        expected.append(total)
    torch.testing.assert_close(prior.log_prob(x), torch.tensor(expected), rtol=1e-5, atol=1e-6)


def test_conditional_log_prob_without_labels_is_the_class_marginal():
    prior = fitted("categorical", {"conditional": True})
    data, _labels = grids(8, seed=1)
    per_class = torch.stack([prior.log_prob(data, torch.full((8,), c)) for c in range(3)])
    expected = torch.logsumexp(per_class + prior.class_log_prior[:, None], 0)
    torch.testing.assert_close(prior.log_prob(data), expected)
    assert (prior.log_prob(data) <= per_class.max(0).values + 1e-6).all()


@pytest.mark.parametrize(
    ("name", "options"),
    [("pixelcnn", {"channels": 8, "layers": 2}), ("transformer", {"dim": 16, "layers": 1, "heads": 2})],
)
def test_trained_priors_learn_structure_the_categorical_prior_cannot_see(name, options):
    data, _ = grids(256)
    test, _ = grids(128, seed=1)
    cat = registry.create("prior", "categorical", num_codes=K).fit(data, progress=False)
    cnn = registry.create("prior", name, num_codes=K, epochs=10, batch_size=64, lr=1e-2, **options)
    cnn.fit(data, progress=False)
    with torch.no_grad():
        bits = {
            name: -float(p.log_prob(test).sum()) / test.numel() / math.log(2)
            for name, p in [("cat", cat), ("cnn", cnn)]
        }
    assert bits["cnn"] < bits["cat"] < math.log2(K)
    assert cnn.history and set(cnn.history[0]) >= {"epoch", "train_bits_per_code", "val_bits_per_code"}


# -- PixelCNN causality --------------------------------------------------------------------------
def influence_map(net: GatedPixelCNN, x: torch.Tensor, p: int) -> torch.Tensor:
    """How much each position's code embedding moves the features at raster position ``p`` (H·W,).

    Measured before the head, whose ReLU can switch off every unit at p for some random weights.
    """
    emb = net.embed(x).detach().requires_grad_(True)
    features = net.horizontal(emb, net.vertical(emb, None), None)
    features.reshape(features.shape[1], -1)[:, p].sum().backward()
    return emb.grad.abs().sum(1).reshape(-1)


@settings(max_examples=25, deadline=None)
@given(
    h=st.integers(1, 12),
    w=st.integers(1, 12),
    kernel=st.sampled_from([3, 5]),
    data=st.data(),
)
def test_pixelcnn_logits_depend_only_on_earlier_positions(h, w, kernel, data):
    torch.manual_seed(data.draw(st.integers(0, 2**16), label="seed"))
    rates = dilations((h, w), 4, kernel)
    net = GatedPixelCNN(num_codes=5, channels=6, dilations=rates, kernel_size=kernel, num_classes=None).eval()
    x = torch.randint(0, 5, (1, h, w))
    p = data.draw(st.integers(0, h * w - 1), label="position")
    changed = x.clone().reshape(-1)
    changed[p:] = torch.randint(0, 5, (h * w - p,))  # change p and anything after it
    with torch.no_grad():
        before, after = net(x).reshape(1, 5, -1), net(changed.reshape(1, h, w)).reshape(1, 5, -1)
    torch.testing.assert_close(before[..., : p + 1], after[..., : p + 1], rtol=0, atol=1e-6)
    # and no blind spot: every earlier position influences the features at p, no later one does
    influence = influence_map(net, x, p)
    assert (influence[:p] > 0).all() and (influence[p:] == 0).all()


@pytest.mark.parametrize("size", [8, 12])
def test_the_default_pixelcnn_sees_every_earlier_position_of_larger_grids(size):
    torch.manual_seed(0)
    prior = registry.create("prior", "pixelcnn", num_codes=5, channels=6, grid_shape=[size, size])
    net = prior.net.eval()
    x = torch.randint(0, 5, (1, size, size))
    for p in range(size * size):
        influence = influence_map(net, x, p)
        assert (influence[:p] > 0).all(), f"position {p} misses {(influence[:p] == 0).nonzero().tolist()}"
        assert (influence[p:] == 0).all(), f"position {p} sees later positions"


def test_plain_layers_would_leave_a_blind_region_and_too_few_layers_are_refused():
    torch.manual_seed(0)
    net = GatedPixelCNN(num_codes=5, channels=6, dilations=[1] * 6, kernel_size=3, num_classes=None).eval()
    assert (influence_map(net, torch.randint(0, 5, (1, 8, 8)), 63)[:63] == 0).any()
    assert dilations((8, 8), 6) == [1, 2, 4, 1, 2, 4]
    with pytest.raises(ConfigError, match="layers >= 4"):
        dilations((12, 12), 3)


@pytest.mark.parametrize("clusters", [None, 3])
def test_pixelcnn_incremental_sampler_agrees_with_the_full_network(clusters):
    prior = fitted("pixelcnn", {**TINY_PIXELCNN, "clusters": clusters})
    which = None if clusters is None else torch.tensor([0, 1, 2, 0, 1, 2])
    greedy = prior._sample(6, which, 1e-6, torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(prior.net(greedy, which).argmax(1), greedy)


def conditional_transformer_net(**options):
    """The unfitted network (eval mode) of a small transformer prior over 3 labels."""
    prior = registry.create(
        "prior", "transformer", num_codes=K, dim=16, conditional=True, num_classes=3, **options
    )
    return prior.net.eval()


def test_transformer_cached_steps_give_the_full_sequence_logits():
    from vqtoolkit.priors.transformer import KVCache

    net = conditional_transformer_net(layers=2, heads=4, grid_shape=[3, 4])
    x, labels = torch.randint(0, K, (5, 3, 4)), torch.tensor([0, 1, 2, 1, 0])
    with torch.no_grad():
        full = net(x, labels).reshape(5, K, 12)
        caches, flat = [KVCache() for _ in net.blocks], x.reshape(5, 12)
        stepped = torch.stack(
            [net.step(flat[:, t - 1] if t else None, t, labels, caches, 5) for t in range(12)], -1
        )
        changed = flat.clone()
        changed[:, 6:] = (changed[:, 6:] + 1) % K  # change position 6 and later
        after = net(changed.reshape(5, 3, 4), labels).reshape(5, K, 12)
    torch.testing.assert_close(stepped, full, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(after[..., :7], full[..., :7], rtol=0, atol=1e-6)
    assert not torch.allclose(after[..., 7:], full[..., 7:])


@pytest.mark.parametrize("every_position", [True, False])
def test_transformer_condition_reaches_every_position_directly_when_asked(every_position):
    """With attention cut off, only the per-position condition embedding can carry the label past
    the start token."""
    net = conditional_transformer_net(
        layers=1, heads=2, grid_shape=[2, 3], condition_every_position=every_position
    )
    with torch.no_grad():
        for block in net.blocks:
            block.project.weight.zero_()
            block.project.bias.zero_()
        x = torch.randint(0, K, (1, 2, 3)).expand(3, -1, -1)
        logits = net(x, torch.tensor([0, 1, 2])).flatten(2)[..., 1:]  # after the start token
    labels_matter = not torch.allclose(logits[0], logits[1])
    assert labels_matter is every_position


@pytest.mark.parametrize("clusters", [None, 3])
def test_transformer_sampler_agrees_with_the_full_network(clusters):
    prior = fitted("transformer", {**TINY_TRANSFORMER, "clusters": clusters})
    which = None if clusters is None else torch.tensor([0, 1, 2, 0, 1, 2])
    greedy = prior._sample(6, which, 1e-6, torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(prior.net(greedy, which).argmax(1), greedy)


# -- early stopping ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["pixelcnn", "transformer"])
def test_fitting_stops_after_patience_epochs_without_improvement_and_keeps_the_best(name):
    data = torch.randint(0, K, (96, 3, 4))  # pure noise: held-out NLL soon gets worse as it overfits
    options = {**TINY[name], "epochs": 40, "lr": 3e-2, "patience": 2, "dropout": 0.0, "clusters": None}
    prior = registry.create("prior", name, num_codes=K, **options).fit(data, progress=False)
    val = [record["val_bits_per_code"] for record in prior.history]
    best = min(range(len(val)), key=val.__getitem__)
    assert len(val) < 40 and len(val) == best + 1 + 2
    assert all(v >= val[best] for v in val[best + 1 :])
    held_out = prior.fit_settings  # the same seeded split the loop used
    from vqtoolkit.priors.neural.loop import split_rows

    rows, _ = split_rows(len(data), held_out.val_fraction, torch.Generator().manual_seed(held_out.seed))
    with torch.no_grad():
        bits = -float(prior.log_prob(data[rows]).sum()) / data[rows].numel() / math.log(2)
    assert bits == pytest.approx(val[best], rel=1e-4)


def test_the_default_epoch_budget_follows_the_data_size():
    from vqtoolkit.priors.neural.loop import FitSettings

    assert FitSettings().budget(57_000) == 6 and FitSettings().budget(1_365) == 10  # MNIST, digits
    assert FitSettings(epochs=3).budget(1_365) == 3
    assert FitSettings().batch(1366) < FitSettings().batch(57_000) == 64  # digits: more, smaller steps
    assert FitSettings(batch_size=7).batch(57_000) == 7


@pytest.mark.parametrize("name", ["pixelcnn", "transformer"])
def test_auto_dropout_is_set_from_each_fits_data_size(name, monkeypatch):
    from vqtoolkit.priors.neural import base as neural

    monkeypatch.setattr(neural, "DROPOUT_FREE_ROWS", 50)  # grids() gives 64; 40 of them stay below

    def rates(prior) -> set[float]:
        layers = [m.p for m in prior.net.modules() if isinstance(m, torch.nn.Dropout)]
        return set(layers) | {m.dropout for m in prior.net.modules() if hasattr(m, "heads")}

    prior = registry.create("prior", name, num_codes=K, **TINY[name])
    assert prior.config["dropout"] == "auto"
    data, _ = grids()
    prior.fit(data[:40], progress=False)
    assert prior.config["dropout"] == neural.AUTO_DROPOUT and rates(prior) == {neural.AUTO_DROPOUT}
    prior.fit(data, progress=False)  # refitted on more grids: sized again, not kept from the first fit
    assert prior.config["dropout"] == 0.0 and rates(prior) == {0.0}
    assert registry.create("prior", name, num_codes=K, **{**TINY[name], "dropout": 0.3}).dropout_rate == 0.3


def test_a_dearer_prior_trains_on_fewer_grids_by_default():
    """The default MNIST budget: a transformer grid costs more, so it trains on fewer."""
    mnist_rows = 57_000
    pixelcnn, transformer = (
        registry.create("prior", name).fit_settings for name in ("pixelcnn", "transformer")
    )
    assert transformer.budget(mnist_rows) < pixelcnn.budget(mnist_rows)
    assert transformer.budget(1_365) == pixelcnn.budget(1_365) == 10  # small data: both get the epoch cap


# -- determinism and bundles -----------------------------------------------------------------------
@pytest.mark.parametrize(("name", "options"), INDEX_PRIORS)
def test_same_seed_same_samples(name, options):
    prior = fitted(name, options)
    a, b = (prior.sample(8, generator=torch.Generator().manual_seed(3)) for _ in range(2))
    assert torch.equal(a, b)


def test_pixelcnn_fit_is_deterministic_for_a_seed():
    a, b = (fitted("pixelcnn", TINY_PIXELCNN, seed=7).state_dict() for _ in range(2))
    assert all(torch.equal(a[key], b[key]) for key in a)


@pytest.mark.parametrize(("name", "options"), [*INDEX_PRIORS, ("gmm", {"n_components": 2, "pca_dim": 4})])
def test_save_load_gives_identical_samples(tmp_path, name, options):
    pipe = tiny_pipeline()
    prior = pipe.fit_prior(tiny_images(), name, progress=False, **options)
    label = 2 if prior.conditional else None
    path = pipe.save(tmp_path / "m.safetensors")
    loaded = vqtoolkit.load(path)
    assert loaded.prior.config == prior.config
    for p in (pipe, loaded):
        p.model.eval()
    drawn = [p.sample(6, label=label, generator=torch.Generator().manual_seed(5)) for p in (pipe, loaded)]
    assert torch.equal(*drawn)
    images = tiny_images().test_images
    assert loaded.prior_nll(images) == pipe.prior_nll(images)


# -- bad input ----------------------------------------------------------------------------------
def test_sampling_without_a_prior_names_fit_prior():
    with pytest.raises(ConfigError, match="fit-prior"):
        tiny_pipeline().sample(2)


def test_the_pipelines_own_prior_fits_where_the_model_encodes(monkeypatch):
    """``build(..., prior="pixelcnn")`` makes the prior on the CPU; under ``--device cuda`` the model
    moves and the prior must follow it. A prior instance passed in stays where its owner put it."""
    pipe = tiny_pipeline("categorical")
    moves = []

    def spy(prior):
        move = prior.to
        monkeypatch.setattr(prior, "to", lambda *args, **kw: moves.append(args[0]) or move(*args, **kw))
        return prior

    spy(pipe.prior)
    pipe.fit_prior(tiny_images())
    assert moves == [torch.device("cpu")] and pipe.prior.is_fitted

    moves.clear()
    pipe.fit_prior(tiny_images(), spy(registry.create("prior", "categorical", num_codes=16)))
    assert moves == []


def test_label_errors():
    with pytest.raises(ConfigError, match="unconditional"):
        fitted("pixelcnn", TINY_PIXELCNN).sample(2, label=1)
    with pytest.raises(ConfigError, match="out of range"):
        fitted("categorical", {"conditional": True}).sample(2, label=3)
    with pytest.raises(ConfigError, match="needs class labels"):
        registry.create("prior", "categorical", num_codes=K, conditional=True).fit(grids()[0], progress=False)


def test_prior_for_another_codebook_size_is_refused():
    pipe = tiny_pipeline(num_codes=16)
    pipe.prior = fitted("categorical", {})  # fitted for K=6
    with pytest.raises(ConfigError, match="6 codes but the quantizer has 16"):
        pipe.sample(2)


@pytest.mark.parametrize(
    ("bad", "error", "match"),
    [
        (torch.rand(2, 3, 4), ShapeError, "integer dtype"),
        (torch.zeros(2, 12, dtype=torch.long), ShapeError, r"\(N, H, W\)"),
        (torch.zeros(2, 4, 3, dtype=torch.long), ShapeError, "fitted on 3×4"),
        (torch.full((2, 3, 4), K), ConfigError, r"\[0, 6\)"),
    ],
)
def test_bad_indices_are_named(bad, error, match):
    with pytest.raises(error, match=match):
        fitted("categorical", {}).log_prob(bad)


def test_bad_sample_arguments():
    prior = fitted("categorical", {})
    with pytest.raises(ConfigError, match="temperature"):
        prior.sample(2, temperature=0)
    with pytest.raises(ConfigError, match="not fitted"):
        registry.create("prior", "pixelcnn", num_codes=K).sample(2)


# -- CLI ---------------------------------------------------------------------------------------
@pytest.fixture()
def stage1_bundle(tmp_path):
    return tiny_pipeline().save(tmp_path / "stage1.safetensors")


def test_cli_fit_prior_eval_and_labelled_npy_samples(tmp_path, stage1_bundle):
    runner = CliRunner()
    out = tmp_path / "cond.safetensors"
    before = stage1_bundle.read_bytes()
    result = runner.invoke(
        main,
        [
            "fit-prior",
            str(stage1_bundle),
            "--prior",
            "categorical",
            "--conditional",
            "-o",
            str(out),
            "--quiet",
        ],
    )
    assert result.exit_code == 0, result.output
    assert stage1_bundle.read_bytes() == before  # stage 1 untouched
    result = runner.invoke(main, ["eval", str(out), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["prior"] == "categorical" and 0 < report["test_prior_bits_per_code"] <= math.log2(16)
    assert report["test_prior_bits_per_code_given_label"] is not None and report["test_codes_used"] >= 1
    npy = tmp_path / "threes.npy"
    result = runner.invoke(
        main, ["sample", str(out), "-n", "5", "--label", "3", "--seed", "1", "-o", str(npy)]
    )
    assert result.exit_code == 0, result.output
    assert np.load(npy).shape == (5, 1, 28, 28)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["sample", "{b}", "-o", "{t}/x.png"], "fit-prior"),
        (["fit-prior", "{b}", "--prior", "categorical", "-o", "{b}"], "is the input bundle"),
        (
            ["fit-prior", "{b}", "--prior", "gmm", "--conditional", "-o", "{t}/g.safetensors"],
            "no option 'conditional'",
        ),
        (
            [
                "fit-prior",
                "{b}",
                "--prior",
                "pixelcnn",
                "--prior-option",
                "epochs",
                "-o",
                "{t}/p.safetensors",
            ],
            "KEY=VALUE",
        ),
    ],
)
def test_cli_errors_are_one_line(tmp_path, stage1_bundle, args, message):
    result = CliRunner().invoke(main, [a.format(b=stage1_bundle, t=tmp_path) for a in args])
    assert result.exit_code == 1 and message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "x.png").exists()


def test_cli_sample_label_on_unconditional_prior(tmp_path, stage1_bundle):
    runner = CliRunner()
    out = tmp_path / "cat.safetensors"
    assert (
        runner.invoke(
            main, ["fit-prior", str(stage1_bundle), "--prior", "categorical", "-o", str(out), "--quiet"]
        ).exit_code
        == 0
    )
    result = runner.invoke(main, ["sample", str(out), "--label", "1", "-o", str(tmp_path / "x.png")])
    assert result.exit_code == 1 and "--conditional" in result.output


def test_top_p_draws_only_from_the_nucleus():
    from vqtoolkit.priors.neural.base import draw

    logits = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log().repeat(4000, 1)
    g = torch.Generator().manual_seed(0)
    counts = torch.bincount(draw(logits, 1.0, g, top_p=0.75), minlength=4)
    assert counts[2:].sum() == 0 and counts[0] > counts[1] > 0  # 0.5 + 0.3 reach 0.75
    assert torch.bincount(draw(logits, 1.0, g, top_p=0.4), minlength=4)[1:].sum() == 0
    assert (torch.bincount(draw(logits, 1.0, g), minlength=4) > 0).all()
    with pytest.raises(ConfigError, match="top_p"):
        registry.create("prior", "transformer", num_codes=K, top_p=0.0)
