"""vqtoolkit.testing: every built-in passes the kit, and each check catches the bug it is for."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from vqtoolkit.components import registry
from vqtoolkit.encoders.conv import ConvEncoder
from vqtoolkit.errors import ConfigError
from vqtoolkit.priors.base import Prior
from vqtoolkit.quantize.base import Quantizer, QuantizerOutput
from vqtoolkit.quantize.core import from_flat, nearest_codes, straight_through, to_flat, vq_losses
from vqtoolkit.quantize.vq import VectorQuantizer
from vqtoolkit.testing import (
    ConformanceError,
    check_component,
    check_encoder,
    check_prior,
    check_quantizer,
    check_quantizer_invariants,
)
from vqtoolkit.testing.quantizers import INVARIANTS, Forward, check_invariant

#: Small configs for the built-ins and the example plugins (when installed), so the kit runs in seconds;
#: a name missing here is checked with its defaults.
SMALL = {
    ("encoder", "conv"): {"hidden_channels": [4, 8], "dim": 4},
    ("decoder", "conv"): {"hidden_channels": [8, 4], "dim": 4},
    ("quantizer", "vq"): {"num_codes": 16, "dim": 4},
    ("quantizer", "ema"): {"num_codes": 16, "dim": 4},
    ("quantizer", "residual"): {"num_codes": 16, "dim": 4, "num_stages": 2},
    ("quantizer", "fsq"): {"levels": [4, 3]},
    ("quantizer", "lfq"): {"bits": 4},
    ("quantizer", "bsq"): {"bits": 4},
    ("prior", "gmm"): {"n_components": 2, "pca_dim": 3},
    ("prior", "categorical"): {"num_codes": 4},
    ("prior", "pixelcnn"): {"num_codes": 4, "channels": 8, "layers": 2, "epochs": 1},
    ("prior", "transformer"): {"num_codes": 4, "dim": 8, "layers": 1, "heads": 2, "epochs": 1},
    ("prior", "maskgit"): {"num_codes": 4, "dim": 8, "layers": 1, "heads": 2, "epochs": 1},
    ("encoder", "resnet"): {"widths": [4, 8], "groups": 2},
    ("decoder", "resnet"): {"widths": [4, 8], "groups": 2},
    ("encoder", "patch"): {"hidden": 8, "blocks": 1},
    ("decoder", "patch"): {"hidden": 8, "blocks": 1},
    ("prior", "markov"): {"num_codes": 4},
}
#: Documented departures from the default checks: FSQ's implicit grid codebook learns nothing, and it
#: rounds tanh-bounded z, so neither plain-L2 search on z nor an identity Jacobian (only the rounding
#: is straight-through) applies to it.
OPTIONS = {
    ("quantizer", "fsq"): {
        "exact_nearest": False,
        "codebook_learns": False,
        "straight_through": False,
        "commitment": False,
    },
    # lfq and bsq have no codebook tensor to learn (the codes are the corners of a cube); bsq passes
    # gradients straight through to z/‖z‖, so the gradient reaching z is the normalisation's Jacobian
    ("quantizer", "lfq"): {"codebook_learns": False},
    ("quantizer", "bsq"): {"codebook_learns": False, "straight_through": False},
}


@pytest.mark.parametrize(("kind", "name"), [(k, n) for k in registry.KINDS for n in registry.available(k)])
def test_every_registered_component_passes(kind: str, name: str) -> None:
    check_component(kind, name, SMALL.get((kind, name), {}), **OPTIONS.get((kind, name), {}))


@settings(max_examples=40, deadline=None)
@given(
    k=st.integers(1, 40),
    d=st.integers(1, 8),
    shape=st.lists(st.integers(1, 5), min_size=0, max_size=3),
    batch=st.integers(1, 4),
    seed=st.integers(0, 2**16),
    double=st.booleans(),
)
def test_vq_invariants_hold_for_any_shape(
    k: int, d: int, shape: list[int], batch: int, seed: int, double: bool
) -> None:
    torch.manual_seed(seed)
    quantizer = VectorQuantizer(num_codes=k, dim=d)
    torch.nn.init.normal_(quantizer.embedding.weight)
    z = torch.randn(batch, d, *shape)
    if double:
        quantizer, z = quantizer.double(), z.double()
    check_quantizer_invariants(quantizer, z)


# -- each check catches its bug --------------------------------------------------------------------
class TinyVQ(Quantizer):
    """A correct minimal quantizer on the STE core, and the base of the broken variants below."""

    def __init__(self, num_codes: int = 8, dim: int = 4) -> None:
        super().__init__()
        self.num_codes, self.dim = num_codes, dim
        self.embedding = torch.nn.Embedding(num_codes, dim)

    @property
    def codebook(self) -> torch.Tensor:
        return self.embedding.weight

    def nearest(self, flat: torch.Tensor) -> torch.Tensor:
        return nearest_codes(flat, self.codebook.detach())

    def table(self) -> torch.Tensor:
        return self.codebook

    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        flat = to_flat(z, self.dim)
        indices = self.nearest(flat)
        codes = F.embedding(indices, self.table())
        codebook_loss, commitment_loss = vq_losses(flat, codes)
        indices = indices.reshape(z.shape[0], *z.shape[2:])
        return QuantizerOutput(
            quantized=from_flat(self.straight_through(flat, codes), indices),
            indices=indices,
            loss=codebook_loss + 0.25 * commitment_loss,
            counts=torch.bincount(indices.reshape(-1), minlength=self.num_codes),
        )

    def straight_through(self, flat: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        return straight_through(flat, codes)


class DetachedCodebook(TinyVQ):
    """The bug users of other libraries hit: the codebook loss sees a detached codebook: it never learns."""

    def table(self) -> torch.Tensor:
        return self.codebook.detach()


class NoStraightThrough(TinyVQ):
    def straight_through(self, flat: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        return codes  # gradient goes to the codebook, not to z


class FarthestCode(TinyVQ):
    def nearest(self, flat: torch.Tensor) -> torch.Tensor:
        return torch.cdist(flat, self.codebook.detach()).argmax(1)


class IdentityWhileTraining(TinyVQ):
    """Quantizes in eval mode only: in training the decoder sees z itself."""

    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        out = super().forward(z)
        return QuantizerOutput(z, out.indices, out.loss, out.counts) if self.training else out


class CutsGradientWhileTraining(TinyVQ):
    def straight_through(self, flat: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        return codes if self.training else straight_through(flat, codes)


class DetachedOutput(TinyVQ):
    def straight_through(self, flat: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        return straight_through(flat, codes).detach()


class NoCommitment(TinyVQ):
    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        out = super().forward(z)
        flat = to_flat(z, self.dim)
        codebook_loss, _ = vq_losses(flat, F.embedding(out.indices.reshape(-1), self.table()))
        return QuantizerOutput(out.quantized, out.indices, codebook_loss, out.counts)


class ZeroCounts(TinyVQ):
    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        out = super().forward(z)
        return QuantizerOutput(out.quantized, out.indices, out.loss, torch.zeros_like(out.counts))


class CrashesInForward(TinyVQ):
    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        raise IndexError("off by one")


class TupleConfig(ConvEncoder):
    def __init__(self, in_channels: int = 1, dim: int = 4, hidden_channels=(4, 4)) -> None:
        super().__init__(in_channels, dim, hidden_channels)
        self._config["hidden_channels"] = tuple(hidden_channels)


class PlainTensorAttribute(ConvEncoder):
    def __init__(self, **config) -> None:
        super().__init__(**config)
        self.scale = torch.ones(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) * self.scale


class UnusedLayer(ConvEncoder):
    def __init__(self, **config) -> None:
        super().__init__(**config)
        self.spare = torch.nn.Linear(2, 2)


class PositionPrior(Prior):
    """A correct little index prior: independent per-position code frequencies (add-one smoothed)."""

    has_likelihood = True

    def __init__(self, num_codes: int = 4, positions: int = 1, spatial: list[int] | None = None) -> None:
        super().__init__()
        self.register_buffer("counts", torch.ones(positions, num_codes))

    def _shape_after_fit(self, data: torch.Tensor) -> None:
        self._config.update(positions=data[0].numel(), spatial=list(data.shape[1:]))

    def fit(self, data, labels=None, *, progress=True):
        self._shape_after_fit(data)
        flat = data.reshape(len(data), -1)
        self.counts = 1 + F.one_hot(flat, self._config["num_codes"]).sum(0).float()
        self.fitted.fill_(True)
        return self

    def probs(self) -> torch.Tensor:
        return self.counts / self.counts.sum(1, keepdim=True)

    def sample(self, n, *, label=None, temperature=1.0, generator=None):
        self.check_sample_args(n, label, temperature)
        p = self.probs().pow(1 / temperature)
        draws = torch.multinomial(p, n, replacement=True, generator=generator).t()
        return draws.reshape(n, *self._config["spatial"])

    def log_prob(self, data, labels=None):
        flat = data.reshape(len(data), -1)
        return self.probs().log().gather(1, flat.t()).t().sum(1)


class ForgetsItsShape(PositionPrior):
    def _shape_after_fit(self, data: torch.Tensor) -> None:
        pass  # the table is resized at fit, but config does not say so: a bundle cannot rebuild it


class IgnoresGenerator(PositionPrior):
    def sample(self, n, *, label=None, temperature=1.0, generator=None):
        return super().sample(n, label=label, temperature=temperature, generator=None)


class Unnormalised(PositionPrior):
    def log_prob(self, data, labels=None):
        return super().log_prob(data) - 0.1


class NoneBuffer(PositionPrior):
    def __init__(self, **config) -> None:
        super().__init__(**config)
        self.register_buffer("cache", None)


class IgnoresTemperature(PositionPrior):
    """Validates temperature (check_sample_args) and then draws as if it were 1."""

    def sample(self, n, *, label=None, temperature=1.0, generator=None):
        self.check_sample_args(n, label, temperature)
        return super().sample(n, label=label, temperature=1.0, generator=generator)


class SamplesUnfitted(PositionPrior):
    def check_sample_args(self, n, label, temperature) -> None:
        if n < 1:
            raise ConfigError("n must be >= 1")
        if temperature <= 0:
            raise ConfigError("temperature must be > 0")
        if label is not None:
            raise ConfigError("unconditional")


def test_correct_custom_components_pass() -> None:
    check_prior(PositionPrior, {"num_codes": 4})
    check_quantizer(TinyVQ, {"num_codes": 8, "dim": 4})


@pytest.mark.parametrize(
    ("check", "cls", "config", "options", "message"),
    [
        (check_quantizer, DetachedCodebook, {"num_codes": 8, "dim": 4}, {}, "codebook learns"),
        (check_quantizer, NoStraightThrough, {"num_codes": 8, "dim": 4}, {}, "straight-through gradient"),
        (check_quantizer, FarthestCode, {"num_codes": 8, "dim": 4}, {}, "nearest code"),
        (check_encoder, TupleConfig, {}, {}, "lists, not tuples"),
        (check_encoder, PlainTensorAttribute, {"dim": 4}, {}, "register_buffer\\('scale'"),
        (check_encoder, UnusedLayer, {"dim": 4}, {}, "spare.weight"),
        (check_prior, ForgetsItsShape, {"num_codes": 4}, {}, "config fixes the state"),
        (check_prior, IgnoresGenerator, {"num_codes": 4}, {}, "reproducible"),
        (check_prior, Unnormalised, {"num_codes": 4}, {}, "sum to 0.9"),
        (check_prior, NoneBuffer, {"num_codes": 4}, {}, "buffer cache is None"),
        (check_prior, SamplesUnfitted, {"num_codes": 4}, {}, "sampling before fit"),
        (check_prior, IgnoresTemperature, {"num_codes": 4}, {}, "'temperature'.*ignored"),
        (check_quantizer, IdentityWhileTraining, {}, {}, "in training mode, the quantized values"),
        (check_quantizer, CutsGradientWhileTraining, {}, {}, "in training mode, d quantized"),
        (check_quantizer, DetachedOutput, {}, {}, "quantized carries no gradient"),
        (check_quantizer, NoCommitment, {}, {}, "'commitment loss'"),
        (check_quantizer, ZeroCounts, {}, {}, "'counts'"),
        (check_quantizer, CrashesInForward, {}, {}, "'runs without crashing': IndexError: off by one"),
    ],
)
def test_each_check_catches_its_bug(check, cls, config, options, message: str) -> None:
    with pytest.raises(ConformanceError, match=message):
        check(cls, config, **options)


def test_implicit_codebooks_can_opt_out_of_the_learning_check() -> None:
    check_quantizer(DetachedCodebook, {"num_codes": 8, "dim": 4}, codebook_learns=False)


def test_a_check_is_skipped_by_its_name() -> None:
    check_quantizer(FarthestCode, {"num_codes": 8, "dim": 4}, skip=["nearest code", "quantize_indices"])
    check_quantizer(NoCommitment, {}, skip=["commitment loss"])
    with pytest.raises(ConformanceError, match="'commitment loss'"):  # the others still run
        check_quantizer(NoCommitment, {}, skip=["nearest code"])


def test_an_unknown_check_name_is_refused_with_the_close_one() -> None:
    with pytest.raises(ValueError, match=r"no quantizer check named \['nearest cod'\].*nearest code"):
        check_quantizer(TinyVQ, {"num_codes": 8, "dim": 4}, skip=["nearest cod"])


@pytest.mark.parametrize("name", list(INVARIANTS))
def test_each_named_invariant_runs_alone(name: str) -> None:
    quantizer = TinyVQ(num_codes=8, dim=4).eval()
    z = torch.randn(2, 4, 3, 3, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    check_invariant(name, Forward(quantizer, z, quantizer(z), False, None))  # a correct one passes
    broken = FarthestCode(num_codes=8, dim=4).eval()
    forward = Forward(broken, z, broken(z), False, None)
    if name == "nearest code":
        with pytest.raises(ConformanceError, match=f"'{name}'"):
            check_invariant(name, forward)
