"""Reading and validating cohorts, reading images, writing report files.

This is the only module of vcfnb that touches the file system.

A **cohort** is a folder with ``cases.csv`` (one row per patient or lesion) and ``rois.csv`` (one
row per region of interest) plus the image and mask files they name (paths relative to the
folder). Validation runs up front and returns a table of problems naming the row and the file;
valid rows go on, and the caller decides whether the problems are fatal.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import SimpleITK as sitk
import yaml

from vcfnb import dicom_masks

__all__ = [
    "Cohort", "CohortError", "ImageReadError", "load_cohort", "read_image", "read_image_info",
    "write_cohort", "load_yaml", "write_table", "write_json", "write_text", "write_figure",
    "write_image",
    "PROBLEM_COLUMNS", "ROI_COLUMNS",
]

PROBLEM_COLUMNS = ["row", "patient_id", "file", "problem"]
ROI_COLUMNS = ["patient_id", "roi", "sequence", "reader", "image", "mask", "label"]
_SPLITS = {"train", "test", "external", ""}


class CohortError(ValueError):
    """A cohort cannot be used at all (missing tables, missing required columns)."""


class ImageReadError(OSError):
    """An image file or DICOM series folder could not be read; the message names the file."""


# --------------------------------------------------------------------------------------------
# images
# --------------------------------------------------------------------------------------------
def _dicom_files(folder: Path) -> list[str]:
    reader = sitk.ImageSeriesReader()
    series = reader.GetGDCMSeriesIDs(str(folder))
    if not series:
        raise ImageReadError(f"{folder}: no DICOM series found in this folder")
    if len(series) > 1:
        sizes = {s: len(reader.GetGDCMSeriesFileNames(str(folder), s)) for s in series}
        raise ImageReadError(
            f"{folder}: {len(series)} DICOM series in one folder ({sizes}); "
            "put each series in its own folder")
    return list(reader.GetGDCMSeriesFileNames(str(folder), series[0]))


def _check_slice_gaps(folder: Path, files: list[str], rel_tol: float = 0.05) -> None:
    """Raise when the slice positions of a DICOM series are not evenly spaced (a missing slice)."""
    if len(files) < 3:
        return
    positions = []
    normal = None
    for f in files:
        r = sitk.ImageFileReader()
        r.SetFileName(f)
        r.ReadImageInformation()
        ipp = [float(v) for v in r.GetMetaData("0020|0032").split("\\")] if r.HasMetaDataKey(
            "0020|0032") else None
        if ipp is None:
            return
        if normal is None:
            d = np.array(r.GetDirection()).reshape(3, 3)
            normal = d[:, 2]
        positions.append(float(np.dot(ipp, normal)))
    steps = np.diff(np.sort(positions))
    if steps.size == 0:
        return
    med = float(np.median(steps))
    if med <= 0:
        raise ImageReadError(f"{folder}: DICOM slices share one position (duplicate slices?)")
    bad = np.flatnonzero(np.abs(steps - med) > rel_tol * med)
    if bad.size:
        raise ImageReadError(
            f"{folder}: uneven DICOM slice spacing (median {med:.3g} mm, gap of "
            f"{steps[bad[0]]:.3g} mm after slice {bad[0] + 1} of {len(files)}): a slice is "
            "missing or the folder mixes series")


def _check_gzip(path: Path) -> None:
    """Decompress a .gz file once: ITK silently zero-fills a truncated gzip stream."""
    import gzip
    import zlib

    try:
        with gzip.open(path, "rb") as fh:
            while fh.read(1 << 22):
                pass
    except (EOFError, OSError, zlib.error) as exc:
        raise ImageReadError(f"{path}: truncated or corrupt compressed file ({exc})") from None


def read_image(path: str | os.PathLike) -> sitk.Image:
    """Read an image or mask: NIfTI, NRRD, MHA (any SimpleITK format) or a DICOM series folder.

    DICOM folders must hold exactly one series with evenly spaced slices; a missing slice is an
    error, not a silently stretched volume. Only pixel data and geometry are returned: no DICOM
    metadata (patient name, id, birth date) is carried along.

    Raises
    ------
    ImageReadError
        With the file name and SimpleITK's reason.
    """
    p = Path(path)
    if not p.exists():
        raise ImageReadError(f"{p}: file not found")
    try:
        if p.is_dir():
            files = _dicom_files(p)
            _check_slice_gaps(p, files)
            reader = sitk.ImageSeriesReader()
            reader.SetFileNames(files)
            img = reader.Execute()
        else:
            if p.name.endswith(".gz"):
                _check_gzip(p)
            img = sitk.ReadImage(str(p))
    except ImageReadError:
        raise
    except RuntimeError as exc:  # SimpleITK reports every read failure as RuntimeError
        reason = str(exc).strip().splitlines()
        reason = next((ln for ln in reversed(reason) if ln.strip()), "unreadable")
        raise ImageReadError(f"{p}: unreadable image ({reason.strip()[:200]})") from None
    # drop all metadata so identifiers can never travel further
    for key in list(img.GetMetaDataKeys()):
        img.EraseMetaData(key)
    return img


@dataclass(frozen=True)
class ImageInfo:
    size: tuple[int, ...]
    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    direction: tuple[float, ...]


def read_image_info(path: str | os.PathLike) -> ImageInfo:
    """Geometry of an image without reading its voxels (DICOM folders: from the series)."""
    p = Path(path)
    if p.is_dir():
        img = read_image(p)
        return ImageInfo(img.GetSize(), img.GetSpacing(), img.GetOrigin(), img.GetDirection())
    r = sitk.ImageFileReader()
    r.SetFileName(str(p))
    try:
        r.ReadImageInformation()
    except RuntimeError as exc:
        raise ImageReadError(f"{p}: unreadable image header ({_reason(exc)})") from None
    return ImageInfo(r.GetSize(), r.GetSpacing(), r.GetOrigin(), r.GetDirection())


def geometry_mismatch(a: ImageInfo, b: ImageInfo, tol: float = 1e-3) -> list[str]:
    """Names of the geometry attributes in which ``a`` and ``b`` differ beyond ``tol`` (mm)."""
    out = []
    if tuple(a.size) != tuple(b.size):
        out.append(f"size {tuple(a.size)} vs {tuple(b.size)}")
    for name in ("spacing", "origin", "direction"):
        va, vb = np.asarray(getattr(a, name)), np.asarray(getattr(b, name))
        if va.shape != vb.shape or not np.allclose(va, vb, atol=tol, rtol=0):
            out.append(f"{name} {_fmt(va)} vs {_fmt(vb)}")
    return out


def _show(value) -> str:
    """A cell value for a message: plain Python repr, 'empty' for NaN/None."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "empty"
    if isinstance(value, np.generic):
        value = value.item()
    return repr(value)


