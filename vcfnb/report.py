"""The run of a study notebook: its parameters, cohort, report folder, metrics and provenance.

A study notebook calls :func:`start_run` once, in its "resolve" cell, right after the
parameters cell and the imports::

    run = vc.report.start_run("ovf_prediction_ct", globals())

``run`` then resolves the cohort (generating the built-in simulated one when ``cohort_dir`` is
empty), saves every table (``run.table``) and figure (``run.figure``) under the report folder,
collects model metrics for ``metrics.json`` and ends with ``run.provenance()``.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import subprocess
import sys
import types
import warnings
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from vcfnb import __version__, contract, io
from vcfnb import metrics as metrics_schema
from vcfnb.metrics import DELONG_FIELDS, MODEL_FIELDS
from vcfnb.rng import derive as rng_derive
from vcfnb.stats import PREDICTION_COLUMNS, SPLITS

__all__ = ["start_run", "Run", "StopRun", "STUDY_COHORT", "project_root", "scrub"]

#: notebook name → built-in simulated cohort generator
STUDY_COHORT = {
    "vcf_benign_malignant": "vcf",
    "osteoporosis_mri": "osteoporosis",
    "ovf_prediction_ct": "ovf",
    "metastasis_lytic_blastic": "metastasis",
    "ibsi_conformance": None,
    "radiomics_study": "osteoporosis",  # default; its `synthetic_cohort` parameter picks another
}
_LITERAL = (str, int, float, bool, type(None), list, dict, tuple)
_IGNORED = {"In", "Out", "exit", "quit", "get_ipython"}


class StopRun(Exception):
    """Raised by :meth:`Run.stop`: the study stops cleanly here (e.g. no outcome labels).

    The runner treats it as a completed run; the report says why it stopped.
    """

    def _render_traceback_(self):  # IPython shows just the reason, not a traceback
        return [f"Run stopped cleanly: {self}"]


def project_root(start: Path | None = None) -> Path:
    """The folder holding ``notebooks/`` and ``params/`` above ``start`` (default: cwd)."""
    here = (start or Path.cwd()).resolve()
    for p in (here, *here.parents):
        if (p / "notebooks").is_dir() and (p / "params").is_dir():
            return p
    return here


def scrub(text: str, roots: list[str | Path]) -> str:
    """Replace absolute paths under ``roots`` (and the home folder) by relative placeholders."""
    out = text
    pairs = {(str(Path(r)), t) for r, t in roots} | {(str(Path(r).resolve()), t) for r, t in roots}
    for r, tag in sorted(pairs, key=lambda x: -len(x[0])):
        if len(r) > 1:
            out = out.replace(r + os.sep, f"{tag}/").replace(r, tag)
    home = str(Path.home())
    if len(home) > 1:
        out = out.replace(home + os.sep, "~/")
    return out


#: permutations of ``n_permutations: auto`` on a user's or paper-sized cohort (p down to 0.01)
PERMUTATIONS_FULL = 99

@dataclass
class Run:
    """State of one study run. Create it with :func:`start_run`."""

    study: str
    params: dict
    root: Path
    out_dir: Path
    cache_dir: Path
    cohort: Any = None
    models: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)
    simulated: bool = True
    extra: dict = field(default_factory=dict)
    main_models: list = field(default_factory=list)
    status: str = "running"
    stopped_reason: str | None = None
    comparisons: list = field(default_factory=list)
    permutations: dict = field(default_factory=dict)
    requirements: Any = None
    _pred: list = field(default_factory=list, repr=False)

    # ---- seeds
    @property
    def seed(self) -> int:
        return int(self.params.get("seed", 0))

    def rng(self, *keys: int | str) -> np.random.Generator:
        """A generator derived from the master seed and ``keys`` (independent streams per step)."""
        return rng_derive(self.seed, *keys)

    def random_state(self, *keys: int | str) -> int:
        """An int ``random_state`` for scikit-learn derived from the master seed and ``keys``."""
        return int(self.rng(*keys).integers(0, 2**31 - 1))

    def n_permutations(self, value: int | str = "auto", *, smoke: int = 5,
                       full: int = PERMUTATIONS_FULL) -> int:
        """Label permutations for a permutation test: an int as given, or ``"auto"`` —
        ``full`` (99: p can reach 0.01) on a user's cohort (``cohort_dir`` set) or a paper-sized
        built-in one, ``smoke`` on the built-in smoke cohorts (fast tests).

        >>> own = Run("x", {"cohort_dir": "data/mine"}, Path("."), Path("r"), Path("c"))
        >>> own.n_permutations("auto"), own.n_permutations(19)
        (99, 19)
        >>> Run("x", {}, Path("."), Path("r"), Path("c")).n_permutations("auto", smoke=5)
        5

        In a notebook's parameters cell write ``n_permutations = "auto"`` without a type
        annotation (papermill cannot read ``int | str``); this method validates the value.
        """
        if isinstance(value, str):
            if value.strip().lower() != "auto":
                raise ValueError(f"n_permutations must be an int >= 0 or 'auto', got {value!r}")
            own = bool(self.params.get("cohort_dir"))
            paper = str(self.params.get("synthetic_size", "smoke")) == "paper"
            return int(full if own or paper else smoke)
        if isinstance(value, bool) or int(value) != value or int(value) < 0:
            raise ValueError(f"n_permutations must be an int >= 0 or 'auto', got {value!r}")
        return int(value)

    # ---- outputs
    def _roots(self) -> list:
        roots = [(self.root, "<project>"), (self.cache_dir, "<cache>"), (self.out_dir, "<report>"),
                 (sys.prefix, "<python>")]
        if self.cohort is not None:
            roots.insert(0, (self.cohort.folder, "<cohort>"))
        return roots

    def table(self, name: str, df: pd.DataFrame, *, index: bool = False) -> pd.DataFrame:
        """Save ``df`` as ``tables/<name>.csv`` and return it, absolute paths of this machine
        replaced by placeholders (``<cohort>/masks/P1.nii.gz``) in both."""
        clean = df.copy()
        for col in clean.columns:
            if clean[col].dtype == object or pd.api.types.is_string_dtype(clean[col]):
                clean[col] = clean[col].map(
                    lambda v: scrub(v, self._roots()) if isinstance(v, str) else v)
        io.write_table(clean, self.out_dir / "tables" / f"{_slug(name)}.csv", index=index)
        return clean

    def figure(self, name: str, obj) -> Any:
        """Save a matplotlib Figure/Axes/grid as ``figures/<name>.png`` and return its figure."""
        fig = _as_figure(obj)
        io.write_figure(fig, self.out_dir / "figures" / f"{_slug(name)}.png")
        _show_once(fig)
        return fig

    def metric(self, model: str, split: str, **values) -> None:
        """Record numbers of one model on one split for ``metrics.json`` (schema fields only:
        :data:`vcfnb.metrics.MODEL_FIELDS`; the others stay null)."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        unknown = sorted(set(values) - set(MODEL_FIELDS))
        if unknown:
            raise ValueError(f"unknown metric(s) {unknown}; metrics.json holds {list(MODEL_FIELDS)}")
        entry = self.models.setdefault(model, {}).setdefault(
            split, {k: None for k in MODEL_FIELDS})
        for k, v in values.items():
            entry[k] = _json_value(v, MODEL_FIELDS[k])
        self.write_metrics()

    # ---- the evaluation core: one predictions table, one record of its statistics
    def predictions(self, model: str, split: str, *, score, y_true, patient_id=None,
                    score_kind: str = "probability", fold=None, repeat=None) -> pd.DataFrame:
        """Add one model's predictions on one split to ``tables/predictions.csv``.

        ``score`` (and ``y_true``) may be Series indexed by patient id (then ``patient_id`` may
        be omitted). ``split`` is one of ``train`` (resubstitution), ``train_oof`` (out-of-fold
        training predictions), ``test``, ``external``, ``cv``, ``final``; ``score_kind`` is
        ``probability`` or ``decision`` (SVM decision values, radscores). Recording the same
        model and split again replaces its rows. Returns the whole table so far.
        """
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if score_kind not in ("probability", "decision"):
            raise ValueError(f"score_kind must be 'probability' or 'decision', got {score_kind!r}")
        if patient_id is None:
            if not isinstance(score, pd.Series):
                raise ValueError("patient_id is needed unless score is a Series indexed by it")
            patient_id = score.index
        ids = np.asarray(patient_id).astype(str)
        s = np.asarray(score, dtype=float).ravel()
        y = np.asarray(y_true.reindex(score.index) if isinstance(y_true, pd.Series)
                       and isinstance(score, pd.Series) else y_true).ravel()
        if len(ids) == 0:
            raise ValueError(f"{model}/{split}: no predictions (no patient of that split)")
        if not (len(ids) == len(s) == len(y)):
            raise ValueError(f"{model}/{split}: patient_id, y_true and score differ in length "
                             f"({len(ids)}, {len(y)}, {len(s)})")
        if score_kind == "probability" and np.any((s < 0) | (s > 1)):
            raise ValueError(f"{model}/{split}: probabilities outside [0, 1]; "
                             "use score_kind='decision'")
        df = pd.DataFrame({"model": model, "split": split, "patient_id": ids,
                           "y_true": y.astype(int), "score": s, "score_kind": score_kind})
        for name, v in (("fold", fold), ("repeat", repeat)):
            if v is not None:
                df[name] = np.asarray(v).ravel() if np.ndim(v) else v
        self._pred = [p for p in self._pred
                      if not ((p["model"].iat[0] == model) and (p["split"].iat[0] == split))]
        self._pred.append(df)
        table = self.predictions_table
        io.write_table(table, self.out_dir / "tables" / "predictions.csv")
        return table

    @property
    def predictions_table(self) -> pd.DataFrame:
        """The long predictions table of this run (``model, split, patient_id, y_true, score,
        score_kind`` + ``fold``/``repeat`` where recorded)."""
        if not self._pred:
            return pd.DataFrame(columns=PREDICTION_COLUMNS)
        table = pd.concat(self._pred, ignore_index=True)
        extra = [c for c in ("fold", "repeat") if c in table]
        return table[PREDICTION_COLUMNS + extra]

    def record(self, *tables: pd.DataFrame) -> pd.DataFrame:
        """Record the rows of :func:`vcfnb.stats.evaluate` and/or :func:`vcfnb.stats.calibration`
        tables (columns ``model, split`` + metric columns) in ``metrics.json``; returns the
        tables merged on ``model, split``."""
        merged = None
        for t in tables:
            merged = t if merged is None else merged.merge(
                t, on=["model", "split"], how="outer", suffixes=("", "_calibration"))
        for _, row in merged.iterrows():
            values = {k: row[k] for k in MODEL_FIELDS if k in row.index}
            self.metric(str(row["model"]), str(row["split"]), **values)
        return merged

    def record_delong(self, table: pd.DataFrame) -> pd.DataFrame:
        """Record the rows of :func:`vcfnb.stats.delong_pairs` under ``comparisons.delong``."""
        for _, r in table.iterrows():
            key = (r["model_a"], r["model_b"], r["split"])
            self.comparisons = [c for c in self.comparisons
                                if (c["model_a"], c["model_b"], c["split"]) != key]
            self.comparisons.append({k: _json_value(r[k], DELONG_FIELDS[k])
                                     for k in DELONG_FIELDS})
        self.write_metrics()
        return table

    def record_permutation(self, model: str, result, *, split: str) -> pd.DataFrame:
        """Record a :class:`vcfnb.models.PermutationResult` of ``model`` on ``split``.

        The observed AUC must be the AUC this run reports for that model and split (same
        pipeline, same settings); a different one raises. Saves ``tables/permutation_<model>``
        (the null AUCs) and returns the one-row summary.
        """
        reported = self.models.get(model, {}).get(split, {}).get("auc")
        if reported is None:
            raise ValueError(f"record the metrics of {model!r} on {split!r} before its "
                             "permutation test (its observed AUC must equal the reported one)")
        if abs(float(result.observed_auc) - float(reported)) > 1e-6:
            raise ValueError(f"permutation test of {model!r}: observed AUC "
                             f"{result.observed_auc:.6f} differs from the reported "
                             f"{reported:.6f} on {split!r}; permute the same pipeline with the "
                             "same settings")
        null = np.asarray(result.null_auc, dtype=float)
        if null.size == 0:  # n_permutations: 0 -- said, not recorded as a test
            self.note(f"Permutation test of {model} on {split} not run (0 permutations).")
            summary = result.summary()
            summary.insert(0, "split", split)
            summary.insert(0, "model", model)
            return summary
        self.permutations[model] = {
            "split": split, "observed_auc": _json_value(result.observed_auc, float),
            "null_mean": _json_value(float(np.mean(null)) if null.size else None, float),
            "p_value": _json_value(result.p_value, float), "n_permutations": int(null.size)}
        self.write_metrics()
        self.table(f"permutation_{model}", pd.DataFrame({"permutation": np.arange(1, null.size + 1),
                                                          "null_auc": null}))
        summary = result.summary()
        summary.insert(0, "split", split)
        summary.insert(0, "model", model)
        return summary

    def save_model(self, name: str, estimator, *, feature_recipe: dict, feature_columns,
                   cutoff: float | None = None, score_kind: str, X_train: pd.DataFrame,
                   settings, split: str | None = None) -> Path:
        """Save a fitted model to ``models/<name>.skops`` + ``.json`` for ``vcfnb predict``:
        settings, feature recipe, columns, cut-off (default: the recorded out-of-fold Youden
        one), score kind and training ranges. See :func:`vcfnb.bundle.save_model`."""
        from vcfnb import bundle

        return bundle.save_model(self, name, estimator, feature_recipe=feature_recipe,
                                 feature_columns=feature_columns, cutoff=cutoff,
                                 score_kind=score_kind, X_train=X_train, settings=settings,
                                 split=split)

    def note(self, text: str) -> str:
        """Record a plain-language note (deviation, limitation) for the report and metrics.json."""
        self.notes.append(text)
        self.write_metrics()
        return text

    def payload(self) -> dict:
        """The ``metrics.json`` content (:mod:`vcfnb.metrics` schema)."""
        p = metrics_schema.empty(self.study, simulated=self.simulated)
        p.update(status=self.status, stopped_reason=self.stopped_reason,
                 main_models=list(self.main_models), notes=list(self.notes),
                 models=self.models, comparisons={"delong": self.comparisons},
                 permutation=self.permutations,
                 provenance=dict(self.extra.get("provenance", {})))
        return p

    def write_metrics(self, extra: dict | None = None) -> Path:
        """Write ``metrics.json``, validated against the closed schema (docs/metrics.md).

        ``extra`` may only set ``provenance`` (kept for every later write)."""
        if extra:
            unknown = sorted(set(extra) - {"provenance"})
            if unknown:
                raise ValueError(f"metrics.json has no key(s) {unknown} (docs/metrics.md); "
                                 "save other numbers with run.table")
            self.extra.update(extra)
        payload = metrics_schema.check(self.payload())
        return io.write_json(payload, self.out_dir / "metrics.json")

    # ---- comparisons and provenance
    def paper_vs_run(self, paper: dict[str, float], ours: dict[str, float] | None = None
                     ) -> pd.DataFrame:
        """Table of the paper's reported numbers beside this run's.

        ``paper`` maps ``"<model>/<split>/<metric>"`` to the published value (from params);
        this run's value is looked up in the recorded metrics unless given in ``ours``.
        """
        rows = []
        for key, value in paper.items():
            parts = key.split("/")
            if (ours or {}).get(key) is None and (len(parts) != 3 or parts[1] not in SPLITS
                                                  or parts[2] not in MODEL_FIELDS):
                raise ValueError(f"paper number {key!r}: keys are <model>/<split>/<metric> with "
                                 f"a split of {SPLITS} and a metric of {list(MODEL_FIELDS)}")
            mine = (ours or {}).get(key)
            if mine is None:
                mine = self.models.get(parts[0], {}).get(parts[1], {}).get(parts[2])
            rows.append({"quantity": key, "paper": value,
                         "this_run": np.nan if mine is None else mine})
        df = pd.DataFrame(rows, columns=["quantity", "paper", "this_run"])
        df["difference"] = df["this_run"] - df["paper"]
        note = ("simulated cohort: the numbers are not expected to match the paper"
                if self.simulated else "real cohort")
        df["note"] = note
        return self.table("paper_vs_run", df)

    def provenance(self) -> pd.DataFrame:
        """Versions, parameter hash, cohort manifest hash and git commit; writes metrics.json."""
        # where the report and cache live is not part of what was computed
        what = {k: v for k, v in self.params.items() if k not in ("out_dir", "cache_dir")}
        params_json = json.dumps(what, sort_keys=True, default=str)
        rows = {
            "vcfnb": __version__,
            "python": platform.python_version(),
            "platform": f"{platform.system()} {platform.machine()}",
            "params_sha256": hashlib.sha256(params_json.encode()).hexdigest()[:16],
            "cohort_manifest_sha256": self.manifest_hash(),
            "simulated_cohort": str(bool(self.simulated)),
            "git_commit": _git_commit(self.root),
        }
        for pkg in ("numpy", "pandas", "scikit-learn", "pyradiomics-bhklab", "SimpleITK",
                    "torch", "statsmodels", "pingouin", "mrmr-selection", "xgboost", "lightgbm",
                    "papermill"):
            try:
                rows[pkg] = metadata.version(pkg)
            except metadata.PackageNotFoundError:
                rows[pkg] = "not installed"
        if self.status == "running":
            self.status = "ok"
        self.write_metrics({"provenance": {k: rows[k] for k in
                                           ("params_sha256", "cohort_manifest_sha256")}})
        df = pd.DataFrame({"item": list(rows), "value": list(rows.values())})
        return self.table("provenance", df)

    def manifest_hash(self) -> str:
        """Hash of the cohort's tables (ids, outcomes, file names): what data the run saw."""
        if self.cohort is None:
            return ""
        h = hashlib.sha256()
        for df in (self.cohort.cases, self.cohort.rois):
            d = df.copy()
            for col in ("image", "mask"):
                if col in d:
                    d[col] = [self.cohort.relpath(p) for p in d[col]]
            h.update(d.to_csv(index=False).encode())
        return h.hexdigest()[:16]

    def card_data(self) -> dict:
        """What the run card says about the data (no paths, no identifiers)."""
        c = self.cohort
        y = pd.to_numeric(c.cases.get(c.outcome, pd.Series(dtype=float)), errors="coerce")
        split = (c.cases["split"].astype(str).value_counts().to_dict()
                 if "split" in c.cases else None)
        return {"study": self.study, "cohort": c.folder.name, "simulated": bool(c.simulated),
                "patients": int(len(c.cases)), "rois": int(len(c.rois)),
                "positive": int((y == 1).sum()), "negative": int((y == 0).sum()),
                "sequences": sorted(map(str, c.rois["sequence"].unique())),
                "roi_names": sorted(map(str, c.rois["roi"].unique())),
                "readers": sorted(map(str, c.rois["reader"].unique())),
                "split": ", ".join(f"{k} {v}" for k, v in sorted(split.items())) if split
                else None, "problems": int(len(c.problems)),
                "split_counts": _class_counts(c.cases, "split", y),
                "centers": _class_counts(c.cases, "center", y)}

    def card(self):
        """The run card so far (data, parameters, notes) as Markdown for the notebook."""
        from IPython.display import Markdown

        return Markdown(run_card_markdown(self.out_dir))

    # ---- the cohort contract
    @property
    def features_only(self) -> bool:
        """True when the run needs no outcome (``require_outcome: false``)."""
        return not bool(self.params.get("require_outcome", True))

    def preflight(self) -> pd.DataFrame:
        """Check the cohort against the study's requirements before any extraction.

        Saves ``tables/requirements_unmet.csv`` and raises
        :class:`vcfnb.contract.CohortRequirementsError` listing every unmet requirement; notes
        the optional readers that are absent (their steps are skipped). Returns the (empty)
        table of unmet requirements."""
        req = self.requirements
        unmet = contract.check(req, self.cohort.cases, self.cohort.rois, self.params,
                               features_only=self.features_only)
        if len(unmet):
            self.table("requirements_unmet", unmet)
            self.status, self.stopped_reason = "failed", "cohort does not meet the requirements"
            self.write_metrics()
            raise contract.CohortRequirementsError(self.study, unmet)
        for reader, present in contract.reader_modes(req, self.cohort.rois).items():
            if not present:
                self.note(f"single-reader mode: no reader-{reader} ROIs, so "
                          f"{req.optional_readers[reader]} is skipped")
        return unmet

    def has_reader(self, reader: str | int) -> bool:
        """Whether the cohort has ROIs of ``reader`` (e.g. the second reader for ICC)."""
        return str(reader) in set(self.cohort.rois["reader"].astype(str))

    def stop(self, reason: str) -> None:
        """Stop the study cleanly here (metrics.json and provenance written), saying why."""
        self.status, self.stopped_reason = "stopped", str(reason)
        self.note(f"stopped: {reason}")
        self.provenance()
        raise StopRun(reason)


