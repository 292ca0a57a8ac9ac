"""Model card and pre-filled reporting checklist of a run, from the files the run leaves.

:func:`model_card` and :func:`checklist` read only the report folder: ``metrics.json``,
``run_card.json``, ``params.json``, ``tables/predictions.csv``, ``tables/cohort_problems.csv``,
``models/*.json`` (:mod:`vcfnb.bundle`), the names of the other tables and figures and the
executed notebook's first cell (the study question). Nothing is recomputed, so every number in
the card is the number in ``metrics.json``. :func:`write_reports` writes ``model_card.md``,
``model_card.json``, ``checklist.md`` and ``checklist.csv``; the runner calls it after every
run that finished or stopped cleanly.

The checklist lists the 58 items of CLEAR (Kocak et al., *Insights Imaging* 2023;14:75,
https://clearchecklist.github.io/clear_checklist/CLEAR.html) and the 30 items of METRICS
(Kocak et al., *Insights Imaging* 2024;15:8, https://metricsscore.github.io/metrics/METRICS.html),
paraphrased briefly. An item the run can answer is filled in with where the evidence is (a file,
table or figure of the report); the others say "author to complete".
"""
from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from vcfnb import io

__all__ = ["model_card", "model_card_markdown", "checklist", "checklist_markdown",
           "write_reports", "CLEAR_ITEMS", "METRICS_ITEMS", "AUTHOR", "CHECKLIST_COLUMNS"]

AUTHOR = "author to complete"
CHECKLIST_COLUMNS = ["checklist", "item", "section", "topic", "status", "answer", "evidence"]
_SOURCES = {
    "CLEAR": "CLEAR v1.0, Kocak B et al. Insights Imaging 2023;14:75 "
             "(https://clearchecklist.github.io/clear_checklist/CLEAR.html)",
    "METRICS": "METRICS v1.0, Kocak B et al. Insights Imaging 2024;15:8 "
               "(https://metricsscore.github.io/metrics/METRICS.html)",
}

#: CLEAR v1.0: (number, section, topic paraphrased)
CLEAR_ITEMS: list[tuple[int, str, str]] = [
    (1, "Title", "Title names radiomics and its methodology"),
    (2, "Abstract", "Structured summary with the key numbers"),
    (3, "Keywords", "Keywords relevant to radiomics"),
    (4, "Introduction", "Scientific or clinical background"),
    (5, "Introduction", "Rationale for a radiomic approach"),
    (6, "Introduction", "Study objective(s)"),
    (7, "Method: study design", "Adherence to guidelines or checklists"),
    (8, "Method: study design", "Ethics (approval, consent, data protection)"),
    (9, "Method: study design", "Sample size or power"),
    (10, "Method: study design", "Study nature (retrospective/prospective, design)"),
    (11, "Method: study design", "Eligibility criteria"),
    (12, "Method: study design", "Flowchart of the technical pipeline"),
    (13, "Method: data", "Data source"),
    (14, "Method: data", "Data overlap with earlier studies"),
    (15, "Method: data", "Data split methodology"),
    (16, "Method: data", "Imaging protocol (acquisition and processing)"),
    (17, "Method: data", "Definition of non-radiomic predictors"),
    (18, "Method: data", "Definition of the reference standard (outcome)"),
    (19, "Method: segmentation", "Segmentation strategy"),
    (20, "Method: segmentation", "Operators performing segmentation"),
    (21, "Method: pre-processing", "Image pre-processing details"),
    (22, "Method: pre-processing", "Resampling method and parameters"),
    (23, "Method: pre-processing", "Discretisation method and parameters"),
    (24, "Method: pre-processing", "Image types (original, filtered, transformed)"),
    (25, "Method: feature extraction", "Feature extraction method (software, version)"),
    (26, "Method: feature extraction", "Feature classes"),
    (27, "Method: feature extraction", "Number of features"),
    (28, "Method: feature extraction", "Default configuration statement for other parameters"),
    (29, "Method: data preparation", "Handling of missing data"),
    (30, "Method: data preparation", "Class imbalance"),
    (31, "Method: data preparation", "Segmentation reliability analysis"),
    (32, "Method: data preparation", "Feature scaling"),
    (33, "Method: data preparation", "Dimension reduction"),
    (34, "Method: modelling", "Algorithm details"),
    (35, "Method: modelling", "Training and tuning"),
    (36, "Method: modelling", "Handling of confounders"),
    (37, "Method: modelling", "Model selection strategy"),
    (38, "Method: evaluation", "Testing technique (internal, external)"),
    (39, "Method: evaluation", "Performance metrics and why"),
    (40, "Method: evaluation", "Uncertainty (e.g. confidence intervals)"),
    (41, "Method: evaluation", "Statistical comparison of performance (e.g. DeLong)"),
    (42, "Method: evaluation", "Comparison with non-radiomic and combined methods"),
    (43, "Method: evaluation", "Interpretability and explainability"),
    (44, "Results", "Baseline demographic and clinical characteristics"),
    (45, "Results", "Flowchart of eligibility"),
    (46, "Results", "Feature statistics (reproducibility, selection)"),
    (47, "Results", "Model performance"),
    (48, "Results", "Comparison with non-radiomic and combined approaches"),
    (49, "Discussion", "Overview of important findings"),
    (50, "Discussion", "Previous work and differences"),
    (51, "Discussion", "Practical implications"),
    (52, "Discussion", "Strengths and limitations"),
    (53, "Open science: data", "Sharing images with segmentations (recommended)"),
    (54, "Open science: data", "Sharing radiomic feature data"),
    (55, "Open science: code", "Sharing pre-processing scripts or settings"),
    (56, "Open science: code", "Sharing modelling source code"),
    (57, "Open science: model", "Sharing final model files"),
    (58, "Open science: model", "Sharing a ready-to-use system (recommended)"),
]

