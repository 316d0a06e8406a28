"""Global clusters of code grids: k-means on code vectors, cluster-conditioned priors, honest likelihoods."""

from __future__ import annotations

import math

import pytest
import torch

import vqtoolkit
from vqtoolkit.components import registry
from vqtoolkit.errors import ConfigError, ShapeError
from vqtoolkit.priors import clusters as clusters_module
from vqtoolkit.priors.clusters import auto_clusters, cluster_grids
from vqtoolkit.testing import check_prior

pytestmark = pytest.mark.usefixtures("one_thread")


def two_families(n: int = 60, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """3×3 grids of codes {0, 1} (family 0) or {2, 3} (family 1), each code drawn at random."""
    g = torch.Generator().manual_seed(seed)
    family = torch.arange(n) % 2
    return 2 * family[:, None, None] + torch.randint(0, 2, (n, 3, 3), generator=g), family


def labels_of(*args, **options) -> torch.Tensor:
    """Each grid's cluster from :func:`cluster_grids` (the fitted model aside)."""
    return cluster_grids(*args, **options)[1]


def agree(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether two labelings of the same rows are the same partition (up to renaming)."""
    return all(len(set(a[b == value].tolist())) == 1 for value in b.unique())


def test_code_vectors_make_grids_that_decode_alike_cluster_together():
    grids, family = two_families()
    # codes 0 and 1 (and 2 and 3) are near-twins in stage-1 space
    vectors = torch.tensor([[0.0, 0.0], [0.1, 0.0], [5.0, 5.0], [5.1, 5.0]])
    assert agree(labels_of(grids, 2, vectors), family)


def test_without_code_vectors_grids_cluster_by_the_codes_they_share():
    grids, family = two_families()
    assert agree(labels_of(grids, 2, num_codes=4), family)  # families share no code at all


def test_clusters_are_seeded_and_in_range():
    grids, _ = two_families(90, seed=3)
    a, b = (labels_of(grids, 5, num_codes=4, seed=1) for _ in range(2))
    assert torch.equal(a, b) and a.dtype == torch.long and int(a.min()) >= 0 and int(a.max()) < 5


def test_assignment_is_chunked_and_the_fit_subsampled(monkeypatch):
    grids, family = two_families(200)
    monkeypatch.setattr(clusters_module, "MAX_FIT_ROWS", 40)
    monkeypatch.setattr(clusters_module, "CHUNK", 7)
    assert agree(labels_of(grids, 2, num_codes=4), family)


def test_the_kept_model_assigns_as_scikit_learn_did_and_ranks_the_nearest_clusters():
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA

    grids, _ = two_families(90, seed=3)
    vectors = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
    model, labels = cluster_grids(grids, 5, vectors, seed=1)
    features = clusters_module.grid_features(grids, vectors).numpy()  # 27 wide: fewer than PCA_DIM
    fit_rows = features[torch.randperm(90, generator=torch.Generator().manual_seed(1)).numpy()]
    pca = PCA(27, random_state=1).fit(fit_rows)
    kmeans = KMeans(5, n_init=3, random_state=1).fit(pca.transform(fit_rows))
    expected = kmeans.predict(pca.transform(features))
    assert torch.equal(labels, torch.from_numpy(expected).long())
    nearest = model.nearest(grids, 3)
    assert torch.equal(nearest[:, 0], labels)
    distances = model.distances(grids).gather(1, nearest)
    assert (distances[:, 1:] >= distances[:, :-1]).all()


@pytest.mark.parametrize(("rows", "clusters"), [(3, 2), (20, 10), (1438, 16), (10_000, 50), (60_000, 256)])
def test_auto_clusters_follow_the_data_size(rows, clusters):
    assert auto_clusters(rows) == clusters


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("categorical", {"num_codes": 4, "clusters": 3}),
        ("pixelcnn", {"num_codes": 4, "clusters": 3, "channels": 8, "layers": 2, "epochs": 1}),
        ("transformer", {"num_codes": 4, "clusters": 2, "dim": 8, "layers": 1, "heads": 2, "epochs": 1}),
    ],
)
def test_clustered_priors_pass_the_conformance_kit(name, options):
    check_prior(name, options)  # likelihood sums to one over every grid, bundles restore samples


def test_likelihood_is_the_mixture_over_clusters_and_the_best_cluster_bounds_it():
    grids, _ = two_families()
    prior = registry.create("prior", "categorical", num_codes=4, clusters=2).fit(grids, progress=False)
    joint = prior.log_joint(grids)
    assert joint.shape == (2, len(grids))
    torch.testing.assert_close(prior.log_prob(grids), torch.logsumexp(joint, 0))
    assert (joint.max(0).values <= prior.log_prob(grids)).all()
    plain = registry.create("prior", "categorical", num_codes=4).fit(grids, progress=False)
    # two families the clusters separate: the mixture explains the data far better than one table
    assert float(prior.log_prob(grids).mean()) > float(plain.log_prob(grids).mean()) + 2.0


def test_samples_draw_each_cluster_by_its_frequency():
    grids, _ = two_families(60)
    prior = registry.create("prior", "categorical", num_codes=4, clusters=2, smoothing=1e-6)
    drawn = prior.fit(grids, progress=False).sample(400, generator=torch.Generator().manual_seed(0))
    family = (drawn >= 2).flatten(1).float().mean(1)
    assert set(family.unique().tolist()) == {0.0, 1.0}  # every sample stays within one family
    assert 0.4 < float(family.mean()) < 0.6


def test_network_priors_cluster_by_default_as_many_as_the_data_size_gives():
    """Guided by their clusters, their samples beat the GMM's (docs/priors.md); ``None`` turns them off."""
    grids = two_families(40)[0]
    for name, options in [("pixelcnn", {"channels": 8}), ("transformer", {"dim": 8, "heads": 2})]:
        prior = registry.create("prior", name, num_codes=4, epochs=1, layers=2, **options)
        assert prior.config["clusters"] == "auto" and prior.clusters is None
        prior.fit(grids, progress=False)
        assert prior.config["clusters"] == prior.clusters == auto_clusters(40) == 16
        assert registry.create("prior", name, num_codes=4, clusters=None).clusters is None


def test_clusters_and_labels_do_not_mix():
    with pytest.raises(ConfigError, match="drop clusters or conditional"):
        registry.create("prior", "categorical", num_codes=4, conditional=True, clusters=3)
    conditional = registry.create("prior", "pixelcnn", num_codes=4, conditional=True, num_classes=3)
    assert conditional.config["clusters"] is None  # its label is its global variable
    clustered = registry.create("prior", "pixelcnn", num_codes=4, epochs=1, channels=8, layers=2, clusters=16)
    clustered.fit(two_families()[0], progress=False)
    assert clustered.config["clusters"] == 16 and not clustered.conditional
    with pytest.raises(ConfigError, match="unconditional"):
        clustered.sample(2, label=0)
    with pytest.raises(ShapeError, match="at least 5 grids"):
        registry.create("prior", "categorical", num_codes=4, clusters=5).fit(
            two_families(4)[0], progress=False
        )
    with pytest.raises(ConfigError, match="no classes or clusters"):
        registry.create("prior", "categorical", num_codes=4).fit(two_families()[0]).log_joint(
            two_families()[0]
        )


@pytest.mark.parametrize("clusters", [3, "auto"])
def test_the_pipeline_clusters_grids_by_its_codebook(monkeypatch, clusters):
    seen = []

    def spy(grids, clusters, vectors=None, **options):
        seen.append(vectors)
        return cluster_grids(grids, clusters, vectors, **options)

    monkeypatch.setattr("vqtoolkit.priors.clustered.cluster_grids", spy)
    pipe = vqtoolkit.build(
        "conv",
        "vq",
        "conv",
        None,
        dim=4,
        num_codes=8,
        encoder_config={"hidden_channels": [4, 4]},
        decoder_config={"hidden_channels": [4, 4]},
    )
    images = torch.rand(40, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    data = vqtoolkit.ImageDataset(
        "tiny", images[:32], torch.zeros(32).long(), images[32:], torch.zeros(8).long(), 1, 1
    )
    prior = pipe.fit_prior(data, "categorical", clusters=clusters, progress=False)
    assert prior.clusters == (3 if clusters == 3 else auto_clusters(32))
    torch.testing.assert_close(seen[0], pipe.model.quantizer.codebook.detach())
    assert not hasattr(prior, "code_vectors")  # an argument of the fit, never kept on the prior


def test_the_fit_scores_held_out_cluster_and_grid_together_an_upper_bound_of_the_exact_nll():
    from vqtoolkit.priors.neural.loop import split_rows

    data = two_families(96)[0]
    options = {"channels": 8, "layers": 2, "epochs": 3, "dropout": 0.0, "clusters": 2}
    prior = registry.create("prior", "pixelcnn", num_codes=4, **options).fit(data, progress=False)
    best = min(record["val_bits_per_code"] for record in prior.history)
    rows, _ = split_rows(len(data), 0.05, torch.Generator().manual_seed(0))
    held_out, cluster = data[rows], labels_of(data, 2, num_codes=4)[rows]
    with torch.no_grad():
        joint = prior.log_joint(held_out)  # log p(c) + log p(x | c)
        bound = -float(joint[cluster, torch.arange(len(rows))].sum()) / held_out.numel() / math.log(2)
        exact = -float(prior.log_prob(held_out).sum()) / held_out.numel() / math.log(2)
    assert bound == pytest.approx(best, rel=1e-4)
    assert exact <= bound


def test_many_clusters_sum_the_likelihood_over_the_nearest_a_lower_bound_of_the_exact_sum(monkeypatch):
    monkeypatch.setattr("vqtoolkit.priors.clustered.LIKELIHOOD_CLUSTERS", 3)
    grids = torch.randint(0, 4, (120, 3, 3), generator=torch.Generator().manual_seed(0))
    prior = registry.create("prior", "categorical", num_codes=4, clusters=8).fit(grids, progress=False)
    exact = torch.logsumexp(prior.log_joint(grids), 0)
    bound = prior.log_prob(grids)
    nearest = prior.cluster_model.nearest(grids, 3)
    by_hand = torch.logsumexp(prior.log_joint(grids).T.gather(1, nearest), 1)
    torch.testing.assert_close(bound, by_hand)
    assert (bound <= exact + 1e-6).all() and (bound < exact - 1e-3).any()  # a bound, and not the sum
    monkeypatch.setattr("vqtoolkit.priors.clustered.LIKELIHOOD_CLUSTERS", 8)
    torch.testing.assert_close(prior.log_prob(grids), exact)  # every cluster: exact again


def test_the_kept_model_round_trips_through_a_bundle_and_older_bundles_sum_over_every_cluster():
    from vqtoolkit.testing.common import bundle_round_trip

    grids = torch.randint(0, 4, (120, 3, 3), generator=torch.Generator().manual_seed(0))
    prior = registry.create("prior", "categorical", num_codes=4, clusters=20).fit(grids, progress=False)
    assert prior.config["cluster_code_dim"] == clusters_module.RANDOM_DIM
    loaded = bundle_round_trip("prior", type(prior), prior)
    torch.testing.assert_close(loaded.log_prob(grids), prior.log_prob(grids))
    assert torch.equal(loaded.cluster_model.assign(grids), prior.cluster_model.assign(grids))
    older = registry.create("prior", "categorical", **{**prior.config, "cluster_code_dim": None})
    older.load_state_dict({k: v for k, v in prior.state_dict().items() if not k.startswith("cluster_")})
    assert older.cluster_model is None
    torch.testing.assert_close(older.log_prob(grids), torch.logsumexp(prior.log_joint(grids), 0))


def test_auto_clusters_are_sized_again_by_every_fit():
    prior = registry.create("prior", "categorical", num_codes=4, clusters="auto")
    prior.fit(two_families(40)[0], progress=False)
    assert prior.clusters == auto_clusters(40) == 16
    prior.fit(two_families(6000)[0], progress=False)
    assert prior.clusters == auto_clusters(6000) == 30 and len(prior.class_log_prior) == 30
