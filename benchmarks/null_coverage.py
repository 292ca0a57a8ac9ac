"""Benchmark: do the headline models' confidence intervals hold on NULL cohorts?

Runs each study notebook on built-in simulated cohorts with **no signal**
(``synthetic_signal: 0``) over many seeds and reads every run's ``metrics.json`` and
``tables/predictions.csv``. For each study's ``main_models`` on its headline split (``test`` for
hold-out studies, ``cv`` for a CV-only study) it reports:

- the **coverage** of AUC = 0.5 by the model's nominal 95 % CI, with a one-sided exact binomial
  test of "coverage below 95 %" (the check: p >= 0.01);
- the **mean AUC** (the check: within [0.4, 0.6]) and, for a CV design, the mean of the
  per-fold AUCs;
- runs whose scores are **constant** (no model could be fitted beyond the prevalence), counted
  separately and left out of the coverage.

The permutation tests are switched off (``n_permutations: 0``): this measures the CIs, not the
permutation p. Every run is independent: a run that fails is listed with its error and the
others go on. Runs are executed two at a time (``--jobs``), each notebook with ``n_jobs: 1``.

It is slow (4 studies x 30 seeds of a smoke run: hours on a 2-core machine), so ``make benchmark``
does not run it: call it explicitly, e.g. ::

    python benchmarks/null_coverage.py --studies metastasis_lytic_blastic --seeds 30
    python benchmarks/null_coverage.py --seeds 30 --out benchmarks/results/null_coverage.csv

Exit code 1 when a check fails for a study with at least ``--min-runs`` usable runs.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats as ss
from sklearn.metrics import roc_auc_score

ROOT = Path(__file__).resolve().parents[1]
STUDIES = ("metastasis_lytic_blastic", "osteoporosis_mri", "ovf_prediction_ct",
           "vcf_benign_malignant")


def _one_run(study: str, seed: int, work: str) -> dict:
    """Execute one notebook on a signal-0 smoke cohort; return where its report is or the error."""
    import papermill as pm

    out = Path(work) / f"{study}-seed{seed}"
    params = {"synthetic_size": "smoke", "synthetic_signal": 0.0, "seed": int(seed),
              "n_permutations": 0, "n_jobs": 1, "out_dir": str(out / "report"),
              "cache_dir": str(Path(work) / "cache")}
    t0 = time.perf_counter()
    try:
        out.mkdir(parents=True, exist_ok=True)  # papermill does not create the output folder
        pm.execute_notebook(str(ROOT / "notebooks" / f"{study}.ipynb"), str(out / "run.ipynb"),
                            kernel_name="vcfnb", parameters=params, cwd=str(ROOT / "notebooks"),
                            progress_bar=False)
        return {"study": study, "seed": seed, "report": str(out / "report"), "error": "",
                "seconds": time.perf_counter() - t0}
    except Exception as exc:  # noqa: BLE001 - one failed run must not stop the batch
        return {"study": study, "seed": seed, "report": str(out / "report"),
                "error": f"{type(exc).__name__}: {str(exc).splitlines()[-1][:200] if str(exc) else ''}",
                "seconds": time.perf_counter() - t0}


def _fold_auc(pred: pd.DataFrame) -> float:
    """Mean AUC over CV folds (and repeats) of one model's ``cv`` rows; NaN without folds."""
    if "fold" not in pred or pred["fold"].isna().all():
        return float("nan")
    keys = ["repeat", "fold"] if "repeat" in pred and pred["repeat"].notna().any() else ["fold"]
    aucs = [roc_auc_score(g.y_true, g.score) for _, g in pred.groupby(keys)
            if g.y_true.nunique() == 2]
    return float(np.mean(aucs)) if aucs else float("nan")


def rows_of(run: dict) -> list[dict]:
    """One row per main model of a finished run: AUC, CI, covered, constant scores."""
    rep = Path(run["report"])
    m = json.loads((rep / "metrics.json").read_text(encoding="utf-8"))
    pred = pd.read_csv(rep / "tables" / "predictions.csv", dtype={"patient_id": str})
    rows = []
    for model in m["main_models"]:
        splits = m["models"].get(model, {})
        split = next((s for s in ("test", "cv", "final") if s in splits), None)
        if split is None:
            continue
        e = splits[split]
        p = pred[(pred.model == model) & (pred.split == split)]
        constant = bool(p.score.nunique() <= 1)
        lo, hi = e.get("ci_low"), e.get("ci_high")
        rows.append({"study": run["study"], "seed": run["seed"], "model": model, "split": split,
                     "n": e.get("n"), "auc": e.get("auc"), "ci_low": lo, "ci_high": hi,
                     "ci_method": e.get("ci_method"), "constant": constant,
                     "covered": _covered(constant, e.get("auc"), lo, hi),
                     "fold_auc": _fold_auc(p) if split == "cv" else float("nan")})
    return rows


def _covered(constant: bool, auc, lo, hi) -> bool | None:
    """Whether the CI holds 0.5; None when not judged (constant scores, or no CI). A missing
    CI at AUC 0 or 1 (DeLong's variance is 0 there: the scores separate the classes) counts as
    not covering: the interval has shrunk to the point, which is not 0.5."""
    def missing(v) -> bool:
        return v is None or (isinstance(v, float) and np.isnan(v))

    if constant:
        return None
    if missing(lo) or missing(hi):
        return False if auc is not None and not missing(auc) and auc in (0.0, 1.0) else None
    return bool(lo <= 0.5 <= hi)


