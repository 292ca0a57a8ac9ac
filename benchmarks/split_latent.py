"""Analysis: is a simulated osteoporosis run's test split unusual in what its images show?

The honest-numbers issue gates the osteoporosis paper run on the test calibration of its headline
model. On seed 0 it fails (slope 0.59, HL not computable) and the question is whether the
method or the split is to blame. The simulator knows each patient's latent marrow state (fat
fraction and trabecular rarefaction, drawn before any image; see
:func:`vcfnb.synth.osteoporosis.latent_state`), which no model sees. This script puts a finished
run's predictions beside that truth:

1. per split and class: the latent fat fraction and rarefaction, T-score, age, and the model's
   mean probability (out-of-fold for the training patients, as the probability link was fitted);
2. per class, test vs training: the difference in latent fat fraction and a Welch t-test;
3. how unusual the run's split is, from the truth alone: the same difference over ``--draws``
   random stratified splits of the same size (``train_test_split(stratify=outcome)``, as the
   study draws its split), and the run's percentile among them;
4. how much of the model's radscore the latent state explains (R^2 of a linear fit).

A split whose test patients of one class sit far out in the latent state gives a miscalibrated
test set to any model, because the images themselves differ. Not run by ``make benchmark``
(it reads a finished run)::

    python benchmarks/split_latent.py --report reports/osteoporosis_mri/paper
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.model_selection import train_test_split

from vcfnb.synth.osteoporosis import latent_state

LATENT = ("fat_fraction", "rarefaction", "t_score", "age")


def run_table(report: Path, model: str) -> pd.DataFrame:
    """One row per internal patient of the run: ``patient_id, split (train|test), y_true,
    probability`` (``train_oof`` for training patients) and ``radscore`` when the run saved one."""
    p = pd.read_csv(report / "tables" / "predictions.csv")
    p = p[(p.model == model) & p.split.isin(["train_oof", "test"])]
    out = p.assign(split=p.split.replace({"train_oof": "train"}))[
        ["patient_id", "split", "y_true", "score"]].rename(columns={"score": "probability"})
    rs = report / "tables" / "radscores.csv"
    if rs.is_file():
        r = pd.read_csv(rs)
        r = r[(r.model == model) & r.split.isin(["train", "test"])]
        out = out.merge(r[["patient_id", "score"]].rename(columns={"score": "radscore"}),
                        on="patient_id", how="left")
    return out.reset_index(drop=True)


def compare(truth: pd.DataFrame, run: pd.DataFrame, *, draws: int = 2000, seed: int = 0
            ) -> dict[str, pd.DataFrame]:
    """The four analyses of the module docstring for ``run`` (:func:`run_table`) against
    ``truth`` (:func:`vcfnb.synth.osteoporosis.latent_state`)."""
    d = run.merge(truth, on="patient_id", how="inner")
    if len(d) != len(run):
        raise ValueError(f"{len(run) - len(d)} patients of the run are not in the simulated "
                         "cohort's latent state: another seed, size or signal?")
    summary = d.groupby(["split", "y_true"]).agg(
        patients=("patient_id", "size"), probability=("probability", "mean"),
        **{v: (v, "mean") for v in LATENT}).reset_index()
    rows, rng = [], np.random.default_rng(seed)
    y = d["y_true"].to_numpy()
    n_test = int((d.split == "test").sum())
    ff = d["fat_fraction"].to_numpy()
    diffs = {0: [], 1: []}
    for _ in range(draws):
        _, te = train_test_split(np.arange(len(d)), test_size=n_test, stratify=y,
                                 random_state=int(rng.integers(2**31 - 1)))
        is_test = np.zeros(len(d), bool)
        is_test[te] = True
        for cls in (0, 1):
            k = y == cls
            diffs[cls].append(ff[k & is_test].mean() - ff[k & ~is_test].mean())
    for cls in (0, 1):
        k = d.y_true == cls
        a, b = d.loc[k & (d.split == "test"), "fat_fraction"], d.loc[
            k & (d.split == "train"), "fat_fraction"]
        diff = float(a.mean() - b.mean())
        null = np.asarray(diffs[cls])
        rows.append({"class": cls, "test_minus_train_fat_fraction": diff,
                     "in_class_sd": float(d.loc[k, "fat_fraction"].std()),
                     "welch_p": float(stats.ttest_ind(a, b, equal_var=False).pvalue),
                     "split_percentile": float(100 * np.mean(null <= diff)),
                     "draws_as_far_from_0": float(np.mean(np.abs(null) >= abs(diff)))})
    out = {"summary": summary, "shift": pd.DataFrame(rows)}
    if "radscore" in d and d["radscore"].notna().all():
        X = np.c_[np.ones(len(d)), d.fat_fraction, d.rarefaction]
        beta, *_ = np.linalg.lstsq(X, d.radscore.to_numpy(), rcond=None)
        res = d.radscore.to_numpy() - X @ beta
        r2 = 1 - res @ res / np.sum((d.radscore - d.radscore.mean()) ** 2)
        out["explained"] = pd.DataFrame([{"radscore_r2_on_latent": float(r2)}])
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--report", type=Path, default=Path("reports/osteoporosis_mri/paper"))
    ap.add_argument("--model", default="", help="default: the run's first main model")
    ap.add_argument("--draws", type=int, default=2000)
    a = ap.parse_args(argv)
    params = json.loads((a.report / "params.json").read_text())
    if params.get("cohort_dir"):
        print(f"{a.report} ran on a user's cohort: there is no latent truth to compare with.")
        return 1
    model = a.model or json.loads((a.report / "metrics.json").read_text())["main_models"][0]
    truth = latent_state(size=params.get("synthetic_size", "smoke"), seed=int(params["seed"]),
                         signal=float(params.get("synthetic_signal", 1.0)))
    res = compare(truth[truth.centre == "internal"], run_table(a.report, model), draws=a.draws)
    pd.set_option("display.width", 160)
    print(f"run {a.report}, model {model}, simulated cohort size "
          f"{params.get('synthetic_size')} seed {params['seed']}")
    for name, table in res.items():
        print(f"\n{name}:\n{table.round(4).to_string(index=False)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
