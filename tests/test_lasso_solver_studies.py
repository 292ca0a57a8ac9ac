"""The LASSO solver of the ovf and vcf studies (issues 18/21: permutation-test cost).

vcf arm A runs its LASSO with ``solver="cd"`` (glmnet's coordinate descent along the lambda
path, :mod:`vcfnb.lasso_cd`) in the notebook default and the paper params, because there it
chose the same lambda and features as liblinear; arm B too (``lasso_solver_b``): there cd
chose what liblinear run to convergence chooses, where liblinear at its former tol 1e-4
stopped short. ovf and osteoporosis run ``cd`` stopped at glmnet's own default
criterion (``thresh`` 1e-7, as the papers' R). No speed is asserted.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest
import yaml

from vcfnb.studies import ovf, vcf

ROOT = Path(__file__).resolve().parents[1]
VCF_NB = ROOT / "notebooks" / "vcf_benign_malignant.ipynb"


def test_vcf_arm_a_declares_cd_in_notebook_and_paper_params():
    """The notebook parameter ``lasso_solver_a`` defaults to cd, the paper params say cd, and
    every arm A pipeline of the notebook (fit, out-of-fold, permutation, recovery) uses it."""
    from vcfnb.runner import notebook_parameters

    assert notebook_parameters(VCF_NB)["lasso_solver_a"] == ("str", '"cd"')
    paper = yaml.safe_load((ROOT / "params" / "vcf_benign_malignant" / "paper.yaml").read_text())
    assert paper["lasso_solver_a"] == "cd"
    nb = nbformat.read(str(VCF_NB), as_version=4)
    calls = [src.count("arm_a_pipeline(") for src in
             (c.source for c in nb.cells if c.cell_type == "code")]
    passed = [src.count("lasso_solver=lasso_solver_a") for src in
              (c.source for c in nb.cells if c.cell_type == "code")]
    assert sum(calls) >= 4 and calls == passed


def test_vcf_arm_b_declares_cd_in_notebook_and_paper_params():
    """``lasso_solver_b`` defaults to cd (notebook and paper params) and reaches every arm B
    selection: Rad, DLR, and the DLRN chain's ``dlrn_kw`` (its fold selections and its
    permutation test)."""
    from vcfnb.runner import notebook_parameters

    assert notebook_parameters(VCF_NB)["lasso_solver_b"] == ("str", '"cd"')
    paper = yaml.safe_load((ROOT / "params" / "vcf_benign_malignant" / "paper.yaml").read_text())
    assert paper["lasso_solver_b"] == "cd"
    code = [c.source for c in nbformat.read(str(VCF_NB), as_version=4).cells
            if c.cell_type == "code"]
    fits = [src for src in code if "fit_selection(" in src]
    assert len(fits) == 2 and all("lasso_solver=lasso_solver_b" in src for src in fits)
    kw = [src for src in code if "dlrn_kw = dict(selection=dict(" in src]
    assert len(kw) == 1 and "lasso_solver=lasso_solver_b)" in kw[0]
    assert any("selection_b(**dlrn_kw[\"selection\"])" in src for src in code)


@pytest.mark.parametrize("labels", ["real", "shuffled"])
def test_arm_b_cd_selects_what_converged_liblinear_selects(labels):
    """Arm B's selection chain with cd gives the lambda and features of liblinear run to
    convergence (tol 1e-8): cd is the converged LASSO, not another approximation."""
    X, y = _arm_a_table(seed=2)
    if labels == "shuffled":
        y = pd.Series(np.random.default_rng(1).permutation(y.to_numpy()), index=y.index)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        conv = vcf.selection_b(lasso_cv=4, alpha=0.5, rng=3)
        conv.set_params(lasso__tol=1e-8, lasso__max_iter=100_000).fit(X, y)
        cd = vcf.selection_b(lasso_cv=4, alpha=0.5, rng=3, lasso_solver="cd").fit(X, y)
    assert cd["lasso"].lambda_ == conv["lasso"].lambda_
    assert cd["lasso"].selected_features_ == conv["lasso"].selected_features_


def test_solver_reaches_the_lasso_steps_with_the_right_tolerance():
    """cd runs at its own tight default tolerance; liblinear keeps each study's tolerance."""
    a = vcf.arm_a_pipeline(rng=0, lasso_solver="cd")["lasso"]
    assert (a.solver, a.tol) == ("cd", None)
    assert vcf.arm_a_pipeline(rng=0)["lasso"].solver == "liblinear"
    b_lib, b_cd = vcf.selection_b()["lasso"], vcf.selection_b(lasso_solver="cd")["lasso"]
    assert (b_lib.solver, b_lib.tol, b_lib.max_iter) == ("liblinear", 1e-4, 2000)
    assert (b_cd.solver, b_cd.tol) == ("cd", None)
    r_lib = ovf.OVFModel(solver="liblinear")._radscore("cortical")
    r_cd = ovf.OVFModel()._radscore("cortical")  # default: cd at glmnet's default thresh
    assert (r_lib.solver, r_lib.tol, r_lib.thresh) == ("liblinear", 1e-3, None)
    assert (r_cd.solver, r_cd.tol, r_cd.thresh) == ("cd", None, 1e-7)
    assert ovf.OVFModel(thresh=None)._radscore("cortical").thresh is None


