"""Cohort builders: scans, masks and a clinical table as they arrive → a cohort folder.

Writing ``cases.csv``/``rois.csv`` by hand is where users lose the most time. Two builders
write a **new**, self-contained cohort folder (copies of only the files it needs, paths in the
tables relative to the folder) and validate what they wrote with
:func:`vcfnb.io.load_cohort`:

- :func:`from_folders`: image and mask files found by patterns such as
  ``scans/{patient_id}_T2.nii.gz`` for every patient of a clinical CSV/XLSX table, whose
  columns are renamed by a column map (``{"patient_id": "ID", "outcome": "Malignant"}``);
- :func:`from_totalseg`: TotalSegmentator output (one multi-label NIfTI, or a folder with one
  file per class such as ``vertebrae_L1.nii.gz``) → one ROI per vertebral level a study needs
  (``T11``-``L2`` for ovf, whose notebook splits each body into cortical shell and cancellous
  core itself; ``L1``-``L4`` for osteoporosis).

Both refuse to write into an existing non-empty folder or into their inputs, never modify their
inputs, and build in a temporary sibling folder renamed into place at the end, so a failed build
leaves nothing half-written.
"""
from __future__ import annotations

import contextlib
import glob
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import SimpleITK as sitk

from vcfnb import io

__all__ = [
    "BuildError", "BuildResult", "STUDY_LEVELS", "STUDY_SEQUENCE", "TOTALSEG_VERTEBRAE",
    "read_clinical", "from_folders", "from_totalseg",
]

#: vertebral levels (ROI names) each study needs
STUDY_LEVELS: dict[str, tuple[str, ...]] = {
    "ovf": ("T11", "T12", "L1", "L2"),
    "osteoporosis": ("L1", "L2", "L3", "L4"),
}
#: default ``sequence`` of the ROI rows a study reads
STUDY_SEQUENCE = {"ovf": "CT", "osteoporosis": "T1"}
#: TotalSegmentator v2 ``total`` task: label value of each vertebra
TOTALSEG_VERTEBRAE: dict[str, int] = {
    "S1": 26, "L5": 27, "L4": 28, "L3": 29, "L2": 30, "L1": 31,
    **{f"T{i}": 44 - i for i in range(12, 0, -1)},             # T12 = 32 ... T1 = 43
    **{f"C{i}": 51 - i for i in range(7, 0, -1)},              # C7 = 44 ... C1 = 50
}
_PLACEHOLDER = re.compile(r"\{patient_id\}")


class BuildError(ValueError):
    """A cohort cannot be built (bad arguments, output folder not usable, no usable row)."""


@dataclass
class BuildResult:
    """What a builder wrote.

    Attributes
    ----------
    folder : Path
        The new cohort folder.
    cohort : vcfnb.io.Cohort
        The folder loaded and validated by :func:`vcfnb.io.load_cohort`; its ``problems`` table
        lists what is wrong with what was written.
    skipped : DataFrame
        ``patient_id, roi, reason``: inputs that were not written (file not found, several
        matches, level absent from the segmentation).
    """

    folder: Path
    cohort: io.Cohort
    skipped: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(
        columns=["patient_id", "roi", "reason"]))

    @property
    def ok(self) -> bool:
        """True when the written cohort has no validation problem."""
        return self.cohort.problems.empty


# ---------------------------------------------------------------------------------------------
# shared helpers
# ---------------------------------------------------------------------------------------------
def _input_root(pattern: str | os.PathLike) -> Path:
    """The folder an input pattern/file/folder reads from (the part before any placeholder)."""
    text = str(pattern)
    cut = min([i for i in (text.find("{"), text.find("*"), text.find("?"), text.find("["))
               if i >= 0], default=len(text))
    head = Path(text[:cut]) if cut < len(text) else Path(text)
    if cut < len(text):  # a partial name such as scans/P → its folder
        head = head if text[:cut].endswith(os.sep) else head.parent
    return head.resolve()


