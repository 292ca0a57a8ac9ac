"""Benchmark: forward selection (``SFSSelector``) on the compiled SVM path vs the libsvm path.

Times ``SFSSelector(n_splits=10, n_repeats=1, max_features=10).fit`` (the metastasis study's
inner selection: RBF SVM, ``C=1``, ``gamma="scale"``, every candidate scored by a 10-fold CV
AUC) on a seeded table of the paper's radiomics shape (70 lesions x 321 correlated features,
signal in 2 of them), once on the compiled path (:mod:`vcfnb.svm_smo`: libsvm's solver ported
to numba, all folds of a candidate in one call) and once on the libsvm path it replaced (one
``sklearn.svm._libsvm.fit`` call and a numpy AUC per fold; forced with
``_RBFKernelScorer._verified = False``), alternating, in the same process. Prints the median
times, ``ratio`` lines (libsvm path / compiled path, wall and CPU time) and checks that both
paths give the identical selection history (``assert_frame_equal``, exact).

    python benchmarks/sfs_speed.py            # 3 repeats of each path
    python benchmarks/sfs_speed.py --quick    # 1 repeat, 70 x 60, max_features 4
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np
import pandas as pd
from _common import finish, ratio

from vcfnb import svm_smo
from vcfnb.selection import SFSSelector, _RBFKernelScorer


def table(n: int, p: int, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """Correlated features (40 latent factors, as radiomics families) and a 2-feature signal."""
    g = np.random.default_rng(seed)
    X = g.normal(size=(n, 40)) @ g.normal(size=(40, p)) + 0.5 * g.normal(size=(n, p))
    X = pd.DataFrame(X, columns=[f"f{i}" for i in range(p)])
    X = (X - X.mean()) / X.std()  # the study z-scores before the selection
    y = (X.f0 - X.f1 + 1.5 * g.normal(size=n) > 0).astype(int)
    return X, y.to_numpy()


def run(X: pd.DataFrame, y: np.ndarray, compiled: bool, **kw):
    _RBFKernelScorer._verified = True if compiled else False
    t0, c0 = time.perf_counter(), time.process_time()
    sfs = SFSSelector(**kw).fit(X, y)
    return time.perf_counter() - t0, time.process_time() - c0, sfs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="1 repeat on a smaller table")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    n, p, max_features, reps = (70, 60, 4, 1) if args.quick else (70, 321, 10, args.repeats)
    X, y = table(n, p)
    kw = dict(n_splits=10, n_repeats=1, max_features=max_features, random_state=0)
    problems = []
    # untimed: numba's compile (or cache load) and both paths' first-use checks against SVC
    _RBFKernelScorer._verified = None
    _RBFKernelScorer._libsvm_verified = None
    SFSSelector(**{**kw, "max_features": 1}).fit(X.iloc[:, :5], y)
    if _RBFKernelScorer._verified is not True:
        problems.append("the compiled path's first-use check against SVC failed")
    _RBFKernelScorer._verified = False
    SFSSelector(**{**kw, "max_features": 1}).fit(X.iloc[:, :5], y)
    flagged = [0, 0]
    fold_aucs = svm_smo.fold_aucs

    def counting(*a, **k):  # folds scored again because of near-ties (the libsvm path's sum)
        out = fold_aucs(*a, **k)
        flagged[0] += int(out[2].sum())
        flagged[1] += out[2].size
        return out

    svm_smo.fold_aucs = counting
    runs: dict[str, list] = {"compiled": [], "libsvm": []}
    try:
        for _ in range(reps):  # alternating, so both paths see the same machine load
            runs["compiled"].append(run(X, y, True, **kw))
            runs["libsvm"].append(run(X, y, False, **kw))
    finally:
        svm_smo.fold_aucs = fold_aucs
        _RBFKernelScorer._verified = None
    wall = {k: statistics.median(r[0] for r in v) for k, v in runs.items()}
    cpu = {k: statistics.median(r[1] for r in v) for k, v in runs.items()}
    fast, slow = runs["compiled"][0][2], runs["libsvm"][0][2]
    n_cand = sum(p - i for i in range(len(fast.history_)))
    print(f"table: {n} x {p}; SFSSelector(n_splits=10, n_repeats=1, max_features="
          f"{max_features}): {len(fast.history_)} steps, {n_cand} candidates x 10 folds; "
          f"median of {reps}")
    for k in runs:
        print(f"{k} path: wall {wall[k]:.2f} s, CPU {cpu[k]:.2f} s "
              f"({1e6 * cpu[k] / n_cand:.0f} us CPU per candidate)")
    print(f"folds scored again for near-ties: {flagged[0]} of {flagged[1]}")
    for label, t in (("wall", wall), ("CPU", cpu)):
        ratio(f"libsvm path / compiled path, SFSSelector.fit {label} time",
              t["libsvm"] / t["compiled"])
    try:
        for r in runs["compiled"][1:] + runs["libsvm"]:
            pd.testing.assert_frame_equal(r[2].history_, fast.history_, check_exact=True)
        same = True
    except AssertionError as e:
        same = False
        print(e)
    print(f"histories identical (assert_frame_equal, exact): {same}")
    print(fast.history_.to_string(index=False))
    if not same:
        problems.append("the compiled and libsvm paths gave different selection histories")
    if slow.ranking_ != fast.ranking_:
        problems.append("the compiled and libsvm paths selected different features")
    return finish(problems)


if __name__ == "__main__":
    sys.exit(main())
