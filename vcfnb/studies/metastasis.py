"""Study glue for seed 004 (osteolytic vs osteoblastic spinal metastasis).

Only what is specific to this study lives here; the generic steps are vcfnb.features,
vcfnb.selection, vcfnb.models and vcfnb.stats calls.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as sps
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sklearn.svm import SVC

from vcfnb import selection
from vcfnb.features import wide_by_sequence  # re-exported: moved to vcfnb.features

__all__ = ["PAPER_FEATURE_COUNTS", "SEMANTIC", "apply_positive_class", "feature_class_counts",
           "wide_by_sequence", "RadiomicsCV", "radiomics_cv", "cv_performance",
           "radiomics_pipeline", "semantic_pipeline", "selection_frequency", "mvr_correlation"]

#: seed 004: 107 original-image features per sequence
PAPER_FEATURE_COUNTS = {"firstorder": 18, "shape": 14, "glcm": 24, "glszm": 16, "glrlm": 16,
                        "gldm": 14, "ngtdm": 5}
#: the five semantic reads of seed 004 table 1 (columns of cases.csv)
SEMANTIC = ["si_t1", "si_t2", "si_fst2", "soft_tissue_mass", "severe_compression"]


def apply_positive_class(cases: pd.DataFrame, positive_class: str, *,
                         column: str = "lesion_type", outcome: str = "outcome") -> pd.DataFrame:
    """Return ``cases`` with ``outcome`` = 1 for ``positive_class`` (paper: osteoblastic).

    Raises when the class is not one of the values of ``column``.
    """
    if column not in cases:
        return cases.copy()
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
    held-out lesions.
    """
    return Pipeline([
        ("zscore", StandardScaler().set_output(transform="pandas")),
        ("sfs", selection.SFSSelector(n_splits=n_splits, n_repeats=n_repeats, tol=tol,
                                      max_features=max_features, random_state=random_state,
                                      n_jobs=n_jobs)),
        ("svm", SVC(kernel="rbf")),  # scores are decision values; its own call is > 0
    ])


def semantic_pipeline(categorical=("si_t1", "si_t2", "si_fst2"),
                      binary=("soft_tissue_mass", "severe_compression")) -> Pipeline:
    """One-hot semantic reads + binary findings → logistic regression (SPSS-style, unpenalised)."""
    pre = ColumnTransformer([
        ("cat", OneHotEncoder(drop="first", handle_unknown="ignore", sparse_output=False),
         list(categorical)),
        ("bin", "passthrough", list(binary)),
    ])
    return Pipeline([("encode", pre), ("lr", LogisticRegression(C=1e6, max_iter=5000))])


def selection_frequency(fitted_pipelines, full_selection: list[str]) -> pd.DataFrame:
    """How often each feature was selected across the outer folds, beside the full-data choice."""
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
        m = mvr.loc[features.index].to_numpy(float)
        ok = np.isfinite(x) & np.isfinite(m)
        r, p = sps.pearsonr(x[ok], m[ok]) if ok.sum() > 2 else (np.nan, np.nan)
        rows.append({"feature": f, "pearson_r": r, "p_value": p, "n": int(ok.sum())})
    return pd.DataFrame(rows)


@dataclass
class RadiomicsCV:
    """Out-of-fold predictions of the whole radiomics pipeline and what each fold selected."""

    predictions: pd.DataFrame
    frequency: pd.DataFrame
    full_selection: list
    full_history: pd.DataFrame


def radiomics_cv(X: pd.DataFrame, y, *, cv_folds: int = 10, sfs_repeats: int = 10,
                 sfs_tol: float = 1e-6, sfs_max_features: int | None = 10, rng=None,
                 n_jobs: int = 1) -> RadiomicsCV:
    """Evaluate z-score → SFS(SVM-RBF) → SVM-RBF by outer stratified k-fold CV.

    The selection runs inside each outer training fold (so the CV AUC is not optimistic); the
    same pipeline is also fitted on all lesions to report the features "as the paper reports
    them", with their selection frequency across the outer folds.
    """
    from sklearn.base import clone
    from sklearn.model_selection import StratifiedKFold

    gen = np.random.default_rng(rng)
    outer_seed, inner_seed = (int(v) for v in gen.integers(0, 2**31 - 1, 2))
    pipe = radiomics_pipeline(n_splits=cv_folds, n_repeats=sfs_repeats, tol=sfs_tol,
                              max_features=sfs_max_features, random_state=inner_seed,
                              n_jobs=n_jobs)
    y = np.asarray(y).astype(int)
    folds = StratifiedKFold(n_splits=cv_folds, shuffle=True, random_state=outer_seed)
    score = np.full(len(y), np.nan)
    fold_id = np.full(len(y), -1)
    fitted = []
    for k, (tr, te) in enumerate(folds.split(X, y)):
        p = clone(pipe).fit(X.iloc[tr], y[tr])
        score[te] = p.decision_function(X.iloc[te])
        fold_id[te] = k
        fitted.append(p)
    full = clone(pipe).fit(X, y)
    preds = pd.DataFrame({"y_true": y, "score": score, "fold": fold_id}, index=X.index)
    sel_full = list(full.named_steps["sfs"].ranking_)
    return RadiomicsCV(preds, selection_frequency(fitted, sel_full), sel_full,
                       full.named_steps["sfs"].history_)


def cv_performance(predictions: dict, cutoffs: dict) -> pd.DataFrame:
    """Table 4: AUC (DeLong 95% CI) and sensitivity, specificity, PPV, NPV (with counts) and
    accuracy of out-of-fold scores at each model's own decision rule (``cutoffs[name]``: 0 for
    SVM decision values, 0.5 for logistic-regression probabilities)."""
    from vcfnb import stats

    rows = []
    for name, pred in predictions.items():
        auc = stats.roc_auc_ci(pred["y_true"], pred["score"])
        bm = stats.binary_metrics(pred["y_true"], pred["score"], cutoffs[name])
        row = {"model": name, "split": "cv", "n": int(auc.n), "auc": auc.auc,
               "ci_low": auc.ci_low, "ci_high": auc.ci_high, "auc_p_value": auc.p_value,
               "cutoff": cutoffs[name]}
        for m, v in bm.iterrows():
            row[m] = v.estimate
            row[f"{m}_count"] = v["count"]
        rows.append(row)
    return pd.DataFrame(rows)
