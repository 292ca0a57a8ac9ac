"""Radiomics feature extraction: pyradiomics, filtered once per scan, cached, parallel.

:func:`extract` turns a cohort's ``rois`` table into a feature table with pyradiomics' feature
names, computing every number with pyradiomics' own code (``RadiomicsFeatureExtractor`` internals,
``imageoperations`` filters and feature classes) so that a value equals what a plain
``RadiomicsFeatureExtractor(settings).execute(image, mask, label)`` gives. What differs is the
amount of work:

* **filter once per scan** -- rows are grouped by image; each filtered image (wavelet, LoG, the
  papers' SimpleITK filters of :mod:`vcfnb.filters`, ...) is computed once and shared by every
  ROI of that scan (vertebrae, compartments, both readers);
* **crop before filtering, exactly** -- the scan is cropped to the union of its ROIs' bounding
  boxes plus a margin that keeps each filter's output inside the ROIs unchanged: none for the
  original image, 2 voxels for the gradient, the wavelet's support (an axis is kept whole when
  the margin does not fit, since pyradiomics' wavelet wraps around), 20 sigma for LoG and the
  recursive Gaussian (infinite impulse response: agreement to float32 rounding); the
  square/squareroot/logarithm/exponential maps take their scale from the *whole* image and are
  then applied to the crop; global filters (noise, normalize, box, sharpening, LBP) see the
  whole image;
* **parallel** -- a local process pool (``n_jobs``) or a Dask distributed cluster (``scheduler``
  or ``VCFNB_DASK_SCHEDULER``), with identical results;
* **cache and resume** -- every (ROI, image type) result is stored content-addressed under
  ``cache_dir`` (hash of image file, mask file, label, settings and library versions) with atomic
  writes, so a re-run extracts nothing and a killed run resumes where it stopped.

Settings are an ordinary pyradiomics parameter file or dict (``setting``, ``imageType``,
``featureClass``, ``voxelSetting``), plus the extra image types of :mod:`vcfnb.filters` in
``imageType`` and an optional top-level ``vcfnb:`` section (see :func:`load_settings`).
Packaged settings for the studies are in ``vcfnb/settings/`` and can be named directly
(``extract(rois, "ovf_ct")``).

References
----------
van Griethuysen JJM et al. Computational radiomics system to decode the radiographic phenotype.
Cancer Res 2017;77:e104-e107.
Zwanenburg A et al. The Image Biomarker Standardization Initiative. Radiology 2020;295:328-338.
"""
from __future__ import annotations

import collections
import contextlib
import copy
import dataclasses
import hashlib
import json
import logging
import math
import os
import re
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd
import SimpleITK as sitk

from vcfnb.io import file_digest  # noqa: F401 - re-exported (the cache's digests)
from vcfnb import compat as _compat  # noqa: F401 - scipy.special.sph_harm for LBP3D (SciPy>=1.17)
from vcfnb import dicom_masks
from vcfnb import filters as _filters
from vcfnb import parallel as _parallel

__all__ = [
    "extract", "extract_with_failures", "load_settings", "packaged_settings", "file_digest",
    "failures_table", "start_workers", "shutdown_workers", "FAILURE_COLUMNS", "ID_COLUMNS",
    "wide_by_sequence", "per_patient", "feature_counts", "n4_rois", "composition",
    "discretisation_note", "FIXED_BIN_COUNT_ADVICE",
]

logger = logging.getLogger(__name__)

#: Start of pyradiomics' advice logged (logger ``radiomics.featureextractor``, WARNING) each time
#: an extractor is built with ``binCount``; vcfnb states the choice once per run instead.
FIXED_BIN_COUNT_ADVICE = "Fixed bin Count enabled!"