def summarise(table: pd.DataFrame, *, min_runs: int = 10) -> tuple[pd.DataFrame, list[str]]:
    """Coverage with the one-sided binomial p, mean AUC, constant runs, per study and model."""
    out, problems = [], []
    nan = pd.Series(float("nan"), index=table.index)
    table = table.assign(covered=[  # rows written before the AUC-0/1 rule was applied
        c if pd.notna(c) else _covered(bool(k), a, lo, hi)
        for c, k, a, lo, hi in zip(table.covered, table.constant, table.get("auc", nan),
                                   table.get("ci_low", nan), table.get("ci_high", nan))])
    for (study, model), g in table.groupby(["study", "model"]):
        usable = g[~g.constant & g.covered.notna()]
        k, n = int(usable.covered.astype(bool).sum()), len(usable)
        p = ss.binomtest(k, n, 0.95, alternative="less").pvalue if n else float("nan")
        mean_auc = float(usable.auc.mean()) if n else float("nan")
        row = {"study": study, "model": model, "runs": len(g), "constant_runs": int(g.constant.sum()),
               "covered": k, "usable": n, "coverage": k / n if n else float("nan"),
               "binomial_p_below_95": p, "mean_auc": mean_auc,
               "mean_fold_auc": float(usable.fold_auc.mean()) if n else float("nan"),
               "ci_method": ",".join(sorted(set(map(str, g.ci_method))))}
        out.append(row)
        if n >= min_runs:
            if p < 0.01:
                problems.append(f"{study}/{model}: coverage {k}/{n} is below 95 % (p = {p:.4f})")
            if not 0.4 <= mean_auc <= 0.6:
                problems.append(f"{study}/{model}: mean null AUC {mean_auc:.3f} outside [0.4, 0.6]")
            mf = row["mean_fold_auc"]
            if np.isfinite(mf) and not 0.4 <= mf <= 0.6:
                problems.append(f"{study}/{model}: mean fold AUC {mf:.3f} outside [0.4, 0.6]")
    return pd.DataFrame(out), problems


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--studies", nargs="+", default=list(STUDIES), choices=STUDIES)
    ap.add_argument("--seeds", type=int, default=30, help="seeds 0..N-1 per study (default 30)")
    ap.add_argument("--first-seed", type=int, default=1000,
                    help="first seed (default 1000: away from the notebooks' default seed 0)")
    ap.add_argument("--jobs", type=int, default=2, help="notebooks run at the same time")
    ap.add_argument("--min-runs", type=int, default=10,
                    help="usable runs needed before a study's checks count")
    ap.add_argument("--work", default="", help="folder for the runs (default: a temporary one)")
    ap.add_argument("--out", default="",
                    help="per-run table (CSV), appended run by run; an existing one is resumed "
                         "(default: null_coverage.csv in --work)")
    args = ap.parse_args(argv)
    work = Path(args.work or tempfile.mkdtemp(prefix="vcfnb-null-"))
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("VCFNB_DATA_DIR", str(work / "data"))  # never the repo's data/
    jobs = [(s, args.first_seed + i) for s in args.studies for i in range(args.seeds)]
    out_csv = Path(args.out) if args.out else work / "null_coverage.csv"
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    done = pd.read_csv(out_csv) if out_csv.exists() and out_csv.stat().st_size else pd.DataFrame()
    if len(done):  # resume: the runs already in the table are not run again
        seen = set(zip(done.study, done.seed))
        jobs = [j for j in jobs if j not in seen]
        print(f"resuming: {len(seen)} run(s) already in {out_csv}", flush=True)
    t0 = time.perf_counter()
    failed = []
    with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futs = [pool.submit(_one_run, s, seed, str(work)) for s, seed in jobs]
        for i, f in enumerate(as_completed(futs), 1):
            r = f.result()
            if not r["error"]:
                try:
                    rows = rows_of(r)
                except Exception as exc:  # noqa: BLE001 - an unreadable report is a failed run
                    r["error"] = f"report not readable: {type(exc).__name__}: {exc}"
                else:  # each finished run is appended at once: nothing is lost on a stop
                    pd.DataFrame(rows).to_csv(out_csv, mode="a", index=False,
                                              header=not out_csv.exists()
                                              or out_csv.stat().st_size == 0)
            if r["error"]:
                failed.append(r)
            print(f"[{i}/{len(jobs)}] {r['study']} seed {r['seed']}: "
                  f"{'FAILED ' + r['error'] if r['error'] else 'ok'} ({r['seconds']:.0f} s)",
                  flush=True)
    table = pd.read_csv(out_csv) if out_csv.exists() and out_csv.stat().st_size else \
        pd.DataFrame()
    table = table[table.study.isin(args.studies)] if len(table) else table
    problems = [f"{r['study']} seed {r['seed']} failed: {r['error']}" for r in failed]
    if table.empty:
        print("no usable run")
        return 1
    summary, checks = summarise(table, min_runs=args.min_runs)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(summary.round(4).to_string(index=False))
    print(f"total wall time: {time.perf_counter() - t0:.0f} s for {len(jobs)} runs; "
          f"load average at end: {os.getloadavg()[0]:.1f}")
    for p in problems + checks:
        print("FAIL:", p)
    return 1 if problems or checks else 0


if __name__ == "__main__":
    sys.exit(main())