def _class_counts(cases: pd.DataFrame, column: str, y: pd.Series) -> list | None:
    """``[{column: value, patients, positive, negative}]`` per value of ``column`` (run card)."""
    if column not in cases:
        return None
    key = cases[column].astype(str)
    return [{column: str(k), "patients": int((key == k).sum()),
             "positive": int(((key == k) & (y == 1)).sum()),
             "negative": int(((key == k) & (y == 0)).sum())} for k in sorted(key.unique())]


def _json_value(v, kind: type):
    """A JSON-ready value of ``kind`` (None for NaN/None/empty)."""
    if v is None or (isinstance(v, str) and kind is not str and not v):
        return None
    if kind is str:
        return None if (isinstance(v, float) and not np.isfinite(v)) else str(v)
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    if not np.isfinite(f):
        return None
    return int(round(f)) if kind is int else round(f, 6)


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_")


def _show_once(fig) -> None:
    """In a notebook, show ``fig`` in place, exactly once.

    The figure leaves pyplot (whose inline backend would show it again at the end of the cell)
    and is displayed now, so figures made in a loop appear too; when ``run.figure(...)`` is the
    last line of a cell, the returned figure is not shown a second time as the cell's value. In
    a later cell, ``fig`` or ``display(fig)`` shows it again as usual. Outside IPython: nothing.
    """
    if "IPython" not in sys.modules:
        return
    from IPython import get_ipython
    from IPython.display import display

    shell = get_ipython()
    if shell is None:
        return
    if "matplotlib.pyplot" in sys.modules:
        sys.modules["matplotlib.pyplot"].close(fig)
    display(fig)
    shown_in = shell.execution_count

    def _ipython_display_() -> None:
        if getattr(get_ipython(), "execution_count", None) == shown_in:
            return  # the value of the cell that showed it already
        del fig._ipython_display_
        try:
            display(fig)
        finally:
            fig._ipython_display_ = _ipython_display_

    fig._ipython_display_ = _ipython_display_


