"""What a study needs from a cohort, declared as data, and the pre-flight check that reads it.

Each study module declares one :class:`Requirements` (``vcfnb.studies.<x>.REQUIREMENTS``): the
sequences and ROI names every patient must have, which reader's ROIs each step needs, the
``cases.csv`` columns with their types and allowed values, and the cross-validations whose fold
counts the class sizes must allow. The same declaration

- is checked by :func:`check` before any extraction (the notebook's first cells via
  :func:`vcfnb.report.start_run`, and ``python -m vcfnb.runner check-cohort``), listing every
  unmet requirement at once with the column, ROI or parameter to fix;
- is rendered into docs/cohorts.md (:func:`markdown`, kept equal by a test);
- can be written in a params file (:meth:`Requirements.from_dict`), so a new study can declare
  its own.

Column names and values may refer to parameters with braces: ``"{outcome}"`` is the column the
``outcome`` parameter names. A requirement with ``when="param"`` applies only when that
parameter is truthy (``when="param=value"``: when it equals ``value``).

Examples
--------
>>> import pandas as pd
>>> req = Requirements(study="demo", sequences=("T2",), rois=("L1",),
...                    columns=(Column("{outcome}", "binary", outcome=True),),
...                    folds=(Folds("cv_folds"),))
>>> cases = pd.DataFrame({"patient_id": list("abcd"), "outcome": [0, 1, 0, 1]})
>>> rois = pd.DataFrame({"patient_id": list("abcd"), "roi": "L1", "sequence": "T2",
...                      "reader": "1"})
>>> unmet = check(req, cases, rois, {"outcome": "outcome", "cv_folds": 5, "test_size": 0.0})
>>> print(unmet.problem.iat[0])  # doctest: +NORMALIZE_WHITESPACE
parameter 'cv_folds' = 5 needs at least 5 patients of each class in the training rows; the
smaller class allows 2 (the training rows of a stratified 100%/0% split)
>>> unmet.fix.tolist()
['set cv_folds: 2 or less']
"""
from __future__ import annotations

import importlib
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
import pandas as pd

__all__ = ["Column", "Folds", "Requirements", "CohortRequirementsError", "check", "for_study",
           "markdown", "STUDY_MODULES"]

#: notebook name → module of ``vcfnb.studies`` holding its ``REQUIREMENTS``
STUDY_MODULES = {
    "vcf_benign_malignant": "vcf",
    "osteoporosis_mri": "osteoporosis",
    "ovf_prediction_ct": "ovf",
    "metastasis_lytic_blastic": "metastasis",
}
KINDS = ("binary", "numeric", "category", "text", "any")


class CohortRequirementsError(ValueError):
    """The cohort does not meet the study's declared requirements (all of them are listed)."""

    def __init__(self, study: str, table: pd.DataFrame):
        self.table = table
        lines = [f"  {i}. {r.problem} — fix: {r.fix}" for i, r in
                 enumerate(table.itertuples(), 1)]
        super().__init__(f"the cohort does not meet {len(table)} requirement(s) of {study} "
                         "(nothing was extracted):\n" + "\n".join(lines))

    def _render_traceback_(self):  # IPython: the list, not a traceback
        return [f"CohortRequirementsError: {self}"]


@dataclass(frozen=True)
class Column:
    """A ``cases.csv`` column the study reads.

    ``kind``: ``binary`` (0/1), ``numeric``, ``category`` (values from ``values``), ``text``
    or ``any``. ``outcome=True`` marks the outcome (not required in features-only mode).
    ``missing_ok``: empty cells allowed. ``needed_for``: the step that reads it.
    """

    name: str
    kind: str = "any"
    values: tuple = ()
    needed_for: str = ""
    when: str | None = None
    outcome: bool = False
    missing_ok: bool = False

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"column {self.name!r}: kind must be one of {KINDS}")


@dataclass(frozen=True)
class Folds:
    """A cross-validation whose fold count is the parameter ``param``.

    ``on``: ``"train"`` (the training rows of a hold-out design) or ``"all"`` (every patient,
    a CV-only design). ``within``: parameters of the CVs this one runs inside (each outer fold
    leaves ``(k - 1) / k`` of the rows to it). ``by``: the column whose classes are counted
    (default: the outcome).
    """

    param: str
    on: str = "train"
    within: tuple = ()
    when: str | None = None