class _FixedBinCountAdviceFilter(logging.Filter):
    """Drops only pyradiomics' "Fixed bin Count enabled! However, we recommend ..." record."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(FIXED_BIN_COUNT_ADVICE)


def _silence_fixed_bin_count_advice() -> None:
    """Install the filter (once) on the logger that emits the advice; other records pass."""
    emitter = logging.getLogger("radiomics.featureextractor")
    if not any(isinstance(f, _FixedBinCountAdviceFilter) for f in emitter.filters):
        emitter.addFilter(_FixedBinCountAdviceFilter())


_silence_fixed_bin_count_advice()
_BIN_COUNT_STATED: set = set()  # binCount values already stated in this process (run)


def discretisation_note(settings: Mapping | str | os.PathLike | None) -> str | None:
    """The sentence stating a fixed-bin-count discretisation, or None when ``binCount`` is unset.

    pyradiomics advises a fixed bin width each time an extractor is built with ``binCount``;
    vcfnb drops that per-extraction warning and :func:`extract` prints this sentence once per
    run instead (the bin count is the study's choice, e.g. seed 003's settings).

    Examples
    --------
    >>> discretisation_note({"setting": {"binCount": 16}})[:52]
    'Grey levels discretised with a fixed bin count of 16'
    >>> discretisation_note({"setting": {"binWidth": 25}}) is None
    True
    """
    count = load_settings(settings)["setting"].get("binCount")
    return None if count is None else _bin_count_sentence(count)


def _bin_count_sentence(count) -> str:
    return (f"Grey levels discretised with a fixed bin count of {count} (`binCount`), as the "
            "study's settings ask: a deliberate choice, so pyradiomics' advice to use a fixed bin "
            "width instead is not repeated for every extraction.")


#: Columns of the failures table.
FAILURE_COLUMNS = ["row", "patient_id", "roi", "image", "mask", "label", "image_type", "reason"]
#: Id columns copied from the rois table into the feature table (those that exist).
ID_COLUMNS = ["patient_id", "roi", "sequence", "reader"]

_VCFNB_KEYS = {
    "crop": (bool, True),            # crop to the ROIs + filter-safe margin before filtering
    "sigma_margin": ((int, float), 20.0),  # sigmas of margin for LoG / recursive Gaussian
    "diagnostics": (bool, False),    # keep pyradiomics' diagnostics_* columns
    "description": (str, ""),        # free text for settings files
    "study": (str, ""),              # free text: the study the file belongs to
}
_PYRAD_SECTIONS = ("setting", "imageType", "featureClass", "voxelSetting")


# ---------------------------------------------------------------------------------------------
# settings
# ---------------------------------------------------------------------------------------------

def packaged_settings() -> dict[str, Path]:
    """The settings files shipped in ``vcfnb/settings`` by name (``{"ovf_ct": path, ...}``)."""
    folder = Path(__file__).with_name("settings")
    return {p.stem: p for p in sorted(folder.glob("*.yaml"))}


def load_settings(settings: Mapping | str | os.PathLike | None) -> dict:
    """Read, validate and normalise extraction settings.

    Parameters
    ----------
    settings : dict, str or path, optional
        A pyradiomics parameter dict, the path of a pyradiomics YAML/JSON parameter file (read
        with the safe YAML loader), or the name of a packaged settings file
        (:func:`packaged_settings`). ``None`` gives pyradiomics' defaults (original image, all
        feature classes but shape2D). Besides pyradiomics' sections the dict may hold vcfnb's
        image types (:data:`vcfnb.filters.IMAGE_TYPES`) inside ``imageType`` and a ``vcfnb:``
        section with ``crop`` (bool, default true), ``sigma_margin`` (default 20),
        ``diagnostics`` (bool, default false), ``description`` and ``study`` (free text).

    Returns
    -------
    dict
        ``{"setting", "imageType", "featureClass", "voxelSetting", "vcfnb"}`` with pyradiomics'
        default settings filled in, ``imageType`` in the given order (vcfnb types under their
        canonical names), validated by pyradiomics' own schema.

    Raises
    ------
    ValueError
        Unknown section, unknown image type or filter parameter, or a value pyradiomics rejects.

    Examples
    --------
    >>> s = load_settings({"setting": {"binWidth": 25}, "imageType": {"Original": {}, "mean": {}}})
    >>> list(s["imageType"]), s["setting"]["binWidth"]
    (['Original', 'Mean'], 25)
    """
    from radiomics import featureextractor

    source = "settings"
    if settings is None:
        raw: dict = {}
    elif isinstance(settings, Mapping):
        raw = copy.deepcopy(dict(settings))
    else:
        path = Path(settings)
        named = packaged_settings()
        if not path.exists() and str(settings) in named:
            path = named[str(settings)]
        if not path.is_file():
            raise ValueError(f"settings file {settings!s} not found (packaged settings: "
                             f"{sorted(named)})")
        source = str(path)
        import yaml

        with open(path, encoding="utf-8") as fh:
            raw = yaml.safe_load(fh) or {}
        if not isinstance(raw, dict):
            raise ValueError(f"{path}: expected a mapping at the top level")
    unknown = set(raw) - set(_PYRAD_SECTIONS) - {"vcfnb"}
    if unknown:
        raise ValueError(f"{source}: unknown section(s) {sorted(unknown)}; expected "
                         f"{list(_PYRAD_SECTIONS)} and optionally 'vcfnb'")
    opts = dict(raw.pop("vcfnb", None) or {})
    bad = set(opts) - set(_VCFNB_KEYS)
    if bad:
        raise ValueError(f"{source}: unknown vcfnb key(s) {sorted(bad)}; "
                         f"known: {sorted(_VCFNB_KEYS)}")
    for key, (typ, default) in _VCFNB_KEYS.items():
        val = opts.setdefault(key, default)
        if not isinstance(val, typ) or (typ is not bool and isinstance(val, bool)):
            raise ValueError(f"{source}: vcfnb.{key} must be {typ}, got {val!r}")
    if not opts["sigma_margin"] >= 3:
        raise ValueError(f"{source}: vcfnb.sigma_margin must be >= 3, got {opts['sigma_margin']}")

    image_types: list[tuple[str, dict]] = []
    pyrad_types: dict[str, dict] = {}
    per_type_settings: dict[str, dict] = {}
    for name, args in (raw.get("imageType") or {}).items():
        args = dict(args or {})
        if _filters.is_vcfnb_image_type(name):
            spec = _filters.get_filter(name)
            try:
                params, other = _filters.filter_params(spec.name, args)
            except ValueError as exc:
                raise ValueError(f"{source}: imageType {name}: {exc}") from None
            per_type_settings[spec.name] = other
            image_types.append((spec.name, {**params, **other}))
        else:
            pyrad_types[name] = args
            image_types.append((name, args))
    if any(n.lower() == t.lower() for i, (n, _) in enumerate(image_types)
           for t, _ in image_types[:i]):
        raise ValueError(f"{source}: an image type is listed twice")

    # validate the pyradiomics part with pyradiomics' own schema; the per-type settings of
    # vcfnb image types are validated as if they belonged to an 'Original' entry
    check = {k: v for k, v in raw.items() if k != "imageType"}
    check["imageType"] = dict(pyrad_types)
    for name, other in per_type_settings.items():
        if other:
            check_t = {"imageType": {"Original": other}}
            try:
                featureextractor.RadiomicsFeatureExtractor(check_t)
            except Exception as exc:  # pykwalify SchemaError
                raise ValueError(f"{source}: imageType {name}: invalid setting(s) {other}: "
                                 f"{_short(exc)}") from None
    try:
        ex = featureextractor.RadiomicsFeatureExtractor(check)
    except Exception as exc:
        raise ValueError(f"{source}: pyradiomics rejected the settings: {_short(exc)}") from None
    if not image_types:
        image_types = [("Original", {})]
    if raw.get("setting", {}).get("label") is not None:
        logger.info("%s: setting.label is ignored; the rois table's label column is used", source)
    settings_out = dict(ex.settings)
    settings_out.pop("label", None)
    return {
        "setting": settings_out,
        "imageType": dict(image_types),
        "featureClass": {k: (list(v) if v else []) for k, v in ex.enabledFeatures.items()},
        "voxelSetting": dict(raw.get("voxelSetting") or {}),
        "vcfnb": opts,
    }


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[-1] if text else type(exc).__name__)[:300]


# ---------------------------------------------------------------------------------------------
# content hashing and the cache
# ---------------------------------------------------------------------------------------------



def _versions() -> dict:
    import pywt
    import radiomics

    import vcfnb

    return {"vcfnb": vcfnb.__version__, "pyradiomics": radiomics.__version__,
            "SimpleITK": sitk.Version_VersionString(), "pywavelets": pywt.__version__,
            "numpy": np.__version__}


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def _entry_key(image_hash: str, mask_hash: str, label: int, family: str, settings: dict,
               versions: dict) -> str:
    if family == "shape":
        fam = {"type": "shape", "features": {k: v for k, v in settings["featureClass"].items()
                                             if k.startswith("shape")}}
    elif family == "diagnostics":
        fam = {"type": "diagnostics", "imageType": settings["imageType"]}
    else:
        fam = {"type": family, "args": settings["imageType"][family],
               "features": {k: v for k, v in settings["featureClass"].items()
                            if not k.startswith("shape")}}
    material = {"image": image_hash, "mask": mask_hash, "label": int(label),
                "setting": settings["setting"], "voxelSetting": settings["voxelSetting"],
                "family": fam, "versions": versions}
    return hashlib.sha256(_canonical(material).encode()).hexdigest()


class _Cache:
    """Content-addressed JSON entries under ``<dir>/<key[:2]>/<key>.json``, written atomically."""

    def __init__(self, folder: str | os.PathLike | None):
        self.folder = Path(folder) if folder is not None else None
        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict | None:
        if self.folder is None:
            return None
        path = self._path(key)
        try:
            with open(path, encoding="utf-8") as fh:
                entry = json.load(fh)
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            logger.warning("cache entry %s is unreadable; recomputing it", path.name)
            return None
        if not isinstance(entry, dict) or entry.get("key") != key:
            logger.warning("cache entry %s is not a valid entry; recomputing it", path.name)
            return None
        return entry

    def put(self, key: str, entry: dict) -> None:
        if self.folder is None:
            return
        from vcfnb.io import _atomic_write

        # temporary file + fsync + rename: a killed run never leaves a partial entry
        _atomic_write(self._path(key), lambda fh: json.dump({**entry, "key": key}, fh),
                      fsync=True)

    def put_many(self, items: list[tuple[str, dict]]) -> None:
        """Write several entries (a work unit's) with one flush to disk instead of one each.

        Every entry goes to a temporary file in its final folder (``.<key>.json.*.tmp``, never
        read as an entry); then the data of all of them is flushed once (``syncfs`` of the cache's
        file system on Linux, else ``fsync`` of each file); only then is each renamed to
        ``<key>.json``. So an entry is visible only once its bytes are on disk: a process killed
        at any point (SIGKILL, Ctrl-C) or a machine that loses power leaves complete entries and
        at most some unused temporary files, never a partial entry; entries not yet renamed are
        extracted again by the next run. Per entry, this costs what :meth:`put` costs without its
        ``fsync`` (6 ms per entry on this machine's disk, 90 entries per benchmark run).
        """
        if self.folder is None or not items:
            return
        from vcfnb.io import _umask

        mode = 0o666 & ~_umask()
        staged: list[tuple[str, Path]] = []
        try:
            for key, entry in items:
                path = self._path(key)
                path.parent.mkdir(parents=True, exist_ok=True)
                fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.",
                                           suffix=".tmp")
                staged.append((tmp, path))
                with os.fdopen(fd, "w", encoding="utf-8") as fh:
                    json.dump({**entry, "key": key}, fh)
                    os.fchmod(fh.fileno(), mode)
            _flush_to_disk(self.folder, [tmp for tmp, _ in staged])
            while staged:
                tmp, path = staged[0]
                os.replace(tmp, path)
                staged.pop(0)
        finally:
            for tmp, _ in staged:  # not renamed (an error or an interrupt): never an entry
                Path(tmp).unlink(missing_ok=True)


def _flush_to_disk(folder: Path, files: list[str]) -> None:
    """Make the data of ``files`` (all under ``folder``) durable: one ``syncfs(2)`` of the file
    system when every file is on ``folder``'s file system (Linux), else ``fsync`` of each."""
    try:
        dev = folder.stat().st_dev
        if sys.platform.startswith("linux") and all(os.stat(f).st_dev == dev for f in files):
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            fd = os.open(folder, os.O_RDONLY)
            try:
                if libc.syncfs(fd) == 0:
                    return
            finally:
                os.close(fd)
    except (OSError, AttributeError):  # no syncfs here: flush file by file
        pass
    for f in files:
        fd = os.open(f, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# ---------------------------------------------------------------------------------------------
# the work unit: one scan, some image types, its ROIs (runs in a worker process)
# ---------------------------------------------------------------------------------------------

def _read(path: str) -> sitk.Image:
    from vcfnb.io import read_image

    return read_image(path)


def _to_float(value: Any) -> Any:
    try:
        arr = np.asarray(value)
        if arr.size == 1 and arr.dtype.kind in "fiub":
            return float(arr.reshape(()))
    except Exception:  # noqa: BLE001 - diagnostics may hold anything
        pass
    return str(value)


@dataclass
class _Roi:
    pos: int
    label: int
    mask_path: str
    image: sitk.Image | None = None        # per-ROI image (resampling / preCrop mode)
    shape_mask: sitk.Image | None = None
    feat_mask: sitk.Image | None = None
    bbox: np.ndarray | None = None
    diagnostics: dict | None = None
    error: str | None = None


def _extractor(settings: dict):
    """A RadiomicsFeatureExtractor for settings already validated by :func:`load_settings`.

    Same state as ``RadiomicsFeatureExtractor(params)`` without re-running the schema
    validation (a third of a second per work unit).
    """
    from radiomics import featureextractor

    ex = featureextractor.RadiomicsFeatureExtractor()
    params = _pyrad_params(settings)
    ex.settings = {**ex._getDefaultSettings(), **params["setting"], **params["voxelSetting"]}
    ex.enabledImagetypes = params["imageType"] or {"Original": {}}
    ex.enabledFeatures = {k: (list(v) if v else []) for k, v in params["featureClass"].items()}
    ex._setTolerance()
    return ex


def _bin_edges(parameterValues, **kwargs):
    """``radiomics.imageoperations.getBinEdges`` with the extremes taken by NumPy.

    pyradiomics takes the minimum and maximum of the ROI's voxel values with Python's builtin
    ``min``/``max``, one element at a time (7 % of an extraction's CPU time). Here
    ``ndarray.min``/``max`` find them, and pyradiomics' own function gets just those two values
    (same dtype; where an extreme is zero, the first zero of the array, as the builtins return
    the first of equal elements: 0.0 or -0.0), so its arithmetic gives the same bin edges bit for
    bit, and so every feature. Fixed bin count, another input, an empty array or a NaN go to
    pyradiomics' function as they are.
    """
    values = parameterValues
    if kwargs.get("binCount") is not None or not isinstance(values, np.ndarray) \
            or values.ndim != 1 or values.size == 0:
        return _GET_BIN_EDGES(parameterValues, **kwargs)
    extremes = np.array([values.min(), values.max()], dtype=values.dtype)
    if values.dtype.kind == "f":
        if np.isnan(extremes).any():
            return _GET_BIN_EDGES(parameterValues, **kwargs)
        zero = extremes == 0
        if zero.any():
            extremes[zero] = values[np.flatnonzero(values == 0)[0]]
    return _GET_BIN_EDGES(extremes, **kwargs)


_GET_BIN_EDGES: Any = None  # pyradiomics' own getBinEdges, kept while _bin_edges stands in
_BIN_EDGES_USERS = 0
_BIN_EDGES_LOCK = threading.Lock()


@contextlib.contextmanager
def _fast_bin_edges():
    """Let :func:`_bin_edges` stand in for pyradiomics' ``getBinEdges`` during a work unit
    (counted, so units running in threads of one process share one swap)."""
    global _GET_BIN_EDGES, _BIN_EDGES_USERS
    from radiomics import imageoperations

    with _BIN_EDGES_LOCK:
        if _BIN_EDGES_USERS == 0:
            _GET_BIN_EDGES = imageoperations.getBinEdges
            imageoperations.getBinEdges = _bin_edges
        _BIN_EDGES_USERS += 1
    try:
        yield
    finally:
        with _BIN_EDGES_LOCK:
            _BIN_EDGES_USERS -= 1
            if _BIN_EDGES_USERS == 0:
                imageoperations.getBinEdges = _GET_BIN_EDGES


def _pyrad_params(settings: dict) -> dict:
    types = {n: a for n, a in settings["imageType"].items() if not _filters.is_vcfnb_image_type(n)}
    return {"setting": dict(settings["setting"]), "imageType": types,
            "featureClass": settings["featureClass"], "voxelSetting": settings["voxelSetting"]}


@dataclass
class _MaskInfo:
    """A mask file cast once for every ROI that uses it (pyradiomics' ``getMask``, done once)."""

    image: sitk.Image                # UInt32 label image (or the raw image for vector masks)
    labels: np.ndarray | None         # unique values (None for vector masks)
    boxes: list | None                # scipy.ndimage.find_objects slices per label


def _mask_info(mask: sitk.Image) -> _MaskInfo:
    from scipy import ndimage

    if "vector" in mask.GetPixelIDTypeAsString().lower():
        return _MaskInfo(mask, None, None)
    cast = sitk.Cast(mask, sitk.sitkUInt32)
    arr = sitk.GetArrayViewFromImage(cast)
    if int(arr.max()) >= 100000:
        return _MaskInfo(cast, np.unique(arr), None)
    boxes = ndimage.find_objects(arr)  # one pass: bounding slices of every label present
    present = [i + 1 for i, b in enumerate(boxes) if b is not None]
    has_zero = np.count_nonzero(arr) < arr.size
    labels = np.array(([0] if has_zero or not present else []) + present, dtype=np.uint32)
    return _MaskInfo(cast, labels, boxes)


def _get_mask(info: _MaskInfo, settings: dict) -> sitk.Image:
    """``imageoperations.getMask`` on a pre-cast mask: same checks, same messages."""
    from radiomics import imageoperations

    if info.labels is None:
        return imageoperations.getMask(info.image, **settings)
    label = settings.get("label", 1)
    labels = info.labels
    if len(labels) == 1 and labels[0] == 0:
        raise ValueError("No labels found in this mask (i.e. nothing is segmented)!")
    if label not in labels:
        raise ValueError("Label (%g) not present in mask. Choose from %s"
                         % (label, labels[labels != 0]))
    return info.image


def _check_mask(image: sitk.Image, mask: sitk.Image, info: _MaskInfo | None, settings: dict):
    """``imageoperations.checkMask``, run on a crop around the label when image and mask share a
    grid (same bounding box, same checks; ~100x less work on a large scan), else on the whole."""
    from radiomics import imageoperations

    label = int(settings.get("label", 1))
    box = None
    if info is not None and info.boxes is not None and mask is info.image \
            and image.GetSize() == mask.GetSize() and 0 < label <= len(info.boxes):
        box = info.boxes[label - 1]
    if box is not None:
        nd = image.GetDimension()
        size = image.GetSize()
        lo = [max(box[nd - 1 - ax].start - 1, 0) for ax in range(nd)]
        hi = [min(box[nd - 1 - ax].stop, size[ax] - 1) for ax in range(nd)]
        try:
            bb, corrected = imageoperations.checkMask(_crop(image, lo, hi), _crop(mask, lo, hi),
                                                      **settings)
            if corrected is None:
                bb = np.asarray(bb).copy()
                bb[0::2] += lo
                bb[1::2] += lo
                return bb, None
        except Exception:  # noqa: BLE001 - let the whole-image check give pyradiomics' answer
            pass
    return imageoperations.checkMask(image, mask, **settings)


def _prepare_roi(ex, image: sitk.Image, info: _MaskInfo, roi: _Roi, settings: dict,
                 per_roi: bool) -> None:
    """Steps 1-5 of ``RadiomicsFeatureExtractor.execute`` for one ROI (same calls, same order)."""
    from radiomics import generalinfo, imageoperations

    _settings = dict(ex.settings)
    _settings["label"] = roi.label
    gi = None
    if settings["vcfnb"]["diagnostics"]:
        gi = generalinfo.GeneralInfo()
        gi.addGeneralSettings(_settings)
        gi.addEnabledImageTypes(settings["imageType"])
    if per_roi:
        image, mask = ex.loadImage(image, info.image, gi, **_settings)
        roi.image = image
        bbox, corrected = imageoperations.checkMask(image, mask, **_settings)
    else:
        mask = _get_mask(info, _settings)
        if gi is not None:
            gi.addImageElements(image)
            gi.addMaskElements(None, mask, roi.label)
        bbox, corrected = _check_mask(image, mask, info, _settings)
    if corrected is not None:
        if gi is not None:
            gi.addMaskElements(image, corrected, roi.label, "corrected")
        mask = corrected
    reseg = None
    if _settings.get("resegmentRange", None) is not None:
        reseg = imageoperations.resegmentMask(image, mask, **_settings)
        bbox, corrected = imageoperations.checkMask(image, reseg, **_settings)
        if gi is not None:
            gi.addMaskElements(image, reseg, roi.label, "resegmented")
    if gi is not None:
        roi.diagnostics = {k: _to_float(v) for k, v in gi.getGeneralInfo().items()}
    shape_mask = reseg if (_settings.get("resegmentShape", False) and reseg is not None) else mask
    roi.shape_mask = shape_mask
    roi.feat_mask = reseg if reseg is not None else shape_mask
    roi.bbox = np.asarray(bbox)


def _crop(image: sitk.Image, lo: list[int], hi: list[int]) -> sitk.Image:
    size = image.GetSize()
    if all(a == 0 for a in lo) and all(b == s - 1 for b, s in zip(hi, size)):
        return image
    return sitk.RegionOfInterest(image, [b - a + 1 for a, b in zip(lo, hi)], lo)


def _region(rois: list[_Roi], size: tuple, margin: list[int] | None, periodic: bool,
            enabled: bool) -> tuple[list[int], list[int]]:
    nd = len(size)
    if not enabled or margin is None:
        return [0] * nd, [s - 1 for s in size]
    lo_u = np.min([r.bbox[0::2] for r in rois], axis=0)
    hi_u = np.max([r.bbox[1::2] for r in rois], axis=0)
    lo, hi = [], []
    for ax in range(nd):
        a, b = int(lo_u[ax]) - margin[ax], int(hi_u[ax]) + margin[ax]
        if periodic and margin[ax] > 0 and (a < 0 or b > size[ax] - 1):
            a, b = 0, size[ax] - 1
        lo.append(max(a, 0))
        hi.append(min(b, size[ax] - 1))
    return lo, hi


def _abs_extremes(full: sitk.Image, memo: dict) -> tuple[float, np.ndarray]:
    """max |x| over the whole image and the distinct voxel values reaching it (memoised)."""
    key = ("absmax", id(full))
    if key not in memo:
        arr = sitk.GetArrayViewFromImage(full).astype("float64")
        im_max = np.max(np.abs(arr))
        memo[key] = (im_max, np.unique(arr[np.abs(arr) == im_max]), full)
    return memo[key][0], memo[key][1].copy()


def _pointwise_images(kind: str, full: sitk.Image, lo: list[int], hi: list[int], kwargs: dict,
                      memo: dict):
    """pyradiomics' square/squareroot/logarithm/exponential maps with whole-image scale, on a crop.

    The expressions are those of ``radiomics.imageoperations.get<Kind>Image``; only the scale
    constant is taken from the whole image, so values equal the whole-image map bit for bit.
    """
    im_max, ext = _abs_extremes(full, memo)
    crop = _crop(full, lo, hi)
    im = sitk.GetArrayFromImage(crop).astype("float64")
    if kind == "square":
        coeff = 1 / np.sqrt(im_max)
        im = (coeff * im) ** 2
    elif kind == "squareroot":
        coeff = im_max
        im[im > 0] = np.sqrt(im[im > 0] * coeff)
        im[im < 0] = - np.sqrt(-im[im < 0] * coeff)
    elif kind == "logarithm":
        # max |log-transformed| over the whole image is reached where |x| is largest
        ext[ext > 0] = np.log(ext[ext > 0] + 1)
        ext[ext < 0] = - np.log(- (ext[ext < 0] - 1))
        im[im > 0] = np.log(im[im > 0] + 1)
        im[im < 0] = - np.log(- (im[im < 0] - 1))
        im = im * (im_max / np.max(np.abs(ext)))
    elif kind == "exponential":
        coeff = np.log(im_max) / im_max
        im = np.exp(coeff * im)
    out = sitk.GetImageFromArray(im)
    out.CopyInformation(crop)
    yield out, kind, kwargs


def _family_images(family: str, args: dict, image: sitk.Image, mask: sitk.Image, rois: list[_Roi],
                   settings: dict, base: dict, crop: bool, memo: dict):
    """Yield (filtered crop, image-type name, kwargs, crop lower corner) for one image type."""
    from radiomics import imageoperations

    spacing = image.GetSpacing()
    kwargs = dict(base)
    kwargs.update(args)
    sm = settings["vcfnb"]["sigma_margin"]
    if _filters.is_vcfnb_image_type(family):
        spec = _filters.get_filter(family)
        params, _ = _filters.filter_params(family, args)
        margin = _filters.filter_margin(family, params, spacing, sigma_margin=sm)
        lo, hi = _region(rois, image.GetSize(), margin, False, crop)
        out = _filters.apply_filter(_crop(image, lo, hi), family, **params)
        for key in params:
            kwargs.pop(key, None)
        yield out, spec.prefix, kwargs, lo
        return
    if family.lower() == "log" and len(kwargs.get("sigma") or []) > 1:
        # one crop per sigma: a small sigma needs a small margin
        for sigma in kwargs["sigma"]:
            yield from _family_images(family, dict(args, sigma=[sigma]), image, mask, rois,
                                      settings, dict(base, sigma=[sigma]), crop, memo)
        return
    rule = _filters.builtin_margin(family, args, spacing, sigma_margin=sm)
    lo, hi = _region(rois, image.GetSize(), rule["margin"], rule["periodic"], crop)
    if rule["global_stats"]:
        gen = _pointwise_images(family.lower(), image, lo, hi, kwargs, memo)
    else:
        gen = getattr(imageoperations, f"get{family}Image")(_crop(image, lo, hi),
                                                           _crop(mask, lo, hi), **kwargs)
    n_yielded = 0
    for img, name, kw in gen:
        n_yielded += 1
        yield img, name, kw, lo
    if n_yielded == 0 and family.lower() in ("lbp2d", "lbp3d"):
        # pyradiomics only logs a warning and yields nothing: say so instead of losing features
        raise RuntimeError(f"pyradiomics computed no {family} image (LBP2D needs scikit-image, "
                           "LBP3D needs trimesh and a 3D image)")


_SCANS: "collections.OrderedDict[str, dict]" = collections.OrderedDict()
_SCANS_MAX = 2  # scans kept per worker process (image + prepared ROIs), least recently used out


def _stamp(path: str) -> tuple:
    p = Path(path)
    st = p.stat()
    if p.is_dir():
        return (str(p), st.st_mtime_ns, tuple(sorted((f.name, f.stat().st_size)
                                                     for f in p.iterdir())))
    return (str(p), st.st_size, st.st_mtime_ns)


def _scan_state(unit: dict, ex, per_roi: bool) -> dict:
    """The scan's image (read and normalised once) and its prepared ROIs, kept per worker."""
    from radiomics import imageoperations

    st = ex.settings
    key = _canonical([_stamp(unit["image"]), unit["settings"]["setting"],
                      unit["settings"]["vcfnb"]["diagnostics"],
                      unit["settings"]["imageType"] if unit["settings"]["vcfnb"]["diagnostics"]
                      else None])
    state = _SCANS.get(key)
    if state is None:
        try:  # the caller may have read the scan while the workers started (_read_while_starting)
            image = unit.get("image_data")
            image = _read(unit["image"]) if image is None else image
        except Exception as exc:  # noqa: BLE001
            raise _UnitError(f"unreadable file: image {unit['image']}: {_short(exc)}") from None
        arr = sitk.GetArrayViewFromImage(image)
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            n_bad = int((~np.isfinite(arr)).sum())
            raise _UnitError(f"non-finite voxels: image {unit['image']} has {n_bad} NaN/Inf "
                             "voxels") from None
        if st.get("normalize", False) and not per_roi:
            image = imageoperations.normalizeImage(image, **st)
        state = {"image": image, "masks": {}, "rois": {}}
        _SCANS[key] = state
        while len(_SCANS) > _SCANS_MAX:
            _SCANS.popitem(last=False)
    _SCANS.move_to_end(key)
    return state


#: scikit-image's advice, once per LBP image, that local binary patterns of a float image may
#: differ with tiny intensity differences: pyradiomics' LBP2D/LBP3D always pass the float
#: intensities (that is their definition here), and the composition table marks LBP features as
#: not IBSI-standardised, so the reports do not repeat it per scan
_LBP_FLOAT_ADVICE = "Applying `local_binary_pattern` to floating-point images"


def _quiet_lbp_float_advice() -> None:
    """Ignore :data:`_LBP_FLOAT_ADVICE` in this process from now on (that one message only).

    A process-wide filter, installed once, rather than ``warnings.catch_warnings`` around each
    unit: ``catch_warnings`` saves and restores the global filter list, so units running in
    threads of one process (a Dask worker with several threads) could restore each other's
    lists and drop filters set meanwhile. Checked on every call because a test harness may
    reset the filters between calls."""
    import warnings

    pattern = re.escape(_LBP_FLOAT_ADVICE)
    if not any(f[0] == "ignore" and f[1] is not None and f[1].pattern == pattern
               for f in warnings.filters):
        warnings.filterwarnings("ignore", message=pattern, category=UserWarning)


def _run_unit(unit: dict) -> dict:
    """Extract some image types of one scan for its ROIs. Never raises: errors become reasons."""
    _quiet_lbp_float_advice()
    with _fast_bin_edges():
        return _extract_unit(unit)


def _extract_unit(unit: dict) -> dict:
    """:func:`_run_unit`'s work."""
    import radiomics
    from radiomics import imageoperations

    t0 = time.perf_counter()
    level = radiomics.logger.level
    radiomics.logger.setLevel(logging.ERROR)  # pyradiomics' per-ROI chatter; restored below
    limiter = None
    if unit.get("itk_threads"):
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(int(unit["itk_threads"]))
    try:  # BLAS threads only add overhead to pyradiomics' small eigenvalue problems (glcm MCC)
        from threadpoolctl import threadpool_limits

        limiter = threadpool_limits(1, user_api="blas")
    except ImportError:  # pragma: no cover
        pass
    settings = unit["settings"]
    results: dict[str, dict] = {}  # "<pos>|<family>" -> {"features": {...}} or {"error": str}
    try:
        ex = _extractor(settings)
        st = ex.settings
        per_roi = (st.get("interpolator") is not None
                   and st.get("resampledPixelSpacing") is not None) or bool(st.get("preCrop", False))
        crop = bool(settings["vcfnb"]["crop"]) and not per_roi
        state = _scan_state(unit, ex, per_roi)
        image = state["image"]
        rois: list[_Roi] = []
        for pos, label, mask_path, resample in unit["rois"]:
            try:
                mkey = (_stamp(mask_path), resample)
            except OSError:
                mkey = (mask_path, resample)
            dcm_mask = dicom_masks.is_dicom_object(mask_path)
            if dcm_mask:  # a SEG/RTSTRUCT is rasterised per segment/ROI onto this image's grid
                mkey = (*mkey, int(label))
            prepared = state["rois"].get((mkey, int(label)))
            if prepared is None:
                prepared = _Roi(int(pos), int(label), mask_path)
                try:
                    if mkey not in state["masks"]:
                        try:
                            mask_img = (dicom_masks.read_mask(mask_path, int(label), image,
                                                              reference_path=unit["image"])
                                        if dcm_mask else _read(mask_path))
                            if resample:
                                from vcfnb.preprocess import resample_to_reference

                                mask_img = resample_to_reference(mask_img, image)
                            state["masks"][mkey] = _mask_info(mask_img)
                        except Exception as exc:  # noqa: BLE001
                            raise ValueError(f"cannot read mask {mask_path}: {_short(exc)}") \
                                from None
                    _prepare_roi(ex, image, state["masks"][mkey], prepared, settings, per_roi)
                except Exception as exc:  # noqa: BLE001
                    prepared.error = _roi_reason(exc, prepared)
                state["rois"][(mkey, int(label))] = prepared
            rois.append(dataclasses.replace(prepared, pos=int(pos)))
        for family, positions in unit["families"].items():
            todo = [r for r in rois if r.pos in positions]
            for r in todo:
                if r.error is not None:
                    results[f"{r.pos}|{family}"] = {"error": r.error, "deterministic": True}
            todo = [r for r in todo if r.error is None]
            if not todo:
                continue
            try:
                if family in ("shape", "diagnostics"):
                    for r in todo:
                        _settings = dict(st, label=r.label)
                        img = r.image if per_roi else image
                        if family == "shape":
                            feats = ex.computeShape(img, r.shape_mask, r.bbox, **_settings)
                        else:
                            feats = r.diagnostics or {}
                        results[f"{r.pos}|{family}"] = {
                            "features": {k: _to_float(v) for k, v in feats.items()}}
                    continue
                args = settings["imageType"][family]
                # LBP3D is computed only on the voxels of the mask's label: one image per ROI
                groups = ([[r] for r in todo] if per_roi or family.lower() == "lbp3d"
                          else [todo])
                for group in groups:
                    img = group[0].image if per_roi else image
                    base = dict(st, label=group[0].label)
                    feats = {r.pos: collections.OrderedDict() for r in group}
                    cropped: dict[tuple, sitk.Image] = {}
                    for fimg, name, kw, lo in _family_images(family, args, img, group[0].feat_mask,
                                                             group, settings, base, crop,
                                                             state.setdefault("memo", {})):
                        for r in group:
                            bb = r.bbox.copy()
                            bb[0::2] -= lo
                            bb[1::2] -= lo
                            ck = (r.pos, tuple(lo), fimg.GetSize())
                            if ck not in cropped:
                                cropped[ck] = _crop(r.feat_mask, lo, [a + b - 1 for a, b in
                                                                      zip(lo, fimg.GetSize())])
                            cimg, cmask = imageoperations.cropToTumorMask(fimg, cropped[ck], bb,
                                                                          padDistance=0)
                            kw_r = dict(kw, label=r.label)
                            feats[r.pos].update(ex.computeFeatures(cimg, cmask, name, **kw_r))
                    for r in group:
                        results[f"{r.pos}|{family}"] = {
                            "features": {k: _to_float(v) for k, v in feats[r.pos].items()}}
            except Exception as exc:  # noqa: BLE001 - a filter error fails this image type only
                for r in todo:
                    results.setdefault(f"{r.pos}|{family}", {
                        "error": f"image type {family}: {type(exc).__name__}: {_short(exc)}",
                        "deterministic": isinstance(exc, ValueError)})
    except _UnitError as exc:
        for pos, *_ in unit["rois"]:
            for family, positions in unit["families"].items():
                if pos in positions:
                    results[f"{pos}|{family}"] = {"error": str(exc), "deterministic": False}
    except Exception as exc:  # noqa: BLE001
        for pos, *_ in unit["rois"]:
            for family, positions in unit["families"].items():
                if pos in positions:
                    results.setdefault(f"{pos}|{family}", {
                        "error": f"{type(exc).__name__}: {_short(exc)}", "deterministic": False})
    finally:
        radiomics.logger.setLevel(level)
        if limiter is not None:
            limiter.unregister()
    return {"results": results, "seconds": time.perf_counter() - t0}


class _UnitError(Exception):
    pass


def _roi_reason(exc: BaseException, roi: _Roi) -> str:
    msg = _short(exc)
    low = msg.lower()
    if "not present" in low or "no labels found" in low:
        kind = "label absent"
    elif "too small" in low or "single voxel" in low or "1 segmented voxel" in low:
        kind = "too few voxels"
    elif "too few dimensions" in low:
        kind = "too few voxels (ROI is flat)"
    elif "cannot read" in low:
        kind = "unreadable file"
    elif "geometry mismatch" in low or "size mismatch" in low or "larger than image" in low:
        kind = "image/mask geometry mismatch"
    else:
        kind = "mask check failed"
    return f"{kind}: mask {roi.mask_path} label {roi.label}: {msg}"


# ---------------------------------------------------------------------------------------------
# the driver
# ---------------------------------------------------------------------------------------------

def _families(settings: dict) -> list[str]:
    fams = []
    if any(k.startswith("shape") for k in settings["featureClass"]):
        fams.append("shape")
    if settings["vcfnb"]["diagnostics"]:
        fams.insert(0, "diagnostics")
    if any(not k.startswith("shape") for k in settings["featureClass"]):
        fams.extend(settings["imageType"])
    return fams


_COST = {"wavelet": 8.0, "log": 3.0}


def _family_cost(name: str, args: dict) -> float:
    if name.lower() == "log":
        return max(1.0, 1.5 * len(args.get("sigma") or []))
    return _COST.get(name.lower(), 1.0)


def _image_voxels(path: str) -> float:
    """Voxel count from the image header (a DICOM folder: files x one slice), 1e6 if unknown."""
    try:
        p = Path(path)
        files = sorted(f for f in p.iterdir() if f.is_file()) if p.is_dir() else [p]
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(files[0]))
        reader.ReadImageInformation()
        return float(np.prod(reader.GetSize())) * len(files)
    except Exception:  # noqa: BLE001 - only a scheduling hint
        return 1e6


def _make_units(todo: dict[str, dict[str, list[int]]], rows: dict[int, tuple], settings: dict,
                n_workers: int) -> list[dict]:
    """Split (image -> family -> positions) into work units balanced over the workers."""
    units = []
    target = 3 * max(n_workers, 1)
    n_images = len(todo)
    for image, fams in todo.items():
        # few scans split into several units each: work ~ filtering (voxels of the scan) +
        # features (per ROI), so big scans go first (a header read; many scans pack well as is)
        size = _image_voxels(image) / 1e6 if 1 < n_images < target else 1.0
        names = list(fams)
        n_chunks = 1 if n_images >= target else min(len(names), math.ceil(target / n_images))
        # greedy: heaviest image types first onto the lightest chunk
        chunks: list[list[str]] = [[] for _ in range(n_chunks)]
        load = [0.0] * n_chunks
        cost = {n: (0.3 if n in ("shape", "diagnostics")
                    else _family_cost(n, settings["imageType"][n])) for n in names}
        for n in sorted(names, key=lambda n: -cost[n]):
            i = int(np.argmin(load))
            chunks[i].append(n)
            load[i] += cost[n]
        for chunk in chunks:
            if not chunk:
                continue
            chunk = [n for n in names if n in chunk]
            positions = sorted({p for n in chunk for p in fams[n]})
            units.append({
                "image": image,
                "rois": [(p, *rows[p]) for p in positions],
                "families": {n: sorted(fams[n]) for n in chunk},
                "settings": settings,
                "cost": sum(cost[n] for n in chunk) * (size + 0.1 * len(positions)),
            })
    units.sort(key=lambda u: -u["cost"])  # longest first: better packing on the pool
    return units


def _scheduler_address(scheduler: Any) -> Any:
    return _parallel.scheduler_address(scheduler)


# the worker pool lives in vcfnb.parallel (shared with vcfnb.parallel.pmap); these names stay
# for callers of earlier versions
_PRELOAD = _parallel.PRELOAD
_pool = _parallel.worker_pool


def start_workers(n_jobs: int | None = None, wait: bool = True) -> None:
    """Start the worker processes :func:`extract` uses (``n_jobs`` of them, default all CPUs).

    :func:`extract` starts them itself when it has work for them (~1 s: a forkserver importing
    pyradiomics, then one fork per worker) and keeps them for later calls; it does so in the
    background while it validates settings, hashes files and reads the first scans (at once
    without ``cache_dir``, else once the cache lookup left work). Call this to pay the start up
    front, e.g. before timing an extraction. :func:`shutdown_workers` stops them.
    Same as :func:`vcfnb.parallel.start_workers`.
    """
    _parallel.start_workers(n_jobs, wait)


def shutdown_workers() -> None:
    """Stop the worker processes :func:`extract` keeps for the next call (frees their memory).
    Same as :func:`vcfnb.parallel.shutdown_workers`."""
    _parallel.shutdown_workers()


def _crashed(unit: dict, exc: BaseException) -> dict:
    reason = f"worker failed: {type(exc).__name__}: {_short(exc)}"
    return {"results": {f"{pos}|{fam}": {"error": reason, "deterministic": False}
                        for fam, positions in unit["families"].items() for pos in positions},
            "seconds": 0.0}


def _local_pool(n_jobs: int, n_units: int) -> Any:
    """The worker pool for ``n_units`` units, or None to run them in this process (one job or
    unit, or worker processes cannot start here: then a warning and a log line say so)."""
    if n_jobs <= 1 or n_units <= 1 or _parallel._IN_WORKER:
        return None
    starting = _parallel._STARTING
    if starting is not None and starting.is_alive():  # started early by extract (no cache)
        starting.join()
    with _parallel._LOCK:  # a running larger pool serves fewer units as well: no restart
        if _parallel._POOL is not None and _parallel._POOL_SIZE > n_jobs:
            return _parallel._POOL
    pool = _parallel.worker_pool(n_jobs)
    if pool is None:
        _parallel._say_in_process(_parallel._UNAVAILABLE or "unknown reason", "extraction")
    return pool


def _read_while_starting(units: list[dict], starting: Any, n_jobs: int) -> dict[str, sitk.Image]:
    """Read the first units' scans in this process while the worker processes start.

    Until the forkserver has imported pyradiomics (~1 s) this process only waits; a scan read
    here meanwhile (the same :func:`vcfnb.io.read_image`, so the same voxels) travels with its
    units, and the workers start filtering at once instead of each reading it again (0.8 CPU s
    for a 512 x 512 x 20 DICOM series). Stops as soon as the workers are up, and after
    ``2 * n_jobs`` scans (memory); a scan that cannot be read here is left to the worker, which
    reports the error as usual.
    """
    images: dict[str, sitk.Image] = {}
    for u in units:  # longest first: the scans the workers need first
        if starting is None or not starting.is_alive() or len(images) >= 2 * n_jobs:
            break
        if u["image"] in images:
            continue
        try:
            images[u["image"]] = _read(u["image"])
        except Exception:  # noqa: BLE001 - the worker reads it again and says why it fails
            continue
    return images


def _run_units(units: list[dict], n_jobs: int, scheduler: Any, progress: bool, on_result,
               desc: str = "features") -> None:
    from tqdm import tqdm

    bar = tqdm(total=len(units), desc=desc, unit="unit", disable=not progress or not units,
               leave=False)
    images: dict[str, sitk.Image] = {}
    if scheduler is None and n_jobs > 1 and len(units) > 1:  # the local pool will be used
        images = _read_while_starting(units, _parallel.start_workers_in_background(n_jobs),
                                      n_jobs)
    try:
        if scheduler is not None:
            from dask.distributed import Client, as_completed

            client = scheduler if isinstance(scheduler, Client) else Client(scheduler)
            try:
                futures = [client.submit(_run_unit, u, pure=False) for u in units]
                index = {f.key: i for i, f in enumerate(futures)}
                for fut in as_completed(futures):
                    unit = units[index[fut.key]]
                    try:
                        out = fut.result()
                    except Exception as exc:  # noqa: BLE001 - a lost worker fails its unit only
                        out = _crashed(unit, exc)
                    on_result(unit, out)
                    bar.update()
            finally:
                if client is not scheduler:
                    client.close()
        elif (executor := _local_pool(n_jobs, len(units))) is None:
            try:
                for u in units:
                    on_result(u, _run_unit(u))
                    bar.update()
            finally:
                _SCANS.clear()  # do not keep scans in the caller's memory
        else:
            from concurrent.futures import as_completed as cf_completed
            from concurrent.futures.process import BrokenProcessPool

            threads = max(1, (os.cpu_count() or 1) // n_jobs)
            futures = {executor.submit(_run_unit, {**u, "itk_threads": threads, **(
                {"image_data": images[u["image"]]} if u["image"] in images else {})}): u
                for u in units}
            images.clear()  # the submitted units hold the scans until they are sent
            broken = False
            try:
                for fut in cf_completed(futures):
                    try:
                        out = fut.result()
                    except Exception as exc:  # noqa: BLE001 - e.g. a worker killed for memory
                        broken = broken or isinstance(exc, BrokenProcessPool)
                        out = _crashed(futures[fut], exc)
                    on_result(futures[fut], out)  # cached at once: an interrupt loses nothing
                    bar.update()
            except BaseException:  # KeyboardInterrupt: drop the queued units, keep the pool
                for fut in futures:
                    fut.cancel()
                raise
            if broken:
                shutdown_workers()
    finally:
        bar.close()


def extract_with_failures(rois: pd.DataFrame, settings: Mapping | str | os.PathLike | None = None,
                          *, n_jobs: int | None = None, cache_dir: str | os.PathLike | None = None,
                          scheduler: Any = None, progress: bool = True
                          ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Like :func:`extract`, returning ``(features, failures)`` as two DataFrames."""
    feats = extract(rois, settings, n_jobs=n_jobs, cache_dir=cache_dir, scheduler=scheduler,
                    progress=progress)
    return feats, failures_table(feats)


def failures_table(features: pd.DataFrame) -> pd.DataFrame:
    """The failures of an :func:`extract` result as a DataFrame (:data:`FAILURE_COLUMNS`)."""
    return pd.DataFrame(features.attrs.get("failures", []), columns=FAILURE_COLUMNS)


def extract(rois: pd.DataFrame, settings: Mapping | str | os.PathLike | None = None, *,
            n_jobs: int | None = None, cache_dir: str | os.PathLike | None = None,
            scheduler: Any = None, progress: bool = True) -> pd.DataFrame:
    """Extract radiomics features for every row of a cohort's ``rois`` table.

    Parameters
    ----------
    rois : DataFrame
        One row per ROI with columns ``image`` and ``mask`` (paths: NIfTI, NRRD, MHA or a DICOM
        series folder; absolute, as :func:`vcfnb.io.load_cohort` returns them), ``label`` (mask
        value; default 1) and the id columns ``patient_id``, ``roi``, ``sequence``, ``reader``
        (those present are copied). Not modified.
    settings : dict, str or path
        pyradiomics parameters plus vcfnb's image types and options; see :func:`load_settings`.
    n_jobs : int, optional
        Local worker processes (default: all CPUs; 1 = run in this process). Results do not
        depend on it.
    cache_dir : path, optional
        Folder for the content-addressed result cache; a re-run with the same inputs and
        settings reads every value from it and extracts nothing. Several runs and machines may
        share it.
    scheduler : str or dask.distributed.Client, optional
        Dask scheduler address (``"tcp://host:8786"``) or client: run the work units on that
        cluster instead of the local pool. Default: the ``VCFNB_DASK_SCHEDULER`` environment
        variable when set.
    progress : bool
        Show a progress bar over the work units.

    Returns
    -------
    DataFrame
        Same index and row order as ``rois``; the id columns, then one float column per feature
        named as pyradiomics names it (``original_glcm_Correlation``,
        ``wavelet-LLH_firstorder_Mean``, ``log-sigma-3-0-mm-3D_glszm_ZoneEntropy``) or, for the
        papers' filters, ``<prefix>_<class>_<feature>`` (``boxsigmaimage_glcm_Correlation``).
        pyradiomics' ``diagnostics_*`` entries are included only with ``vcfnb: {diagnostics:
        true}``. A ROI that fails keeps its row with NaN features. ``attrs["failures"]`` lists
        the failures as records (see :func:`failures_table`: row, patient_id, roi, image, mask,
        label, image_type, reason); ``attrs["cache"]`` counts ROIs read entirely from the cache
        (``hits``) and ROIs extracted (``misses``), plus cache entries read and written.

    Examples
    --------
    >>> import tempfile, pathlib, SimpleITK as sitk, numpy as np
    >>> d = pathlib.Path(tempfile.mkdtemp()); rng = np.random.default_rng(0)
    >>> img = sitk.GetImageFromArray(rng.normal(100, 20, (12, 24, 24)))
    >>> m = np.zeros((12, 24, 24), np.uint8); m[3:9, 4:12, 4:12] = 1; m[3:9, 14:20, 14:20] = 2
    >>> msk = sitk.GetImageFromArray(m); msk.CopyInformation(img)
    >>> sitk.WriteImage(img, str(d / "ct.nrrd")); sitk.WriteImage(msk, str(d / "seg.nrrd"))
    >>> rois = pd.DataFrame({"patient_id": ["p1", "p1"], "roi": ["a", "b"],
    ...                      "image": [str(d / "ct.nrrd")] * 2, "mask": [str(d / "seg.nrrd")] * 2,
    ...                      "label": [1, 2]})
    >>> feats = extract(rois, {"imageType": {"Original": {}, "Mean": {"radius": 1}},
    ...                        "featureClass": {"firstorder": ["Mean"]}}, n_jobs=1, progress=False)
    >>> list(feats.columns)
    ['patient_id', 'roi', 'original_firstorder_Mean', 'mean_firstorder_Mean']
    """
    t0 = time.perf_counter()
    if not isinstance(rois, pd.DataFrame):
        raise TypeError("rois must be a DataFrame (the rois table of a cohort)")
    missing = {"image", "mask"} - set(rois.columns)
    if missing:
        raise ValueError(f"rois table lacks column(s) {sorted(missing)}")
    if cache_dir is None and len(rois) > 1 and _scheduler_address(scheduler) is None:
        # no cache, so every ROI will be extracted: start the local workers now (a daemon
        # thread) and validate settings, hash files and plan while they import pyradiomics
        _parallel.start_workers_in_background(n_jobs)
    settings = load_settings(settings)
    count = settings["setting"].get("binCount")
    if count is not None and count not in _BIN_COUNT_STATED:  # once per run, not per extraction
        _BIN_COUNT_STATED.add(count)
        print(_bin_count_sentence(count), flush=True)
    families = _families(settings)
    versions = _versions()
    cache = _Cache(cache_dir)
    n_workers = (os.cpu_count() or 1) if n_jobs is None or n_jobs < 0 else max(1, int(n_jobs))
    scheduler = _scheduler_address(scheduler)

    labels = (rois["label"] if "label" in rois.columns else pd.Series(1, index=rois.index))
    n = len(rois)
    values: list[dict[str, float]] = [dict() for _ in range(n)]
    names_of: list[dict[str, list[str]]] = [dict() for _ in range(n)]  # family -> feature names
    errors: list[dict[str, str]] = [dict() for _ in range(n)]
    keys: dict[tuple[int, str], str] = {}
    todo: dict[str, dict[str, list[int]]] = {}
    rows: dict[int, tuple] = {}
    hits_entries = 0
    for pos in range(n):
        image = str(rois["image"].iloc[pos])
        mask = str(rois["mask"].iloc[pos])
        lab = labels.iloc[pos]
        try:
            if dicom_masks.is_dicom_object(mask):  # SEG: segment number/label; RTSTRUCT: ROI
                label = dicom_masks.resolve_label(mask, None if pd.isna(lab) else lab)
            else:
                label = int(1 if pd.isna(lab) else lab)
        except dicom_masks.DicomMaskError as exc:
            errors[pos]["*"] = f"label absent: {exc}"
            continue
        except (TypeError, ValueError):
            errors[pos]["*"] = f"label {lab!r} is not an integer"
            continue
        # a mask on another grid of the same physical space (flagged by vcfnb.io.load_cohort
        # with mask_grid="resample") is resampled onto the image grid, nearest neighbour
        resample = bool(rois["resample_mask"].iloc[pos]) if "resample_mask" in rois else False
        rows[pos] = (label, mask, resample)
        try:
            ih = file_digest(image)
        except OSError as exc:
            errors[pos]["*"] = f"unreadable file: image {image}: {exc.strerror or exc}"
            continue
        try:
            mh = file_digest(mask) + (":resampled-to-image" if resample else "")
        except OSError as exc:
            errors[pos]["*"] = f"unreadable file: mask {mask}: {exc.strerror or exc}"
            continue
        for fam in families:
            key = _entry_key(ih, mh, label, fam, settings, versions)
            keys[(pos, fam)] = key
            entry = cache.get(key)
            if entry is not None:
                hits_entries += 1
                if entry.get("error"):
                    errors[pos][fam] = entry["error"]
                else:
                    values[pos].update(entry["features"])
                    names_of[pos][fam] = list(entry["features"])
                continue
            todo.setdefault(image, {}).setdefault(fam, []).append(pos)

    rois_extracted = {p for fams in todo.values() for ps in fams.values() for p in ps}
    hits = sum(1 for pos in range(n) if pos not in rois_extracted
               and all((pos, f) in keys for f in families))
    units = _make_units(todo, rows, settings, n_workers)
    written = 0

    def on_result(unit: dict, out: dict) -> None:
        nonlocal written
        entries: list[tuple[str, dict]] = []  # the unit's cache entries: one flush to disk
        for fam, positions in unit["families"].items():
            for pos in positions:
                res = out["results"].get(f"{pos}|{fam}",
                                         {"error": "no result returned", "deterministic": False})
                if "error" in res:
                    errors[pos][fam] = res["error"]
                    if res.get("deterministic"):
                        entries.append((keys[(pos, fam)], {"error": res["error"]}))
                else:
                    values[pos].update(res["features"])
                    names_of[pos][fam] = list(res["features"])
                    entries.append((keys[(pos, fam)], {"features": res["features"]}))
        cache.put_many(entries)
        written += len(entries)

    if units:
        where = "dask" if scheduler is not None else f"{min(n_workers, len(units))} process(es)"
        _run_units(units, min(n_workers, len(units)), scheduler, progress, on_result,
                   desc=f"features: {hits}/{n} ROIs cached, "
                        f"extracting {len(rois_extracted)} on {where}")

    # assemble: id columns, then features in family order (pyradiomics order within a family)
    # (independent of the order in which work units finish)
    columns: dict[str, None] = {}
    for fam in families:
        for pos in range(n):
            columns.update(dict.fromkeys(names_of[pos].get(fam, [])))
    feature_cols = list(columns)
    ids = [c for c in ID_COLUMNS if c in rois.columns]
    data = pd.DataFrame(
        np.array([[values[pos].get(c, np.nan) if not isinstance(values[pos].get(c), str)
                   else np.nan for c in feature_cols] for pos in range(n)], dtype=float)
        if feature_cols else np.empty((n, 0)),
        index=rois.index, columns=feature_cols)
    diag_cols = [c for c in feature_cols if c.startswith("diagnostics_")]
    for c in diag_cols:  # diagnostics hold strings as well as numbers
        data[c] = pd.Series([values[pos].get(c, None) for pos in range(n)], index=rois.index,
                            dtype=object)
    out = pd.concat([rois[ids].copy(), data], axis=1)

    failures = []
    for pos in range(n):
        if not errors[pos]:
            continue
        seen = set()
        for fam, reason in errors[pos].items():
            if reason in seen:
                continue
            seen.add(reason)
            rec = {"row": rois.index[pos],
                   "patient_id": rois["patient_id"].iloc[pos] if "patient_id" in rois else None,
                   "roi": rois["roi"].iloc[pos] if "roi" in rois else None,
                   "image": str(rois["image"].iloc[pos]), "mask": str(rois["mask"].iloc[pos]),
                   "label": rows.get(pos, (None,))[0],
                   "image_type": "all" if (fam == "*" or len(errors[pos]) == len(families))
                   else fam,
                   "reason": reason}
            failures.append(rec)
            if rec["image_type"] == "all":
                break
    n_fail = len({f["row"] for f in failures})
    out.attrs["failures"] = failures
    out.attrs["cache"] = {"hits": int(hits), "misses": int(len(rois_extracted)),
                          "entries_read": int(hits_entries), "entries_written": int(written)}
    msg = (f"features: {n} ROIs, {len(out.columns) - len(ids)} features, "
           f"{hits} from cache, {len(rois_extracted)} extracted in {len(units)} work units, "
           f"{n_fail} failed ({time.perf_counter() - t0:.1f} s)")
    logger.info(msg)
    if failures:
        logger.warning("features: %d ROI(s) failed; see attrs['failures']", n_fail)
    return out


def wide_by_sequence(features: pd.DataFrame, *,
                     meta=("patient_id", "roi", "sequence", "reader")) -> pd.DataFrame:
    """Long → wide: one row per patient, feature columns prefixed by their sequence.

    A multi-sequence study extracts one row per patient and sequence (MRI: T1, T2, FS-T2, ...);
    a model wants one row per patient with every sequence's features side by side. Each feature
    column ``f`` of the long table becomes ``<sequence>_f`` (``T2_original_glcm_Contrast``).

    Parameters
    ----------
    features : DataFrame
        Long feature table, e.g. from :func:`extract`, with ``patient_id`` and ``sequence``
        columns and at most one row per (patient, sequence) -- keep one reader first.
    meta : sequence of str
        Non-feature columns to leave out (besides ``patient_id`` and ``sequence``).

    Returns
    -------
    DataFrame
        Index ``patient_id`` (sorted), columns ``<sequence>_<feature>`` sorted by sequence,
        then name (``original_`` features; others sort by their full name). A patient missing
        a sequence gets NaN in that sequence's columns.

    Raises
    ------
    ValueError
        When a (patient, sequence) pair occurs more than once (pandas' ``pivot``).

    Examples
    --------
    >>> long = pd.DataFrame({"patient_id": ["p1", "p1", "p2", "p2"],
    ...                      "roi": "lesion", "sequence": ["T1", "T2", "T1", "T2"],
    ...                      "original_firstorder_Mean": [1.0, 2.0, 3.0, 4.0]})
    >>> wide_by_sequence(long)  # doctest: +NORMALIZE_WHITESPACE
                T1_original_firstorder_Mean  T2_original_firstorder_Mean
    patient_id
    p1                                  1.0                          2.0
    p2                                  3.0                          4.0
    """
    feats = [c for c in features.columns if c not in meta]
    long = features[["patient_id", "sequence", *feats]]
    wide = long.pivot(index="patient_id", columns="sequence")
    wide.columns = [f"{seq}_{feat}" for feat, seq in wide.columns]
    order = sorted(wide.columns, key=lambda c: (c.split("_original_")[0], c))
    return wide[order]


#: non-feature columns of a long feature table (ids, file names, extraction bookkeeping)
META_COLUMNS = ("patient_id", "roi", "sequence", "reader", "image", "mask", "label", "file_row",
                "resample_mask", "icc_subset", "split", "center")


def per_patient(features: pd.DataFrame, *, how: str = "mean", reader: str = "1", keep=None,
                prefix: Mapping[str, str] | None = None) -> pd.DataFrame:
    """One row per patient from a long ROI feature table of one reader, prefixed by sequence.

    ``how="mean"`` averages a patient's ROIs (e.g. L1–L4) per sequence, ``"per-roi"`` keeps one
    column per ROI (``<prefix>_<roi>_<feature>``). ``keep``: the features to use per sequence,
    as a mapping ``sequence → names`` or an ICC table with ``sequence, feature, kept``
    (:func:`vcfnb.reliability.reader_icc`). ``prefix``: sequence → column prefix (default the
    sequence name).

    Examples
    --------
    >>> long = pd.DataFrame({"patient_id": ["a", "a", "b", "b"], "roi": ["L1", "L2"] * 2,
    ...                      "sequence": "T1", "reader": "1", "f": [1.0, 3.0, 5.0, 7.0]})
    >>> per_patient(long)["T1_f"].tolist()
    [2.0, 6.0]
    """
    if how not in ("mean", "per-roi"):
        raise ValueError(f"how must be 'mean' or 'per-roi', got {how!r}")
    if isinstance(keep, pd.DataFrame):
        keep = {s: g.loc[g["kept"].astype(bool), "feature"].tolist()
                for s, g in keep.groupby("sequence")}
    cols = [c for c in features.columns if c not in META_COLUMNS
            and pd.api.types.is_numeric_dtype(features[c])]
    f = features[features["reader"].astype(str) == str(reader)]
    blocks = []
    for seq, g in f.groupby("sequence", sort=True):
        use = cols if keep is None else [c for c in keep.get(seq, []) if c in cols]
        if not use:
            continue
        p = dict(prefix or {}).get(seq, str(seq))
        if how == "mean":
            w = g.groupby("patient_id")[use].mean()
            w.columns = [f"{p}_{c}" for c in use]
        else:
            w = g.pivot_table(index="patient_id", columns="roi", values=use)
            w.columns = [f"{p}_{roi}_{c}" for c, roi in w.columns]
        blocks.append(w)
    if not blocks:
        raise ValueError("no feature columns left (none kept by the ICC filter?)")
    out = pd.concat(blocks, axis=1)
    out.index = out.index.astype(str)
    out.index.name = "patient_id"
    return out


def feature_counts(table: pd.DataFrame) -> pd.DataFrame:
    """Number of feature columns of an :func:`extract` table per image type and feature class
    (``<imagetype>_<class>_<feature>`` names), with a ``total`` column and an ``all`` row."""
    cols = [c for c in table.columns if c not in ID_COLUMNS and c.count("_") >= 2]
    parts = pd.DataFrame([c.split("_", 2)[:2] for c in cols], columns=["image_type", "class"])
    counts = parts.value_counts().rename("n").reset_index()
    piv = counts.pivot_table(index="image_type", columns="class", values="n", fill_value=0)
    piv["total"] = piv.sum(axis=1)
    piv.loc["all"] = piv.sum(axis=0)
    return piv.reset_index()


def composition(settings: Mapping | str | os.PathLike | None, *, by: str = "image_type",
                totals: bool = True) -> pd.DataFrame:
    """Features per image type and class that ``settings`` would extract, without extracting:
    :func:`vcfnb.composition.composition` (pyradiomics decides which features each class and
    image type gives; an ``ibsi`` column gives each image type's IBSI status)."""
    from vcfnb.composition import composition as _composition

    return _composition(settings, by=by, totals=totals)


def _n4_one(job: tuple) -> float:
    from vcfnb import io, preprocess

    image, masks, out, shrink, iterations, margin_mm = job
    t0 = time.perf_counter()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)  # one scan per worker
    crop, crop_masks = preprocess.crop_to_rois(io.read_image(image),
                                               [io.read_image(m) for m in masks],
                                               margin_mm=margin_mm)
    corrected = preprocess.n4_correct(crop, shrink_factor=shrink, n_iterations=iterations)
    io.write_image(sitk.Cast(corrected, sitk.sitkFloat32), Path(out) / "image.nii.gz")
    for i, m in enumerate(crop_masks):
        io.write_image(m, Path(out) / f"mask{i}.nii.gz")
    io.write_text("ok", Path(out) / "done")
    return time.perf_counter() - t0


def n4_rois(rois: pd.DataFrame, cache_dir: str | os.PathLike, *, shrink_factor: int = 4,
            n_iterations: tuple = (30, 30, 30), margin_mm: float = 25.0,
            n_jobs: int = 2) -> tuple[pd.DataFrame, pd.DataFrame]:
    """N4 bias-field correction of every scan of ``rois``, cropped around its ROIs, cached.

    Each scan is cropped to the union of its masks plus ``margin_mm`` (N4 then fits the field
    where it matters, much faster than on the whole field of view), corrected with
    :func:`vcfnb.preprocess.n4_correct` and written with its cropped masks under
    ``cache_dir/n4/<hash>/`` (hash of the input files' contents and the parameters), so a re-run
    reuses them. The input files are never written.

    Returns
    -------
    (rois, log)
        A copy of ``rois`` pointing at the corrected images / cropped masks, and a per-scan log
        ``image, seconds, cached``.
    """
    root = Path(cache_dir) / "n4"
    jobs, keys = [], {}
    for image, grp in rois.groupby("image", sort=False):
        masks = list(dict.fromkeys(grp["mask"].astype(str)))
        h = hashlib.sha256()
        for p in (image, *masks):
            h.update(file_digest(p).encode())
        h.update(repr((int(shrink_factor), list(n_iterations), float(margin_mm))).encode())
        keys[image] = (h.hexdigest()[:24], masks)
        if not (root / keys[image][0] / "done").is_file():
            jobs.append((image, masks, str(root / keys[image][0]), int(shrink_factor),
                         list(n_iterations), float(margin_mm)))
    secs = dict(zip([j[0] for j in jobs], _parallel.pmap(_n4_one, jobs, n_jobs=n_jobs)))
    out = rois.copy()
    out["mask"] = [str(root / keys[i][0] / f"mask{keys[i][1].index(str(m))}.nii.gz")
                   for i, m in zip(rois["image"], rois["mask"])]
    out["image"] = [str(root / keys[p][0] / "image.nii.gz") for p in rois["image"]]
    log = pd.DataFrame({"image": [Path(p).name for p in keys],
                        "seconds": [secs.get(p, 0.0) for p in keys],
                        "cached": [p not in secs for p in keys]})
    return out, log


# ---------------------------------------------------------------------------------------------
# feature recipe: a cohort's ROI feature table -> a model's patient rows
# ---------------------------------------------------------------------------------------------
#: how a recipe turns a patient's ROIs into model rows
RECIPE_AGGREGATES = ("mean", "block", "rows")
_RECIPE_KEYS = {"sequences", "rois", "reader", "aggregate", "prefix", "features",
                "preprocessing", "mask_grid", "description"}


def check_recipe(recipe: Mapping) -> dict:
    """Validate a feature recipe and fill in its defaults (see :func:`patient_table`).

    Returns
    -------
    dict
        ``{"sequences": [...], "rois": [...] or None, "reader": str, "aggregate": str,
        "prefix": {sequence: prefix}, "features": [...] or None, "preprocessing": {...},
        "mask_grid": str, "description": str}`` -- plain data (JSON-ready).

    Raises
    ------
    ValueError
        Unknown key, no sequence, an unknown ``aggregate``.
    """
    rec = dict(recipe)
    unknown = sorted(set(rec) - _RECIPE_KEYS)
    if unknown:
        raise ValueError(f"feature recipe: unknown key(s) {unknown}; known: "
                         f"{sorted(_RECIPE_KEYS)}")
    seqs = rec.get("sequences")
    if isinstance(seqs, str):
        seqs = [seqs]
    if not seqs:
        raise ValueError("feature recipe: 'sequences' must name at least one sequence")
    agg = rec.get("aggregate", "mean")
    if agg not in RECIPE_AGGREGATES:
        raise ValueError(f"feature recipe: aggregate must be one of {RECIPE_AGGREGATES}, "
                         f"got {agg!r}")
    rois = rec.get("rois")
    if isinstance(rois, str):
        rois = [rois]
    prefix = {str(s): str(s) for s in seqs}
    prefix.update({str(k): str(v) for k, v in dict(rec.get("prefix") or {}).items()})
    feats = rec.get("features")
    return {"sequences": [str(s) for s in seqs],
            "rois": None if rois is None else [str(r) for r in rois],
            "reader": str(rec.get("reader", "1")), "aggregate": agg,
            "prefix": {s: prefix[s] for s in map(str, seqs)},
            "features": None if feats is None else [str(f) for f in feats],
            "preprocessing": dict(rec.get("preprocessing") or {}),
            "mask_grid": str(rec.get("mask_grid", "strict")),
            "description": str(rec.get("description", ""))}


def recipe_mismatch(rois: pd.DataFrame, recipe: Mapping) -> list[str]:
    """What a cohort's ``rois`` table lacks for ``recipe``: one message per missing sequence,
    ROI name or reader, then per patient missing a (sequence, ROI) pair. Empty: it matches."""
    rec = check_recipe(recipe)
    r = rois.assign(reader=rois["reader"].astype(str) if "reader" in rois else "1")
    have_seq = set(r["sequence"].astype(str)) if "sequence" in r else set()
    problems = [f"sequence {s!r} is absent (cohort sequences: {sorted(have_seq)})"
                for s in rec["sequences"] if s not in have_seq]
    if rec["reader"] not in set(r["reader"]):
        problems.append(f"reader {rec['reader']!r} is absent (cohort readers: "
                        f"{sorted(set(r['reader']))})")
    have_roi = set(r["roi"].astype(str)) if "roi" in r else set()
    if rec["rois"] is not None:
        problems += [f"ROI {x!r} is absent (cohort ROIs: {sorted(have_roi)})"
                     for x in rec["rois"] if x not in have_roi]
    if problems or rec["aggregate"] == "rows":
        return problems
    r = r[(r["reader"] == rec["reader"]) & r["sequence"].astype(str).isin(rec["sequences"])]
    need_rois = rec["rois"] if rec["rois"] is not None else sorted(set(r["roi"].astype(str)))
    pairs = set(zip(r["patient_id"].astype(str), r["sequence"].astype(str),
                    r["roi"].astype(str)))
    for pid in sorted(set(r["patient_id"].astype(str))):
        lack = [f"{s}/{x}" for s in rec["sequences"] for x in need_rois
                if (pid, s, x) not in pairs]
        if lack:
            problems.append(f"patient {pid} lacks {', '.join(lack)}")
    return problems


def patient_table(features: pd.DataFrame, recipe: Mapping) -> pd.DataFrame:
    """A model's rows from a long ROI feature table, as a feature recipe says.

    A *feature recipe* is plain data (JSON/YAML-ready) saved with a model so that the same
    rows can be rebuilt from a new cohort (:mod:`vcfnb.bundle`, ``vcfnb predict``).

    Parameters
    ----------
    features : DataFrame
        Long table from :func:`extract`: ``patient_id, roi, sequence, reader`` + features.
    recipe : mapping
        ``sequences`` (list, required): sequences used, e.g. ``["T1", "T2"]``.
        ``rois`` (list, optional): ROI names used (default: all).
        ``reader`` (default ``"1"``): the reader whose ROIs are used.
        ``aggregate``: how a patient's ROIs become model rows -- ``"mean"`` (one row per
        patient, features averaged over the ROIs: ``<prefix>_<feature>``), ``"block"`` (one
        row per patient, one column block per ROI: ``<prefix>_<roi>_<feature>``; these are the
        names of :func:`per_patient`) or ``"rows"`` (one row per patient and ROI,
        ``<prefix>_<feature>``, index ``(patient_id, roi)``; the model's scores are averaged
        per patient, :func:`vcfnb.models.aggregate_by_patient`).
        ``prefix`` (mapping): sequence → column prefix (default the sequence name, as
        :func:`wide_by_sequence`; e.g. ``{"T1": "T1WI", "T2": "T2WI"}``).
        ``features`` (list, optional): long-table feature names kept (default: every numeric
        non-id column).
        ``preprocessing`` (mapping): steps applied to the scans before extraction that the
        pyradiomics settings do not carry, e.g. ``{"n4": {"shrink_factor": 4}}``
        (:func:`n4_rois`); resampling, normalisation and discretisation live in the settings.
        ``mask_grid``: the ``mask_grid`` the cohort was loaded with. ``description``: text.

    Returns
    -------
    DataFrame
        Index ``patient_id`` (str; ``(patient_id, roi)`` for ``"rows"``), float columns,
        sorted by patient (then ROI).

    Raises
    ------
    ValueError
        Invalid recipe, or no row left for it.

    Examples
    --------
    >>> long = pd.DataFrame({"patient_id": ["a", "a", "b", "b"], "roi": ["L1", "L2"] * 2,
    ...                      "sequence": "T1", "reader": "1", "f": [1.0, 3.0, 5.0, 7.0]})
    >>> patient_table(long, {"sequences": ["T1"], "prefix": {"T1": "T1WI"}})["T1WI_f"].tolist()
    [2.0, 6.0]
    >>> list(patient_table(long, {"sequences": ["T1"], "aggregate": "block"}).columns)
    ['T1_L1_f', 'T1_L2_f']
    >>> patient_table(long, {"sequences": ["T1"], "aggregate": "rows"}).shape
    (4, 1)
    """
    rec = check_recipe(recipe)
    f = features.copy()
    f["reader"] = f["reader"].astype(str) if "reader" in f else "1"
    f["sequence"] = f["sequence"].astype(str)
    f["roi"] = f["roi"].astype(str)
    f["patient_id"] = f["patient_id"].astype(str)
    f = f[(f["reader"] == rec["reader"]) & f["sequence"].isin(rec["sequences"])]
    if rec["rois"] is not None:
        f = f[f["roi"].isin(rec["rois"])]
    if f.empty:
        raise ValueError(f"no ROI row of reader {rec['reader']} with sequences "
                         f"{rec['sequences']} and ROIs {rec['rois'] or 'any'}")
    cols = [c for c in f.columns if c not in META_COLUMNS
            and pd.api.types.is_numeric_dtype(f[c])]
    if rec["features"] is not None:
        missing = [c for c in rec["features"] if c not in f.columns]
        if missing:
            raise ValueError(f"feature(s) of the recipe not extracted: {missing[:5]}"
                             + (f" and {len(missing) - 5} more" if len(missing) > 5 else ""))
        cols = [c for c in rec["features"] if c in cols]
    if rec["aggregate"] in ("mean", "block"):
        how = "mean" if rec["aggregate"] == "mean" else "per-roi"
        out = per_patient(f, how=how, reader=rec["reader"], prefix=rec["prefix"],
                          keep={s: cols for s in rec["sequences"]})
        order = [c for s in rec["sequences"] for c in out.columns
                 if c.startswith(rec["prefix"][s] + "_")]
        out = out[list(dict.fromkeys(order))].astype(float)
        return out.sort_index()
    blocks = []
    for s in rec["sequences"]:
        g = f[f["sequence"] == s]
        if g.duplicated(["patient_id", "roi"]).any():
            raise ValueError(f"sequence {s}: a (patient, ROI) pair occurs twice")
        w = g.set_index(["patient_id", "roi"])[cols].astype(float)
        w.columns = [f"{rec['prefix'][s]}_{c}" for c in cols]
        blocks.append(w)
    out = pd.concat(blocks, axis=1).sort_index()
    out.index.names = ["patient_id", "roi"]
    return out


__all__ += ["patient_table", "check_recipe", "recipe_mismatch", "RECIPE_AGGREGATES"]