def _check_output(out: Path, inputs: Sequence[str | os.PathLike]) -> None:
    out_r = out.resolve()
    if out_r.exists() and (not out_r.is_dir() or any(out_r.iterdir())):
        raise BuildError(f"{out}: exists and is not an empty folder; a builder writes a new "
                         "cohort folder only")
    for inp in inputs:
        root = _input_root(inp)
        if out_r == root or root in out_r.parents:
            raise BuildError(f"{out}: lies inside the input {root}; write the cohort elsewhere "
                             "(builders never write into their inputs)")
        if out_r in root.parents:
            raise BuildError(f"{out}: contains the input {root}; write the cohort elsewhere")


@contextlib.contextmanager
def _staged(out: Path) -> Iterator[Path]:
    """A temporary sibling folder of ``out`` to build the cohort in, removed when the block
    fails (a half-built cohort never shows at ``out``); :func:`_publish` moves it into place."""
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.building-", dir=out.parent))
    try:
        yield stage
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise


def _publish(stage: Path, out: Path, cases: pd.DataFrame, rows: list[dict], skipped: list[dict],
             *, builder: str, meta: Mapping[str, Any], title: str,
             lines: Sequence[str]) -> BuildResult:
    """Write the tables, ``cohort.json`` (``meta``) and a README (``title``, one bullet per
    line) into ``stage``, move it to ``out`` and validate what was written."""
    io.write_cohort(stage, cases, pd.DataFrame(rows, columns=io.ROI_COLUMNS),
                    meta={"simulated": False, "builder": f"vcfnb.builders.{builder}", **meta},
                    readme=f"# {title}\n\n" + "\n".join(f"- {ln}" for ln in lines) + "\n")
    if out.is_dir():
        out.rmdir()  # checked empty before; rmdir fails (safely) if something appeared since
    os.replace(stage, out)
    return _validate(out, cases, skipped)