@dataclass(frozen=True)
class Requirements:
    """Everything a study needs from a cohort (see the module docstring)."""

    study: str
    design: str = "holdout"  # "holdout" (train/test[/external]) or "cv" (CV only)
    sequences: tuple = ()
    rois: tuple = ()
    readers: Mapping = field(default_factory=lambda: {"1": "every step"})
    optional_readers: Mapping = field(default_factory=dict)
    columns: tuple = ()
    folds: tuple = ()
    min_per_class: int = 2
    test_size_param: str | None = "test_size"
    main_models: tuple = ()
    notes: tuple = ()

    def to_dict(self) -> dict:
        """Plain data (what a params file can hold)."""
        d = asdict(self)
        d["readers"], d["optional_readers"] = dict(self.readers), dict(self.optional_readers)
        return d

    @classmethod
    def from_dict(cls, d: Mapping) -> Requirements:
        """Requirements from plain data (e.g. a params file's ``requirements:`` block)."""
        d = dict(d)
        unknown = sorted(set(d) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"unknown requirement key(s) {unknown}; allowed: "
                             f"{sorted(cls.__dataclass_fields__)}")
        d["columns"] = tuple(c if isinstance(c, Column) else Column(**{
            **c, "values": tuple(c.get("values", ()))}) for c in d.get("columns", ()))
        d["folds"] = tuple(f if isinstance(f, Folds) else Folds(**{
            **f, "within": tuple(f.get("within", ()))}) for f in d.get("folds", ()))
        for key in ("sequences", "rois", "main_models", "notes"):
            d[key] = tuple(d.get(key, ()))
        return cls(**d)


def for_study(study: str) -> Requirements | None:
    """The declared requirements of a study notebook (None for a notebook without a cohort)."""
    mod = STUDY_MODULES.get(study)
    if mod is None:
        return None
    return getattr(importlib.import_module(f"vcfnb.studies.{mod}"), "REQUIREMENTS", None)


# --------------------------------------------------------------------------------------------
# the check
# --------------------------------------------------------------------------------------------
def _active(when: str | None, params: Mapping) -> bool:
    if not when:
        return True
    if "=" in when:
        key, value = when.split("=", 1)
        return str(params.get(key.strip())) == value.strip()
    return bool(params.get(when))


def _fill(text: str, params: Mapping) -> str:
    values = {"outcome": "outcome", **{k: v for k, v in params.items()
                                       if isinstance(v, (str, int, float)) and v != ""}}
    try:
        return text.format(**values)
    except (KeyError, IndexError, ValueError):
        return text


def _fill_all(items, params: Mapping) -> list[str]:
    """:func:`_fill` each item; an item ``"{name}"`` naming a list parameter (e.g. the
    ``sequences`` a run extracts) stands for that list's values."""
    out: list[str] = []
    for s in items:
        key = s[1:-1] if isinstance(s, str) and s.startswith("{") and s.endswith("}") else None
        if key and isinstance(params.get(key), (list, tuple)):
            out += [str(v) for v in params[key]]
        else:
            out.append(_fill(s, params))
    return out


def _few(ids) -> str:
    ids = [str(i) for i in ids]
    return ", ".join(ids[:5]) + (f", … ({len(ids)} in all)" if len(ids) > 5 else "")


def _class_counts(req: Requirements, cases: pd.DataFrame, outcome: str, params: Mapping
                  ) -> tuple[dict[str, int], str]:
    """Smallest class size for the rows each design fits on: ``{'train': m, 'all': m}``."""
    y = pd.to_numeric(cases[outcome], errors="coerce").dropna()
    all_min = int(y.value_counts().reindex([0, 1], fill_value=0).min()) if len(y) else 0
    split = cases["split"].astype(str).str.strip().str.lower() if "split" in cases else None
    if req.design == "cv":
        return {"all": all_min, "train": all_min}, "every patient (the study evaluates by CV)"
    if split is not None and split.isin(["train"]).any():
        ytr = pd.to_numeric(cases.loc[split == "train", outcome], errors="coerce").dropna()
        m = int(ytr.value_counts().reindex([0, 1], fill_value=0).min())
        return {"all": all_min, "train": m}, "the training rows of the given split"
    internal = y[split.reindex(y.index) != "external"] if split is not None else y
    ts = float(params.get(req.test_size_param, 0.3)) if req.test_size_param else 0.0
    counts = internal.value_counts().reindex([0, 1], fill_value=0)
    train = [c - math.ceil(c * ts) for c in counts]  # stratified split rounds test up
    return {"all": all_min, "train": int(min(train))}, (
        f"the training rows of a stratified {1 - ts:.0%}/{ts:.0%} split")


