"""Shared fixtures: seeded rng, Agg backend with figures closed, the real-data folder, the
session's data folder (``VCFNB_DATA_DIR``) and the guard that the repository's ``data/`` is left
unchanged."""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("VCFNB_SHARED_DATA", ROOT.parent / "shared" / "data"))

#: generated data of this session (built-in cohorts, feature cache: vcfnb.sources.data_root) go
#: to a temporary folder, never into the repository's data/. Set here, at import, before any
#: notebook kernel starts, so papermill and nbval kernels and subprocesses inherit it; a folder
#: the user set is used as it is (and kept).
DATA_DIR_ENV = "VCFNB_DATA_DIR"
_OWN_DATA_DIR = not os.environ.get(DATA_DIR_ENV)
if _OWN_DATA_DIR:
    os.environ[DATA_DIR_ENV] = tempfile.mkdtemp(prefix="vcfnb-test-data-")
DATA_DIR = Path(os.environ[DATA_DIR_ENV])
REPO_DATA = ROOT / "data"


def _listing(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file (size, mtime) and folder ((-1, -1)) under ``folder``, by relative path."""
    out: dict[str, tuple[int, int]] = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        base = Path(dirpath)
        for name in dirnames:
            out[str((base / name).relative_to(folder)) + "/"] = (-1, -1)
        for name in filenames:
            try:
                st = (base / name).lstat()
            except OSError:  # removed while walking
                continue
            out[str((base / name).relative_to(folder))] = (st.st_size, st.st_mtime_ns)
    return out


def _changes(before: dict, after: dict) -> list[str]:
    added = sorted(set(after) - set(before))
    removed = sorted(set(before) - set(after))
    changed = sorted(k for k in set(before) & set(after) if before[k] != after[k])
    return ([f"added   data/{k}" for k in added] + [f"changed data/{k}" for k in changed]
            + [f"removed data/{k}" for k in removed])


_REPO_DATA_BEFORE: dict[str, tuple[int, int]] = {}


def pytest_sessionstart(session):
    _REPO_DATA_BEFORE.update(_listing(REPO_DATA))


def pytest_sessionfinish(session, exitstatus):
    """Fail the run when the repository's data/ gained, lost or changed a file during it
    (tests write into tmp_path or the session's VCFNB_DATA_DIR only)."""
    if _OWN_DATA_DIR:
        shutil.rmtree(DATA_DIR, ignore_errors=True)
    found = _changes(_REPO_DATA_BEFORE, _listing(REPO_DATA))
    if not found or os.environ.get("VCFNB_DATA_GUARD", "1") == "0":
        return
    lines = [f"{len(found)} change(s) in the repository's data/ ({REPO_DATA}) during this test "
             "session: a test wrote there instead of tmp_path / $VCFNB_DATA_DIR (or another "
             "process did meanwhile; VCFNB_DATA_GUARD=0 skips this check)", *found[:30]]
    if len(found) > 30:
        lines.append(f"... and {len(found) - 30} more")
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_sep("=", "repository data/ changed", red=True)
        for line in lines:
            reporter.write_line(line, red=True)
    else:
        print("\n".join(lines), file=sys.stderr)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20261122)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    import matplotlib.pyplot as plt

    plt.close("all")


# ---------------------------------------------------------------------------------------------
# the broken cohort (vcfnb.synth.broken) and runs of the metastasis notebook on it: shared by
# test_badinput.py, test_privacy.py and test_determinism.py (one cohort, one run per name)
# ---------------------------------------------------------------------------------------------
class BrokenStudy:
    """The default broken cohort (every case-level defect, one per case; ``defects.csv`` says
    which case, file and entry point) and cached runs of a study notebook on it."""

    #: the notebook run on the broken cohort
    study = "metastasis_lytic_blastic"
    #: a small pyradiomics settings dict: a few features of four classes (fast)
    settings = {"setting": {"binWidth": 25}, "imageType": {"Original": {}},
                "featureClass": {"shape": ["VoxelVolume"], "firstorder": ["Mean", "Entropy"],
                                 "glcm": ["Correlation", "JointEntropy"],
                                 "glszm": ["ZoneEntropy"]}}
    #: defect kinds that feature extraction on unvalidated rows must turn into failure rows
    extract_fails = ["missing_image", "corrupt_nifti", "truncated_nifti", "geometry_spacing",
                     "geometry_origin", "geometry_direction", "geometry_size", "empty_mask",
                     "label_absent", "nonfinite_voxels", "dicom_missing_slice", "tiny_mask"]

    def __init__(self, factory: pytest.TempPathFactory) -> None:
        from vcfnb.synth import broken

        self.factory = factory
        self.cohort: Path = broken.make_broken_cohort(factory.mktemp("broken") / "cohort")
        self.defects = broken.read_defects(self.cohort)
        self.notebook = ROOT / "notebooks" / f"{self.study}.ipynb"
        self._runs: dict[str, tuple[Path, dict]] = {}

    def defect(self, kind: str):
        """The ``defects.csv`` row of ``kind`` (``patient_id, file, row, stage, expect``)."""
        return self.defects.set_index("kind").loc[kind]

    def raw_rois(self, kinds):
        """The raw ``rois.csv`` rows of the defects ``kinds`` (absolute paths, not validated),
        indexed by kind."""
        import pandas as pd

        raw = pd.read_csv(self.cohort / "rois.csv", dtype={"patient_id": str})
        sub = raw.iloc[[int(self.defect(k).row.split(":")[1]) - 1 for k in kinds]].copy()
        sub["image"] = [str(self.cohort / p) for p in sub.image]
        sub["mask"] = [str(self.cohort / p) for p in sub["mask"]]
        sub.index = list(kinds)
        return sub

    def run(self, name: str = "a") -> tuple[Path, dict]:
        """Run the notebook on the broken cohort through the project's runner (once per name).

        Each run gets its own throwaway project folder (``notebooks/`` with a copy of the
        notebook, ``params/``), so the report lands in ``<tmp>/run_<name>/project/reports/
        <study>/default`` and nothing is written into the repository. Runs with different names
        use the same parameters and share the feature cache. Returns (report folder, runner
        status record)."""
        if name not in self._runs:
            from vcfnb import runner

            declared = runner.notebook_parameters(self.notebook)
            params: dict = {"cohort_dir": str(self.cohort)}
            if "cache_dir" in declared:
                params["cache_dir"] = str(self.cohort.parent / "cache")
            if "n_permutations" in declared:
                params["n_permutations"] = 2
            if "cv_folds" in declared:
                # ~20 complete cases (7 positive) are left: 10 folds would give folds without a
                # positive case (that class of problem is tested on its own in test_badinput)
                params["cv_folds"] = 5
            root = self.factory.mktemp(f"run_{name}") / "project"
            (root / "notebooks").mkdir(parents=True)
            (root / "params").mkdir()
            nb = Path(shutil.copy(self.notebook, root / "notebooks" / self.notebook.name))
            record = runner.run_notebook(nb, None, root, force=True, extra=params)
            self._runs[name] = (root / "reports" / self.study / "default", record)
        return self._runs[name]


@pytest.fixture(scope="session")
def broken_study(tmp_path_factory) -> BrokenStudy:
    """The broken cohort, generated once per session, and its cached notebook runs."""
    return BrokenStudy(tmp_path_factory)


def _run_study_notebook(notebook: Path, work: Path, cache: Path, params: dict, *,
                        name: str = "report", executed: str = "out.ipynb") -> tuple[Path, dict]:
    import json

    import papermill as pm

    from vcfnb import runner

    out = Path(work) / name
    runner.validate_params(Path(notebook), params)
    pm.execute_notebook(str(notebook), str(Path(work) / executed), kernel_name="vcfnb",
                        parameters={**params, "out_dir": str(out), "cache_dir": str(cache)},
                        cwd=str(Path(notebook).parent), progress_bar=False)
    return out, json.loads((out / "metrics.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def run_study_notebook():
    """``run(notebook, work, cache, params, name="report", executed="out.ipynb")``: validate
    ``params`` against the notebook's parameters cell, execute it through papermill (kernel
    ``vcfnb``, from the notebook's folder) into ``work/executed`` with the report in
    ``work/name`` and the feature cache ``cache``; returns (report folder, metrics.json)."""
    return _run_study_notebook


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
                  ("test_nb_ovf.py", "user_run"), ("test_nb_metastasis.py", "user_run"),
                  ("test_determinism.py", "two_runs")}
HEAVY_TESTS = {"test_nb_metastasis.py::test_negative_control_signal0",
               "test_new_study_example.py::test_worked_example_recovers_the_rule",
               "test_nb_radiomics_study.py::test_equivalent_to_osteoporosis_mri",
               "test_nb_radiomics_study.py::test_equivalent_to_metastasis_lytic_blastic",
               "test_benchmarks.py::test_notebook_warm_cold_quick",
               "test_benchmarks.py::test_lasso_path_quick",
               "test_recovery_check.py::test_recovery_check_on_a_null_cohort",
               "test_nb_radiomics_study.py::test_smoke_defaults",
               "test_nb_radiomics_study.py::test_given_split_is_honoured",
               "test_nb_radiomics_study.py::test_repeated_cv_per_roi_rows",
               "test_badinput.py::test_notebook_completes_and_names_every_broken_case",
               "test_synth_osteoporosis.py::test_signal_effect_and_negative_control",
               "test_features.py::test_real_ct_ten_rois_equal_naive"}


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
