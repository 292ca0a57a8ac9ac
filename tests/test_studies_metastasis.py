"""vcfnb.studies.metastasis: declared requirements, the pre-flight check, the module's shape,
and the permutation test permuting exactly the reported pipeline (issues 16 and 17)."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from vcfnb import contract, io, models, synth
from vcfnb.studies import metastasis

MODULE = Path(metastasis.__file__)
#: the notebook's defaults the requirements read
PARAMS = {"outcome": "outcome", "positive_class": "osteoblastic", "cv_folds": 10, "sfs_folds": 10}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    return io.load_cohort(synth.make_cohort("metastasis", tmp_path_factory.mktemp("meta"),
                                            size="smoke", seed=3))


def test_declared_and_registered():
    req = contract.for_study("metastasis_lytic_blastic")
    assert req is metastasis.REQUIREMENTS
    assert req.design == "cv" and req.main_models == ("radiomics",)
    assert set(req.sequences) == {"T1", "T2", "FS-T2"} and req.rois == ()  # any ROI name
    cols = {c.name for c in req.columns}
    assert set(metastasis.SEMANTIC) | {"lesion_type", "{outcome}", "mvr"} <= cols
    doc = contract.markdown(req)
    assert "a `split` column is ignored" in doc and "`sfs_folds` (inside `cv_folds`)" in doc


def test_builtin_cohort_meets_requirements(smoke):
    assert contract.check(metastasis.REQUIREMENTS, smoke.cases, smoke.rois, PARAMS).empty


def test_preflight_lists_every_problem_at_once(smoke):
    """Issue 17 defects 5 and 8: missing columns, bad values, a missing sequence and fold counts
    the classes cannot fill are all listed in one table, naming the column or parameter."""
    cases = smoke.cases.drop(columns=["si_t2", "severe_compression"])
    cases.loc[cases.index[0], "si_t1"] = "isointense"
    rois = smoke.rois[smoke.rois.sequence != "FS-T2"]
    # smoke: 12 blastic lesions; 13 outer folds leave 12 * 12/13 = 11.1 to the inner CV
    unmet = contract.check(metastasis.REQUIREMENTS, cases, rois,
                           {**PARAMS, "cv_folds": 13, "sfs_folds": 12})
    text = "\n".join(unmet.problem + " | " + unmet.fix)
    for needle in ("'si_t2' is missing", "'severe_compression' is missing",
                   "'si_t1' must hold one of ['high', 'iso', 'low']", "sequence 'FS-T2'",
                   "'cv_folds' = 13", "set cv_folds: 12 or less",
                   "'sfs_folds' = 12", "inside cv_folds", "set sfs_folds: 11 or less"):
        assert needle in text, (needle, text)
    assert len(unmet) == 6
    # sfs_folds: 0 (default) runs the inner CV with cv_folds inside cv_folds: 12 * 11/12 = 11
    unmet = contract.check(metastasis.REQUIREMENTS, smoke.cases, smoke.rois,
                           {**PARAMS, "cv_folds": 12, "sfs_folds": 0})
    assert unmet.problem.str.contains("'cv_folds' = 12 .*inside cv_folds").tolist() == [True]


def test_positive_class():
    cases = pd.DataFrame({"lesion_type": ["osteolytic", "osteoblastic", "osteoblastic"]})
    assert metastasis.apply_positive_class(cases, "osteoblastic")["outcome"].tolist() == [0, 1, 1]
    assert metastasis.apply_positive_class(cases, "osteolytic", outcome="y")["y"].tolist() == [
        1, 0, 0]
    with pytest.raises(ValueError, match="positive_class 'blastic'"):
        metastasis.apply_positive_class(cases, "blastic")


def _code_lines(path: Path) -> int:
    """Lines of ``path`` not counting docstrings."""
    src = path.read_text(encoding="utf-8")
    tree = ast.parse(src)
    doc = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(
                    getattr(body[0], "value", None), ast.Constant) and isinstance(
                    body[0].value.value, str):
                doc.update(range(body[0].lineno, body[0].end_lineno + 1))
    return len(src.splitlines()) - len(doc)


def test_module_is_thin_and_does_no_io_or_shuffling():
    """Issue 16: ≤ 350 lines without docstrings, no file I/O, no label shuffling of its own."""
    assert _code_lines(MODULE) <= 350
    src = MODULE.read_text(encoding="utf-8")
    for pattern in (r"\bopen\(", r"\.to_csv\(", r"WriteImage", r"write_text", r"\.permutation\(",
                    r"shuffle", r"permutation_test", r"default_rng", r"Pool\("):
        assert not re.search(pattern, src), pattern


def test_permutation_observed_is_the_reported_cv_auc():
    """Issue 16 point 3: the same pipeline, settings and folds give the reported AUC as the
    permutation test's observed AUC (the old notebook permuted 1 inner repeat, reported 2)."""
    g = np.random.default_rng(4)
    X = pd.DataFrame(g.normal(size=(40, 6)), columns=[f"f{i}" for i in range(6)])
    y = pd.Series((X.f0 + 0.3 * g.normal(size=40) > 0).astype(int))
    pipe = metastasis.radiomics_pipeline(n_splits=3, n_repeats=2, max_features=2, random_state=1)
    folds = models.cv_splitter(4, rng=7)
    fit = models.cv_fit(pipe, X, y, cv=folds)
    assert len(fit.estimators) == 4
    assert np.allclose(fit.predictions.score,
                       models.cv_predict(pipe, X, y, cv=folds).score)
    reported = roc_auc_score(y, fit.predictions.score)
    perm = models.permutation_test(pipe, X, y, cv=folds, n_permutations=3, rng=0)
    assert perm.observed_auc == pytest.approx(reported, abs=1e-12)
    freq = metastasis.selection_frequency(fit.estimators, ["f0"])
    assert freq.loc[freq.feature == "f0", "folds_selected"].item() >= 3