def _arm_a_table(seed: int = 0) -> tuple[pd.DataFrame, pd.Series]:
    """An arm A training table of the smoke cohort's shape (28 patients x 104 features):
    radiomics-like correlated features (20 latent factors) with a 2-feature signal."""
    g = np.random.default_rng(seed)
    n, p = 28, 104
    X = g.normal(size=(n, 20)) @ g.normal(size=(20, p)) + 0.5 * g.normal(size=(n, p))
    ids = [f"P{i:03d}" for i in range(n)]
    X = pd.DataFrame(X, index=ids, columns=[f"original_f{i}" for i in range(p)])
    y = pd.Series((X.iloc[:, 0] - X.iloc[:, 1] + 2.0 * g.normal(size=n) > 0).astype(int),
                  index=ids)
    return X, y


@pytest.mark.parametrize("labels", ["real", "shuffled"])
def test_arm_a_cd_selects_what_liblinear_selects(labels):
    """Arm A's whole chain (z-score, |r| filter, oversampled LASSO CV, RFE, SVM) with cd and
    with liblinear: same lambda, same LASSO and RFE features, same decision values."""
    X, y = _arm_a_table()
    if labels == "shuffled":
        y = pd.Series(np.random.default_rng(5).permutation(y.to_numpy()), index=y.index)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lib = vcf.arm_a_pipeline(rng=3).fit(X, y)
        cd = vcf.arm_a_pipeline(rng=3, lasso_solver="cd").fit(X, y)
    assert lib["lasso"].lambda_ == cd["lasso"].lambda_
    assert lib["lasso"].selected_features_ == cd["lasso"].selected_features_
    assert list(lib["rfe"].get_feature_names_out()) == list(cd["rfe"].get_feature_names_out())
    np.testing.assert_allclose(cd.decision_function(X), lib.decision_function(X), atol=1e-3)


@pytest.mark.parametrize("notebook, model_call", [("osteoporosis_mri", "RadscoreModel("),
                                                   ("ovf_prediction_ct", "OVFModel(")])
def test_notebook_lasso_stops_at_glmnets_default_threshold(notebook, model_call):
    """The osteoporosis and ovf notebooks run the cd LASSO at glmnet's default ``thresh``
    (1e-7, as the papers' R) and pass it, with the solver, to their one model call; 0 falls
    back to the absolute tol."""
    from vcfnb.models import RadscoreModel
    from vcfnb.runner import notebook_parameters

    nb_path = ROOT / "notebooks" / f"{notebook}.ipynb"
    params = notebook_parameters(nb_path)
    assert params["lasso_solver"] == ("str", '"cd"')
    assert params["lasso_thresh"] == ("float", "1e-7")
    nb = nbformat.read(str(nb_path), as_version=4)
    src = [c.source for c in nb.cells if c.cell_type == "code" and model_call in c.source]
    assert len(src) == 1 and "solver=lasso_solver" in src[0]
    assert "thresh=(lasso_thresh or None) if lasso_solver == \"cd\"" in src[0]
    assert RadscoreModel(solver="cd", thresh=1e-7).get_params()["thresh"] == 1e-7
