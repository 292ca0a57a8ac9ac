"""Recovery check (positive control) at notebook level: on a built-in NULL cohort (simulated
signal 0) the generic study notebook plants effects of d = 0 and d = 1 SD into random halves of
the training patients and reruns its headline pipeline. d = 1 must be recovered (AUC >= 0.7 and
permutation p < 0.05) and d = 0 not; the report labels the section "Recovery check"."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
NB = ROOT / "notebooks" / "radiomics_study.ipynb"


@pytest.mark.slow
def test_recovery_check_on_a_null_cohort(tmp_path):
    import papermill as pm

    from vcfnb import runner

    out = tmp_path / "report"
    params = dict(synthetic_cohort="osteoporosis", synthetic_size="smoke", synthetic_signal=0.0,
                  seed=3, n_permutations=0, recovery=True, recovery_draws=1,
                  recovery_permutations=39, out_dir=str(out), cache_dir=str(tmp_path / "cache"))
    runner.validate_params(NB, params)
    executed = tmp_path / "out.ipynb"
    pm.execute_notebook(str(NB), str(executed), kernel_name="vcfnb", parameters=params,
                        cwd=str(NB.parent), progress_bar=False)
    m = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert m["simulated"] is True
    rec = pd.read_csv(out / "tables" / "recovery_check.csv").set_index("d")
    assert set(rec.index) == {0.0, 1.0} and (rec["n_permutations"] == 39).all()
    assert rec.loc[1.0, "auc"] >= 0.7 and rec.loc[1.0, "p_value"] < 0.05
    assert bool(rec.loc[1.0, "recovered"]) is True
    assert bool(rec.loc[0.0, "recovered"]) is False and rec.loc[0.0, "p_value"] >= 0.05
    summary = pd.read_csv(out / "tables" / "recovery_summary.csv").set_index("d")
    assert summary.loc[1.0, "power"] == 1.0 and summary.loc[0.0, "power"] == 0.0
    text = executed.read_text(encoding="utf-8")
    assert "Recovery check" in text