def check(req: Requirements, cases: pd.DataFrame, rois: pd.DataFrame, params: Mapping, *,
          features_only: bool = False) -> pd.DataFrame:
    """Every unmet requirement of ``req`` in a cohort's tables, before any extraction.

    Parameters
    ----------
    cases, rois : DataFrame
        The cohort's (validated) tables.
    params : mapping
        The run's parameters (names in braces, ``when`` conditions and fold counts come from
        here).
    features_only : bool
        Check everything but the outcome (and the class counts that need it).

    Returns
    -------
    DataFrame
        ``requirement, where, problem, fix`` — empty when the cohort meets every requirement.
    """
    rows: list[dict] = []

    def add(requirement, where, problem, fix):
        rows.append({"requirement": requirement, "where": where, "problem": problem, "fix": fix})

    outcome = str(params.get("outcome") or "outcome")
    # columns
    for col in req.columns:
        if not _active(col.when, params) or (features_only and col.outcome):
            continue
        name = _fill(col.name, params)
        why = f" (needed for {col.needed_for})" if col.needed_for else ""
        if name not in cases.columns:
            close = [c for c in cases.columns if c.lower().replace("_", "") ==
                     name.lower().replace("_", "")]
            hint = f"; a column {close[0]!r} exists — rename it" if close else ""
            add("column", f"cases.csv: {name}", f"column {name!r} is missing{why}",
                f"add a column {name!r} to cases.csv{hint}"
                + (" or set the `outcome` parameter to its name" if col.outcome else ""))
            continue
        values = cases[name]
        empty = values.isna() | (values.astype(str).str.strip() == "")
        if empty.any() and not col.missing_ok:
            add("column", f"cases.csv: {name}",
                f"column {name!r} is empty for {int(empty.sum())} patient(s): "
                f"{_few(cases.loc[empty, 'patient_id'])}", "fill in the values or remove "
                "those patients")
        present = values[~empty]
        if col.kind == "binary":
            bad = present[~present.astype(str).str.strip().isin(["0", "1", "0.0", "1.0"])]
        elif col.kind == "numeric":
            bad = present[pd.to_numeric(present, errors="coerce").isna()]
        elif col.kind == "category" and col.values:
            allowed = {str(_fill(str(v), params)) for v in col.values}
            bad = present[~present.astype(str).str.strip().isin(allowed)]
        else:
            bad = present.iloc[:0]
        if len(bad):
            expect = {"binary": "0 or 1", "numeric": "numbers",
                      "category": f"one of {sorted({str(v) for v in col.values})}"}[col.kind]
            add("column", f"cases.csv: {name}",
                f"column {name!r} must hold {expect}; found {sorted(set(bad.astype(str)))[:6]}",
                f"recode column {name!r}")
    # sequences, ROIs and readers
    r = rois.copy()
    r["reader"] = r["reader"].astype(str)
    r["sequence"] = r["sequence"].astype(str)
    r["roi"] = r["roi"].astype(str)
    seqs = _fill_all(req.sequences, params)
    names = _fill_all(req.rois, params)
    for s in seqs:
        if s not in set(r["sequence"]):
            add("sequence", f"rois.csv: sequence {s}", f"no ROI of sequence {s!r} "
                f"(present: {sorted(set(r['sequence']))})", f"add rows with sequence {s!r} "
                "to rois.csv (or rename the sequence column's values)")
    for n in names:
        if n not in set(r["roi"]):
            add("roi", f"rois.csv: roi {n}", f"no ROI named {n!r} (present: "
                f"{sorted(set(r['roi']))[:12]})", f"name the ROIs {names} in rois.csv")
    for reader, steps in req.readers.items():
        if str(reader) not in set(r["reader"]):
            add("reader", f"rois.csv: reader {reader}", f"no ROI of reader {reader!r} "
                f"(needed for {steps}; present: {sorted(set(r['reader']))})",
                f"mark the primary segmentation's rows reader {reader}")
    primary = r[r["reader"] == str(next(iter(req.readers), "1"))]
    have = set(zip(primary["patient_id"].astype(str), primary["sequence"], primary["roi"]))
    if seqs and names and not primary.empty:
        for s in seqs:
            for n in names:
                if s not in set(r["sequence"]) or n not in set(r["roi"]):
                    continue
                lack = [p for p in cases["patient_id"].astype(str) if (p, s, n) not in have
                        # features only: no model combines sequences, one of them suffices
                        and not (features_only and any((p, s2, n) in have for s2 in seqs))]
                if lack:
                    add("roi", f"rois.csv: {n}/{s}", f"{len(lack)} patient(s) lack ROI {n!r} on "
                        f"{s!r}: {_few(lack)}", "add their ROI rows or remove those patients "
                        "from cases.csv")
    # fold counts
    if not features_only and outcome in cases.columns:
        mins, where = _class_counts(req, cases, outcome, params)
        n_class = mins["all"]
        if n_class < req.min_per_class:
            add("patients", f"cases.csv: {outcome}", f"the smaller class has {n_class} "
                f"patient(s); {req.study} needs at least {req.min_per_class} per class",
                "add patients of the smaller class")
        for f in req.folds:
            if not _active(f.when, params) or f.param not in params:
                continue
            k = int(params[f.param])
            avail = float(mins[f.on])
            for parent in f.within:
                kp = int(params.get(parent, 1) or 1)
                avail *= (kp - 1) / kp if kp > 1 else 1.0
            largest = int(math.floor(avail))
            if k > largest:
                fix = (f"set {f.param}: {largest} or less" if largest >= 2 else
                       "add patients: there are too few for any cross-validation here")
                nested = f" (inside {', '.join(f.within)})" if f.within else ""
                add("folds", f"parameter {f.param}",
                    f"parameter {f.param!r} = {k} needs at least {k} patients of each class in "
                    f"{'the training rows' if f.on == 'train' else 'the cohort'}{nested}; the "
                    f"smaller class allows {largest} ({where})", fix)
    return pd.DataFrame(rows, columns=["requirement", "where", "problem", "fix"])


