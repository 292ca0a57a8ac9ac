"""The one ``metrics.json`` schema every run writes (documented in ``docs/metrics.md``).

The schema is closed: a key it does not name is an error, so two studies cannot spell the same
number two ways. Every value may be ``null`` (a number the run could not compute, a run that
stopped before modelling).

::

    schema_version  int
    study           str
    simulated       bool
    status          "running" | "ok" | "stopped" | "failed"
    stopped_reason  str | null
    main_models     [str]          the models the paper headlines (every study lists them)
    provenance      {params_sha256, cohort_manifest_sha256, cohort_content_sha256, vcfnb,
                     git_commit}
    notes           [str]
    models          {<model>: {<split>: {MODEL_FIELDS}}}     split ∈ SPLITS
    comparisons     {"delong": [{model_a, model_b, split, z, p_value}]}
    permutation     {<model>: {split, observed_auc, null_mean, p_value, n_permutations}}

Examples
--------
>>> validate(empty("demo"))
[]
>>> validate({**empty("demo"), "permutation_p": 0.1})
["unknown key 'permutation_p' at the top level"]
"""
from __future__ import annotations

from typing import Any

from vcfnb.stats import SPLITS

__all__ = ["SCHEMA_VERSION", "MODEL_FIELDS", "PERMUTATION_FIELDS", "DELONG_FIELDS", "SPLITS",
           "MetricsSchemaError", "empty", "validate", "check"]

SCHEMA_VERSION = 1

#: per model and split (calibration fields are null for ``decision`` scores)
MODEL_FIELDS = {
    "n": int, "auc": float, "ci_low": float, "ci_high": float, "ci_method": str,
    "accuracy": float, "sensitivity": float, "specificity": float, "ppv": float, "npv": float,
    "cutoff": float, "cutoff_split": str, "hl_p": float, "hl_groups": int, "hl_dof": int,
    "calibration_slope": float, "calibration_intercept": float, "brier": float,
}
DELONG_FIELDS = {"model_a": str, "model_b": str, "split": str, "z": float, "p_value": float}
PERMUTATION_FIELDS = {"split": str, "observed_auc": float, "null_mean": float, "p_value": float,
                      "n_permutations": int}
PROVENANCE_FIELDS = {"params_sha256": str, "cohort_manifest_sha256": str,
                     "cohort_content_sha256": str, "vcfnb": str, "git_commit": str}
TOP_FIELDS = {"schema_version": int, "study": str, "simulated": bool, "status": str,
              "stopped_reason": str, "main_models": list, "provenance": dict, "notes": list,
              "models": dict, "comparisons": dict, "permutation": dict}
STATUS = ("running", "ok", "stopped", "failed")


class MetricsSchemaError(ValueError):
    """A metrics.json payload does not follow the schema (the message lists every problem)."""


def empty(study: str, *, simulated: bool = False) -> dict:
    """A valid payload with nothing measured yet."""
    return {"schema_version": SCHEMA_VERSION, "study": study, "simulated": bool(simulated),
            "status": "running", "stopped_reason": None, "main_models": [],
            "provenance": {}, "notes": [], "models": {}, "comparisons": {"delong": []},
            "permutation": {}}


def _type_ok(value: Any, kind: type) -> bool:
    if value is None:
        return True
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def _fields(obj: Any, spec: dict, where: str, errors: list[str], *, complete: bool) -> None:
    if not isinstance(obj, dict):
        errors.append(f"{where} must be an object, got {type(obj).__name__}")
        return
    for key, value in obj.items():
        if key not in spec:
            errors.append(f"unknown key {key!r} at {where}")
        elif not _type_ok(value, spec[key]):
            errors.append(f"{where}.{key} must be {spec[key].__name__} or null, got {value!r}")
    if complete:
        for key in spec:
            if key not in obj:
                errors.append(f"missing key {key!r} at {where}")


def validate(payload: dict) -> list[str]:
    """Every problem of ``payload`` against the schema (empty list: valid)."""
    errors: list[str] = []
    _fields(payload, TOP_FIELDS, "the top level", errors, complete=True)
    if errors:
        return errors
    if payload["schema_version"] != SCHEMA_VERSION:
        errors.append(f"schema_version must be {SCHEMA_VERSION}")
    if payload["status"] not in STATUS:
        errors.append(f"status must be one of {STATUS}, got {payload['status']!r}")
    if not all(isinstance(m, str) for m in payload["main_models"]):
        errors.append("main_models must be a list of model names")
    if not all(isinstance(n, str) for n in payload["notes"]):
        errors.append("notes must be a list of strings")
    _fields(payload["provenance"], PROVENANCE_FIELDS, "provenance", errors, complete=False)
    for model, splits in payload["models"].items():
        if not isinstance(splits, dict):
            errors.append(f"models.{model} must be an object of splits")
            continue
        for split, entry in splits.items():
            if split not in SPLITS:
                errors.append(f"models.{model}: unknown split {split!r} (allowed: {SPLITS})")
                continue
            _fields(entry, MODEL_FIELDS, f"models.{model}.{split}", errors, complete=True)
    comp = payload["comparisons"]
    if set(comp) - {"delong"}:
        errors.append(f"unknown key(s) {sorted(set(comp) - {'delong'})} at comparisons")
    for i, row in enumerate(comp.get("delong", [])):
        _fields(row, DELONG_FIELDS, f"comparisons.delong[{i}]", errors, complete=True)
    for model, entry in payload["permutation"].items():
        _fields(entry, PERMUTATION_FIELDS, f"permutation.{model}", errors, complete=True)
    for m in payload["main_models"]:
        if payload["status"] == "ok" and m not in payload["models"]:
            errors.append(f"main model {m!r} has no metrics in a finished run")
    return errors


def check(payload: dict) -> dict:
    """Return ``payload`` if valid, else raise :class:`MetricsSchemaError` listing every problem."""
    errors = validate(payload)
    if errors:
        raise MetricsSchemaError("metrics.json does not follow the schema (docs/metrics.md): "
                                 + "; ".join(errors))
    return payload
