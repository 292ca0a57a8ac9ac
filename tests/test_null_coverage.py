"""The null-coverage benchmark's bookkeeping (benchmarks/null_coverage.py): coverage of 0.5,
constant-score runs counted apart, the one-sided binomial check, the mean-AUC window."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "null_coverage.py"


@pytest.fixture(scope="module")
def nc():
    spec = importlib.util.spec_from_file_location("null_coverage", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _table(covered: list[bool], aucs: list[float], constant: int = 0) -> pd.DataFrame:
    rows = [{"study": "s", "model": "m", "seed": i, "auc": a, "covered": c, "constant": False,
             "ci_method": "delong", "fold_auc": float("nan")}
            for i, (c, a) in enumerate(zip(covered, aucs))]
    rows += [{"study": "s", "model": "m", "seed": 100 + i, "auc": 0.5, "covered": None,
              "constant": True, "ci_method": "delong", "fold_auc": float("nan")}
             for i in range(constant)]
    return pd.DataFrame(rows)


def test_good_coverage_passes_and_constant_runs_are_apart(nc):
    summary, problems = nc.summarise(_table([True] * 29 + [False], [0.5] * 30, constant=3))
    r = summary.iloc[0]
    assert (r.covered, r.usable, r.constant_runs, r.runs) == (29, 30, 3, 33)
    assert r.binomial_p_below_95 > 0.01 and problems == []


def test_low_coverage_and_shifted_auc_fail(nc):
    _, problems = nc.summarise(_table([True] * 20 + [False] * 10, [0.66] * 30))
    assert any("coverage 20/30" in p for p in problems)
    assert any("outside [0.4, 0.6]" in p for p in problems)


def test_too_few_runs_do_not_count(nc):
    _, problems = nc.summarise(_table([False] * 5, [0.9] * 5), min_runs=10)
    assert problems == []


def test_one_run_creates_its_output_folder(nc, tmp_path, monkeypatch):
    # papermill does not create the output notebook's folder: every run failed with
    # FileNotFoundError before the script created it
    import papermill as pm

    seen = {}

    def fake_execute(src, dst, **kw):
        seen["parent_exists"] = Path(dst).parent.is_dir()
        seen["params"] = kw["parameters"]

    monkeypatch.setattr(pm, "execute_notebook", fake_execute)
    r = nc._one_run("metastasis_lytic_blastic", 1000, str(tmp_path))
    assert r["error"] == "" and seen["parent_exists"]
    assert seen["params"]["synthetic_signal"] == 0.0 and seen["params"]["n_permutations"] == 0