def reader_modes(req: Requirements, rois: pd.DataFrame) -> dict[str, bool]:
    """Which optional readers the cohort has: ``{"2": False}`` → the steps needing them skip."""
    present = set(rois["reader"].astype(str))
    return {str(k): str(k) in present for k in req.optional_readers}


# --------------------------------------------------------------------------------------------
# documentation
# --------------------------------------------------------------------------------------------
def markdown(req: Requirements) -> str:
    """The requirements as a Markdown section (docs/cohorts.md holds one per study)."""
    out = [f"### `{req.study}`", ""]
    design = ("hold-out: train/test split (a `split` column is honoured), optional external "
              "cohort" if req.design == "holdout" else
              "cross-validation on all patients (a `split` column is ignored)")
    out += [f"- **Design**: {design}."]
    if req.sequences:
        out += [f"- **Sequences** (`rois.csv: sequence`): {', '.join(f'`{s}`' for s in req.sequences)}."]
    if req.rois:
        out += [f"- **ROIs per patient and sequence** (`rois.csv: roi`): "
                f"{', '.join(f'`{s}`' for s in req.rois)}."]
    for k, v in req.readers.items():
        out += [f"- **Reader {k}** (required): {v}."]
    for k, v in req.optional_readers.items():
        out += [f"- **Reader {k}** (optional): {v}; without it that step is skipped and the "
                "report says so."]
    if req.columns:
        out += ["", "| `cases.csv` column | type | values | needed for | when |",
                "|---|---|---|---|---|"]
        for c in req.columns:
            vals = ", ".join(str(v) for v in c.values) or ("0/1" if c.kind == "binary" else "")
            when = f"`{c.when}`" if c.when else "always"
            if c.outcome:
                when += " (not in features-only mode)"
            miss = " (may be empty)" if c.missing_ok else ""
            out += [f"| `{c.name}` | {c.kind}{miss} | {vals} | {c.needed_for} | {when} |"]
        out += [""]
    if req.folds:
        folds = ", ".join(f"`{f.param}`" + (f" (inside {', '.join(f'`{w}`' for w in f.within)})"
                                            if f.within else "") for f in req.folds)
        rows = "training rows" if req.design == "holdout" else "patients"
        out += [f"- **Fold counts**: each class needs at least as many {rows} as {folds} "
                f"(at least {req.min_per_class} patients per class in all)."]
    for n in req.notes:
        out += [f"- {n}"]
    return "\n".join(out) + "\n"


def docs_section() -> str:
    """The generated per-study section of docs/cohorts.md."""
    parts = ["<!-- generated from vcfnb/studies/*.py REQUIREMENTS by "
             "`python -m vcfnb.contract`; do not edit by hand -->", ""]
    for study in STUDY_MODULES:
        req = for_study(study)
        if req is not None:
            parts.append(markdown(req))
    return "\n".join(parts)


BEGIN, END = "<!-- BEGIN study requirements -->", "<!-- END study requirements -->"


def render_docs(text: str) -> str:
    """``text`` (docs/cohorts.md) with its generated section replaced by the current one."""
    if BEGIN not in text or END not in text:
        raise ValueError(f"docs/cohorts.md lacks the markers {BEGIN} … {END}")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{docs_section()}{END}{tail}"


def main(argv: list[str] | None = None) -> int:  # pragma: no cover - thin CLI
    """``python -m vcfnb.contract``: regenerate the per-study section of docs/cohorts.md."""
    from vcfnb.report import project_root

    path = project_root() / "docs" / "cohorts.md"
    path.write_text(render_docs(path.read_text(encoding="utf-8")), encoding="utf-8")
    print(f"updated {path}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
