"""Study rules of seed 004 (osteolytic vs osteoblastic spinal metastasis).

Only what is specific to this study lives here: what a cohort must hold (:data:`REQUIREMENTS`),
the positive-class rule, the paper's two model pipelines, its feature counts and the tables that
read a fitted pipeline (selection frequency, MVR correlation). The evaluation (predictions
table, statistics, permutation test) is done in the notebook with ``vcfnb.models``,
``vcfnb.stats`` and the run (:mod:`vcfnb.report`).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats as sps
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sklearn.svm import SVC

from vcfnb import selection
from vcfnb import stats as vstats
from vcfnb.contract import Column, Folds, Requirements

__all__ = ["PAPER_FEATURE_COUNTS", "SEMANTIC", "CLASSES", "REQUIREMENTS",
           "apply_positive_class", "feature_class_counts", "radiomics_pipeline",
           "semantic_pipeline", "semantic_table", "selection_frequency", "mvr_correlation",
           "recipe"]

#: seed 004: 107 original-image features per sequence
PAPER_FEATURE_COUNTS = {"firstorder": 18, "shape": 14, "glcm": 24, "glszm": 16, "glrlm": 16,
                        "gldm": 14, "ngtdm": 5}
#: the five semantic reads of seed 004 table 1 (columns of cases.csv)
SEMANTIC = ["si_t1", "si_t2", "si_fst2", "soft_tissue_mass", "severe_compression"]
#: the CT reference standard's two classes (``lesion_type`` of cases.csv)
CLASSES = ("osteolytic", "osteoblastic")
_SI = ("low", "iso", "high")

REQUIREMENTS = Requirements(
    study="metastasis_lytic_blastic",
    design="cv",
    sequences=("T1", "T2", "FS-T2"),
    rois=(),  # one lesion ROI per lesion and sequence, whatever its name
    readers={"1": "every step (the lesion ROI on each sequence)"},
    columns=(
        Column("{outcome}", "binary", needed_for="the outcome (recomputed from lesion_type and "
               "positive_class)", outcome=True),
        Column("lesion_type", "category", CLASSES, needed_for="the CT reference standard, the "
               "positive class and tables 2-3", outcome=True),
        Column("si_t1", "category", _SI, needed_for="the semantic model (table 3)"),
        Column("si_t2", "category", _SI, needed_for="the semantic model (table 3)"),
        Column("si_fst2", "category", _SI, needed_for="the semantic model (table 3)"),
        Column("soft_tissue_mass", "binary", needed_for="the semantic model (table 3)"),
        Column("severe_compression", "binary", needed_for="the semantic model (table 3)"),
        Column("primary_tumor", "text", needed_for="table 2", missing_ok=True),
        Column("location", "text", needed_for="table 2", missing_ok=True),
        Column("age", "numeric", needed_for="table 2", missing_ok=True),
        Column("sex", "text", needed_for="table 2", missing_ok=True),
        Column("mvr", "numeric", needed_for="figure 3 (CT HU ratio vs selected features)",
               missing_ok=True),
    ),
    folds=(Folds("cv_folds", on="all"),
           Folds("sfs_folds", on="all", within=("cv_folds",), when="sfs_folds"),
           Folds("cv_folds", on="all", within=("cv_folds",), when="sfs_folds=0")),
    test_size_param=None,
    main_models=("radiomics",),
    notes=("Evaluated by cross-validation on all lesions (as the paper): a `split` column is "
           "ignored.", "One lesion ROI per lesion and sequence (any ROI name); a lesion "
           "without a usable ROI on every sequence is left out of both models and the report "
           "counts it.", "`positive_class` (default osteoblastic) must be one of the "
           "`lesion_type` values; the outcome column is recomputed from it.",
           "`sfs_folds: 0` (the default) runs the inner forward-selection CV with `cv_folds` "
           "folds inside each outer training fold."),
)


def apply_positive_class(cases: pd.DataFrame, positive_class: str, *,
                         column: str = "lesion_type", outcome: str = "outcome") -> pd.DataFrame:
    """Return ``cases`` with ``outcome`` = 1 for ``positive_class`` (paper: osteoblastic).

    Raises when the class is not one of the values of ``column``.

    Examples
    --------
    >>> cases = pd.DataFrame({"lesion_type": ["osteolytic", "osteoblastic"]})
    >>> apply_positive_class(cases, "osteolytic")["outcome"].tolist()
    [1, 0]
    """
    classes = set(cases[column].dropna().unique())
    if positive_class not in classes:
        raise ValueError(f"positive_class {positive_class!r} not among {sorted(classes)} of "
                         f"cases.csv column {column!r}")
    out = cases.copy()
    out[outcome] = (out[column] == positive_class).astype(int)
    return out


def feature_class_counts(columns, *, prefix_sep: str = "_") -> pd.DataFrame:
    """Features per pyradiomics class and sequence beside the paper's counts (107 per sequence).

    ``columns`` are wide feature names ``<sequence>_original_<class>_<feature>``.
    """
    rows = []
    for c in columns:
        parts = c.split("original_", 1)
        if len(parts) != 2:
            continue
        seq = parts[0].rstrip(prefix_sep)
        fclass = parts[1].split("_", 1)[0]
        fclass = "shape" if fclass.startswith("shape") else fclass
        rows.append((seq, fclass))
    df = pd.DataFrame(rows, columns=["sequence", "feature_class"])
    table = df.value_counts().unstack("sequence", fill_value=0)
    table["paper"] = [PAPER_FEATURE_COUNTS.get(i, 0) for i in table.index]
    order = [k for k in PAPER_FEATURE_COUNTS if k in table.index]
    table = table.loc[order + [i for i in table.index if i not in order]]
    table.loc["total"] = table.sum()
    return table.reset_index()


def radiomics_pipeline(*, n_splits: int = 10, n_repeats: int = 10, tol: float = 1e-6,
                       max_features: int | None = 10, random_state: int = 0,
                       n_jobs: int = 1) -> Pipeline:
    """z-score → SVM-RBF forward selection (repeated k-fold CV AUC, stop at gain < tol) → SVM-RBF.

    Fitted as one pipeline inside every outer fold, so the selection never sees the fold's
    held-out lesions. Its scores are SVM decision values (the SVM's own call is > 0).
    """
    return Pipeline([
        ("zscore", StandardScaler().set_output(transform="pandas")),
        ("sfs", selection.SFSSelector(n_splits=n_splits, n_repeats=n_repeats, tol=tol,
                                      max_features=max_features, random_state=random_state,
                                      n_jobs=n_jobs)),
        ("svm", SVC(kernel="rbf")),
    ])


def semantic_pipeline(categorical=("si_t1", "si_t2", "si_fst2"),
                      binary=("soft_tissue_mass", "severe_compression")) -> Pipeline:
    """One-hot semantic reads + binary findings → logistic regression (SPSS-style, unpenalised).

    Solved by Newton's method (``newton-cholesky``): the same optimum as L-BFGS to ~1e-3 in
    the coefficients, in a few iterations (about 6x faster per fit; the repeated CV and its
    permutation test refit it thousands of times).
    """
    pre = ColumnTransformer([
        ("cat", OneHotEncoder(drop="first", handle_unknown="ignore", sparse_output=False),
         list(categorical)),
        ("bin", "passthrough", list(binary)),
    ])
    return Pipeline([("encode", pre), ("lr", LogisticRegression(C=1e6, solver="newton-cholesky",
                                                                 max_iter=1000))])


def semantic_table(cases: pd.DataFrame, *, group: str = "lesion_type",
                   categorical_test: str = "pearson") -> pd.DataFrame:
    """Table 3: the five semantic reads compared between the classes.

    ``categorical_test="pearson"`` (default) is the paper's SPSS "Pearson Chi-Square" without
    continuity correction (soft-tissue mass 12/26 vs 47/52: χ² = 18.404, as printed);
    ``"auto"`` the corrected test (Yates for 2×2, Fisher's exact test when an expected count is
    below 5). See :func:`vcfnb.stats.baseline_table`.
    """
    return vstats.baseline_table(cases, group=group, variables=SEMANTIC, categorical=SEMANTIC,
                                 categorical_test=categorical_test)


def recipe(sequences, *, mask_grid: str = "strict", reader: str = "1") -> dict:
    """The feature recipe of this study's rows (``<sequence>_<feature>``, one lesion ROI per
    sequence, any ROI name) that a saved model keeps to rebuild them from a new cohort."""
    return {"sequences": [str(s) for s in sequences], "rois": None, "reader": str(reader),
            "aggregate": "mean", "mask_grid": mask_grid,
            "description": "one lesion ROI per sequence; 107 original-image features each"}


def selection_frequency(fitted_pipelines, full_selection: list[str]) -> pd.DataFrame:
    """How often each feature was selected across the outer folds, beside the full-data choice.

    ``fitted_pipelines``: the fold pipelines (e.g. ``vcfnb.models.cv_fit(...).estimators``).
    """
    counts: dict[str, int] = {}
    for p in fitted_pipelines:
        for f in p.named_steps["sfs"].ranking_:
            counts[f] = counts.get(f, 0) + 1
    n = max(len(fitted_pipelines), 1)
    df = pd.DataFrame({"feature": list(counts), "folds_selected": list(counts.values())})
    df["frequency"] = df.folds_selected / n
    df["selected_on_full_data"] = df.feature.isin(full_selection)
    missing = [f for f in full_selection if f not in counts]
    if missing:
        df = pd.concat([df, pd.DataFrame({"feature": missing, "folds_selected": 0,
                                          "frequency": 0.0, "selected_on_full_data": True})])
    return df.sort_values(["folds_selected", "feature"], ascending=[False, True]
                          ).reset_index(drop=True)


def mvr_correlation(features: pd.DataFrame, mvr: pd.Series, selected: list[str]) -> pd.DataFrame:
    """Pearson r (and p) between the CT HU ratio (MVR) and each selected radiomics feature."""
    rows = []
    for f in selected:
        x = features[f].to_numpy(float)
        m = pd.to_numeric(mvr.reindex(features.index), errors="coerce").to_numpy(float)
        ok = np.isfinite(x) & np.isfinite(m)
        r, p = sps.pearsonr(x[ok], m[ok]) if ok.sum() > 2 else (np.nan, np.nan)
        rows.append({"feature": f, "pearson_r": r, "p_value": p, "n": int(ok.sum())})
    return pd.DataFrame(rows, columns=["feature", "pearson_r", "p_value", "n"])
