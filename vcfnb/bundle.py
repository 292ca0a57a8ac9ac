"""Saved models a clinic can apply: ``Run.save_model`` and ``vcfnb predict``.

A run saves each final fitted model as two files under ``<report>/models/``:

``<name>.skops``
    The fitted estimator (scaler, selection, classifier, probability link) serialised with
    `skops <https://skops.readthedocs.io>`_, which stores objects as data and never unpickles
    code. It is loaded with an explicit list of trusted types (:data:`TRUSTED_TYPES`); a file
    naming any other type is refused. pandas objects inside estimators (coefficient Series,
    CV tables) are stored as plain arrays and lists (:class:`PackedPandas`), since skops cannot
    store them.
``<name>.json``
    What is needed to rebuild the model's input from a new cohort and to read its output: the
    pyradiomics settings actually used (normalised by :func:`vcfnb.features.load_settings`), the
    feature recipe (:func:`vcfnb.features.patient_table`), the input and selected feature
    columns, the score kind and cut-off (the run's out-of-fold Youden cut-off on ``train_oof``,
    as recorded in ``metrics.json``), each input column's training range, the SHA-256 of the
    ``.skops`` file, the vcfnb version, the study and the model name.

:func:`predict` (``vcfnb predict --run reports/<study>/<run> --cohort DIR --out FILE.csv``)
loads every saved model of a run, refuses a cohort whose sequences, ROIs or readers do not match
a model's recipe, extracts the features (cached), builds the patient rows with the recipe and
writes one row per patient and model: ``patient_id, model, score, predicted_class,
out_of_range_features``. :func:`verify` checks that the saved models reproduce the scores the
run recorded in ``tables/predictions.csv``.
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from vcfnb import __version__, features, io

__all__ = ["save_model", "load_model", "model_scores", "predict", "verify", "saved_models",
           "PackedPandas", "CohortMismatchError", "UntrustedModelError", "TRUSTED_TYPES",
           "PREDICT_COLUMNS", "FORMAT"]

FORMAT = "vcfnb-model/1"
#: columns of the file ``vcfnb predict`` writes
PREDICT_COLUMNS = ["patient_id", "model", "score", "predicted_class", "out_of_range_features"]
_SCORE_METHOD = {"probability": "predict_proba", "decision": "decision_function"}

#: types a saved model may contain besides skops' own defaults (plain containers, numpy,
#: scikit-learn's common estimators): vcfnb's estimators and the classifiers, samplers and
#: boosters its pipelines build. Extended at load time with vcfnb's estimator classes
#: (:func:`_trusted_types`); callers may pass more, explicitly, to :func:`load_model`.
TRUSTED_TYPES: tuple[str, ...] = (
    "vcfnb.bundle.PackedPandas",
    "vcfnb.studies.ovf.OVFModel",  # seed 003's cross-fitted radscores + logistic link
    "collections.OrderedDict",
    "imblearn.pipeline.Pipeline",
    "imblearn.over_sampling._random_over_sampler.RandomOverSampler",
    "sklearn.pipeline.Pipeline",
    "sklearn.calibration.CalibratedClassifierCV",
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._SigmoidCalibration",
    "sklearn.isotonic.IsotonicRegression",
    "sklearn.frozen._frozen.FrozenEstimator",
    "sklearn.tree._tree.Tree",
    "sklearn.neighbors._kd_tree.KDTree",
    "sklearn.neighbors._ball_tree.BallTree",
    "sklearn.metrics._dist_metrics.EuclideanDistance64",
    "sklearn.metrics._dist_metrics.ManhattanDistance64",
    "sklearn.metrics._dist_metrics.MinkowskiDistance64",
    "sklearn.neural_network._stochastic_optimizers.AdamOptimizer",
    "sklearn.neural_network._stochastic_optimizers.SGDOptimizer",
    "xgboost.core.Booster",
    "xgboost.sklearn.XGBClassifier",
    "lightgbm.basic.Booster",
    "lightgbm.sklearn.LGBMClassifier",
)


class CohortMismatchError(ValueError):
    """A cohort lacks sequences, ROIs or readers a saved model's feature recipe needs."""


class UntrustedModelError(ValueError):
    """A saved model file names a type outside the trusted list, or was altered."""


