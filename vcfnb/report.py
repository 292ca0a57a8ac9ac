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
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from vcfnb import __version__, io

__all__ = ["start_run", "Run", "StopRun", "STUDY_COHORT", "project_root", "scrub"]

#: notebook name → built-in simulated cohort generator
STUDY_COHORT = {
    "vcf_benign_malignant": "vcf",
    "osteoporosis_mri": "osteoporosis",
    "ovf_prediction_ct": "ovf",
    "metastasis_lytic_blastic": "metastasis",
    "ibsi_conformance": None,
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

    # ---- seeds
    @property
    def seed(self) -> int:
        return int(self.params.get("seed", 0))

    def rng(self, *keys: int | str) -> np.random.Generator:
        """A generator derived from the master seed and ``keys`` (independent streams per step)."""
        ints = [self.seed] + [int(hashlib.sha256(str(k).encode()).hexdigest()[:8], 16)
                              for k in keys]
        return np.random.default_rng(np.random.SeedSequence(ints))

    def random_state(self, *keys: int | str) -> int:
        """An int ``random_state`` for scikit-learn derived from the master seed and ``keys``."""
        return int(self.rng(*keys).integers(0, 2**31 - 1))

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
        return fig

    def metric(self, model: str, split: str, *, auc: float, ci_low: float, ci_high: float,
               n: int, **extra) -> None:
        """Record one model's AUC (with CI) on one split for ``metrics.json``."""
        if split not in ("train", "test", "external", "cv"):
            raise ValueError(f"split must be train/test/external/cv, got {split!r}")
        entry = {"auc": _r(auc), "ci_low": _r(ci_low), "ci_high": _r(ci_high), "n": int(n)}
        entry.update({k: _r(v) if isinstance(v, float) else v for k, v in extra.items()})
        self.models.setdefault(model, {})[split] = entry
        self.write_metrics()

    def metrics_from_table(self, table: pd.DataFrame, *, model: str = "model",
                           split: str = "split") -> pd.DataFrame:
        """Record every row of a tidy performance table and return the table.

        Columns: ``model, split, auc, n`` and the CI as ``ci_low, ci_high`` or
        ``auc_ci_low, auc_ci_high`` (the columns of :func:`vcfnb.stats.model_report`)."""
        lo, hi = (("auc_ci_low", "auc_ci_high") if "auc_ci_low" in table
                  else ("ci_low", "ci_high"))
        for _, row in table.iterrows():
            self.metric(str(row[model]), str(row[split]), auc=row["auc"], ci_low=row[lo],
                        ci_high=row[hi], n=row["n"])
        return table

    def note(self, text: str) -> str:
        """Record a plain-language note (deviation, limitation) for the report and metrics.json."""
        self.notes.append(text)
        self.write_metrics()
        return text

    def write_metrics(self, extra: dict | None = None) -> Path:
        """Write ``metrics.json``; ``extra`` keys are kept for every later write too."""
        if extra:
            self.extra.update(extra)
        payload = {"study": self.study, "simulated": bool(self.simulated),
                   "models": self.models, "notes": self.notes, **self.extra}
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
            mine = (ours or {}).get(key)
            if mine is None and len(parts) == 3:
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

    def stop(self, reason: str) -> None:
        """Stop the study cleanly here (metrics.json and provenance written), saying why."""
        self.note(f"stopped: {reason}")
        self.provenance()
        raise StopRun(reason)


def _r(v):
    try:
        f = float(v)
    except (TypeError, ValueError):
        return v
    return None if not np.isfinite(f) else round(f, 6)


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_")


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


def start_run(study: str, namespace: dict, *, load: bool = True) -> Run:
    """Resolve a study run from the notebook's parameters.

    Parameters
    ----------
    study : str
        Notebook name, e.g. ``"ovf_prediction_ct"``.
    namespace : dict
        The notebook's ``globals()`` right after the parameters cell and imports; the literal
        values in it are the parameters.
    load : bool
        Load (and, when ``cohort_dir`` is empty, generate) the cohort.

    Common parameters used here: ``cohort_dir`` (empty = built-in simulated cohort),
    ``synthetic_size``, ``synthetic_signal``, ``seed``, ``out_dir`` (empty = ``reports/<study>/
    interactive``), ``cache_dir`` (empty = ``data/cache``), ``outcome``, ``mask_grid``.
    """
    params = notebook_params(namespace)
    root = project_root()
    out_dir = Path(params.get("out_dir") or root / "reports" / study / "interactive")
    if not out_dir.is_absolute():
        out_dir = root / out_dir
    cache_dir = Path(params.get("cache_dir") or root / "data" / "cache")
    if not cache_dir.is_absolute():
        cache_dir = root / cache_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    run = Run(study=study, params=params, root=root, out_dir=out_dir, cache_dir=cache_dir)
    if load and STUDY_COHORT.get(study, None) is not None or (load and params.get("cohort_dir")):
        run.cohort = resolve_cohort(run)
        run.simulated = bool(run.cohort.simulated)
    else:
        run.simulated = False
    io.write_json({k: scrub(v, run._roots()) if isinstance(v, str) else v
                   for k, v in params.items()}, out_dir / "params.json")
    run.write_metrics()
    return run


def resolve_cohort(run: Run):
    """Load the cohort named by ``cohort_dir`` or generate the built-in simulated one."""
    from vcfnb import synth

    p = run.params
    cohort_dir = p.get("cohort_dir") or ""
    if cohort_dir:
        folder = Path(cohort_dir)
        if not folder.is_absolute():
            folder = run.root / folder
    else:
        gen = STUDY_COHORT[run.study]
        size = p.get("synthetic_size", "smoke")
        signal = float(p.get("synthetic_signal", 1.0))
        folder = run.root / "data" / "cohorts" / f"{gen}-{size}-seed{run.seed}-signal{signal:g}"
        synth.make_cohort(gen, folder, size=size, seed=run.seed, signal=signal)
    return io.load_cohort(folder, outcome=p.get("outcome", "outcome") or "outcome",
                          mask_grid=p.get("mask_grid", "strict"),
                          geometry_tol=float(p.get("geometry_tol", 1e-3)),
                          require_outcome=bool(p.get("require_outcome", True)))
