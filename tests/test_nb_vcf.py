"""The vcf_benign_malignant notebook end to end on a no-signal simulated cohort (negative control).

With ``synthetic_signal = 0`` the built-in cohort has no class effect at all, so every model's
test AUC 95 % CI must cover 0.5 and the whole-pipeline permutation tests must not come out
significant; a leak (selection fitted on test rows, labels reaching the features) would break it.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "vcf_benign_malignant.ipynb"

TABLES = ["A_table1_baseline", "A_icc", "A_table2_performance", "A_table3_coefficients",
          "A_rfe_cv", "A_permutation", "B_table1_baseline", "B_feature_counts", "B_icc",
          "B_table3_rad_models", "B_deep_summary", "B_table4_dlr_models",
          "B_supp_table1_clinical_lr", "B_table2_clinical_models", "B_fig6_nomogram_points",
          "B_table5_models", "B_delong_test", "B_hosmer_lemeshow", "B_permutation",
          "wedge_agreement", "paper_vs_run", "provenance"]
FIGURES = ["A_fig2_lasso_path", "A_fig3_auc_vs_features", "A_fig4_coefficients", "A_fig5_roc",
           "B_fig3_gradcam", "B_fig4_dlr_lasso_cv", "B_fig5_dlr_coefficients", "B_fig6_nomogram",
           "B_fig7_roc_train", "B_fig7_roc_test", "B_delong_test", "B_calibration_test",
           "B_fig8_dca_test", "A_permutation_null", "B_permutation_null"]


@pytest.mark.slow
def test_notebook_null_signal(tmp_path):
    import papermill as pm

    out = tmp_path / "report"
    pm.execute_notebook(
        str(NOTEBOOK), str(tmp_path / "executed.ipynb"), kernel_name="vcfnb", cwd=str(ROOT),
        parameters={"synthetic_signal": 0.0, "out_dir": str(out), "n_permutations": 9,
                    "cache_dir": str(ROOT / "data" / "cache")},
        progress_bar=False)
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["study"] == "vcf_benign_malignant" and metrics["simulated"] is True
    models = metrics["models"]
    # arm A, eight classifiers x (Rad, DLR, Clinical), and the table-5 models
    expected = {"A_T2WI_radiomics", "B_Clinical", "B_Rad", "B_DL", "B_DLR", "B_DLRN",
                "B_Rad-ExtraTrees", "B_DLR-LR", "B_Clinical-MLP"}
    assert expected <= set(models), sorted(models)
    assert len(models) == 1 + 3 * 8 + 5
    for name, splits in models.items():
        assert {"train", "test"} <= set(splits), name
        for split, m in splits.items():
            assert {"auc", "ci_low", "ci_high", "n"} <= set(m), (name, split)
        t = splits["test"]
        assert t["ci_low"] <= 0.5 <= t["ci_high"], (name, t)
    for name in ("A_T2WI_radiomics", "B_DLR"):
        p = models[name]["test"]["permutation_p_value"]
        assert p > 0.05, (name, p)
    for t in TABLES:
        assert (out / "tables" / f"{t}.csv").is_file(), t
    for f in FIGURES:
        assert (out / "figures" / f"{f}.png").is_file(), f


def test_notebook_committed_without_outputs():
    import nbformat

    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert nb.metadata["kernelspec"]["name"] == "vcfnb"
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None