def _as_figure(obj):
    if hasattr(obj, "savefig"):
        return obj
    if hasattr(obj, "figure") and hasattr(obj.figure, "savefig"):
        return obj.figure
    if hasattr(obj, "fig"):  # seaborn grids
        return obj.fig
    if isinstance(obj, (list, tuple, np.ndarray)) and len(obj):
        return _as_figure(np.ravel(obj)[0])
    raise TypeError(f"cannot find a matplotlib figure in {type(obj).__name__}")


def _git_commit(root: Path) -> str:
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--", "vcfnb",
                                "notebooks", "params"], capture_output=True, text=True, timeout=10)
        if out.returncode != 0:
            return "unknown (not a git checkout)"
        return out.stdout.strip() + (" (modified)" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def notebook_params(namespace: dict) -> dict:
    """The parameters among a notebook's globals: literal values, no modules or IPython names."""
    return {k: v for k, v in namespace.items()
            if not k.startswith("_") and k not in _IGNORED and isinstance(v, _LITERAL)
            and not isinstance(v, types.ModuleType)}


_FORMAT_WARNING = warnings.formatwarning


def report_warning(message, category, filename, lineno, line=None) -> str:
    """How a warning reads in a report: one raised from a notebook cell (the kernel's
    ``ipykernel_*`` cell files) shows its category and message only, not the temporary file name
    and the line of notebook code Python would print under it (the HTML report has no code);
    any other warning as Python formats it. :func:`start_run` installs it.

    >>> report_warning("3 of 9 refits fell back", UserWarning, "/tmp/ipykernel_7/12.py", 5, "x = 1")
    'UserWarning: 3 of 9 refits fell back\\n'
    """
    if Path(str(filename)).parent.name.startswith("ipykernel_"):
        return f"{category.__name__}: {message}\n"
    return _FORMAT_WARNING(message, category, filename, lineno, line)


def start_run(study: str, namespace: dict, *, load: bool = True,
              requirements: contract.Requirements | None = None) -> Run:
    """Resolve a study run from the notebook's parameters.

    Parameters
    ----------
    study : str
        Notebook name, e.g. ``"ovf_prediction_ct"``.
    namespace : dict
        The notebook's ``globals()`` right after the parameters cell and imports; the literal
        values in it are the parameters.
    load : bool
        Load (and, when ``cohort_dir`` is empty, generate) the cohort, then run the pre-flight
        check of the study's declared requirements (:mod:`vcfnb.contract`): every unmet
        requirement is listed at once and the run stops before any extraction.
    requirements : Requirements, optional
        The cohort requirements; default: the study's ``REQUIREMENTS`` declaration.

    Common parameters used here: ``cohort_dir`` (empty = built-in simulated cohort),
    ``synthetic_size``, ``synthetic_signal``, ``seed``, ``out_dir`` (empty = ``reports/<study>/
    interactive``), ``cache_dir`` (empty = ``data/cache``, or ``$VCFNB_DATA_DIR/cache``),
    ``outcome``, ``mask_grid``.
    """
    from vcfnb.sources import data_root

    params = notebook_params(namespace)
    warnings.formatwarning = report_warning
    root = project_root()
    out_dir = Path(params.get("out_dir") or root / "reports" / study / "interactive")
    if not out_dir.is_absolute():
        out_dir = root / out_dir
    cache_dir = Path(params.get("cache_dir") or data_root(root) / "cache")
    if not cache_dir.is_absolute():
        cache_dir = root / cache_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    run = Run(study=study, params=params, root=root, out_dir=out_dir, cache_dir=cache_dir)
    run.requirements = requirements if requirements is not None else contract.for_study(study)
    if run.requirements is not None:
        run.main_models = list(run.requirements.main_models)
    if load and STUDY_COHORT.get(study, None) is not None or (load and params.get("cohort_dir")):
        run.cohort = resolve_cohort(run)
        run.simulated = bool(run.cohort.simulated)
    else:
        run.simulated = False
    io.write_json({k: scrub(v, run._roots()) if isinstance(v, str) else v
                   for k, v in params.items()}, out_dir / "params.json")
    run.write_metrics()
    if run.cohort is not None:
        run.table("cohort_problems", run.cohort.problems)
        io.write_json(run.card_data(), out_dir / "run_card.json")
    if run.cohort is not None and run.requirements is not None:
        run.preflight()
    return run


def run_card_markdown(out_dir: str | Path) -> str:
    """The run card that opens a report: the data the run saw, every parameter value, its
    status, the notes (deviations from the paper, skipped steps) and the rows excluded.

    Built from the files a run leaves (``run_card.json``, ``params.json``, ``metrics.json``,
    ``tables/cohort_problems.csv``), so the runner can put it on top of the executed notebook
    after the run."""
    out = Path(out_dir)

    def load(name):
        f = out / name
        return json.loads(f.read_text(encoding="utf-8")) if f.is_file() else {}

    card, params, m = load("run_card.json"), load("params.json"), load("metrics.json")
    lines = [f"# Run card — {m.get('study') or card.get('study', out.parent.name)}", ""]
    status = m.get("status", "unknown")
    if m.get("stopped_reason"):
        status += f" — {m['stopped_reason']}"
    lines += [f"**Status**: {status}.  ", f"**Main models**: "
              f"{', '.join(m.get('main_models') or []) or 'none declared'}.", ""]
    if card:
        kind = ("**simulated** (built-in generator; not patient data)" if card.get("simulated")
                else "real (user-provided)")
        lines += ["## Data", "",
                  f"- Cohort `{card.get('cohort')}`: {kind}.",
                  f"- {card.get('patients')} patients ({card.get('positive')} positive, "
                  f"{card.get('negative')} negative), {card.get('rois')} ROIs; sequences "
                  f"{', '.join(card.get('sequences', []))}; ROI names "
                  f"{', '.join(card.get('roi_names', [])[:12])}; readers "
                  f"{', '.join(card.get('readers', []))}.",
                  f"- Split column: {card.get('split') or 'none given'}.",
                  f"- Rows excluded by validation: {card.get('problems', 0)}"
                  + (" (table `cohort_problems`)." if card.get("problems") else "."), ""]
    if params:
        lines += ["## Parameters", "", "| parameter | value |", "|---|---|"]
        for k in sorted(params):
            if k in ("out_dir", "cache_dir"):
                continue
            v = json.dumps(params[k], ensure_ascii=False)
            lines.append(f"| `{k}` | `{v if len(v) <= 120 else v[:117] + '...'}` |")
        lines.append("")
    notes = m.get("notes") or []
    lines += ["## Notes: deviations from the paper, steps that could not run", ""]
    lines += [f"- {n}" for n in notes] or ["- none recorded"]
    figures = sorted((out / "figures").glob("*.png")) if (out / "figures").is_dir() else []
    if figures:  # links relative to the report folder (the executed notebook and HTML live there)
        lines += ["", "## Figures", ""]
        lines += [f"- [{f.stem}](figures/{f.name})" for f in figures]
    return "\n".join(lines) + "\n"


def resolve_cohort(run: Run):
    """Load the cohort named by ``cohort_dir`` or generate the built-in simulated one."""
    from vcfnb import synth
    from vcfnb.sources import data_root

    p = run.params
    cohort_dir = p.get("cohort_dir") or ""
    if cohort_dir:
        folder = Path(cohort_dir)
        if not folder.is_absolute():
            folder = run.root / folder
    else:
        gen = p.get("synthetic_cohort") or STUDY_COHORT[run.study]
        size = p.get("synthetic_size", "smoke")
        signal = float(p.get("synthetic_signal", 1.0))
        folder = data_root(run.root) / "cohorts" / f"{gen}-{size}-seed{run.seed}-signal{signal:g}"
        synth.make_cohort(gen, folder, size=size, seed=run.seed, signal=signal)
    return io.load_cohort(folder, outcome=p.get("outcome", "outcome") or "outcome",
                          mask_grid=p.get("mask_grid", "strict"),
                          geometry_tol=float(p.get("geometry_tol", 1e-3)),
                          require_outcome=bool(p.get("require_outcome", True))
                          and _reads_outcome(run))


def _reads_outcome(run: Run) -> bool:
    """Whether the run reads the outcome column as given: not when the study's requirements
    make it conditional and the condition is off (e.g. osteoporosis derives it from DXA)."""
    cols = [c for c in getattr(run.requirements, "columns", ()) if c.outcome
            and c.name == "{outcome}"]
    return not cols or any(contract._active(c.when, run.params) for c in cols)
