"""Benchmark: the LASSO path solvers on the refit a label-permutation test repeats.

Times one whole-pipeline radscore refit as the osteoporosis study's permutation test runs it
(:func:`vcfnb.studies.osteoporosis.fit_radscore`: z-score → LASSO with lambda by 10-fold CV
(1-SE rule, deviance), 5 out-of-fold models plus the full one, the probability link) on a
simulated feature table of the paper's shape (112 training patients × 340 correlated
features), once with the real labels and once with shuffled labels (a permutation: its
small-lambda fits are near-separable and the slowest), with ``solver="liblinear"`` (the
baseline, measured in the same run) and ``solver="cd"`` (:mod:`vcfnb.lasso_cd`, glmnet's
coordinate descent). Prints ``ratio`` lines (liblinear time / cd time, median of ``--repeats``)
and checks that both solvers chose the same lambda and the same features on the real labels.

    python benchmarks/lasso_path.py            # 3 repeats
    python benchmarks/lasso_path.py --quick    # 1 repeat, 50 patients × 60 features
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings

import numpy as np
import pandas as pd
from _common import finish, ratio

import vcfnb as vc
from vcfnb.lasso_cd import l1_logistic_path
from vcfnb.studies import osteoporosis as study


def table(n: int, p: int, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """Correlated features (40 latent factors, as radiomics families) and a 2-feature signal."""
    g = np.random.default_rng(seed)
    X = g.normal(size=(n, 40)) @ g.normal(size=(40, p)) + 0.5 * g.normal(size=(n, p))
    X = pd.DataFrame(X, columns=[f"f{i}" for i in range(p)])
    y = (X.f0 + X.f1 + g.normal(size=n) * X[["f0", "f1"]].sum(axis=1).std() > 0).astype(int)
    return X, y.to_numpy()


def refit(X: pd.DataFrame, y: np.ndarray, solver: str):
    model = vc.models.RadscoreModel(scaler="zscore", cv=10, rule="1se", scoring="deviance",
                                    n_lambdas=25, random_state=0, solver=solver)
    t0 = time.perf_counter()
    fit = study.fit_radscore(model, X, pd.Series(y, index=X.index), cv=5, rng=1,
                             test_scores="full")
    return time.perf_counter() - t0, fit


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="1 repeat on a smaller table")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    n, p, reps = (50, 60, 1) if args.quick else (112, 340, args.repeats)
    X, y = table(n, p)
    warnings.simplefilter("ignore")
    l1_logistic_path(X.to_numpy()[:10, :3], y[:10], np.array([0.1]))  # compile once, untimed
    problems = []
    print(f"table: {n} patients x {p} features; radscore refit = 6 LASSO fits with 10-fold "
          f"lambda CV (66 paths of 25 lambdas); median of {reps}")
    for label, labels in (("real labels", y), ("shuffled labels", np.random.default_rng(5).permutation(y))):
        times = {}
        fits = {}
        for solver in ("liblinear", "cd"):
            runs = [refit(X, labels, solver) for _ in range(reps)]
            times[solver] = statistics.median(r[0] for r in runs)
            fits[solver] = runs[0][1].full
        print(f"{label}: liblinear {times['liblinear']:.2f} s, cd {times['cd']:.2f} s")
        ratio(f"liblinear/cd radscore refit, {label}", times["liblinear"] / times["cd"])
        if label == "real labels":
            a, b = fits["liblinear"], fits["cd"]
            same = (a.lasso_.lambda_ == b.lasso_.lambda_
                    and sorted(a.coef_.index) == sorted(b.coef_.index))
            print(f"same lambda and features on the real labels: {same} "
                  f"(lambda {a.lasso_.lambda_:.4g} / {b.lasso_.lambda_:.4g}; "
                  f"{len(a.coef_)} / {len(b.coef_)} features)")
            if not same:
                problems.append("liblinear and cd chose different lambdas or features")
    return finish(problems)


if __name__ == "__main__":
    sys.exit(main())
