"""The benchmark scripts in their reduced (``--quick``) mode: the comparisons they print are valid.

Each script is run as ``make benchmark`` runs it (a subprocess with this interpreter) and must
exit 0 -- which each one does only when its own correctness checks pass:

* ``notebook_warm_cold.py``: the warm re-run of a smoke notebook extracts nothing (its
  ``extract()`` call reports every ROI as a cache hit), writes no cache entry, and gives
  byte-identical ``metrics.json`` and tables; the unchanged re-run is skipped;
* ``dask_vs_local.py``: the local pool and a Dask ``LocalCluster`` give exactly equal feature
  tables, also when the cluster is named only by ``VCFNB_DASK_SCHEDULER``;
* ``roi_cost.py``: every timed image type gives features without failures;
* ``lasso_path.py``: liblinear and glmnet's coordinate descent choose the same lambda and
  features for a radscore refit on the real labels;
* ``lasso_path.py --study screening``: the screened and plain coordinate-descent paths are
  identical bit for bit;
* ``sfs_speed.py``: the forward selection on the compiled SVM path (vcfnb.svm_smo) and on the
  libsvm path give the identical selection history.

No speed is asserted (CI machines vary); only that the ratio lines are printed.
``benchmarks/extract.py --quick`` is run by ``tests/test_features.py``.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
RATIO = re.compile(r"^ratio [^:]+: \d+\.\d+", re.MULTILINE)


def _run(script: str, *args: str, timeout: int = 600) -> str:
    env = {k: v for k, v in os.environ.items() if k != "VCFNB_DASK_SCHEDULER"}
    env["MPLBACKEND"] = "Agg"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=timeout)
    out = proc.stdout
    assert proc.returncode == 0, f"{script} exit {proc.returncode}\n{out[-4000:]}\n" \
                                 f"{proc.stderr[-4000:]}"
    assert "FAIL" not in out, out
    return out


@pytest.mark.slow
def test_notebook_warm_cold_quick():
    out = _run("notebook_warm_cold.py", "--quick")
    assert len(RATIO.findall(out)) >= 2, out
    assert "outputs byte-identical (metrics.json" in out and \
        re.search(r"byte-identical \(metrics\.json \+ \d+ tables\): True", out), out
    assert re.search(r"extract\(\) calls in run 3: (\d+) ROIs, \1 from cache, 0 extracted", out), \
        out


@pytest.mark.slow
def test_dask_vs_local_quick():
    out = _run("dask_vs_local.py", "--quick")
    assert RATIO.search(out), out
    assert "tables identical (assert_frame_equal, exact): True" in out, out


@pytest.mark.slow
def test_roi_cost_quick():
    out = _run("roi_cost.py", "--quick")
    assert RATIO.search(out), out
    assert re.search(r"^shape\s+\d", out, re.MULTILINE), out


@pytest.mark.slow
def test_lasso_path_quick():
    out = _run("lasso_path.py", "--quick")
    assert len(RATIO.findall(out)) == 2, out
    assert "same lambda and features on the real labels: True" in out, out


def test_lasso_path_screening_quick():
    out = _run("lasso_path.py", "--study", "screening", "--quick")
    assert len(RATIO.findall(out)) == 2, out
    assert out.count("identical bit for bit: True") == 2, out


def test_sfs_speed_quick():
    out = _run("sfs_speed.py", "--quick")
    assert len(RATIO.findall(out)) == 2, out
    assert "histories identical (assert_frame_equal, exact): True" in out, out


def test_null_coverage_counts_a_separating_null_run_as_not_covering():
    """A null run whose headline AUC is 1 on a small test split has no DeLong CI (variance 0);
    leaving it out of the coverage would flatter it (seed 1022 of the vcf null runs)."""
    import importlib.util

    import pandas as pd

    spec = importlib.util.spec_from_file_location(
        "null_coverage", Path(__file__).resolve().parents[1] / "benchmarks" / "null_coverage.py")
    nc = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(nc)
    assert nc._covered(False, 1.0, None, None) is False
    assert nc._covered(False, 0.0, float("nan"), float("nan")) is False
    assert nc._covered(False, 0.7, None, None) is None
    assert nc._covered(True, 1.0, None, None) is None
    assert nc._covered(False, 0.6, 0.4, 0.8) is True
    table = pd.DataFrame({"study": "s", "model": "m", "seed": range(3), "auc": [0.5, 0.55, 1.0],
                          "ci_low": [0.3, 0.35, float("nan")], "ci_high": [0.7, 0.75, float("nan")],
                          "ci_method": "delong", "constant": False, "covered": [True, True, None],
                          "fold_auc": float("nan")})
    summary, _ = nc.summarise(table, min_runs=1)
    assert (summary.covered.iat[0], summary.usable.iat[0]) == (2, 3)


def test_split_latent_finds_a_split_drawn_from_one_end_of_the_truth():
    """benchmarks/split_latent.py: a test set made of the normals with the fattiest marrow is
    flagged (percentile ~100 among random stratified splits, Welch p small); the abnormal class,
    split at random, is not; a run of other patients is refused."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import split_latent
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    from vcfnb.synth.osteoporosis import latent_state

    truth = latent_state(size="paper", seed=3)
    truth = truth[truth.centre == "internal"].reset_index(drop=True)
    normal = truth[truth.outcome == 0].sort_values("fat_fraction")
    abnormal = truth[truth.outcome == 1].sample(frac=1.0, random_state=0)
    test_ids = set(normal.patient_id.iloc[-22:]) | set(abnormal.patient_id.iloc[:26])
    run = pd.DataFrame({"patient_id": truth.patient_id,
                        "split": np.where(truth.patient_id.isin(test_ids), "test", "train"),
                        "y_true": truth.outcome, "probability": 0.5,
                        "radscore": 10 * truth.fat_fraction + truth.rarefaction})
    res = split_latent.compare(truth, run, draws=300)
    shift = res["shift"].set_index("class")
    assert shift.loc[0, "split_percentile"] == 100.0
    assert shift.loc[0, "draws_as_far_from_0"] == 0.0 and shift.loc[0, "welch_p"] < 1e-6
    assert 0.0 < shift.loc[1, "split_percentile"] < 100.0
    assert res["explained"].iloc[0, 0] == pytest.approx(1.0)
    s = res["summary"].set_index(["split", "y_true"])
    assert s.loc[("test", 0), "patients"] == 22
    with pytest.raises(ValueError, match="not in the simulated cohort"):
        split_latent.compare(truth.iloc[5:], run, draws=10)
