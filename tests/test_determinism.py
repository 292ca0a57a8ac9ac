"""Determinism: the same parameters give byte-identical metrics and tables.

* the metastasis notebook is run twice through the project's runner with the same parameters
  into different report folders (the first run is the bad-input run of ``test_badinput.py``, on
  the broken cohort of the session fixture ``broken_study`` in tests/conftest.py, so the
  problems and failures tables are compared too): ``metrics.json``
  and every ``tables/*.csv`` -- provenance included, which must not depend on where the report
  or the cache lives -- are byte-identical;
* extraction on a batch with failures gives the same features and the same failures table with
  one worker and with two.

Covered elsewhere, not repeated here: n_jobs=1 vs 2 and the local pool vs a Dask
``LocalCluster`` on valid ROIs (``test_features.py::test_results_do_not_depend_on_n_jobs``,
``::test_dask_local_cluster_gives_the_same_table``) and the SIGKILL/resume test
(``::test_sigkill_midway_then_resume``).
"""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pandas as pd
import pytest

from vcfnb import features


@pytest.fixture(scope="module")
def two_runs(broken_study):
    a, rec_a = broken_study.run("a")
    b, rec_b = broken_study.run("b")
    assert rec_a["status"] == rec_b["status"], (rec_a, rec_b)
    return a, b


@pytest.mark.slow
def test_notebook_twice_gives_identical_metrics(two_runs):
    a, b = two_runs
    assert (a / "metrics.json").is_file() and (b / "metrics.json").is_file()
    ma, mb = (a / "metrics.json").read_bytes(), (b / "metrics.json").read_bytes()
    assert ma == mb, _diff(json.loads(ma), json.loads(mb))


@pytest.mark.slow
def test_notebook_twice_gives_identical_tables(two_runs):
    a, b = two_runs
    names_a = sorted(p.name for p in (a / "tables").glob("*.csv"))
    names_b = sorted(p.name for p in (b / "tables").glob("*.csv"))
    assert names_a and names_a == names_b
    differ = []
    for name in names_a:
        ta, tb = (a / "tables" / name).read_bytes(), (b / "tables" / name).read_bytes()
        if ta != tb:
            la, lb = ta.decode().splitlines(), tb.decode().splitlines()
            first = next((f"line {i + 1}: {x!r} vs {y!r}" for i, (x, y) in enumerate(zip(la, lb))
                          if x != y), f"{len(la)} vs {len(lb)} lines")
            differ.append(f"{name}: {first}")
    assert not differ, "tables differ between two runs with the same parameters:\n" + \
        "\n".join(differ)


@pytest.mark.slow
def test_notebook_twice_gives_identical_figures(two_runs):
    a, b = two_runs
    figs = sorted(p.name for p in (a / "figures").glob("*.png"))
    differ = [n for n in figs if (a / "figures" / n).read_bytes() !=
              (b / "figures" / n).read_bytes()]
    assert not differ, f"figures differ: {differ}"


def test_failures_and_features_do_not_depend_on_workers(broken_study):
    fails = broken_study.extract_fails
    rois = broken_study.raw_rois(fails + ["multilabel_mask", "dicom_identifiers"])
    small = broken_study.settings
    one, f1 = features.extract_with_failures(rois, small, n_jobs=1, progress=False)
    two, f2 = features.extract_with_failures(rois, small, n_jobs=2, progress=False)
    pd.testing.assert_frame_equal(one, two, check_exact=True)
    pd.testing.assert_frame_equal(f1, f2, check_exact=True)
    assert len(f1) == len(fails)


def test_extract_with_workers_then_joblib_parallel(broken_study, tmp_path):
    """A notebook extracts with n_jobs=2 and then cross-validates with joblib.Parallel(n_jobs=2)
    in the same kernel: the second must not crash on the worker pool the first left behind
    ('_ReusablePoolExecutor' object has no attribute '_temp_folder_manager'). Run in a fresh
    interpreter so this process's pool state does not matter."""
    rois = broken_study.raw_rois(["multilabel_mask", "dicom_identifiers", "tiny_mask"])
    rois.to_csv(tmp_path / "rois.csv", index=False)
    code = textwrap.dedent(f"""
        import pandas as pd
        from joblib import Parallel, delayed
        from vcfnb import features
        rois = pd.read_csv({str(tmp_path / "rois.csv")!r}, dtype={{"patient_id": str}})
        feats = features.extract(rois, {broken_study.settings!r}, n_jobs=2, progress=False)
        assert feats.shape[0] == 3
        assert Parallel(n_jobs=2)(delayed(abs)(-i) for i in range(4)) == [0, 1, 2, 3]
        print("OK")
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path)
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stderr[-1500:]


def _diff(a, b, path="") -> str:
    """First differences between two JSON values, for the assertion message."""
    out = []
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if a.get(k) != b.get(k):
                out.append(_diff(a.get(k), b.get(k), f"{path}/{k}"))
    elif a != b:
        out.append(f"{path}: {a!r} vs {b!r}")
    return "\n".join(o for o in out if o)[:2000]
