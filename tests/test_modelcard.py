"""Model card and pre-filled CLEAR/METRICS checklist (vcfnb.modelcard) of a synthetic run."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from vcfnb import io, modelcard, models, stats
from vcfnb.report import Run

SETTINGS = {"imageType": {"Original": {}}, "featureClass": {"firstorder": ["Mean", "Median"]},
            "setting": {"binWidth": 25}}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A finished run made with a ``Run`` on synthetic predictions (no images needed)."""
    base = tmp_path_factory.mktemp("card")
    g = np.random.default_rng(7)
    n = 60
    pids = [f"P{i:03d}" for i in range(n)]
    y = pd.Series((np.arange(n) % 3 == 0).astype(int), index=pids)
    split = pd.Series(np.where(np.arange(n) < 40, "train", "test"), index=pids)
    cases = pd.DataFrame({"patient_id": pids, "outcome": y.to_numpy(), "split": split.to_numpy(),
                          "center": np.where(np.arange(n) % 2, "A", "B")})
    rois = pd.DataFrame({"patient_id": pids, "roi": "lesion", "sequence": "T2", "reader": "1"})
    problems = pd.DataFrame({"row": ["rois.csv:61", "rois.csv:62"], "patient_id": ["X1", "X2"],
                             "file": ["masks/X1.nii.gz", "masks/X2.nii.gz"],
                             "problem": ["empty mask: no voxel", "missing file: masks/X2"]})
    cohort = io.Cohort(folder=base / "cohort", cases=cases, rois=rois, problems=problems,
                       simulated=True)
    out = base / "report"
    run = Run(study="metastasis_lytic_blastic", params={"seed": 0, "test_size": 0.3},
              root=base, out_dir=out, cache_dir=base / "cache", cohort=cohort, simulated=True,
              main_models=["Rad", "Clin"])
    io.write_json(run.params, out / "params.json")
    run.table("cohort_problems", problems)
    io.write_json(run.card_data(), out / "run_card.json")

    X = pd.DataFrame({"T2_original_firstorder_Mean": y * 1.0 + g.normal(size=n),
                      "T2_original_firstorder_Median": g.normal(size=n)}, index=pids)
    tr, te = split[split == "train"].index, split[split == "test"].index
    pipe = models.make_radiomics_pipeline(["zscore", "LR"], rng=0)
    oof = models.cv_predict(pipe, X.loc[tr], y[tr], cv=4, rng=0)
    run.predictions("Rad", "train_oof", score=oof["score"], y_true=y[tr])
    pipe.fit(X.loc[tr], y[tr])
    run.predictions("Rad", "test", score=pd.Series(pipe.predict_proba(X.loc[te])[:, 1],
                                                   index=te), y_true=y[te])
    clin = pd.Series(y * 0.5 + g.normal(size=n), index=pids)
    run.predictions("Clin", "train_oof", score=clin[tr], y_true=y[tr], score_kind="decision")
    run.predictions("Clin", "test", score=clin[te], y_true=y[te], score_kind="decision")
    pred = run.predictions_table
    run.record(stats.evaluate(pred, ci="delong", cutoff="youden", cutoff_split="train_oof"),
               stats.calibration(pred, hl_groups=4, hl_dof={"train_oof": "g-2", "test": "g"}))
    run.record_delong(stats.delong_pairs(pred, split="test"))
    auc = run.models["Rad"]["test"]["auc"]
    run.record_permutation("Rad", models.PermutationResult(
        observed_auc=auc, null_auc=np.linspace(0.3, 0.7, 19), p_value=0.05,
        design="train_test"), split="test")
    run.note("The paper used 10-fold CV; here 4-fold (deviation from the paper).")
    run.note("Small sample: wide confidence intervals.")
    run.save_model("Rad", pipe, feature_recipe={"sequences": ["T2"], "rois": ["lesion"]},
                   feature_columns=list(X.columns), score_kind="probability", X_train=X.loc[tr],
                   settings=SETTINGS)
    run.provenance()
    nb = {"cells": [{"cell_type": "markdown", "metadata": {}, "source":
                     ["# Lytic vs blastic\n", "\n", "**Question.** Is a spinal metastasis\n",
                      "osteolytic or osteoblastic?\n", "\n", "More text.\n"]}],
          "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    (out / "metastasis_lytic_blastic.ipynb").write_text(json.dumps(nb))
    (out / "figures").mkdir(exist_ok=True)
    for name in ("flow_diagram", "case_montage"):
        (out / "figures" / f"{name}.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    modelcard.write_reports(out)
    return out


def test_card_equals_metrics_json(run_dir):
    m = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    card = json.loads((run_dir / "run_card.json").read_text(encoding="utf-8"))
    info = json.loads((run_dir / "model_card.json").read_text(encoding="utf-8"))
    md = (run_dir / "model_card.md").read_text(encoding="utf-8")
    assert info["intended_use"]["question"] == ("Is a spinal metastasis osteolytic or "
                                                "osteoblastic?")
    d = info["data"]
    for k in ("patients", "positive", "negative", "rois"):
        assert d[k] == card[k]
    assert d["simulated"] is True and d["excluded_rows"] == 2
    assert d["excluded_by_kind"] == {"empty mask": 1, "missing file": 1}
    assert {r["center"]: r["patients"] for r in d["centers"]} == {"A": 30, "B": 30}
    assert {r["split"]: (r["positive"], r["negative"]) for r in d["split_column"]} == {
        "test": (6, 14), "train": (14, 26)}
    ev = {(r["model"], r["split"]): r for r in d["evaluated"]}
    assert ev[("Rad", "test")]["patients"] == m["models"]["Rad"]["test"]["n"] == 20
    assert (ev[("Rad", "test")]["positive"], ev[("Rad", "test")]["negative"]) == (6, 14)
    assert {(r["model"], r["split"]) for r in info["metrics"]} == {
        (a, s) for a in ("Rad", "Clin") for s in ("train_oof", "test")}
    for r in info["metrics"]:
        entry = m["models"][r["model"]][r["split"]]
        for k in ("n", "auc", "ci_low", "ci_high", "ci_method", "sensitivity", "specificity",
                  "cutoff", "cutoff_split"):
            assert r[k] == entry[k], (r["model"], r["split"], k)
        assert f"{entry['auc']:.3f} ({entry['ci_low']:.3f}–{entry['ci_high']:.3f})" in md
    cal = {(r["model"], r["split"]): r for r in info["calibration"]}
    assert set(cal) == {("Rad", "train_oof"), ("Rad", "test")}  # decision scores: none
    for (model, split), r in cal.items():
        for k in ("hl_p", "calibration_slope", "calibration_intercept", "brier"):
            assert r[k] == m["models"][model][split][k]
        assert f"{r['brier']:.3f}" in md
    assert info["permutation"] == m["permutation"]
    assert info["permutation"]["Rad"]["p_value"] == 0.05 and "p = 0.050" in md
    assert info["deviations"] == ["The paper used 10-fold CV; here 4-fold (deviation from the "
                                  "paper)."]
    assert "Small sample: wide confidence intervals." in info["limitations"]
    assert info["saved_models"][0]["file"] == "models/Rad.skops"
    assert info["saved_models"][0]["cutoff"] == m["models"]["Rad"]["test"]["cutoff"]
    assert "Research use only" in md


def test_checklist_filled_from_the_run(run_dir):
    m = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    t = pd.read_csv(run_dir / "checklist.csv", keep_default_na=False)
    assert (t.loc[t["checklist"] == "CLEAR", "item"].tolist() == list(range(1, 59)))
    assert (t.loc[t["checklist"] == "METRICS", "item"].tolist() == list(range(1, 31)))
    item = t.set_index(["checklist", "item"])
    assert item.loc[("CLEAR", 1), "status"] == modelcard.AUTHOR
    assert item.loc[("CLEAR", 1), "evidence"] == ""
    filled = t[t["status"] != modelcard.AUTHOR]
    assert (filled["evidence"] != "").all() and len(filled) >= 30
    e = m["models"]["Rad"]["test"]
    assert f"Rad/test: AUC {e['auc']:.3f} ({e['ci_low']:.3f}–{e['ci_high']:.3f})" in \
        item.loc[("CLEAR", 47), "answer"]
    assert "metrics.json" in item.loc[("CLEAR", 47), "evidence"]
    assert f"Brier {e['brier']:.3f}" in item.loc[("METRICS", 22), "answer"]
    assert "6+/14-" in item.loc[("CLEAR", 30), "answer"]
    assert item.loc[("METRICS", 18), "answer"].endswith("0 in both")
    assert item.loc[("METRICS", 4), "answer"].startswith("yes: 2 centre")
    assert item.loc[("CLEAR", 57), "status"] == "partly from the run"
    assert item.loc[("CLEAR", 22), "answer"].startswith("no resampling")
    assert item.loc[("CLEAR", 23), "answer"] == 'fixed bin width {"binWidth": 25}'
    assert "Is a spinal metastasis" in item.loc[("CLEAR", 6), "answer"]
    assert item.loc[("CLEAR", 41), "status"] == "from the run"
    md = (run_dir / "checklist.md").read_text(encoding="utf-8")
    assert "clearchecklist.github.io" in md and "## METRICS (30 items" in md


def test_stopped_run_still_gets_a_card(tmp_path):
    from vcfnb import metrics

    p = metrics.empty("osteoporosis_mri", simulated=False)
    p.update(status="stopped", stopped_reason="no outcome labels", notes=["stopped: no labels"])
    io.write_json(p, tmp_path / "metrics.json")
    paths = modelcard.write_reports(tmp_path)
    assert [x.name for x in paths] == ["model_card.md", "model_card.json", "checklist.md",
                                       "checklist.csv"]
    md = (tmp_path / "model_card.md").read_text(encoding="utf-8")
    assert "stopped — no outcome labels" in md and "none saved by this run" in md
    t = pd.read_csv(tmp_path / "checklist.csv", keep_default_na=False)
    assert len(t) == 88 and (t["status"] == modelcard.AUTHOR).sum() > 70


def test_runner_writes_card_and_checklist(tmp_path, monkeypatch):
    """``run_notebook`` writes the model card and checklist after a run that finished."""
    import nbformat
    import papermill as pm

    from vcfnb import metrics, runner

    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("seed = 0\nout_dir = ''")
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("# Demo\n\n**Question.** Does it work?\n"), cell]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "params").mkdir()
    nbformat.write(nb, str(tmp_path / "notebooks" / "demo.ipynb"))

    def fake_execute(src, dst, parameters=None, **kw):  # the run: a notebook + metrics.json
        out = Path(parameters["out_dir"])
        payload = metrics.empty("demo", simulated=True)
        payload["status"] = "ok"
        io.write_json(payload, out / "metrics.json")
        nbformat.write(nbformat.read(src, as_version=4), dst)

    monkeypatch.setattr(pm, "execute_notebook", fake_execute)
    rec = runner.run_notebook(tmp_path / "notebooks" / "demo.ipynb", None, tmp_path,
                              progress=False)
    assert rec["status"] == "ok"
    out = tmp_path / "reports" / "demo" / "default"
    for name in ("model_card.md", "model_card.json", "checklist.md", "checklist.csv"):
        assert (out / name).is_file(), name
    info = json.loads((out / "model_card.json").read_text(encoding="utf-8"))
    assert info["intended_use"]["question"] == "Does it work?"


def test_card_links_every_figure_of_the_run(run_dir):
    """The model card (Markdown and JSON) links each file in figures/, and each link resolves."""
    import re

    info = json.loads((run_dir / "model_card.json").read_text(encoding="utf-8"))
    md = (run_dir / "model_card.md").read_text(encoding="utf-8")
    on_disk = sorted(f"figures/{p.name}" for p in (run_dir / "figures").glob("*.png"))
    assert {"figures/flow_diagram.png", "figures/case_montage.png"} <= set(on_disk)
    assert info["figures"] == on_disk
    links = re.findall(r"\]\((figures/[^)]+)\)", md)
    assert sorted(links) == on_disk
    assert all((run_dir / link).is_file() for link in links)
