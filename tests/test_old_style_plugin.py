"""A plugin written for vqtoolkit 0.1 keeps working through 0.2, with one DeprecationWarning.

``tests/plugins/old_style_prior`` is the plugin guide's example as 0.1 documented it: its constructor
ends in ``super().__init__(num_codes=..., grid_shape=...)``, it imports ``vqtoolkit.priors.base``, and
its ``fit`` takes no fit-time inputs. It must build, fit, save, load and pass the kit.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from factories import tiny_data, tiny_pipeline
from fake_plugins import fake_install

import vqtoolkit
from vqtoolkit.testing import check_prior

PLUGIN = Path(__file__).parent / "plugins" / "old_style_prior"


@pytest.fixture
def installed():
    with fake_install(PLUGIN):
        yield


def test_the_old_constructor_builds_fits_saves_and_loads_with_one_warning(installed, tmp_path: Path) -> None:
    from vqtoolkit.components import base

    base._WARNED_LEGACY_INIT.clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pipe = tiny_pipeline("old-position")
        data = tiny_data()
        pipe.fit_autoencoder(data, epochs=1, batch_size=16, progress=False)
        pipe.fit_prior(data, progress=False)
        path = pipe.save(tmp_path / "old.safetensors")
        loaded = vqtoolkit.load(path)
    deprecations = [w for w in caught if issubclass(w.category, DeprecationWarning)]
    assert len(deprecations) == 1, [str(w.message) for w in deprecations]
    message = str(deprecations[0].message)
    assert "PositionPrior.__init__ passes its options (grid_shape, num_codes)" in message
    assert "super().__init__() without them" in message
    assert deprecations[0].filename == str(PLUGIN / "old_style_prior.py")  # points at the plugin's line
    assert loaded.prior.config == pipe.prior.config
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    torch.testing.assert_close(loaded.sample(4, generator=g()), pipe.sample(4, generator=g()))


def test_the_old_constructor_passes_the_conformance_kit(installed) -> None:
    from old_style_prior import PositionPrior

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        check_prior(PositionPrior, {"num_codes": 4})


def test_moved_import_paths_still_work_with_a_warning_naming_the_new_one() -> None:
    import importlib
    import sys

    sys.modules.pop("vqtoolkit.config", None)
    with pytest.warns(DeprecationWarning, match=r"vqtoolkit\.config moved to vqtoolkit\.components\.options"):
        old = importlib.import_module("vqtoolkit.config")
    from vqtoolkit.components import options

    assert old is options and old.Limit is options.Limit