# ---------------------------------------------------------------------------------------------
# pandas objects inside estimators <-> plain data skops can store
# ---------------------------------------------------------------------------------------------
class PackedPandas:
    """A pandas Series, DataFrame or Index stored as arrays and lists (skops cannot store
    pandas objects). :meth:`unpack` rebuilds an equal object.

    Parameters
    ----------
    obj : Series, DataFrame or Index
    """

    def __init__(self, obj: Any = None) -> None:
        if obj is None:  # skops creates the object empty, then sets its state
            return
        if isinstance(obj, pd.Index):
            self.kind, self.index = "index", _pack_index(obj)
        elif isinstance(obj, pd.Series):
            self.kind, self.index, self.name = "series", _pack_index(obj.index), _plain(obj.name)
            self.columns = None
            self.data, self.dtypes = [_pack_values(obj)], [str(obj.dtype)]
        elif isinstance(obj, pd.DataFrame):
            self.kind, self.index, self.name = "frame", _pack_index(obj.index), None
            self.columns = _pack_index(obj.columns)
            self.data = [_pack_values(obj.iloc[:, i]) for i in range(obj.shape[1])]
            self.dtypes = [str(t) for t in obj.dtypes]
        else:
            raise TypeError(f"cannot pack {type(obj).__name__}")

    def unpack(self) -> Any:
        """The pandas object."""
        index = _unpack_index(self.index)
        if self.kind == "index":
            return index
        cols = [_unpack_values(d, t) for d, t in zip(self.data, self.dtypes)]
        if self.kind == "series":
            return pd.Series(cols[0], index=index, name=self.name)
        columns = _unpack_index(self.columns)
        df = pd.DataFrame({i: c for i, c in enumerate(cols)}, index=index)
        df.columns = columns
        return df