def _copy(src: Path, dst: Path) -> None:
    """Copy a file or a DICOM series folder (never a link: the cohort must stand alone)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if src.is_dir():
        shutil.copytree(src, dst, symlinks=False)
    else:
        shutil.copyfile(src, dst)


def _id_text(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def read_clinical(path: str | os.PathLike, columns: Mapping[str, str], *,
                  outcome_values: Mapping[Any, int] | None = None) -> pd.DataFrame:
    """Read a clinical CSV or XLSX table into ``cases.csv`` columns.

    Parameters
    ----------
    path : path
        ``.csv`` (any delimiter pandas sniffs with ``sep=None`` is not used: comma) or
        ``.xlsx``/``.xls`` (first sheet).
    columns : mapping
        cohort column → clinical column, e.g. ``{"patient_id": "ID", "outcome": "Malignant (y/n)",
        "age": "Age"}``. ``patient_id`` is required; only mapped columns are kept. Ids are read as
        text (``"007"`` stays ``"007"``).
    outcome_values : mapping, optional
        Raw outcome value → 0/1 (``{"y": 1, "n": 0}``); compared as stripped text. Unmapped values
        become empty, which :func:`vcfnb.io.load_cohort` reports.

    Raises
    ------
    BuildError
        Unreadable file, a mapped column missing (listing the columns present).
    """
    p = Path(path)
    if "patient_id" not in columns:
        raise BuildError("the column map needs 'patient_id' (cohort column → clinical column)")
    id_col = columns["patient_id"]
    try:
        if p.suffix.lower() in (".xlsx", ".xlsm", ".xls"):
            raw = pd.read_excel(p, dtype={id_col: str})
        else:
            raw = pd.read_csv(p, dtype={id_col: str})
    except FileNotFoundError:
        raise BuildError(f"{p}: clinical table not found") from None
    except Exception as exc:  # noqa: BLE001 - pandas/openpyxl raise many types
        raise BuildError(f"{p}: unreadable clinical table ({exc})") from None
    missing = [c for c in columns.values() if c not in raw.columns]
    if missing:
        raise BuildError(f"{p}: column(s) {missing} not found (columns: {list(raw.columns)})")
    cases = pd.DataFrame({new: raw[old] for new, old in columns.items()})
    cases["patient_id"] = [_id_text(v) for v in cases["patient_id"]]
    if outcome_values is not None and "outcome" in cases:
        table = {str(k).strip(): v for k, v in outcome_values.items()}
        cases["outcome"] = [table.get(_id_text(v), np.nan) if not pd.isna(v) else np.nan
                            for v in cases["outcome"]]
    return cases


def _resolve(pattern: str, patient_id: str) -> tuple[Path | None, str | None]:
    """The one file/folder a pattern names for a patient, or (None, reason)."""
    text = _PLACEHOLDER.sub(glob.escape(patient_id), pattern)
    if glob.has_magic(text):
        hits = sorted(glob.glob(text))
        if len(hits) != 1:
            return None, (f"{len(hits)} files match {text}" if hits else f"no file matches {text}")
        return Path(hits[0]), None
    p = Path(text)
    return (p, None) if p.exists() else (None, f"not found: {text}")


def _validate(out: Path, cases: pd.DataFrame, skipped: list[dict]) -> BuildResult:
    require = "outcome" in cases.columns
    cohort = io.load_cohort(out, require_outcome=require)
    return BuildResult(out, cohort, pd.DataFrame(skipped, columns=["patient_id", "roi", "reason"]))


# ---------------------------------------------------------------------------------------------
# from folders
# ---------------------------------------------------------------------------------------------
def from_folders(out: str | os.PathLike, *, clinical: str | os.PathLike,
                 columns: Mapping[str, str], images: str | Mapping[str, str],
                 masks: str | Mapping[str, str], rois: Mapping[str, int | str],
                 outcome_values: Mapping[Any, int] | None = None,
                 reader: str = "1") -> BuildResult:
    """Build a cohort from image and mask files named by patterns and a clinical table.

    Parameters
    ----------
    out : path
        New cohort folder (must not exist or be empty; not inside an input folder).
    clinical : path
        Clinical CSV/XLSX: one row per patient (see :func:`read_clinical`).
    columns : mapping
        cohort column → clinical column (``patient_id`` required; ``outcome`` 0/1 or mapped
        with ``outcome_values``; any covariates).
    images : str or mapping
        Pattern of each patient's image with the placeholder ``{patient_id}``, e.g.
        ``"scans/{patient_id}_T2.nii.gz"`` (glob wildcards allowed; exactly one match), or
        ``{sequence: pattern}`` for several sequences (``{"T1": ..., "T2": ...}``). A pattern may
        name a DICOM series folder. A plain string gets the sequence name ``""``.
    masks : str or mapping
        Mask pattern, one for all sequences or ``{sequence: pattern}``. Masks may be label
        images, DICOM SEG or RTSTRUCT files.
    rois : mapping
        ROI name → label in the mask (``{"fractured_body": 1}``, ``{"L1": 1, ..., "L4": 4}``;
        for SEG/RTSTRUCT the segment label or ROI name).
    outcome_values : mapping, optional
        Raw outcome value → 0/1.
    reader : str
        Reader id of the ROI rows.

    Returns
    -------
    BuildResult
        The folder, the validated cohort and the skipped inputs. ``cases.csv`` keeps the
        patients with at least one image/mask pair; the others are listed in ``skipped``.

    Raises
    ------
    BuildError
        Output folder not usable, bad arguments, or no patient with both files.

    Examples
    --------
    >>> from_folders("my_cohort", clinical="clinical.xlsx",  # doctest: +SKIP
    ...              columns={"patient_id": "ID", "outcome": "Malignant (y/n)", "age": "Age"},
    ...              outcome_values={"y": 1, "n": 0}, images="scans/{patient_id}_T2.nii.gz",
    ...              masks="segs/{patient_id}_seg.nii.gz", rois={"fractured_body": 1})
    """
    out = Path(out)
    image_patterns = {"": images} if isinstance(images, str) else dict(images)
    if isinstance(masks, str):
        mask_patterns = dict.fromkeys(image_patterns, masks)
    else:
        mask_patterns = dict(masks)
        if set(mask_patterns) != set(image_patterns):
            raise BuildError(f"masks are given for sequences {sorted(mask_patterns)} but images "
                             f"for {sorted(image_patterns)}")
    if not rois:
        raise BuildError("rois must name at least one ROI (ROI name → label)")
    for pat in [*image_patterns.values(), *mask_patterns.values()]:
        if "{patient_id}" not in str(pat):
            raise BuildError(f"pattern {pat!r} lacks the placeholder {{patient_id}}")
    _check_output(out, [clinical, *image_patterns.values(), *mask_patterns.values()])
    cases = read_clinical(clinical, columns, outcome_values=outcome_values)

    plan, skipped = [], []
    for pid in cases["patient_id"]:
        for seq, ipat in image_patterns.items():
            img, why_i = _resolve(str(ipat), pid)
            msk, why_m = _resolve(str(mask_patterns[seq]), pid)
            if img is None or msk is None:
                skipped.append({"patient_id": pid, "roi": seq or "*",
                                "reason": "; ".join(w for w in (why_i, why_m) if w)})
                continue
            plan.append((pid, seq, img, msk))
    if not plan:
        raise BuildError("no patient has both an image and a mask: "
                         + "; ".join(f"{s['patient_id']}: {s['reason']}" for s in skipped[:5]))
    n_table = len(cases)
    cases = cases[cases["patient_id"].isin({pl[0] for pl in plan})].reset_index(drop=True)

    with _staged(out) as stage:
        copied: dict[Path, str] = {}

        def place(src: Path, kind: str, pid: str) -> str:
            src_r = src.resolve()
            if src_r not in copied:
                rel = Path(kind) / pid / src.name
                _copy(src_r, stage / rel)
                copied[src_r] = rel.as_posix()
            return copied[src_r]

        rows = []
        for pid, seq, img, msk in plan:
            irel, mrel = place(img, "images", pid), place(msk, "masks", pid)
            rows += [{"patient_id": pid, "roi": roi, "sequence": seq, "reader": reader,
                      "image": irel, "mask": mrel, "label": lab} for roi, lab in rois.items()]
        shown = ", ".join(f"{k or '-'}: {Path(v).name}" for k, v in image_patterns.items())
        return _publish(stage, out, cases, rows, skipped, builder="from_folders",
                        meta={"clinical": Path(clinical).name, "rois": dict(rois),
                              "sequences": sorted(image_patterns)},
                        title="Cohort built from folders", lines=[
                            f"clinical table: {Path(clinical).name} (columns {dict(columns)})",
                            f"images: {shown}",
                            f"ROIs: {dict(rois)}",
                            f"{n_table} patients in the table, {len(cases)} with files, "
                            f"{len(plan)} image/mask pairs copied, {len(skipped)} skipped",
                            "built by vcfnb.builders.from_folders; files are copies, inputs "
                            "untouched"])


# ---------------------------------------------------------------------------------------------
# from TotalSegmentator output
# ---------------------------------------------------------------------------------------------
def _level_masks(segmentation: Path, levels: Sequence[str],
                 label_map: Mapping[str, int]) -> tuple[sitk.Image, dict[str, np.ndarray]]:
    """Per level, the boolean mask (numpy z, y, x) from a multi-label file or a class folder."""
    found: dict[str, np.ndarray] = {}
    if segmentation.is_dir():
        ref = None
        for lev in levels:
            f = next((segmentation / f"vertebrae_{lev}{ext}" for ext in (".nii.gz", ".nii")
                      if (segmentation / f"vertebrae_{lev}{ext}").is_file()), None)
            if f is None:
                continue
            img = io.read_image(f)
            if ref is None:
                ref = img
            elif io.geometry_mismatch(io.ImageInfo(img.GetSize(), img.GetSpacing(),
                                                   img.GetOrigin(), img.GetDirection()),
                                      io.ImageInfo(ref.GetSize(), ref.GetSpacing(),
                                                   ref.GetOrigin(), ref.GetDirection())):
                raise BuildError(f"{f}: on another grid than the other class files")
            arr = sitk.GetArrayViewFromImage(img) > 0
            if arr.any():
                found[lev] = np.array(arr)
        if ref is None:
            raise BuildError(f"{segmentation}: no vertebrae_<level>.nii.gz file for "
                             f"{list(levels)}")
        return ref, found
    ref = io.read_image(segmentation)
    arr = sitk.GetArrayViewFromImage(ref)
    for lev in levels:
        m = arr == label_map[lev]
        if m.any():
            found[lev] = m
    return ref, found


def from_totalseg(out: str | os.PathLike, scans: Sequence[Mapping[str, Any]], *,
                  study: str | None = "ovf", levels: Sequence[str] | None = None,
                  sequence: str | None = None, label_map: Mapping[str, int] | None = None,
                  clinical: str | os.PathLike | None = None,
                  columns: Mapping[str, str] | None = None,
                  outcome_values: Mapping[Any, int] | None = None) -> BuildResult:
    """Build a cohort of vertebral-level ROIs from TotalSegmentator output.

    Parameters
    ----------
    out : path
        New cohort folder (must not exist or be empty; not inside an input folder).
    scans : sequence of mappings
        One per scan: ``patient_id``, ``image`` (the CT/MRI TotalSegmentator ran on: a file or a
        DICOM series folder), ``segmentation`` (multi-label NIfTI of the ``total`` task, or its
        output folder with one file per class, ``vertebrae_L1.nii.gz``…) and optionally ``body``:
        a vertebral-body mask (the ``vertebrae_body`` task: 1 = body) that restricts each level
        to its body. In folder mode ``vertebrae_body.nii.gz`` inside the folder is used when
        present. Without a body mask the ROI is the whole vertebra (posterior elements
        included), which the cohort's README says.
    study : {"ovf", "osteoporosis"} or None
        Picks the levels (:data:`STUDY_LEVELS`) and default sequence (:data:`STUDY_SEQUENCE`).
    levels : sequence of str, optional
        Levels to write instead of the study's (``"T12"``, ``"L1"``…); ROI names are the levels.
    sequence : str, optional
        ``sequence`` of the ROI rows (default: the study's, else ``"CT"``).
    label_map : mapping, optional
        Level → label value in a multi-label file (default :data:`TOTALSEG_VERTEBRAE`, the
        TotalSegmentator v2 ``total`` task).
    clinical, columns, outcome_values
        Optional clinical table as in :func:`from_folders`; without it ``cases.csv`` has only
        ``patient_id`` (and no outcome: validate with ``require_outcome=False``).

    Returns
    -------
    BuildResult
        The folder (``images/<patient_id>/…`` copies, ``masks/<patient_id>_vertebrae.nii.gz``
        holding only the levels written, each with its TotalSegmentator label value), the
        validated cohort and the levels skipped (absent from the segmentation).
    """
    out = Path(out)
    if levels is None:
        if study not in STUDY_LEVELS:
            raise BuildError(f"study must be one of {sorted(STUDY_LEVELS)} (or give levels), "
                             f"got {study!r}")
        levels = STUDY_LEVELS[study]
    levels = list(levels)
    label_map = dict(label_map or TOTALSEG_VERTEBRAE)
    unknown = [lv for lv in levels if lv not in label_map]
    if unknown:
        raise BuildError(f"levels {unknown} have no label value (label map: {sorted(label_map)})")
    seq = sequence if sequence is not None else STUDY_SEQUENCE.get(study or "", "CT")
    if not scans:
        raise BuildError("no scan given")
    for s in scans:
        miss = [k for k in ("patient_id", "image", "segmentation") if not s.get(k)]
        if miss:
            raise BuildError(f"scan {dict(s)} lacks {miss}")
        for k in ("image", "segmentation", "body"):
            if s.get(k) and not Path(s[k]).exists():
                raise BuildError(f"{s[k]}: {k} of {s['patient_id']} not found")
    ids = [str(s["patient_id"]) for s in scans]
    if len(set(ids)) != len(ids):
        raise BuildError(f"duplicate patient_id among scans: {ids}")
    inputs = [p for s in scans for p in (s["image"], s["segmentation"], s.get("body")) if p]
    _check_output(out, inputs + ([clinical] if clinical else []))
    if clinical is not None:
        cases = read_clinical(clinical, columns or {"patient_id": "patient_id"},
                              outcome_values=outcome_values)
        cases = cases[cases["patient_id"].isin(ids)].reset_index(drop=True)
        absent = sorted(set(ids) - set(cases["patient_id"]))
        if absent:
            raise BuildError(f"{clinical}: no row for patient(s) {absent}")
    else:
        cases = pd.DataFrame({"patient_id": ids})

    skipped, rows, notes = [], [], []
    with _staged(out) as stage:
        for s in scans:
            pid = str(s["patient_id"])
            seg_path, image = Path(s["segmentation"]), Path(s["image"])
            ref, found = _level_masks(seg_path, levels, label_map)
            body_path = Path(s["body"]) if s.get("body") else None
            if body_path is None and seg_path.is_dir() and \
                    (seg_path / "vertebrae_body.nii.gz").is_file():
                body_path = seg_path / "vertebrae_body.nii.gz"
            body = None
            if body_path is not None:
                bimg = io.read_image(body_path)
                if bimg.GetSize() != ref.GetSize() or not np.allclose(
                        bimg.GetOrigin(), ref.GetOrigin(), atol=1e-3) or not np.allclose(
                        bimg.GetDirection(), ref.GetDirection(), atol=1e-3):
                    raise BuildError(f"{body_path}: body mask on another grid than {seg_path}")
                body = sitk.GetArrayViewFromImage(bimg) == 1
            lab = np.zeros(sitk.GetArrayViewFromImage(ref).shape,
                           np.uint8 if max(label_map.values()) <= 255 else np.uint16)
            for lev in levels:
                m = found.get(lev)
                if m is not None and body is not None:
                    m = m & body
                if m is None or not m.any():
                    skipped.append({"patient_id": pid, "roi": lev,
                                    "reason": f"level {lev} absent from {seg_path.name}"
                                    + (" ∩ body mask" if body is not None and lev in found
                                       else "")})
                    continue
                lab[m] = label_map[lev]
                rows.append({"patient_id": pid, "roi": lev, "sequence": seq, "reader": "1",
                             "image": (Path("images") / pid / image.name).as_posix(),
                             "mask": f"masks/{pid}_vertebrae.nii.gz", "label": label_map[lev]})
            if not lab.any():
                continue
            mask = sitk.GetImageFromArray(lab)
            mask.CopyInformation(ref)
            (stage / "masks").mkdir(exist_ok=True)
            sitk.WriteImage(mask, str(stage / "masks" / f"{pid}_vertebrae.nii.gz"), True)
            _copy(image.resolve(), stage / "images" / pid / image.name)
            notes.append(f"{pid}: {image.name} + {seg_path.name}"
                         + (f" ∩ {body_path.name} (vertebral bodies)" if body_path is not None
                            else " (whole vertebrae: no body mask, posterior elements included)"))
        if not rows:
            raise BuildError("none of the levels " + ", ".join(levels) + " is present in any "
                             "segmentation: " + "; ".join(x["reason"] for x in skipped[:5]))
        return _publish(stage, out, cases, rows, skipped, builder="from_totalseg",
                        meta={"study": study, "levels": levels, "sequence": seq},
                        title="Cohort built from TotalSegmentator output", lines=[
                            f"study: {study}; levels: {', '.join(levels)}; sequence: {seq}",
                            *notes,
                            f"{len(skipped)} level(s) skipped"
                            + (": " + "; ".join(f"{x['patient_id']} {x['roi']}"
                                                for x in skipped) if skipped else ""),
                            "labels are TotalSegmentator's predictions, not manual truth; "
                            "built by vcfnb.builders.from_totalseg (copies; inputs untouched)"])
