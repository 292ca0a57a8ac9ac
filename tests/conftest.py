"""Shared fixtures: seeded rng, Agg backend with figures closed, the real-data folder."""
from __future__ import annotations

import os
from pathlib import Path

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("VCFNB_SHARED_DATA", ROOT.parent / "shared" / "data"))


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20261122)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    import matplotlib.pyplot as plt

    plt.close("all")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real public scans of ``../shared/data``; tests using it skip when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real-data folder {SHARED_DATA} is absent (set VCFNB_SHARED_DATA to point at it)")
    return SHARED_DATA


#: notebooks that need ../shared/data and cannot run on a machine without it
NEEDS_SHARED_DATA = {"ibsi_conformance.ipynb"}


def pytest_collection_modifyitems(config, items):
    if SHARED_DATA.is_dir():
        return
    skip = pytest.mark.skip(reason=f"needs the real-data folder {SHARED_DATA}")
    for item in items:
        if Path(str(item.fspath)).name in NEEDS_SHARED_DATA:
            item.add_marker(skip)