def _plain(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v


def _pack_values(s: pd.Series) -> Any:
    if pd.api.types.is_bool_dtype(s.dtype) or (pd.api.types.is_numeric_dtype(s.dtype)
                                                and not isinstance(s.dtype, pd.CategoricalDtype)):
        return np.asarray(s.to_numpy())
    return [_plain(v) if not (isinstance(v, float) and np.isnan(v)) else None for v in s.tolist()]


def _unpack_values(data: Any, dtype: str) -> Any:
    if isinstance(data, np.ndarray):
        return data
    try:
        return pd.array(data, dtype=dtype)
    except (TypeError, ValueError):
        return pd.array(data, dtype=object)


def _pack_index(idx: pd.Index) -> dict:
    if isinstance(idx, pd.RangeIndex):
        return {"kind": "range", "start": int(idx.start), "stop": int(idx.stop),
                "step": int(idx.step), "names": [idx.name]}
    if isinstance(idx, pd.MultiIndex):
        return {"kind": "multi", "values": [list(map(_plain, t)) for t in idx.tolist()],
                "names": list(idx.names)}
    return {"kind": "flat", "values": [_plain(v) for v in idx.tolist()], "names": [idx.name],
            "dtype": str(idx.dtype)}


def _unpack_index(d: dict) -> pd.Index:
    if d["kind"] == "range":
        return pd.RangeIndex(d["start"], d["stop"], d["step"], name=d["names"][0])
    if d["kind"] == "multi":
        return pd.MultiIndex.from_tuples([tuple(v) for v in d["values"]], names=d["names"])
    try:
        return pd.Index(d["values"], dtype=d["dtype"], name=d["names"][0])
    except (TypeError, ValueError):
        return pd.Index(d["values"], name=d["names"][0])


_DESCEND = ("vcfnb.", "sklearn.", "imblearn.", "xgboost.", "lightgbm.")


def _walk(obj: Any, fn: Callable[[Any], Any], seen: dict) -> Any:
    """Copy of ``obj`` with ``fn`` applied to every pandas object / :class:`PackedPandas`
    inside estimators, containers and vcfnb/scikit-learn objects (the input is not changed)."""
    if isinstance(obj, (pd.Series, pd.DataFrame, pd.Index, PackedPandas)):
        return fn(obj)
    key = id(obj)
    if key in seen:
        return seen[key]
    if isinstance(obj, list):
        out: Any = [_walk(x, fn, seen) for x in obj]
    elif isinstance(obj, tuple) and not hasattr(obj, "_fields"):
        out = tuple(_walk(x, fn, seen) for x in obj)
    elif isinstance(obj, dict):
        out = copy.copy(obj)
        for k in list(out):
            out[k] = _walk(out[k], fn, seen)
    elif (hasattr(obj, "__dict__") and not isinstance(obj, type)
          and type(obj).__module__.startswith(_DESCEND)):
        out = copy.copy(obj)
        for k, v in list(vars(out).items()):
            out.__dict__[k] = _walk(v, fn, seen)
    else:
        return obj
    seen[key] = out
    return out


def _pack(estimator: Any) -> Any:
    return _walk(estimator, lambda o: PackedPandas(o) if not isinstance(o, PackedPandas) else o,
                 {})


def _unpack(estimator: Any) -> Any:
    return _walk(estimator, lambda o: o.unpack() if isinstance(o, PackedPandas) else o, {})


def _trusted_types(extra: Iterable[str] = ()) -> set[str]:
    """:data:`TRUSTED_TYPES` + every estimator class of :mod:`vcfnb.models` and
    :mod:`vcfnb.selection` + the classifiers :func:`vcfnb.models.make_classifier` builds."""
    from sklearn.base import BaseEstimator

    from vcfnb import models, selection

    names = set(TRUSTED_TYPES) | set(extra)
    for mod in (models, selection):
        for obj in vars(mod).values():
            if isinstance(obj, type) and issubclass(obj, BaseEstimator) \
                    and obj.__module__.startswith("vcfnb."):
                names.add(f"{obj.__module__}.{obj.__qualname__}")
    for name in models.CLASSIFIERS:
        try:
            est = models.make_classifier(name)
        except Exception:  # noqa: BLE001 - an optional backend missing: nothing to trust
            continue
        stack = [est]
        while stack:
            e = stack.pop()
            names.add(f"{type(e).__module__}.{type(e).__qualname__}")
            stack += [v for v in e.get_params(deep=False).values()
                      if hasattr(v, "get_params") and not isinstance(v, type)]
    return names


# ---------------------------------------------------------------------------------------------
# save / load
# ---------------------------------------------------------------------------------------------
def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _selected_features(estimator: Any, columns: list[str]) -> list[str]:
    """The features the fitted model uses after its own selection (best effort: the input
    columns when the model does not say)."""
    coef = getattr(estimator, "coef_", None)
    if isinstance(coef, pd.Series):  # RadscoreModel, LassoSelector
        return [str(c) for c in coef.index]
    if hasattr(estimator, "steps") and len(estimator.steps) > 1:
        try:
            return [str(c) for c in estimator[:-1].get_feature_names_out()]
        except Exception:  # noqa: BLE001 - a step without feature names
            pass
    return list(columns)


def _steps(estimator: Any) -> list[str]:
    """``name: Class`` of each step (a pipeline's, or a RadscoreModel's inner chain)."""
    inner = getattr(estimator, "pipeline_", None)
    chain = inner if hasattr(inner, "steps") else estimator
    if hasattr(chain, "steps"):
        steps = [f"{n}: {type(e).__name__ if e != 'passthrough' else 'passthrough'}"
                 for n, e in chain.steps]
        if getattr(estimator, "link_", None) is not None:
            steps.append("link: ProbabilityLink")
        return steps
    return [type(estimator).__name__]


def model_scores(estimator: Any, X: pd.DataFrame, score_kind: str) -> np.ndarray:
    """The scores a run records for ``estimator`` on rows ``X``: positive-class probability
    (``predict_proba[:, 1]``) for ``score_kind="probability"``, else ``decision_function``."""
    if score_kind not in _SCORE_METHOD:
        raise ValueError(f"score_kind must be 'probability' or 'decision', got {score_kind!r}")
    if score_kind == "probability":
        return np.asarray(estimator.predict_proba(X), dtype=float)[:, 1]
    return np.asarray(estimator.decision_function(X), dtype=float).ravel()


def _recorded_cutoff(run: Any, name: str) -> tuple[float | None, str | None]:
    """The cut-off ``run`` recorded for model ``name`` (``metrics.json``), preferring the one
    chosen on ``train_oof``."""
    found = []
    for split, entry in (run.models.get(name) or {}).items():
        if entry.get("cutoff") is not None:
            found.append((entry.get("cutoff_split") != "train_oof", split, entry))
    if not found:
        return None, None
    _, _, entry = sorted(found, key=lambda t: (t[0], t[1]))[0]
    return float(entry["cutoff"]), entry.get("cutoff_split")


def save_model(run: Any, name: str, estimator: Any, *, feature_recipe: Mapping,
               feature_columns: Sequence[str] | None, cutoff: float | None = None,
               score_kind: str, X_train: pd.DataFrame, settings: Any,
               split: str | None = None) -> Path:
    """Save a fitted model of ``run`` to ``<report>/models/<name>.skops`` + ``<name>.json``.

    Parameters
    ----------
    run : vcfnb.report.Run
        The run (its report folder, study, recorded cut-offs and predictions).
    name : str
        Model name, as in ``tables/predictions.csv`` and ``metrics.json``.
    estimator : fitted estimator
        What turns the patient rows into the recorded score: a pipeline,
        :class:`vcfnb.models.RadscoreModel` (with its probability link when the run records
        probabilities), any classifier.
    feature_recipe : mapping
        How the cohort's ROI features become the model's rows
        (:func:`vcfnb.features.patient_table`).
    feature_columns : sequence of str or None
        The input columns, in the order the estimator was fitted on (default: ``X_train``'s).
    cutoff : float, optional
        Cut-off of the class. Default: the cut-off the run recorded for ``name`` (the
        out-of-fold Youden cut-off on ``train_oof``: record the metrics first).
    score_kind : {"probability", "decision"}
        As recorded in ``predictions.csv`` (``predict_proba[:, 1]`` or ``decision_function``).
    X_train : DataFrame
        The training rows (for the training range of each input column).
    settings : dict, str or path
        The pyradiomics settings the features were extracted with (saved normalised).
    split : str, optional
        The recorded split whose scores the saved model reproduces (default ``test`` when the
        run recorded it for ``name``, else ``final``); used by :func:`verify`.

    Returns
    -------
    Path
        The ``.json`` file.

    Raises
    ------
    ValueError
        No cut-off recorded and none given, columns missing from ``X_train``, or the reloaded
        model scoring ``X_train`` differently from ``estimator``.
    """
    import skops.io as sio

    if score_kind not in _SCORE_METHOD:
        raise ValueError(f"score_kind must be 'probability' or 'decision', got {score_kind!r}")
    recipe = features.check_recipe(feature_recipe)
    X_train = pd.DataFrame(X_train)
    cols = [str(c) for c in (X_train.columns if feature_columns is None else feature_columns)]
    missing = [c for c in cols if c not in X_train.columns]
    if missing:
        raise ValueError(f"feature_columns not in X_train: {missing[:5]}")
    cutoff_split = "given"
    if cutoff is None:
        cutoff, cutoff_split = _recorded_cutoff(run, name)
        if cutoff is None:
            raise ValueError(f"no cut-off recorded for {name!r}: run.record(...) its metrics "
                             "first (out-of-fold Youden on train_oof), or pass cutoff=")
    if split is None:
        pred = run.predictions_table
        has = set(pred.loc[pred["model"] == name, "split"]) if len(pred) else set()
        split = "test" if "test" in has else "final" if "final" in has else None
    norm = features.load_settings(settings)
    X = X_train[cols]
    before = model_scores(estimator, X, score_kind)
    folder = Path(run.out_dir) / "models"
    folder.mkdir(parents=True, exist_ok=True)
    skops_file = folder / f"{_slug(name)}.skops"
    with io.atomic_path(skops_file) as tmp:
        sio.dump(_pack(estimator), tmp)
    reloaded = _load_estimator(skops_file, _sha256(skops_file), ())
    after = model_scores(reloaded, X, score_kind)
    if not np.array_equal(before, after, equal_nan=True):
        raise ValueError(f"{name}: the saved model scores the training rows differently from "
                         f"the fitted one (max |diff| {np.nanmax(np.abs(before - after)):.3g})")
    A = X.to_numpy(dtype=float)
    with np.errstate(all="ignore"):
        lo, hi = np.nanmin(A, axis=0), np.nanmax(A, axis=0)
    versions = {}
    for pkg in ("scikit-learn", "imbalanced-learn", "xgboost", "lightgbm", "skops",
                "pyradiomics-bhklab", "SimpleITK", "numpy", "pandas"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    meta = {
        "format": FORMAT, "study": run.study, "model": name, "vcfnb_version": __version__,
        "estimator": f"{type(estimator).__module__}.{type(estimator).__qualname__}",
        "file": skops_file.name, "sha256": _sha256(skops_file),
        "score_kind": score_kind, "score_method": _SCORE_METHOD[score_kind],
        "cutoff": float(cutoff), "cutoff_split": cutoff_split, "class_rule": "score >= cutoff",
        "reproduces_split": split,
        "feature_recipe": recipe, "settings": norm,
        "steps": _steps(estimator),
        "input_columns": cols, "selected_features": _selected_features(estimator, cols),
        "training_ranges": {c: [_finite(a), _finite(b)] for c, a, b in zip(cols, lo, hi)},
        "n_train_rows": int(len(X)), "simulated_training_data": bool(run.simulated),
        "packages": versions,
    }
    return io.write_json(meta, folder / f"{_slug(name)}.json")


def _finite(v: float) -> float | None:
    return float(v) if np.isfinite(v) else None


def _slug(name: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(name)).strip("_")


def _load_estimator(path: Path, sha256: str | None, trusted: Iterable[str]) -> Any:
    import skops.io as sio

    if sha256 is not None and _sha256(path) != sha256:
        raise UntrustedModelError(f"{path.name}: content differs from the SHA-256 recorded in "
                                  "its .json (the file was altered or replaced)")
    allowed = _trusted_types(trusted)
    untrusted = sio.get_untrusted_types(file=path)
    refused = sorted(set(untrusted) - allowed)
    if refused:
        raise UntrustedModelError(f"{path.name} names type(s) outside the trusted list: "
                                  f"{refused}; pass them in trusted= only if you know them")
    return _unpack(sio.load(path, trusted=sorted(set(untrusted))))


def load_model(path: str | os.PathLike, *, trusted: Iterable[str] = ()) -> tuple[Any, dict]:
    """Load a saved model: ``(estimator, meta)``.

    Parameters
    ----------
    path : path
        The model's ``.json`` or ``.skops`` file (the other is found beside it).
    trusted : iterable of str
        Further types to trust besides :data:`TRUSTED_TYPES` and vcfnb's estimators (fully
        qualified names). Everything else is refused; nothing is unpickled.

    Raises
    ------
    UntrustedModelError
        The file names an untrusted type, or its SHA-256 differs from the recorded one.
    """
    p = Path(path)
    meta_file = p.with_suffix(".json")
    meta = json.loads(meta_file.read_text(encoding="utf-8"))
    if meta.get("format") != FORMAT:
        raise ValueError(f"{meta_file}: not a vcfnb saved model (format {meta.get('format')!r})")
    est = _load_estimator(meta_file.with_name(meta["file"]), meta.get("sha256"), trusted)
    return est, meta


def saved_models(run_dir: str | os.PathLike) -> list[Path]:
    """The ``.json`` files of the models a run saved (``<run_dir>/models/*.json``)."""
    folder = Path(run_dir) / "models"
    return sorted(p for p in folder.glob("*.json")) if folder.is_dir() else []


# ---------------------------------------------------------------------------------------------
# predict
# ---------------------------------------------------------------------------------------------
def _preprocess(rois: pd.DataFrame, recipe: dict, cache_dir: Path | None,
                n_jobs: int) -> pd.DataFrame:
    steps = {k: v for k, v in recipe["preprocessing"].items() if v not in (None, False, {}, "")}
    unknown = sorted(set(steps) - {"n4"})
    if unknown:
        raise ValueError(f"preprocessing step(s) {unknown} of the feature recipe cannot be "
                         "repeated by vcfnb predict (supported: n4; resampling, normalisation "
                         "and discretisation belong in the pyradiomics settings)")
    if "n4" in steps:
        if cache_dir is None:
            raise ValueError("the recipe applies N4 bias-field correction, which needs a "
                             "cache folder for the corrected scans (cache_dir)")
        kw = steps["n4"] if isinstance(steps["n4"], Mapping) else {}
        rois, _ = features.n4_rois(rois, cache_dir, n_jobs=max(1, n_jobs), **dict(kw))
    return rois


def _recipe_rois(rois: pd.DataFrame, recipe: dict) -> pd.DataFrame:
    r = rois[(rois["reader"].astype(str) == recipe["reader"])
             & rois["sequence"].astype(str).isin(recipe["sequences"])]
    if recipe["rois"] is not None:
        r = r[r["roi"].astype(str).isin(recipe["rois"])]
    return r


def predict(run_dir: str | os.PathLike, cohort_dir: str | os.PathLike,
            out_csv: str | os.PathLike | None = None, *, cache_dir: str | os.PathLike | None = None,
            n_jobs: int = 1, models: Sequence[str] | None = None,
            trusted: Iterable[str] = (), progress: bool = False) -> pd.DataFrame:
    """Apply a run's saved models to a cohort.

    Parameters
    ----------
    run_dir : path
        A report folder holding ``models/*.json`` + ``.skops`` (:func:`save_model`).
    cohort_dir : path
        A cohort folder (``cases.csv``, ``rois.csv``, scans, masks); outcomes are not needed.
    out_csv : path, optional
        Where to write the table (CSV).
    cache_dir : path, optional
        Feature cache (:func:`vcfnb.features.extract`); None = no cache.
    n_jobs : int
        Extraction worker processes.
    models : sequence of str, optional
        Only these saved models (default: all).
    trusted : iterable of str
        Extra types to trust when loading (see :func:`load_model`).
    progress : bool
        Extraction progress bar.

    Returns
    -------
    DataFrame
        ``patient_id, model, score, predicted_class, out_of_range_features``: one row per
        patient and model. ``score`` is on the scale of the run's ``predictions.csv``
        (probability or decision value, per the model's ``score_kind``; for a ``"rows"`` recipe
        the mean of the patient's ROI scores), ``predicted_class`` is ``score >= cutoff`` (1/0),
        ``out_of_range_features`` the ``;``-joined input columns outside their training range
        (missing values included). A patient whose features could not be extracted gets an
        empty score and class.

    Raises
    ------
    CohortMismatchError
        The cohort lacks a sequence, ROI or reader a model needs, or a patient lacks one of
        its (sequence, ROI) pairs; the message names each.
    """
    files = saved_models(run_dir)
    if models is not None:
        files = [f for f in files if json.loads(f.read_text(encoding="utf-8"))["model"]
                 in set(models)]
    if not files:
        raise FileNotFoundError(f"no saved model in {Path(run_dir) / 'models'}"
                                + (f" named {list(models)}" if models else ""))
    loaded = [load_model(f, trusted=trusted) for f in files]
    cache = None if cache_dir is None else Path(cache_dir)
    cohorts: dict[str, Any] = {}
    for _, meta in loaded:  # refuse before extracting anything
        grid = meta["feature_recipe"]["mask_grid"]
        if grid not in cohorts:
            cohorts[grid] = io.load_cohort(cohort_dir, require_outcome=False, mask_grid=grid)
        problems = features.recipe_mismatch(cohorts[grid].rois, meta["feature_recipe"])
        if problems:
            raise CohortMismatchError(
                f"cohort {Path(cohort_dir).name} does not match saved model {meta['model']!r} "
                f"(recipe: sequences {meta['feature_recipe']['sequences']}, ROIs "
                f"{meta['feature_recipe']['rois'] or 'all'}, reader "
                f"{meta['feature_recipe']['reader']}): " + "; ".join(problems[:20])
                + (f"; and {len(problems) - 20} more" if len(problems) > 20 else ""))
    extracted: dict[str, pd.DataFrame] = {}
    out = []
    for est, meta in loaded:
        recipe = meta["feature_recipe"]
        rois = _recipe_rois(cohorts[recipe["mask_grid"]].rois, recipe)
        key = json.dumps([meta["settings"], recipe["mask_grid"], recipe["preprocessing"]],
                         sort_keys=True, default=str)
        if key not in extracted:  # one extraction per settings; rows of every model sharing it
            extracted[key] = pd.DataFrame()
        have = extracted[key]
        todo = rois if have.empty else rois[~rois.index.isin(have.index)]
        if len(todo):
            prepared = _preprocess(todo, recipe, cache, n_jobs)
            feats = features.extract(prepared, meta["settings"], n_jobs=n_jobs, cache_dir=cache,
                                     progress=progress)
            extracted[key] = pd.concat([have, feats]) if len(have) else feats
        table = features.patient_table(extracted[key].loc[rois.index], recipe)
        out.append(_score_table(est, meta, table))
    result = pd.concat(out, ignore_index=True)[PREDICT_COLUMNS]
    if out_csv is not None:
        io.write_table(result, Path(out_csv))
    return result


def _score_table(est: Any, meta: dict, table: pd.DataFrame) -> pd.DataFrame:
    cols = meta["input_columns"]
    missing = [c for c in cols if c not in table.columns]
    if missing:
        raise ValueError(f"model {meta['model']!r}: the extracted features lack input "
                         f"column(s) {missing[:5]} (different settings or pyradiomics version?)")
    X = table[cols].astype(float)
    A = X.to_numpy()
    lo = np.array([np.nan if meta["training_ranges"][c][0] is None
                   else meta["training_ranges"][c][0] for c in cols], dtype=float)
    hi = np.array([np.nan if meta["training_ranges"][c][1] is None
                   else meta["training_ranges"][c][1] for c in cols], dtype=float)
    with np.errstate(invalid="ignore"):
        outside = ~np.isfinite(A) | (A < lo) | (A > hi)
    ok = np.isfinite(A).all(axis=1)
    score = np.full(len(X), np.nan)
    if ok.any():
        score[ok] = model_scores(est, X[ok], meta["score_kind"])
    pid = X.index.get_level_values("patient_id").astype(str)
    rows = pd.DataFrame({"patient_id": pid, "score": score,
                         "flag": [[c for c, o in zip(cols, r) if o] for r in outside]})
    if meta["feature_recipe"]["aggregate"] == "rows":  # mean of the patient's ROI scores
        rows = rows.groupby("patient_id", sort=True).agg(
            score=("score", lambda s: s.mean() if s.notna().all() else np.nan),
            flag=("flag", lambda f: list(dict.fromkeys(c for x in f for c in x))))
        rows = rows.reset_index()
    cut = meta.get("cutoff")
    cls = pd.array([pd.NA if not np.isfinite(s) or cut is None else int(s >= cut)
                    for s in rows["score"]], dtype="Int64")
    return pd.DataFrame({"patient_id": rows["patient_id"].to_numpy(), "model": meta["model"],
                         "score": rows["score"].to_numpy(float), "predicted_class": cls,
                         "out_of_range_features": [";".join(f) for f in rows["flag"]]})


def verify(run_dir: str | os.PathLike, cohort_dir: str | os.PathLike, *,
           cache_dir: str | os.PathLike | None = None, n_jobs: int = 1,
           predicted: pd.DataFrame | None = None) -> pd.DataFrame:
    """Do the saved models reproduce the scores the run recorded?

    Scores the run's cohort with :func:`predict` (or takes ``predicted``) and compares, per
    saved model, with the rows of ``tables/predictions.csv`` of the split the model was saved
    for (``reproduces_split``: ``test``, or ``final`` for a CV-only study). The file holds
    scores to 10 significant digits (:func:`vcfnb.io.write_table`), so a score is reproduced
    when it writes as the same text there.

    Returns
    -------
    DataFrame
        ``model, split, n, max_abs_diff, reproduced``: ``max_abs_diff`` against the recorded
        (10-digit) values; ``reproduced`` when every patient's score writes identically.
    """
    run_dir = Path(run_dir)
    pred = predict(run_dir, cohort_dir, cache_dir=cache_dir, n_jobs=n_jobs) \
        if predicted is None else predicted
    recorded = pd.read_csv(run_dir / "tables" / "predictions.csv", dtype=str,
                           keep_default_na=False)
    rows = []
    for f in saved_models(run_dir):
        meta = json.loads(f.read_text(encoding="utf-8"))
        split = meta.get("reproduces_split")
        rec = recorded[(recorded["model"] == meta["model"]) & (recorded["split"] == split)]
        mine = pred[pred["model"] == meta["model"]].set_index("patient_id")["score"]
        both = rec.set_index("patient_id")["score"].to_frame("recorded").join(
            mine.rename("predicted"), how="left")
        same = [np.isfinite(p) and f"{p:.10g}" == r
                for r, p in zip(both["recorded"], both["predicted"].astype(float))]
        diff = (both["recorded"].astype(float) - both["predicted"].astype(float)).abs()
        rows.append({"model": meta["model"], "split": split, "n": int(len(both)),
                     "max_abs_diff": float(diff.max()) if len(diff) else np.nan,
                     "reproduced": bool(len(both)) and all(same)})
    return pd.DataFrame(rows, columns=["model", "split", "n", "max_abs_diff", "reproduced"])