def _paper_table3_cases() -> pd.DataFrame:
    """Seed 004 Table 3's counts, one row per lesion (26 osteoblastic, 52 osteolytic)."""
    def col(blastic, lytic):
        return [k for k, n in [*blastic, *lytic] for _ in range(n)]
    return pd.DataFrame({
        "lesion_type": ["osteoblastic"] * 26 + ["osteolytic"] * 52,
        "si_t1": col([("low", 23), ("iso", 2), ("high", 1)],
                     [("low", 22), ("iso", 17), ("high", 13)]),
        "si_t2": col([("low", 19), ("high", 7)], [("low", 13), ("iso", 4), ("high", 35)]),
        "si_fst2": col([("low", 8), ("high", 18)], [("low", 1), ("high", 51)]),
        "soft_tissue_mass": col([(1, 12), (0, 14)], [(1, 47), (0, 5)]),
        "severe_compression": col([(1, 9), (0, 17)], [(1, 22), (0, 30)]),
    })


def test_table3_default_is_the_papers_pearson_chi_square():
    """Table 3 by default is SPSS's Pearson χ² without continuity correction: on the paper's own
    counts it gives the printed χ² (T1 15.169, T2 17.016, soft-tissue mass 18.404, severe
    compression 0.428, p 0.513); the corrected test (Yates / Fisher) stays an option."""
    cases = _paper_table3_cases()
    t = metastasis.semantic_table(cases).drop_duplicates("variable").set_index("variable")
    assert set(t.test) == {"Pearson chi-square"}
    for var, chi2 in {"si_t1": 15.169, "si_t2": 17.016, "soft_tissue_mass": 18.404,
                      "severe_compression": 0.428}.items():
        assert t.loc[var, "statistic"] == pytest.approx(chi2, abs=5e-4), var
    assert t.loc["severe_compression", "p_value"] == pytest.approx(0.513, abs=5e-4)
    corrected = metastasis.semantic_table(cases, categorical_test="auto").drop_duplicates(
        "variable").set_index("variable")
    assert corrected.loc["soft_tissue_mass", "test"] == "chi-square"  # Yates-corrected 2x2
    assert corrected.loc["soft_tissue_mass", "statistic"] == pytest.approx(16.082, abs=5e-4)
    assert corrected.loc["si_t1", "test"] == "Fisher exact"  # expected counts below 5
    with pytest.raises(ValueError, match="categorical_test"):
        metastasis.semantic_table(cases, categorical_test="yates")


def test_recipe_rebuilds_the_notebook_rows(smoke, tmp_path):
    """The saved model's feature recipe gives the notebook's rows (`wide_by_sequence`): the same
    columns and values, so `vcfnb predict` scores a cohort as the run did."""
    from vcfnb import features

    settings = {"imageType": {"Original": {}}, "featureClass": {"firstorder": ["Mean"]},
                "setting": {"binWidth": 25}}
    f = features.extract(smoke.rois, settings, n_jobs=1, cache_dir=tmp_path, progress=False)
    wide = features.wide_by_sequence(f)
    rows = features.patient_table(f, metastasis.recipe(["T1", "T2", "FS-T2"]))
    assert sorted(rows.columns) == sorted(wide.columns) and len(wide.columns) == 3
    pd.testing.assert_frame_equal(rows[wide.columns].sort_index(), wide.sort_index(),
                                  check_names=False)


def test_nadeau_bengio_ci_with_single_case_folds():
    """10-fold CV of a smoke-sized cohort leaves one positive lesion in some folds: each
    fold's AUC is still defined, so the corrected CI and the comparison are computed."""
    from vcfnb import stats

    g = np.random.default_rng(0)
    y = np.r_[np.ones(12, int), np.zeros(24, int)]
    rows = []
    for r in range(2):
        fold = models.cv_splitter(10, rng=r).split(np.zeros((36, 1)), y)
        for k, (_, te) in enumerate(fold):
            for m in ("a", "b"):
                rows += [{"model": m, "split": "cv", "patient_id": str(i), "y_true": y[i],
                          "score": y[i] * (m == "a") + g.normal(), "score_kind": "decision",
                          "fold": k, "repeat": r} for i in te]
    pred = pd.DataFrame(rows)
    perf = stats.evaluate(pred, ci="nadeau-bengio", cutoff=None).set_index("model")
    assert (perf.ci_low < perf.auc).all() and (perf.auc < perf.ci_high).all()
    comp = stats.cv_delong_pairs(pred, split="cv")
    assert comp.n_folds.iat[0] == 20 and 0 <= comp.p_value.iat[0] <= 1
