"""Shared fixtures: the embedded digits dataset and one small trained pipeline per session."""

from __future__ import annotations

import pytest
import torch

import vqtoolkit
from vqtoolkit.data.datasets import ImageDataset


@pytest.fixture(scope="session")
def digits() -> ImageDataset:
    return vqtoolkit.load_dataset("digits")


@pytest.fixture(scope="session")
def small_digits(digits: ImageDataset) -> ImageDataset:
    """A few hundred digits: enough to see learning, fast enough for every test run."""
    return ImageDataset(
        "digits",
        digits.train_images[:768],
        digits.train_labels[:768],
        digits.test_images[:128],
        digits.test_labels[:128],
        10,
        2,
    )


@pytest.fixture(scope="session")
def trained(small_digits: ImageDataset) -> vqtoolkit.Pipeline:
    """A tiny VQ-VAE + GMM prior trained for a few epochs on small_digits."""
    torch.manual_seed(0)
    pipe = vqtoolkit.build(
        "conv", "vq", "conv", "gmm", dim=16, num_codes=32, prior_config={"n_components": 4, "pca_dim": 8}
    )
    pipe.fit(small_digits, epochs=3, batch_size=32, progress=False)
    return pipe


@pytest.fixture
def one_thread():
    """Tiny tensors: a second thread only adds synchronisation (and spins on a busy machine).

    Modules of small prior fits use it for every test: ``pytestmark = pytest.mark.usefixtures("one_thread")``.
    """
    from vqtoolkit.priors.neural.base import single_thread

    with single_thread():
        yield