#: METRICS v1.0: (number, category, item paraphrased)
METRICS_ITEMS: list[tuple[int, str, str]] = [
    (1, "Study design", "Adherence to radiomics/ML checklists or guidelines"),
    (2, "Study design", "Eligibility criteria describing a representative population"),
    (3, "Study design", "High-quality reference standard, clearly defined"),
    (4, "Imaging data", "Multi-centre"),
    (5, "Imaging data", "Clinical translatability of the imaging source"),
    (6, "Imaging data", "Imaging protocol with acquisition parameters"),
    (7, "Imaging data", "Interval between imaging and reference standard"),
    (8, "Segmentation", "Transparent segmentation methodology"),
    (9, "Segmentation", "Formal evaluation of fully automated segmentation"),
    (10, "Segmentation", "Test-set masks by a single reader or automated tool"),
    (11, "Image processing and feature extraction", "Appropriate, described pre-processing"),
    (12, "Image processing and feature extraction", "Standardised extraction software"),
    (13, "Image processing and feature extraction", "Extraction parameters reported"),
    (14, "Feature processing", "Removal of non-robust features"),
    (15, "Feature processing", "Removal of redundant features"),
    (16, "Feature processing", "Dimensionality appropriate to data size"),
    (17, "Feature processing", "Robustness of end-to-end deep learning pipelines"),
    (18, "Preparation for modelling", "Proper data partitioning"),
    (19, "Preparation for modelling", "Handling of confounding factors"),
    (20, "Metrics and comparison", "Appropriate performance metrics"),
    (21, "Metrics and comparison", "Uncertainty considered"),
    (22, "Metrics and comparison", "Calibration assessed"),
    (23, "Metrics and comparison", "Uni-parametric imaging or proof of its inferiority"),
    (24, "Metrics and comparison", "Comparison with a non-radiomic approach / added value"),
    (25, "Metrics and comparison", "Comparison with simple or classical statistical models"),
    (26, "Testing", "Internal testing"),
    (27, "Testing", "External testing"),
    (28, "Open science", "Data availability"),
    (29, "Open science", "Code availability"),
    (30, "Open science", "Model availability"),
]

_CAL_FIELDS = ("hl_p", "hl_groups", "hl_dof", "calibration_slope", "calibration_intercept",
               "brier")
_PERF_FIELDS = ("n", "auc", "ci_low", "ci_high", "ci_method", "accuracy", "sensitivity",
                "specificity", "ppv", "npv", "cutoff", "cutoff_split")


# ---------------------------------------------------------------------------------------------
# reading a report folder
# ---------------------------------------------------------------------------------------------
class _Report:
    """The files of one report folder, read once."""

    def __init__(self, out_dir: str | os.PathLike) -> None:
        self.dir = Path(out_dir)
        self.metrics = self._json("metrics.json")
        self.card = self._json("run_card.json")
        self.params = self._json("params.json")
        self.pred = self._csv("tables/predictions.csv")
        self.problems = self._csv("tables/cohort_problems.csv")
        self.models = []
        for f in sorted((self.dir / "models").glob("*.json")):
            try:
                self.models.append(json.loads(f.read_text(encoding="utf-8")))
            except ValueError:
                continue
        self.tables = sorted(p.stem for p in (self.dir / "tables").glob("*.csv"))
        self.figures = sorted(p.stem for p in (self.dir / "figures").glob("*.png"))
        self.study = self.metrics.get("study") or self.card.get("study") or self.dir.parent.name

    def _json(self, name: str) -> dict:
        f = self.dir / name
        try:
            return json.loads(f.read_text(encoding="utf-8")) if f.is_file() else {}
        except ValueError:
            return {}

    def _csv(self, name: str) -> pd.DataFrame:
        f = self.dir / name
        if not f.is_file():
            return pd.DataFrame()
        try:
            return pd.read_csv(f, dtype={"patient_id": str})
        except (ValueError, pd.errors.EmptyDataError):
            return pd.DataFrame()

    def find(self, kind: str, *patterns: str) -> list[str]:
        """Report-relative names of tables/figures whose name matches a pattern."""
        names = self.tables if kind == "tables" else self.figures
        ext = "csv" if kind == "tables" else "png"
        return [f"{kind}/{n}.{ext}" for n in names
                if any(re.search(p, n, re.IGNORECASE) for p in patterns)]

    def question(self) -> str | None:
        """The study question: the ``**Question.**`` paragraph of the executed notebook's first
        cell (the report folder's ``<study>.ipynb``)."""
        for nb in sorted(self.dir.glob("*.ipynb")):
            try:
                cells = json.loads(nb.read_text(encoding="utf-8")).get("cells", [])
            except (OSError, ValueError):
                continue
            for cell in cells[:3]:
                if cell.get("cell_type") != "markdown":
                    continue
                src = "".join(cell.get("source", ""))
                m = re.search(r"\*\*Question\.\*\*\s*(.+?)(?:\n\s*\n|$)", src, re.S)
                if m:
                    return " ".join(m.group(1).split())
        return None


