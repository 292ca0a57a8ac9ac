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


#: the heaviest integration tests (whole-notebook negative controls with 19+ permutations, the
#: generic study's equivalence runs, the real-data worked example, the warm/cold notebook
#: benchmark): `make test` leaves them to `make test-heavy` so that it stays under 20 minutes;
#: `.ci/run` runs both. Tests sharing an expensive module fixture are marked through it.
HEAVY_FIXTURES = {("test_nb_vcf.py", "null_run"), ("test_nb_osteoporosis.py", "null_run"),
                  ("test_nb_ovf.py", "user_run")}
HEAVY_TESTS = {"test_nb_metastasis.py::test_negative_control_signal0",
               "test_new_study_example.py::test_worked_example_recovers_the_rule",
               "test_nb_radiomics_study.py::test_equivalent_to_osteoporosis_mri",
               "test_nb_radiomics_study.py::test_equivalent_to_metastasis_lytic_blastic",
               "test_benchmarks.py::test_notebook_warm_cold_quick"}


def pytest_collection_modifyitems(config, items):
    heavy = pytest.mark.heavy
    for item in items:
        name = Path(str(item.fspath)).name
        fixtures = set(getattr(item, "fixturenames", ()))
        if (f"{name}::{item.name}" in HEAVY_TESTS
                or any((name, f) in HEAVY_FIXTURES for f in fixtures)):
            item.add_marker(heavy)
    if SHARED_DATA.is_dir():
        return
    skip = pytest.mark.skip(reason=f"needs the real-data folder {SHARED_DATA}")
    for item in items:
        if Path(str(item.fspath)).name in NEEDS_SHARED_DATA:
            item.add_marker(skip)