def _fmt(values) -> str:
    return "(" + ", ".join(f"{float(v):.4g}" for v in np.ravel(values)) + ")"


def _same_physical_extent(img: ImageInfo, msk: ImageInfo, tol: float) -> bool:
    """True when two grids cover the same box in physical space (e.g. a flipped axis)."""
    def corners(info: ImageInfo) -> np.ndarray:
        d = np.asarray(info.direction).reshape(len(info.size), len(info.size))
        sp, org = np.asarray(info.spacing), np.asarray(info.origin)
        idx = np.array(np.meshgrid(*[[0, s - 1] for s in info.size])).reshape(len(info.size), -1)
        pts = org[:, None] + d @ (idx * sp[:, None])
        return np.sort(np.round(pts.T / max(tol, 1e-6)).astype(np.int64), axis=0)
    if len(img.size) != len(msk.size):
        return False
    ci, cm = corners(img), corners(msk)
    tolv = np.max(np.asarray(img.spacing)) / max(tol, 1e-6) / 2
    return bool(np.all(np.abs(ci - cm) <= tolv))


# --------------------------------------------------------------------------------------------
# cohorts
# --------------------------------------------------------------------------------------------
@dataclass
class Cohort:
    """A loaded, validated cohort.

    Attributes
    ----------
    folder : Path
        The cohort folder.
    cases : DataFrame
        Valid case rows (``patient_id``, ``outcome`` or the study's outcome column, covariates,
        optional ``split``/``center``). ``patient_id`` is a string.
    rois : DataFrame
        Valid ROI rows with absolute ``image``/``mask`` paths, ``label`` as int, ``file_row``
        (1-based data row of ``rois.csv``) and ``resample_mask`` (True when the mask lies on
        another grid of the same physical space and must be resampled onto the image grid).
    problems : DataFrame
        ``row, patient_id, file, problem``: one line per problem; ``row`` is
        ``cases.csv:<n>`` or ``rois.csv:<n>`` (1-based data row).
    simulated : bool
        True for vcfnb's built-in simulated cohorts (read from ``cohort.json``).
    meta : dict
        Content of ``cohort.json`` when present.
    """

    folder: Path
    cases: pd.DataFrame
    rois: pd.DataFrame
    problems: pd.DataFrame
    simulated: bool = False
    meta: dict = field(default_factory=dict)
    outcome: str = "outcome"

    def relpath(self, path: str | os.PathLike) -> str:
        """``path`` relative to the cohort folder (for messages and reports)."""
        try:
            return str(Path(path).resolve().relative_to(self.folder.resolve()))
        except ValueError:
            return Path(path).name

    def summary(self) -> pd.DataFrame:
        """One-row overview: cases, ROIs, problems, outcome balance."""
        y = self.cases[self.outcome] if self.outcome in self.cases else pd.Series(dtype=float)
        return pd.DataFrame([{
            "cases": len(self.cases), "rois": len(self.rois), "problems": len(self.problems),
            "positive": int((y == 1).sum()), "negative": int((y == 0).sum()),
            "simulated": self.simulated,
        }])