def _num(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    if isinstance(v, int):
        return str(v)
    return f"{float(v):.{digits}f}"


def _p(v: Any) -> str:
    if v is None:
        return "n/a"
    return "< 0.001" if float(v) < 0.001 else f"{float(v):.3f}"


# ---------------------------------------------------------------------------------------------
# model card
# ---------------------------------------------------------------------------------------------
def _split_counts(rep: _Report, models: list[str]) -> list[dict]:
    """Patients and classes per model and split, from ``predictions.csv``."""
    p = rep.pred
    if p.empty or not {"model", "split", "patient_id", "y_true"} <= set(p.columns):
        return []
    rows = []
    for (model, split), g in p.groupby(["model", "split"], sort=False):
        if models and model not in models:
            continue
        per = g.drop_duplicates("patient_id")
        rows.append({"model": str(model), "split": str(split),
                     "patients": int(per["patient_id"].nunique()),
                     "positive": int((per["y_true"] == 1).sum()),
                     "negative": int((per["y_true"] == 0).sum())})
    return rows


def _problem_kinds(problems: pd.DataFrame) -> dict[str, int]:
    """Excluded rows by kind of problem (the text before the first colon)."""
    if problems.empty or "problem" not in problems:
        return {}
    kinds = problems["problem"].astype(str).str.split(":").str[0].str.strip()
    return {str(k): int(v) for k, v in kinds.value_counts().sort_index().items()}


def _is_deviation(note: str) -> bool:
    return bool(re.search(r"paper|deviat|instead of|differs? from|not as in|unlike", note,
                          re.IGNORECASE))


def model_card(out_dir: str | os.PathLike) -> tuple[str, dict]:
    """The model card of a run: ``(markdown, dict)``.

    Sections: intended use (research only; the study question), data (simulated or real;
    patients, classes, ROIs, sequences; rows excluded by kind; counts per split and centre),
    metrics of the main models with confidence intervals per split, calibration
    (Hosmer–Lemeshow p, slope, intercept, Brier), permutation p, DeLong comparisons,
    limitations and deviations from the paper (the run's notes, plus what the data imply),
    the saved models (:mod:`vcfnb.bundle`) and a link to every figure in ``figures/``.
    Every number is copied from the run's files.

    Parameters
    ----------
    out_dir : path
        The report folder of a run.

    Returns
    -------
    (str, dict)
        Markdown and its JSON-ready content.
    """
    rep = _Report(out_dir)
    m, card = rep.metrics, rep.card
    main = list(m.get("main_models") or [])
    models = m.get("models") or {}
    shown = [x for x in main if x in models] or sorted(models)
    simulated = bool(m.get("simulated", card.get("simulated", False)))
    question = rep.question()
    data = {
        "simulated": simulated,
        "source": ("simulated: vcfnb's built-in generator, not patient data" if simulated
                   else "real, user-provided"),
        "cohort": card.get("cohort"), "patients": card.get("patients"),
        "positive": card.get("positive"), "negative": card.get("negative"),
        "rois": card.get("rois"), "sequences": card.get("sequences"),
        "roi_names": card.get("roi_names"), "readers": card.get("readers"),
        "excluded_rows": card.get("problems", int(len(rep.problems))),
        "excluded_by_kind": _problem_kinds(rep.problems),
        "split_column": card.get("split_counts"), "centers": card.get("centers"),
        "evaluated": _split_counts(rep, shown),
    }
    perf, cal = [], []
    for model in shown:
        for split, entry in (models.get(model) or {}).items():
            perf.append({"model": model, "split": split,
                         **{k: entry.get(k) for k in _PERF_FIELDS}})
            if any(entry.get(k) is not None for k in _CAL_FIELDS):
                cal.append({"model": model, "split": split,
                            **{k: entry.get(k) for k in _CAL_FIELDS}})
    notes = [str(n) for n in (m.get("notes") or [])]
    derived = []
    if simulated:
        derived.append("The data are simulated: the numbers show that the pipeline runs and "
                       "behaves sensibly, not how the model performs on patients.")
    centers = card.get("centers") or []
    if len(centers) <= 1:
        derived.append("Single centre (or no centre column): generalisation to other scanners "
                       "and sites is untested.")
    splits = {r["split"] for r in perf}
    if "external" not in splits:
        derived.append("No external test split.")
    if not (m.get("permutation") or {}):
        derived.append("No permutation test recorded.")
    saved = [{"model": s.get("model"), "file": f"models/{s.get('file')}",
              "score_kind": s.get("score_kind"), "cutoff": s.get("cutoff"),
              "cutoff_split": s.get("cutoff_split"),
              "input_features": len(s.get("input_columns") or []),
              "selected_features": len(s.get("selected_features") or []),
              "steps": s.get("steps"),
              "sequences": (s.get("feature_recipe") or {}).get("sequences"),
              "rois": (s.get("feature_recipe") or {}).get("rois"),
              "aggregate": (s.get("feature_recipe") or {}).get("aggregate")}
             for s in rep.models]
    info = {
        "study": rep.study, "status": m.get("status"), "stopped_reason": m.get("stopped_reason"),
        "intended_use": {
            "use": "Research use only: reproducing and probing a published radiomics study. "
                   "Not a medical device; not for diagnosis or treatment decisions.",
            "question": question or AUTHOR,
            "main_models": main,
        },
        "data": data, "metrics": perf, "calibration": cal,
        "permutation": m.get("permutation") or {},
        "comparisons": (m.get("comparisons") or {}).get("delong", []),
        "limitations": [n for n in notes if not _is_deviation(n)] + derived,
        "deviations": [n for n in notes if _is_deviation(n)],
        "saved_models": saved,
        "figures": [f"figures/{name}.png" for name in rep.figures],
        "provenance": {**(m.get("provenance") or {}),
                       "vcfnb": (rep.models[0].get("vcfnb_version") if rep.models else None)
                       or (m.get("provenance") or {}).get("vcfnb")},
        "sources": ["metrics.json", "run_card.json", "params.json", "tables/predictions.csv",
                    "tables/cohort_problems.csv"] + [f"models/{s.get('model')}.json"
                                                     for s in rep.models],
    }
    return model_card_markdown(info), info


def model_card_markdown(info: dict) -> str:
    """Markdown of a :func:`model_card` dict."""
    L = [f"# Model card — {info['study']}", ""]
    status = info.get("status") or "unknown"
    if info.get("stopped_reason"):
        status += f" — {info['stopped_reason']}"
    L += [f"**Status**: {status}.", "", "## Intended use", "",
          f"- {info['intended_use']['use']}",
          f"- Study question: {info['intended_use']['question']}",
          f"- Main models: {', '.join(info['intended_use']['main_models']) or 'none declared'}.",
          "", "## Data", ""]
    d = info["data"]
    L.append(f"- Source: {d['source']} (cohort `{d.get('cohort')}`).")
    if d.get("patients") is not None:
        L.append(f"- {d['patients']} patients ({d['positive']} positive, {d['negative']} "
                 f"negative), {d['rois']} ROIs; sequences {', '.join(d.get('sequences') or [])};"
                 f" readers {', '.join(d.get('readers') or [])}.")
    kinds = d.get("excluded_by_kind") or {}
    L.append(f"- Rows excluded by validation: {d.get('excluded_rows') or 0}"
             + (" (" + "; ".join(f"{k}: {v}" for k, v in kinds.items()) + "; table "
                "`cohort_problems`)" if kinds else "") + ".")
    for key, label in (("split_column", "split"), ("centers", "center")):
        rows = d.get(key) or []
        if rows:
            L.append(f"- Per {label} (cases.csv): " + "; ".join(
                f"{r[label]} {r['patients']} ({r['positive']}+/{r['negative']}-)" for r in rows)
                + ".")
    if d.get("evaluated"):
        L += ["", "Patients evaluated per model and split (`tables/predictions.csv`):", "",
              "| model | split | patients | positive | negative |", "|---|---|---|---|---|"]
        L += [f"| {r['model']} | {r['split']} | {r['patients']} | {r['positive']} | "
              f"{r['negative']} |" for r in d["evaluated"]]
    L += ["", "## Metrics (`metrics.json`)", ""]
    if info["metrics"]:
        L += ["| model | split | n | AUC (95% CI) | CI method | sensitivity | specificity | "
              "accuracy | PPV | NPV | cut-off (chosen on) |", "|---|---|---|---|---|---|---|---|"
              "---|---|---|"]
        for r in info["metrics"]:
            L.append(f"| {r['model']} | {r['split']} | {_num(r['n'])} | {_num(r['auc'])} "
                     f"({_num(r['ci_low'])}–{_num(r['ci_high'])}) | {r['ci_method'] or 'n/a'} | "
                     f"{_num(r['sensitivity'])} | {_num(r['specificity'])} | "
                     f"{_num(r['accuracy'])} | {_num(r['ppv'])} | {_num(r['npv'])} | "
                     f"{_num(r['cutoff'], 4)} ({r['cutoff_split'] or 'n/a'}) |")
    else:
        L.append("- none recorded")
    L += ["", "## Calibration", ""]
    if info["calibration"]:
        L += ["| model | split | Hosmer–Lemeshow p (groups, dof) | slope | intercept | Brier |",
              "|---|---|---|---|---|---|"]
        L += [f"| {r['model']} | {r['split']} | {_p(r['hl_p'])} ({_num(r['hl_groups'])}, "
              f"{_num(r['hl_dof'])}) | {_num(r['calibration_slope'])} | "
              f"{_num(r['calibration_intercept'])} | {_num(r['brier'])} |"
              for r in info["calibration"]]
    else:
        L.append("- not applicable or not recorded (decision scores have no calibration)")
    L += ["", "## Permutation test", ""]
    perm = info["permutation"]
    L += [f"- {k}: observed AUC {_num(v.get('observed_auc'))} on {v.get('split')}, null mean "
          f"{_num(v.get('null_mean'))}, p = {_p(v.get('p_value'))} "
          f"({v.get('n_permutations')} permutations)." for k, v in perm.items()] or \
        ["- none recorded"]
    if info["comparisons"]:
        L += ["", "## DeLong comparisons", ""]
        L += [f"- {c['model_a']} vs {c['model_b']} ({c['split']}): z = {_num(c['z'], 2)}, "
              f"p = {_p(c['p_value'])}." for c in info["comparisons"]]
    L += ["", "## Limitations", ""]
    L += [f"- {x}" for x in info["limitations"]] or ["- none recorded"]
    L += ["", "## Deviations from the paper", ""]
    L += [f"- {x}" for x in info["deviations"]] or ["- none recorded"]
    L += ["", "## Saved models (`vcfnb predict`)", ""]
    if info["saved_models"]:
        for s in info["saved_models"]:
            L.append(f"- `{s['file']}`: {s['model']}, {s['score_kind']} score, class = score ≥ "
                     f"{_num(s['cutoff'], 4)} (cut-off from {s['cutoff_split']}); "
                     f"{s['input_features']} input / {s['selected_features']} selected features;"
                     f" sequences {', '.join(s['sequences'] or [])}, ROIs "
                     f"{', '.join(s['rois'] or ['all'])} ({s['aggregate']}).")
    else:
        L.append("- none saved by this run")
    L += ["", "## Figures", ""]
    L += [f"- [{Path(f).stem}]({f})" for f in info.get("figures") or []] or \
        ["- none saved by this run"]
    prov = info.get("provenance") or {}
    if prov:
        L += ["", "## Provenance", ""]
        L += [f"- {k}: `{v}`" for k, v in sorted(prov.items()) if v]
    return "\n".join(L) + "\n"


# ---------------------------------------------------------------------------------------------
# checklist
# ---------------------------------------------------------------------------------------------
_Answer = tuple[str, str, str]  # status, answer, evidence
_FROM = "from the run"
_PART = "partly from the run"


def _settings(rep: _Report) -> dict:
    return (rep.models[0].get("settings") or {}) if rep.models else {}


def _answers(rep: _Report, info: dict) -> dict[tuple[str, int], _Answer]:
    """Every item the run can answer: (status, answer, evidence)."""
    a: dict[tuple[str, int], _Answer] = {}
    m = rep.metrics
    d = info["data"]
    sim = d["simulated"]
    perf = [r for r in info["metrics"] if r.get("auc") is not None]
    splits = sorted({r["split"] for r in perf})
    s = _settings(rep)
    setting = s.get("setting") or {}
    models_json = ", ".join(f"models/{x.get('model')}.json" for x in rep.models)
    prov = rep._csv("tables/provenance.csv")
    pyrad = (prov.set_index("item")["value"].get("pyradiomics-bhklab")
             if {"item", "value"} <= set(prov.columns) else None)

    def put(keys: list[tuple[str, int]], value: _Answer) -> None:
        for k in keys:
            a[k] = value

    if info["intended_use"]["question"] != AUTHOR:
        put([("CLEAR", 6)], (_FROM, info["intended_use"]["question"],
                             "model_card.md#intended-use; executed notebook, first cell"))
    put([("CLEAR", 7), ("METRICS", 1)],
        (_PART, "this checklist was pre-filled from the run; the author confirms it",
         "checklist.md, checklist.csv"))
    if sim:
        put([("CLEAR", 8)], (_FROM, "not applicable: simulated data, no patients",
                             "run_card.json (simulated: true)"))
        put([("CLEAR", 13)], (_FROM, "simulated cohort (vcfnb built-in generator)",
                              "run_card.json; model_card.md#data"))
        put([("CLEAR", 53), ("METRICS", 28)],
            (_PART, "the simulated cohort is regenerated from the parameters and seed; "
                    "publishing them: author", "params.json; run_card.json"))
    recovery = rep.find("tables", r"recovery")
    if recovery:
        put([("CLEAR", 9)], (_PART, "recovery check (planted effect): power of the design at "
                                    "this sample size", ", ".join(recovery)))
    excl = d.get("excluded_rows") or 0
    put([("CLEAR", 11)], (_PART, f"{excl} ROI/case rows excluded by validation"
                          + (" (" + "; ".join(f"{k}: {v}" for k, v in
                                              d["excluded_by_kind"].items()) + ")"
                             if d["excluded_by_kind"] else "")
                          + "; clinical inclusion criteria: author",
                          "tables/cohort_problems.csv; model_card.md#data"))
    ev = [r for r in d.get("evaluated") or []]
    if ev:
        text = "; ".join(f"{r['model']}/{r['split']}: {r['patients']} patients "
                         f"({r['positive']}+/{r['negative']}-)" for r in ev)
        split_params = {k: v for k, v in rep.params.items()
                        if re.search(r"split|test_size|cv|fold|repeat|seed", k)}
        put([("CLEAR", 15)], (_FROM, f"splits {', '.join(sorted({r['split'] for r in ev}))}; "
                              f"parameters {json.dumps(split_params, sort_keys=True)}",
                              "params.json; tables/predictions.csv"))
        put([("CLEAR", 30)], (_PART, f"class counts: {text}; handling: author",
                              "tables/predictions.csv; model_card.md#data"))
        train_ids = set(rep.pred.loc[rep.pred["split"].isin(["train", "train_oof"]),
                                     "patient_id"])
        test_ids = set(rep.pred.loc[rep.pred["split"].isin(["test", "external"]),
                                    "patient_id"])
        if train_ids and test_ids:
            both = len(train_ids & test_ids)
            put([("METRICS", 18)], (_FROM if both == 0 else _PART,
                                    f"{len(train_ids)} training and {len(test_ids)} test "
                                    f"patients; {both} in both", "tables/predictions.csv"))
        elif "cv" in {r["split"] for r in ev}:
            put([("METRICS", 18)], (_PART, "cross-validation only (out-of-fold predictions)",
                                    "tables/predictions.csv; params.json"))
    if d.get("sequences"):
        put([("CLEAR", 16)], (_PART, f"sequences {', '.join(d['sequences'])}; acquisition "
                              "parameters: author", "run_card.json"))
    if d.get("readers"):
        txt = (f"ROIs {', '.join((d.get('roi_names') or [])[:12])}; readers "
               f"{', '.join(d['readers'])}; how they were drawn: author")
        put([("CLEAR", 19), ("CLEAR", 20), ("METRICS", 8)], (_PART, txt, "run_card.json"))
        put([("METRICS", 10)], (_PART, f"readers in the cohort: {', '.join(d['readers'])}; "
                                "which reader drew the test masks: author", "run_card.json"))
    if s:
        norm = {k: setting.get(k) for k in ("normalize", "normalizeScale", "removeOutliers")
                if k in setting}
        put([("CLEAR", 21), ("METRICS", 11)],
            (_PART, f"pyradiomics settings {json.dumps(norm)}; other pre-processing: "
             + (", ".join(f"{k}: {v}" for x in rep.models
                          for k, v in ((x.get("feature_recipe") or {}).get("preprocessing")
                                       or {}).items()) or "none recorded"), models_json))
        spacing = setting.get("resampledPixelSpacing")
        put([("CLEAR", 22)], (_FROM, f"resampled to {spacing} mm, interpolator "
                              f"{setting.get('interpolator')}" if spacing else
                              "no resampling: features on each scan's own voxel grid",
                              models_json + " (settings)"))
        disc = {k: setting.get(k) for k in ("binWidth", "binCount") if setting.get(k)}
        put([("CLEAR", 23)], (_FROM, f"fixed bin {'count' if 'binCount' in disc else 'width'}"
                              f" {json.dumps(disc)}", models_json + " (settings)"))
        put([("CLEAR", 24)], (_FROM, ", ".join(s.get("imageType") or {}),
                              models_json + " (settings.imageType)"))
        put([("CLEAR", 26)], (_FROM, ", ".join(s.get("featureClass") or {}),
                              models_json + " (settings.featureClass)"))
        put([("CLEAR", 28), ("METRICS", 13)],
            (_FROM, "every pyradiomics setting is saved, defaults included", models_json))
    if pyrad or s:
        put([("CLEAR", 25), ("METRICS", 12)],
            (_FROM, f"pyradiomics (IBSI-oriented) {pyrad or ''}".strip(),
             "tables/provenance.csv" + (f"; {models_json}" if s else "")))
    if rep.models:
        nin = "; ".join(f"{x.get('model')}: {len(x.get('input_columns') or [])} input, "
                        f"{len(x.get('selected_features') or [])} selected"
                        for x in rep.models)
        put([("CLEAR", 27)], (_FROM, nin, models_json))
        steps = "; ".join(f"{x.get('model')}: " + " → ".join(x.get("steps") or [])
                          for x in rep.models)
        put([("CLEAR", 32), ("CLEAR", 33), ("CLEAR", 34)], (_PART, steps, models_json))
        if any(re.search(r"correlation|mrmr", " ".join(x.get("steps") or []), re.I)
               for x in rep.models):
            put([("METRICS", 15)], (_FROM, steps, models_json))
        train_events = {r["model"]: min(r["positive"], r["negative"]) for r in ev
                        if r["split"] in ("train_oof", "train", "cv")}
        dims = "; ".join(f"{x.get('model')}: {len(x.get('selected_features') or [])} features "
                         f"for {train_events.get(x.get('model'), 'n/a')} events in the smaller "
                         f"training class" for x in rep.models)
        put([("METRICS", 16)], (_PART, dims, models_json + "; tables/predictions.csv"))
        put([("CLEAR", 57), ("METRICS", 30)],
            (_PART, ", ".join(f"models/{x.get('file')}" for x in rep.models)
             + " (skops) with their .json in the report folder; publishing them: author",
             "models/"))
        put([("CLEAR", 58)], (_PART, "`vcfnb predict --run <report> --cohort DIR --out FILE`"
                              " applies the saved models; publishing: author",
                              "models/; vcfnb predict"))
        put([("CLEAR", 55)], (_PART, "pyradiomics settings, feature recipe, parameters in the "
                              "report folder; publishing them: author",
                              models_json + "; params.json"))
    icc = rep.find("tables", r"icc", r"reliab")
    if icc:
        put([("CLEAR", 31), ("CLEAR", 46), ("METRICS", 14)],
            (_PART, "inter-reader reliability (ICC) table", ", ".join(icc)))
    if perf:
        txt = "; ".join(f"{r['model']}/{r['split']}: AUC {_num(r['auc'])} "
                        f"({_num(r['ci_low'])}–{_num(r['ci_high'])})" for r in perf)
        put([("CLEAR", 39), ("METRICS", 20)],
            (_FROM, "AUC, accuracy, sensitivity, specificity, PPV, NPV at the out-of-fold "
                    "Youden cut-off; calibration", "metrics.json; model_card.md#metrics"))
        methods = sorted({r["ci_method"] for r in perf if r.get("ci_method")})
        put([("CLEAR", 40), ("METRICS", 21)],
            (_FROM, f"95% CI of the AUC ({', '.join(methods) or 'n/a'}); Wilson CIs of "
                    "proportions", "metrics.json; model_card.md#metrics"))
        put([("CLEAR", 47)], (_FROM, txt, "metrics.json; model_card.md#metrics"))
        put([("CLEAR", 38)], (_FROM, f"splits evaluated: {', '.join(splits)}",
                              "tables/predictions.csv; metrics.json"))
        put([("METRICS", 26)], ((_FROM, "yes: " + ", ".join(x for x in splits if x in
                                                               ("test", "cv", "train_oof")),
                                 "metrics.json") if set(splits) & {"test", "cv", "train_oof"}
                                else (_FROM, "no internal test", "metrics.json")))
        put([("METRICS", 27)], (_FROM, "yes" if "external" in splits else "no external test",
                                "metrics.json"))
    if info["calibration"]:
        txt = "; ".join(f"{r['model']}/{r['split']}: HL p {_p(r['hl_p'])}, slope "
                        f"{_num(r['calibration_slope'])}, intercept "
                        f"{_num(r['calibration_intercept'])}, Brier {_num(r['brier'])}"
                        for r in info["calibration"])
        put([("METRICS", 22)], (_FROM, txt, "metrics.json; model_card.md#calibration"))
    if (m.get("comparisons") or {}).get("delong"):
        put([("CLEAR", 41)], (_FROM, "DeLong tests between models", "metrics.json "
                              "(comparisons.delong); model_card.md#delong-comparisons"))
    contrib = rep.find("tables", r"contribution", r"importance", r"shap") + \
        rep.find("figures", r"contribution", r"importance", r"shap")
    if contrib:
        put([("CLEAR", 43)], (_FROM, "feature contributions of the models", ", ".join(contrib)))
    base = rep.find("tables", r"baseline", r"table1")
    if base:
        put([("CLEAR", 44)], (_FROM, "baseline characteristics table", ", ".join(base)))
    flow = rep.find("figures", r"flow")
    if flow:
        put([("CLEAR", 45)], (_FROM, "cohort flow diagram", ", ".join(flow)))
    feats = rep.find("tables", r"^features", r"feature_table", r"radiomic_features")
    if feats:
        put([("CLEAR", 54)], (_FROM, "extracted feature table", ", ".join(feats)))
    lim = info["limitations"]
    if lim:
        put([("CLEAR", 52)], (_PART, f"{len(lim)} limitation(s) recorded; strengths: author",
                              "metrics.json (notes); model_card.md#limitations"))
    nb = sorted(p.name for p in rep.dir.glob("*.ipynb"))
    commit = (m.get("provenance") or {}).get("git_commit")
    put([("CLEAR", 56), ("METRICS", 29)],
        (_PART, "the executed study notebook and the vcfnb package"
         + (f" (git {commit})" if commit else "") + "; publishing them: author",
         (", ".join(nb) or "the executed notebook") + "; tables/provenance.csv"))
    centers = d.get("centers") or []
    if centers:
        put([("METRICS", 4)], (_FROM, f"{'yes' if len(centers) > 1 else 'no'}: "
                               f"{len(centers)} centre(s)", "run_card.json (centers)"))
    return a


def checklist(out_dir: str | os.PathLike, *, info: dict | None = None) -> pd.DataFrame:
    """The CLEAR (58 items) and METRICS (30 items) checklist of a run, pre-filled.

    Parameters
    ----------
    out_dir : path
        The report folder.
    info : dict, optional
        The :func:`model_card` dict (computed when not given).

    Returns
    -------
    DataFrame
        ``checklist, item, section, topic, status, answer, evidence``: ``status`` is
        ``from the run`` (the run answers it; ``evidence`` says where), ``partly from the run``
        (the run gives part; the author completes) or ``author to complete``. Items are
        paraphrased from the official lists (:data:`CLEAR_ITEMS`, :data:`METRICS_ITEMS`).
    """
    rep = _Report(out_dir)
    info = info if info is not None else model_card(out_dir)[1]
    answers = _answers(rep, info)
    rows = []
    for name, items in (("CLEAR", CLEAR_ITEMS), ("METRICS", METRICS_ITEMS)):
        for no, section, topic in items:
            status, answer, evidence = answers.get((name, no), (AUTHOR, "", ""))
            rows.append({"checklist": name, "item": no, "section": section, "topic": topic,
                         "status": status, "answer": answer, "evidence": evidence})
    return pd.DataFrame(rows, columns=CHECKLIST_COLUMNS)


def checklist_markdown(table: pd.DataFrame, study: str = "") -> str:
    """Markdown of a :func:`checklist` table, one section per checklist, with its source."""
    L = [f"# Reporting checklist{' — ' + study if study else ''}", "",
         "Pre-filled by vcfnb from the run's files. Items are paraphrased; use the official "
         "checklists for their full wording. Status: *from the run* (evidence given), *partly "
         "from the run*, *author to complete*.", ""]
    for name, g in table.groupby("checklist", sort=False):
        n_from = int((g["status"] == _FROM).sum())
        n_part = int((g["status"] == _PART).sum())
        L += [f"## {name} ({len(g)} items: {n_from} from the run, {n_part} partly, "
              f"{len(g) - n_from - n_part} for the author)", "", f"Source: {_SOURCES[name]}.",
              "", "| # | section | item | status | answer | evidence |",
              "|---|---|---|---|---|---|"]
        for r in g.itertuples():
            L.append(f"| {r.item} | {r.section} | {r.topic} | {r.status} | "
                     f"{_cell(r.answer)} | {_cell(r.evidence)} |")
        L.append("")
    return "\n".join(L)


def _cell(text: Any) -> str:
    return str(text or "").replace("|", "\\|").replace("\n", " ")


def write_reports(out_dir: str | os.PathLike,
                  log: Callable[[str], None] | None = None) -> list[Path]:
    """Write ``model_card.md``, ``model_card.json``, ``checklist.md`` and ``checklist.csv``
    into the report folder; returns the paths."""
    out = Path(out_dir)
    md, info = model_card(out)
    table = checklist(out, info=info)
    paths = [io.write_text(md, out / "model_card.md"),
             io.write_json(info, out / "model_card.json"),
             io.write_text(checklist_markdown(table, info["study"]), out / "checklist.md"),
             io.write_table(table, out / "checklist.csv")]
    if log is not None:
        log(f"model card and checklist written to {out}")
    return paths
