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

``--study vcf-a``: the same comparison for one refit of vcf arm A's whole chain as its permutation
test repeats it (:func:`vcfnb.studies.vcf.arm_a_pipeline`: z-score → |r| > 0.99 → oversampled
LASSO with 5-fold lambda CV → RFE → SVM) on a table of the paper's arm A shape (70 × 827), the
LASSO step by liblinear or cd; both must choose the same lambda, LASSO and RFE features.

    python benchmarks/lasso_path.py            # 3 repeats
    python benchmarks/lasso_path.py --quick    # 1 repeat, 50 patients × 60 features
    python benchmarks/lasso_path.py --study vcf-a [--quick]
    python benchmarks/lasso_path.py --study screening [--quick]

``--study screening``: one glmnet path (50 lambdas down to 1 % of lambda_max, glmnet's default
threshold) on a table of the vcf DLRN width (130 training rows x 7,807 correlated columns, as
one inner CV fold of its LASSO), real and shuffled labels, with :mod:`vcfnb.lasso_cd`'s
screening off (the baseline) and on; the coefficients, intercepts and pass counts must be
identical bit for bit.
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
from vcfnb.selection import LassoSelector
from vcfnb.studies import osteoporosis as study


def table(n: int, p: int, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """Correlated features (40 latent factors, as radiomics families) and a 2-feature signal."""
    g = np.random.default_rng(seed)
    X = g.normal(size=(n, 40)) @ g.normal(size=(40, p)) + 0.5 * g.normal(size=(n, p))
    X = pd.DataFrame(X, columns=[f"f{i}" for i in range(p)])
    y = (X.f0 + X.f1 + g.normal(size=n) * X[["f0", "f1"]].sum(axis=1).std() > 0).astype(int)
    return X, y.to_numpy()


def refit_vcf_a(X: pd.DataFrame, y: np.ndarray, solver: str):
    from vcfnb.studies import vcf

    pipe = vcf.arm_a_pipeline(rng=0, lasso_solver=solver)
    t0 = time.perf_counter()
    pipe.fit(X, y)
    return time.perf_counter() - t0, pipe


def same_vcf_a(a, b) -> bool:
    return (a["lasso"].lambda_ == b["lasso"].lambda_
            and a["lasso"].selected_features_ == b["lasso"].selected_features_
            and list(a["rfe"].get_feature_names_out()) == list(b["rfe"].get_feature_names_out()))


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
    ap.add_argument("--study", choices=["osteoporosis", "vcf-a", "screening"],
                    default="osteoporosis",
                    help="whose permutation refit is timed (default: the osteoporosis radscore)")
    args = ap.parse_args(argv)
    if args.study == "vcf-a":
        return main_vcf_a(args)
    if args.study == "screening":
        return main_screening(args)
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


def main_vcf_a(args) -> int:
    n, p, reps = (40, 120, 1) if args.quick else (70, 827, args.repeats)
    X, y = table(n, p, seed=1)
    warnings.simplefilter("ignore")
    l1_logistic_path(X.to_numpy()[:10, :3], y[:10], np.array([0.1]))  # compile once, untimed
    problems = []
    print(f"vcf arm A: {n} training patients x {p} features; one whole-chain refit; "
          f"median of {reps}")
    for label, labels in (("real labels", y),
                          ("shuffled labels", np.random.default_rng(5).permutation(y))):
        runs = {s: [refit_vcf_a(X, labels, s) for _ in range(reps)] for s in ("liblinear", "cd")}
        times = {s: statistics.median(r[0] for r in v) for s, v in runs.items()}
        print(f"{label}: liblinear {times['liblinear']:.2f} s, cd {times['cd']:.2f} s")
        ratio(f"liblinear/cd vcf arm A refit, {label}", times["liblinear"] / times["cd"])
        if label == "real labels":
            a, b = runs["liblinear"][0][1], runs["cd"][0][1]
            same = same_vcf_a(a, b)
            print(f"same lambda and features on the real labels: {same} "
                  f"(lambda {a['lasso'].lambda_:.4g} / {b['lasso'].lambda_:.4g}; "
                  f"{len(a['lasso'].selected_features_)} / {len(b['lasso'].selected_features_)} "
                  "LASSO features)")
            if not same:
                problems.append("liblinear and cd chose different lambdas or features")
    return finish(problems)


def main_screening(args) -> int:
    n, p, reps = (60, 800, 1) if args.quick else (130, 7807, args.repeats)
    X, y = table(n, p, seed=2)
    Xs = ((X - X.mean()) / X.std(ddof=0)).to_numpy()
    l1_logistic_path(Xs[:10, :3], y[:10], np.array([0.1]))  # compile once, untimed
    problems = []
    print(f"one glmnet path of 50 lambdas on {n} rows x {p} columns; CPU s, median of {reps}")
    for label, labels in (("real labels", y),
                          ("shuffled labels", np.random.default_rng(5).permutation(y))):
        yb = labels.astype(float)
        lam = np.abs(Xs.T @ (yb - yb.mean())).max() / n * np.geomspace(1, 0.01, 50)
        tol = LassoSelector(solver="cd", thresh=1e-7)._cd_tol(yb)  # glmnet's default thresh
        times, outs = {}, {}
        for _ in range(reps):
            for screen in (False, True):
                t0 = time.process_time()
                outs[screen] = l1_logistic_path(Xs, yb, lam, tol=tol, screen=screen)
                times.setdefault(screen, []).append(time.process_time() - t0)
        t_off, t_on = statistics.median(times[False]), statistics.median(times[True])
        same = all(np.array_equal(a, b) and np.array_equal(np.signbit(a), np.signbit(b))
                   for a, b in zip(outs[False], outs[True]))
        print(f"{label}: plain {t_off:.3f} s, screened {t_on:.3f} s; "
              f"{int((outs[True][0][-1] != 0).sum())} non-zero at the last lambda; "
              f"identical bit for bit: {same}")
        ratio(f"plain/screened path, {label}", t_off / t_on)
        if not same:
            problems.append(f"screening changed the path ({label})")
    return finish(problems)


if __name__ == "__main__":
    sys.exit(main())