def _problem(rows: list, row: str, pid: Any, file: str, problem: str) -> None:
    rows.append({"row": row, "patient_id": "" if pd.isna(pid) else str(pid), "file": file,
                 "problem": problem})


def _read_table(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise CohortError(f"{path}: missing (a cohort folder needs cases.csv and rois.csv)")
    try:
        return pd.read_csv(path, dtype={"patient_id": str}, keep_default_na=True)
    except Exception as exc:  # pandas raises several types for malformed CSV
        raise CohortError(f"{path}: unreadable CSV ({exc})") from None


def load_cohort(folder: str | os.PathLike, *, outcome: str = "outcome",
                geometry_tol: float = 1e-3, mask_grid: str = "strict",
                check_voxels: bool = True, require_outcome: bool = True,
                progress: bool = False) -> Cohort:
    """Load and validate a cohort folder.

    Parameters
    ----------
    folder : path
        Folder holding ``cases.csv``, ``rois.csv`` and the files they name.
    outcome : str
        Outcome column of ``cases.csv`` (0/1).
    geometry_tol : float
        Largest allowed difference (mm, and for direction cosines) between image and mask
        spacing, origin and direction.
    mask_grid : {"strict", "resample"}
        ``"strict"``: a mask on another grid is a problem. ``"resample"``: a mask whose grid
        differs but covers the same physical box (another direction/origin, e.g. a flipped axis)
        is accepted and flagged ``resample_mask`` so extraction resamples it onto the image grid
        with nearest-neighbour interpolation (a plain header copy would misplace the labels).
    check_voxels : bool
        Read masks (empty mask, label absent) and images (NaN/Inf voxels). Headers are always read.
    require_outcome : bool
        When False, a missing outcome column is allowed (real data without labels).

    Returns
    -------
    Cohort
        Valid rows in ``cases``/``rois``; every excluded row is in ``problems``.

    Examples
    --------
    >>> import vcfnb as vc, tempfile
    >>> d = vc.synth.make_cohort("metastasis", tempfile.mkdtemp(), size="smoke")  # doctest: +SKIP
    >>> vc.io.load_cohort(d).problems.empty  # doctest: +SKIP
    True
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise CohortError(f"{folder}: cohort folder not found")
    if mask_grid not in ("strict", "resample"):
        raise ValueError(f"mask_grid must be 'strict' or 'resample', got {mask_grid!r}")
    cases = _read_table(folder / "cases.csv")
    rois = _read_table(folder / "rois.csv")
    meta = {}
    if (folder / "cohort.json").is_file():
        meta = json.loads((folder / "cohort.json").read_text(encoding="utf-8"))

    if "patient_id" not in cases:
        raise CohortError(f"{folder / 'cases.csv'}: required column 'patient_id' is missing")
    missing = [c for c in ("patient_id", "image", "mask") if c not in rois]
    if missing:
        raise CohortError(f"{folder / 'rois.csv'}: required columns missing: {missing}")
    if require_outcome and outcome not in cases:
        raise CohortError(f"{folder / 'cases.csv'}: outcome column {outcome!r} is missing "
                          f"(columns: {list(cases.columns)})")

    problems: list[dict] = []
    cases = cases.copy()
    cases["patient_id"] = cases["patient_id"].astype(str).str.strip()
    bad_case = np.zeros(len(cases), bool)

    # duplicate ids
    dup = cases["patient_id"].duplicated(keep=False)
    for i in np.flatnonzero(dup.to_numpy()):
        _problem(problems, f"cases.csv:{i + 1}", cases.patient_id.iat[i], "cases.csv",
                 f"duplicate patient_id {cases.patient_id.iat[i]!r}")
        bad_case[i] = True
    # outcome binary
    if outcome in cases:
        y = pd.to_numeric(cases[outcome], errors="coerce")
        for i in range(len(cases)):
            v = y.iat[i]
            if pd.isna(v):
                _problem(problems, f"cases.csv:{i + 1}", cases.patient_id.iat[i], "cases.csv",
                         f"outcome {outcome!r} is missing or not a number "
                         f"({_show(cases[outcome].iat[i])})")
                bad_case[i] = True
            elif v not in (0, 1):
                _problem(problems, f"cases.csv:{i + 1}", cases.patient_id.iat[i], "cases.csv",
                         f"outcome {outcome!r} must be 0 or 1, got {_show(cases[outcome].iat[i])}")
                bad_case[i] = True
        cases[outcome] = y
    if "split" in cases:
        s = cases["split"].fillna("").astype(str).str.strip().str.lower()
        for i in np.flatnonzero(~s.isin(_SPLITS).to_numpy()):
            _problem(problems, f"cases.csv:{i + 1}", cases.patient_id.iat[i], "cases.csv",
                     f"split must be train/test/external, got {_show(cases['split'].iat[i])}")
            bad_case[i] = True
        cases["split"] = s
    valid_cases = cases.loc[~bad_case].copy()
    if outcome in valid_cases:
        valid_cases[outcome] = valid_cases[outcome].astype(int)
    known_ids = set(cases["patient_id"])

    # ---- rois
    rois = rois.copy()
    rois["patient_id"] = rois["patient_id"].astype(str).str.strip()
    for col, default in (("roi", "roi"), ("sequence", ""), ("reader", "1"), ("label", 1)):
        if col not in rois:
            rois[col] = default
    rois["roi"] = rois["roi"].astype(str)
    rois["sequence"] = rois["sequence"].fillna("").astype(str)
    rois["reader"] = rois["reader"].fillna("1").astype(str)
    rois["file_row"] = np.arange(1, len(rois) + 1)
    rois["resample_mask"] = False
    bad_roi = np.zeros(len(rois), bool)
    labels = pd.to_numeric(rois["label"], errors="coerce")

    info_cache: dict[Path, ImageInfo | Exception] = {}
    mask_values: dict[Path, np.ndarray | Exception] = {}
    image_finite: dict[Path, str | None] = {}

    def info(p: Path):
        if p not in info_cache:
            try:
                info_cache[p] = read_image_info(p)
            except Exception as exc:
                info_cache[p] = exc
        return info_cache[p]

    key_cols = ["patient_id", "roi", "sequence", "reader"]
    dup_roi = rois.duplicated(subset=key_cols, keep=False).to_numpy()

    iterator = range(len(rois))
    if progress:
        from tqdm.auto import tqdm
        iterator = tqdm(iterator, desc="validating ROIs", unit="roi")
    for i in iterator:
        r = rois.iloc[i]
        where = f"rois.csv:{i + 1}"
        pid = r.patient_id
        if pid not in known_ids:
            _problem(problems, where, pid, "rois.csv",
                     f"ROI row for patient_id {pid!r} that has no row in cases.csv")
            bad_roi[i] = True
            continue
        if dup_roi[i]:
            _problem(problems, where, pid, "rois.csv",
                     "duplicate ROI row (same patient_id, roi, sequence, reader)")
            bad_roi[i] = True
            continue
        # a DICOM SEG/RTSTRUCT mask: label = segment number/label or ROI name, checked below
        dcm_mask = not pd.isna(r["mask"]) and dicom_masks.is_dicom_object(folder / str(r["mask"]))
        if not dcm_mask and (pd.isna(labels.iat[i]) or labels.iat[i] != int(labels.iat[i])):
            _problem(problems, where, pid, "rois.csv",
                     f"label must be an integer, got {_show(r.label)}")
            bad_roi[i] = True
            continue
        label = None if dcm_mask else int(labels.iat[i])
        paths = {}
        for col in ("image", "mask"):
            rel = str(r[col]) if not pd.isna(r[col]) else ""
            p = (folder / rel) if rel else None
            if p is None or not p.exists():
                _problem(problems, where, pid, rel, f"{col} file not found")
                bad_roi[i] = True
            paths[col] = p
        if bad_roi[i]:
            continue
        ii = info(paths["image"])
        mi = ii if dcm_mask else info(paths["mask"])  # a SEG/RTSTRUCT is put on the image grid
        for col, inf in (("image", ii), ("mask", mi)):
            if isinstance(inf, Exception):
                _problem(problems, where, pid, str(r[col]), f"unreadable {col}: {_reason(inf)}")
                bad_roi[i] = True
        if bad_roi[i]:
            continue
        if dcm_mask:  # label, frame of reference, UIDs and (check_voxels) rasterisation
            try:
                label = dicom_masks.check_mask(paths["mask"], r["label"], paths["image"], ii,
                                               rasterise=check_voxels)
            except dicom_masks.DicomMaskError as exc:
                col = "image" if exc.file.resolve() == paths["image"].resolve() else "mask"
                _problem(problems, where, pid, str(r[col]), exc.cause)
                bad_roi[i] = True
                continue
            labels.iat[i] = label
        mism = geometry_mismatch(ii, mi, geometry_tol)
        if mism:
            if mask_grid == "resample" and tuple(ii.size) == tuple(mi.size) and \
                    np.allclose(ii.spacing, mi.spacing, atol=geometry_tol) and \
                    _same_physical_extent(ii, mi, geometry_tol):
                rois.iat[i, rois.columns.get_loc("resample_mask")] = True
            else:
                _problem(problems, where, pid, str(r["mask"]),
                         "image/mask geometry mismatch: " + "; ".join(mism))
                bad_roi[i] = True
                continue
        if not check_voxels:
            continue
        mp = paths["mask"]
        if mp not in mask_values:
            try:
                mask_values[mp] = (dicom_masks.label_numbers(mp) if dcm_mask else
                                   np.unique(sitk.GetArrayFromImage(read_image(mp))))
            except Exception as exc:
                mask_values[mp] = exc
        vals = mask_values[mp]
        if isinstance(vals, Exception):
            _problem(problems, where, pid, str(r["mask"]), f"unreadable mask: {_reason(vals)}")
            bad_roi[i] = True
            continue
        nonzero = vals[vals != 0]
        if nonzero.size == 0:
            _problem(problems, where, pid, str(r["mask"]), "empty mask (no non-zero voxel)")
            bad_roi[i] = True
            continue
        if label not in set(nonzero.tolist()):
            _problem(problems, where, pid, str(r["mask"]),
                     f"label {label} absent from mask (values present: "
                     f"{sorted(int(v) for v in nonzero)[:10]})")
            bad_roi[i] = True
            continue
        ip = paths["image"]
        if ip not in image_finite:
            try:
                arr = sitk.GetArrayFromImage(read_image(ip))
                image_finite[ip] = None
                if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
                    n_bad = int((~np.isfinite(arr)).sum())
                    image_finite[ip] = f"image has {n_bad} NaN/Inf voxels"
            except Exception as exc:
                image_finite[ip] = f"unreadable image: {_reason(exc)}"
        if image_finite[ip]:
            _problem(problems, where, pid, str(r["image"]), image_finite[ip])
            bad_roi[i] = True

    _shared_scans(rois, bad_roi, folder, problems)
    valid_rois = rois.loc[~bad_roi].copy()
    valid_rois["label"] = labels[~bad_roi].astype(int)
    valid_rois["image"] = [str((folder / p).resolve()) for p in valid_rois["image"]]
    valid_rois["mask"] = [str((folder / p).resolve()) for p in valid_rois["mask"]]
    valid_rois = valid_rois[valid_rois.patient_id.isin(set(valid_cases.patient_id))]
    cohort = Cohort(
        folder=folder.resolve(), cases=valid_cases.reset_index(drop=True),
        rois=valid_rois.reset_index(drop=True),
        problems=pd.DataFrame(problems, columns=PROBLEM_COLUMNS),
        simulated=bool(meta.get("simulated", False)), meta=meta, outcome=outcome,
    )
    return cohort


def _content_size(path: Path) -> tuple[int, int]:
    """(bytes, files) of a file or of a DICOM series folder: equal for byte-identical copies."""
    if path.is_dir():
        sizes = [f.stat().st_size for f in path.rglob("*") if f.is_file()]
        return sum(sizes), len(sizes)
    return path.stat().st_size, 1


def _shared_scans(rois: pd.DataFrame, bad: np.ndarray, folder: Path, problems: list) -> None:
    """Flag image files with byte-identical content (or the same file) under different patient
    ids: the same scan twice, possibly on both sides of a train/test split (leakage). Every row
    involved becomes a problem naming the other patients and files, and is excluded.

    Only images of equal size are hashed (with :func:`file_digest`, memoised per
    file, so extraction does not read them again)."""
    by_size: dict[tuple[int, int], list[int]] = {}
    for i in np.flatnonzero(~bad):
        try:
            by_size.setdefault(_content_size(folder / str(rois["image"].iat[i])), []).append(i)
        except OSError:
            continue
    same: dict[str, list[int]] = {}
    for rows in by_size.values():
        if len({rois["patient_id"].iat[i] for i in rows}) < 2:
            continue
        for i in rows:
            try:
                same.setdefault(file_digest(folder / str(rois["image"].iat[i])), []).append(i)
            except OSError:
                continue
    for rows in same.values():
        if len({rois["patient_id"].iat[i] for i in rows}) < 2:
            continue
        for i in rows:
            pid = rois["patient_id"].iat[i]
            others = sorted({(str(rois["patient_id"].iat[j]), str(rois["image"].iat[j]))
                             for j in rows if rois["patient_id"].iat[j] != pid})
            named = ", ".join(f"{f} of patient {p!r}" for p, f in others[:3])
            more = f" and {len(others) - 3} more" if len(others) > 3 else ""
            _problem(problems, f"rois.csv:{i + 1}", pid, str(rois["image"].iat[i]),
                     f"image is byte-identical to {named}{more}: the same scan under different "
                     "patient ids (leakage risk)")
            bad[i] = True


def _reason(exc: BaseException) -> str:
    """One readable line: SimpleITK's multi-line errors keep their last meaningful line."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    msg = lines[-1] if lines else type(exc).__name__
    msg = re.sub(r"^sitk::ERROR:\s*", "", msg)
    msg = re.sub(r'"(?:/[^"/]*)+/([^"/]+)"', r'"\1"', msg)  # quoted absolute paths -> file name
    return re.sub(r"^\S+: ", "", msg)[:240]


def write_cohort(folder: str | os.PathLike, cases: pd.DataFrame, rois: pd.DataFrame,
                 meta: dict | None = None, readme: str | None = None) -> Path:
    """Write ``cases.csv``, ``rois.csv`` (+ ``cohort.json`` and ``README.md``) into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_table(cases, folder / "cases.csv")
    write_table(rois, folder / "rois.csv")
    if meta is not None:
        write_json(meta, folder / "cohort.json")
    if readme is not None:
        write_text(readme, folder / "README.md")
    return folder


# --------------------------------------------------------------------------------------------
# configuration and report files
# --------------------------------------------------------------------------------------------
def load_yaml(path: str | os.PathLike) -> dict:
    """Load a YAML file with the safe loader (nothing in it is ever executed)."""
    p = Path(path)
    try:
        with open(p, encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
    except yaml.YAMLError as exc:
        raise ValueError(f"{p}: invalid YAML ({exc})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"{p}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def _umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # elsewhere: set and restore at once
    os.umask(mask)
    return mask


_DIGESTS: dict[tuple, str] = {}


def file_digest(path: str | os.PathLike) -> str:
    """BLAKE2b digest of a file's bytes, or of all files of a folder (DICOM series) in name order.

    Digests are memoised per (path, size, mtime) within the process.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.bin"; _ = p.write_bytes(b"abc")
    >>> file_digest(p)[:12]
    '384264f676f3'
    """
    p = Path(path)
    st = p.stat()
    files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
    stamp = (str(p.resolve()), st.st_size, st.st_mtime_ns,
             tuple((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files) if p.is_dir()
             else ())
    if stamp in _DIGESTS:
        return _DIGESTS[stamp]
    h = hashlib.blake2b(digest_size=20)
    for f in files:
        if p.is_dir():
            h.update(str(f.relative_to(p)).encode() + b"\0")
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    _DIGESTS[stamp] = h.hexdigest()
    return _DIGESTS[stamp]


def _atomic_write(path: Path, write, *, fsync: bool = False) -> Path:
    """Write a text file atomically: ``write(fh)`` fills a temporary file in the same folder,
    which then replaces ``path``, so readers never see a partial file.

    The file gets the mode an ordinary ``open(path, "w")`` would give it: an existing file keeps
    its mode, a new one gets ``0666 & ~umask`` (0644 with the usual umask 022), not the 0600 of
    the temporary file. ``fsync=True`` flushes the data to disk before the rename (for caches
    that must survive a crash).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = path.stat().st_mode & 0o7777
    except OSError:
        mode = 0o666 & ~_umask()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as fh:
            write(fh)
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())
            os.fchmod(fh.fileno(), mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_table(df: pd.DataFrame, path: str | os.PathLike, index: bool = False) -> Path:
    """Write a DataFrame as CSV atomically (float formatting fixed for byte-stable output)."""
    return _atomic_write(Path(path), lambda fh: df.to_csv(fh, index=index,
                                                          float_format="%.10g", lineterminator="\n"))


def write_json(obj: Any, path: str | os.PathLike) -> Path:
    """Write JSON atomically with sorted keys (byte-stable)."""
    return _atomic_write(Path(path), lambda fh: json.dump(obj, fh, indent=2, sort_keys=True,
                                                          default=_json_default))


def write_text(text: str, path: str | os.PathLike) -> Path:
    return _atomic_write(Path(path), lambda fh: fh.write(text))


def write_figure(fig, path: str | os.PathLike, dpi: int = 120) -> Path:
    """Save a matplotlib figure as PNG (no timestamps in the metadata, so files are stable)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight", metadata={"Software": None})
    return path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Write a file of any kind atomically: yields a temporary path beside ``path`` (same
    suffixes) for a writer that takes a file name (SimpleITK, torch, ...); on success it gets the
    usual ``0666 & ~umask`` mode and replaces ``path``; on failure it is removed.

    >>> import tempfile, pathlib
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "x.txt"
    >>> with atomic_path(target) as tmp:
    ...     _ = tmp.write_text("done")
    >>> target.read_text()
    'done'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.",
                               suffix="".join(path.suffixes) or ".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_image(image: sitk.Image, path: str | os.PathLike, *, compress: bool = True) -> Path:
    """Write a SimpleITK image atomically (a killed run never leaves a half-written file);
    the file gets the usual ``0666 & ~umask`` mode."""
    path = Path(path)
    with atomic_path(path) as tmp:
        sitk.WriteImage(image, str(tmp), useCompression=compress)
    return path


def _json_default(o: Any):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return None if not np.isfinite(o) else float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
