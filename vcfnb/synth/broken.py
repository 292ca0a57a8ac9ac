"""Broken cohorts for the bad-input suite: one defect per case, built from a valid cohort.

:func:`make_broken_cohort` copies a small valid cohort (by default the built-in simulated
metastasis cohort at smoke size) and damages it, one defect class per case, so that every entry
point (:func:`vcfnb.io.load_cohort`, :func:`vcfnb.features.extract`, a study notebook) can be
checked against each class of bad input in one batch. The cohort folder also holds
``defects.csv`` (read it with :func:`read_defects`): which case carries which defect, in which
file, which entry point must report it and a fragment of the expected message.

Defect classes (:data:`KINDS`; all but ``single_class`` are applied together by default):

=====================  ===================================================================
``missing_image``      T1 image file deleted
``corrupt_nifti``      T1 mask overwritten with bytes that are not an image
``truncated_nifti``    T1 image (``.nii.gz``) cut to 60 % of its bytes
``geometry_spacing``   T1 mask written with another voxel spacing
``geometry_origin``    T1 mask shifted by 5 mm
``geometry_direction`` T1 mask with one axis flipped about the origin
``geometry_size``      T1 mask one slice short
``empty_mask``         T1 mask with no non-zero voxel
``label_absent``       T1 ROI row asks for label 2, the mask holds only 1
``multilabel_mask``    T1 mask holds the lesion (1) plus other structures (2, 3); the row asks
                       for 1 -- *valid*: only label 1 must be used
``nonfinite_voxels``   T2 image replaced by a float ``.mha`` with NaN and +Inf voxels in the
                       lesion (NIfTI read through ITK turns NaN into 0, so ``.mha`` is used)
``duplicate_id``       a second ``cases.csv`` row with an existing ``patient_id``
``roi_without_case``   ROI rows of a patient (``GHOST01``) absent from ``cases.csv``
``nonbinary_outcome``  outcome 2
``missing_outcome``    outcome left empty
``dicom_missing_slice`` T1 image replaced by a DICOM series folder with a middle slice removed
``tiny_mask``          T1 mask with a single voxel: too small for any texture class
``dicom_identifiers``  T1 image replaced by a complete DICOM series whose headers carry a
                       patient name, id and birth date (:data:`IDENTIFIERS`) -- *valid*: for
                       the privacy test
``single_class``       every outcome set to 0 (a cohort-level defect, only on request)
=====================  ===================================================================

The result is deterministic from ``seed`` and the base cohort.
"""
from __future__ import annotations

import json
import locale
import shutil
import tempfile
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
import SimpleITK as sitk

from vcfnb import io

__all__ = ["make_broken_cohort", "read_defects", "write_dicom_series", "KINDS", "DEFAULT_KINDS",
           "IDENTIFIERS", "DEFECT_COLUMNS"]

#: Every defect class with (stage that must report it, fragment of the expected message).
#: stage: ``load_cohort`` (a row of ``Cohort.problems``), ``extract`` (a failures row of
#: :func:`vcfnb.features.extract`), ``split`` (an error when splitting), ``none`` (valid input).
KINDS: dict[str, tuple[str, str]] = {
    "missing_image": ("load_cohort", "image file not found"),
    "corrupt_nifti": ("load_cohort", "unreadable mask"),
    "truncated_nifti": ("load_cohort", "truncated"),
    "geometry_spacing": ("load_cohort", "geometry mismatch: spacing"),
    "geometry_origin": ("load_cohort", "geometry mismatch: origin"),
    "geometry_direction": ("load_cohort", "geometry mismatch: direction"),
    "geometry_size": ("load_cohort", "geometry mismatch: size"),
    "empty_mask": ("load_cohort", "empty mask"),
    "label_absent": ("load_cohort", "label 2 absent"),
    "multilabel_mask": ("none", ""),
    "nonfinite_voxels": ("load_cohort", "NaN/Inf"),
    "duplicate_id": ("load_cohort", "duplicate patient_id"),
    "roi_without_case": ("load_cohort", "no row in cases.csv"),
    "nonbinary_outcome": ("load_cohort", "must be 0 or 1"),
    "missing_outcome": ("load_cohort", "missing or not a number"),
    "dicom_missing_slice": ("load_cohort", "slice is missing"),
    "tiny_mask": ("extract", "too few voxels"),
    "dicom_identifiers": ("none", ""),
    "single_class": ("split", "class"),
}
#: The case-level defects applied together when ``kinds`` is None.
DEFAULT_KINDS: tuple[str, ...] = tuple(k for k in KINDS if k != "single_class")
#: Identifiers written into the DICOM headers of ``dicom_identifiers`` (and the missing-slice
#: series); none of them may ever appear in a report.
IDENTIFIERS = {"PatientName": "Zqxwvin^Jorbelle^Quimbyx", "PatientID": "PRIV-ID-7731946",
               "PatientBirthDate": "19431107"}
#: Columns of :func:`read_defects`.
DEFECT_COLUMNS = ["kind", "patient_id", "row", "file", "stage", "expect", "description"]

# kinds that damage one case's whole row (the case is lost) vs one ROI file
_CASE_KINDS = {"duplicate_id", "nonbinary_outcome", "missing_outcome"}
_DEFECT_FILE = "defects.csv"


def write_dicom_series(image: sitk.Image, folder: str | Path, *,
                       identifiers: dict[str, str] | None = None,
                       skip_slices: Iterable[int] = ()) -> Path:
    """Write a 3D image as a DICOM series (one file per slice along the third axis).

    The geometry (spacing, origin, direction) is kept, so the series lies on the same grid as
    ``image``; voxel values are rounded to int16. ``identifiers`` (``PatientName``,
    ``PatientID``, ``PatientBirthDate``) are written into every header; ``skip_slices`` leaves
    those slice indices out (a series with a missing slice).

    Examples
    --------
    >>> import tempfile, SimpleITK as sitk
    >>> img = sitk.Image(8, 8, 4, sitk.sitkInt16)
    >>> d = write_dicom_series(img, tempfile.mkdtemp())
    >>> len(list(d.glob("*.dcm")))
    4
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    ids = {**{"PatientName": "Anonymous", "PatientID": "anon", "PatientBirthDate": ""},
           **(identifiers or {})}
    arr = np.rint(sitk.GetArrayFromImage(image)).clip(-32768, 32767).astype(np.int16)
    direction = np.asarray(image.GetDirection(), float).reshape(3, 3)
    iop = "\\".join(f"{v:.6f}" for v in (*direction[:, 0], *direction[:, 1]))
    sp = image.GetSpacing()
    skip = set(int(k) for k in skip_slices)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    # GDCM's writer switches the process to the C locale (Python's default text encoding then
    # becomes ASCII); put the caller's locale back afterwards
    saved = locale.setlocale(locale.LC_ALL)
    try:
        _write_slices(image, arr, folder, writer, ids, iop, sp, skip)
    finally:
        locale.setlocale(locale.LC_ALL, saved)
    return folder


def _write_slices(image, arr, folder, writer, ids, iop, sp, skip) -> None:
    uid = "1.2.826.0.1.3680043.2.1125.7731946"
    for k in range(arr.shape[0]):
        if k in skip:
            continue
        sl = sitk.GetImageFromArray(arr[k:k + 1])
        pos = image.TransformIndexToPhysicalPoint((0, 0, k))
        sl.SetSpacing(sp)
        sl.SetOrigin(pos)
        sl.SetDirection(image.GetDirection())
        for tag, val in (("0010|0010", ids["PatientName"]), ("0010|0020", ids["PatientID"]),
                         ("0010|0030", ids["PatientBirthDate"]),
                         ("0020|000d", uid + ".1"), ("0020|000e", uid + ".2"),
                         ("0008|0018", f"{uid}.3.{k + 1}"),
                         ("0020|0032", "\\".join(f"{v:.6f}" for v in pos)),
                         ("0020|0037", iop), ("0020|0013", str(k + 1)),
                         ("0018|0050", f"{sp[2]:.6f}"), ("0008|0060", "MR")):
            sl.SetMetaData(tag, val)
        writer.SetFileName(str(folder / f"slice{k:03d}.dcm"))
        writer.Execute(sl)


def read_defects(folder: str | Path) -> pd.DataFrame:
    """The defects table of a broken cohort (columns :data:`DEFECT_COLUMNS`)."""
    p = Path(folder) / _DEFECT_FILE
    if not p.is_file():
        raise FileNotFoundError(f"{p}: not a broken cohort (no {_DEFECT_FILE})")
    return pd.read_csv(p, dtype=str, keep_default_na=False)


def _pick_cases(cases: pd.DataFrame, kinds: Sequence[str], seed: int) -> dict[str, str]:
    """A distinct case per kind, drawn from both classes in proportion, deterministic."""
    rng = np.random.default_rng(seed)
    need = [k for k in kinds if k not in ("roi_without_case", "single_class")]
    ids = cases["patient_id"].astype(str).to_numpy()
    if len(need) > len(ids) // 2:
        raise ValueError(f"base cohort has {len(ids)} cases: too few for {len(need)} defects "
                         "(at most half the cases are damaged)")
    y = pd.to_numeric(cases["outcome"], errors="coerce").to_numpy() if "outcome" in cases \
        else np.zeros(len(ids))
    pools = [list(rng.permutation(ids[y == v])) for v in np.unique(y)]
    weights = np.array([len(p) for p in pools], float)
    taken = np.zeros(len(pools))
    out = {}
    for k in need:
        # the class with the largest remaining share gets the next defect
        j = int(np.argmax(weights / weights.sum() * (sum(taken) + 1) - taken))
        if not pools[j]:
            j = int(np.argmax([len(p) for p in pools]))
        out[k] = str(pools[j].pop(0))
        taken[j] += 1
    return out


def make_broken_cohort(out_dir: str | Path, kinds: Sequence[str] | None = None, seed: int = 0, *,
                       base: str | Path | None = None, overwrite: bool = False) -> Path:
    """Write a cohort in which each case carries one class of bad input.

    Parameters
    ----------
    out_dir : path
        Target folder (must be empty or absent unless ``overwrite``).
    kinds : sequence of str, optional
        Defect classes (:data:`KINDS`); default :data:`DEFAULT_KINDS` (all case-level ones).
    seed : int
        Chooses which cases are damaged.
    base : path, optional
        A valid cohort folder to start from (copied, never modified). Default: the built-in
        simulated metastasis cohort at smoke size (36 cases, T1/T2/FS-T2 per case), generated
        with ``seed=0``. ROI-level defects damage the ``T1`` (``nonfinite_voxels``: ``T2``)
        ROI of their case when the base has sequences, else its first ROI.
    overwrite : bool
        Replace an existing ``out_dir``.

    Returns
    -------
    Path
        The cohort folder; ``defects.csv`` inside lists ``kind, patient_id, row, file, stage,
        expect, description`` (``row`` as in :func:`vcfnb.io.load_cohort`'s problems table,
        ``file`` relative to the folder; see :data:`KINDS` for ``stage`` and ``expect``).

    Examples
    --------
    >>> import tempfile, vcfnb as vc
    >>> d = make_broken_cohort(tempfile.mkdtemp() + "/b", ["empty_mask"])  # doctest: +SKIP
    >>> vc.io.load_cohort(d).problems.problem.tolist()  # doctest: +SKIP
    ['empty mask (no non-zero voxel)']
    """
    kinds = list(DEFAULT_KINDS if kinds is None else kinds)
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise ValueError(f"unknown defect kind(s) {unknown}; known: {list(KINDS)}")
    if len(set(kinds)) != len(kinds):
        raise ValueError(f"a defect kind is listed twice: {kinds}")
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{out}: not empty (pass overwrite=True to replace it)")
        shutil.rmtree(out)
    if base is None:
        from vcfnb import synth

        with tempfile.TemporaryDirectory(prefix="vcfnb-broken-base-") as tmp:
            synth.make_cohort("metastasis", Path(tmp) / "base", size="smoke", seed=0)
            shutil.copytree(Path(tmp) / "base", out)
    else:
        shutil.copytree(Path(base), out)

    cases = pd.read_csv(out / "cases.csv", dtype={"patient_id": str})
    rois = pd.read_csv(out / "rois.csv", dtype={"patient_id": str})
    picked = _pick_cases(cases, kinds, seed)
    defects: list[dict] = []
    extra_cases: list[dict] = []
    extra_rois: list[dict] = []

    def roi_row(pid: str, sequence: str = "T1") -> int:
        sel = np.flatnonzero((rois["patient_id"] == pid).to_numpy())
        if "sequence" in rois:
            seq = np.flatnonzero(((rois["patient_id"] == pid) &
                                  (rois["sequence"].astype(str) == sequence)).to_numpy())
            if seq.size:
                return int(seq[0])
        return int(sel[0])

    def add(kind: str, pid: str, row: str, file: str, description: str) -> None:
        stage, expect = KINDS[kind]
        defects.append({"kind": kind, "patient_id": pid, "row": row, "file": file,
                        "stage": stage, "expect": expect, "description": description})

    def read(rel: str) -> sitk.Image:
        return sitk.ReadImage(str(out / rel))

    def write(img: sitk.Image, rel: str) -> None:
        sitk.WriteImage(img, str(out / rel), useCompression=True)

    for kind in kinds:
        if kind == "single_class":
            cases["outcome"] = 0
            add(kind, "", "cases.csv", "cases.csv", "every outcome is 0 (one class only)")
            continue
        if kind == "roi_without_case":
            donor = rois.iloc[0]
            for _, r in rois[rois.patient_id == donor.patient_id].iterrows():
                extra_rois.append({**r.to_dict(), "patient_id": "GHOST01"})
            add(kind, "GHOST01", f"rois.csv:{len(rois) + 1}", "rois.csv",
                "ROI rows for patient GHOST01, who has no row in cases.csv")
            continue
        pid = picked[kind]
        ci = int(np.flatnonzero((cases.patient_id == pid).to_numpy())[0])
        if kind in _CASE_KINDS:
            if kind == "duplicate_id":
                extra_cases.append(cases.iloc[ci].to_dict())
                add(kind, pid, f"cases.csv:{ci + 1}", "cases.csv",
                    f"cases.csv holds patient_id {pid} twice (rows {ci + 1} and "
                    f"{len(cases) + 1})")
            elif kind == "nonbinary_outcome":
                cases["outcome"] = cases["outcome"].astype(object)
                cases.iat[ci, cases.columns.get_loc("outcome")] = 2
                add(kind, pid, f"cases.csv:{ci + 1}", "cases.csv", "outcome is 2")
            else:
                cases["outcome"] = cases["outcome"].astype(object)
                cases.iat[ci, cases.columns.get_loc("outcome")] = None
                add(kind, pid, f"cases.csv:{ci + 1}", "cases.csv", "outcome is empty")
            continue

        ri = roi_row(pid, "T2" if kind == "nonfinite_voxels" else "T1")
        row = f"rois.csv:{ri + 1}"
        img_rel, msk_rel = str(rois.at[ri, "image"]), str(rois.at[ri, "mask"])
        if kind == "missing_image":
            (out / img_rel).unlink()
            add(kind, pid, row, img_rel, "image file deleted")
        elif kind == "corrupt_nifti":
            (out / msk_rel).write_bytes(b"this is not a NIfTI file\n" * 40)
            add(kind, pid, row, msk_rel, "mask file overwritten with text")
        elif kind == "truncated_nifti":
            data = (out / img_rel).read_bytes()
            (out / img_rel).write_bytes(data[: int(len(data) * 0.6)])
            add(kind, pid, row, img_rel, "image file cut to 60% of its bytes")
        elif kind.startswith("geometry_"):
            m = read(msk_rel)
            if kind == "geometry_spacing":
                m.SetSpacing(tuple(s * 1.25 for s in m.GetSpacing()))
                what = "mask spacing x1.25"
            elif kind == "geometry_origin":
                m.SetOrigin(tuple(o + 5.0 for o in m.GetOrigin()))
                what = "mask origin shifted by 5 mm"
            elif kind == "geometry_direction":
                d = np.asarray(m.GetDirection()).reshape(3, 3).copy()
                d[:, 0] *= -1  # flip the first axis about the origin: another physical box
                m.SetDirection(tuple(d.ravel()))
                what = "mask first axis flipped"
            else:
                size = m.GetSize()
                m = sitk.RegionOfInterest(m, (size[0], size[1], size[2] - 1), (0, 0, 0))
                what = "mask one slice short"
            write(m, msk_rel)
            add(kind, pid, row, msk_rel, what)
        elif kind in ("empty_mask", "tiny_mask", "multilabel_mask"):
            m = read(msk_rel)
            a = sitk.GetArrayFromImage(m)
            if kind == "empty_mask":
                a[:] = 0
                what = "mask all zeros"
            elif kind == "tiny_mask":
                keep = tuple(int(v) for v in np.argwhere(a == 1)[len(np.argwhere(a == 1)) // 2])
                a[:] = 0
                a[keep] = 1
                what = "mask with a single voxel"
            else:
                lesion = a == 1
                # label 2: the rest of the image's bright structure around the lesion;
                # label 3: a block elsewhere. Both must be ignored when label 1 is asked for.
                ring = np.zeros_like(lesion)
                zz, yy, xx = np.nonzero(lesion)
                ring[max(zz.min() - 1, 0):zz.max() + 2, max(yy.min() - 4, 0):yy.max() + 5,
                     max(xx.min() - 4, 0):xx.max() + 5] = True
                a = np.where(lesion, 1, np.where(ring, 2, 0)).astype(a.dtype)
                a[:, :4, :4] = 3
                what = "mask holds labels 1 (lesion), 2 (surrounding box), 3 (corner block)"
            new = sitk.GetImageFromArray(a)
            new.CopyInformation(m)
            write(new, msk_rel)
            add(kind, pid, row, msk_rel, what)
        elif kind == "label_absent":
            rois.at[ri, "label"] = 2
            add(kind, pid, row, msk_rel, "row asks for label 2; the mask holds only 1")
        elif kind == "nonfinite_voxels":
            im = sitk.Cast(read(img_rel), sitk.sitkFloat32)
            a = sitk.GetArrayFromImage(im)
            lesion = np.argwhere(sitk.GetArrayFromImage(read(msk_rel)) == 1)
            a[tuple(lesion[0])] = np.nan
            a[tuple(lesion[-1])] = np.inf
            new = sitk.GetImageFromArray(a)
            new.CopyInformation(im)
            new_rel = str(Path(img_rel).with_name(Path(img_rel).name.split(".")[0] + ".mha"))
            sitk.WriteImage(new, str(out / new_rel))
            (out / img_rel).unlink()
            rois.at[ri, "image"] = new_rel
            add(kind, pid, row, new_rel, "float .mha image with one NaN and one +Inf voxel")
        elif kind in ("dicom_missing_slice", "dicom_identifiers"):
            im = read(img_rel)
            new_rel = str(Path(img_rel).parent / (Path(img_rel).name.split(".")[0] + "_dicom"))
            skip = [im.GetSize()[2] // 2] if kind == "dicom_missing_slice" else []
            write_dicom_series(im, out / new_rel, identifiers=IDENTIFIERS, skip_slices=skip)
            (out / img_rel).unlink()
            rois.at[ri, "image"] = new_rel
            add(kind, pid, row, new_rel,
                "DICOM series folder with a middle slice removed" if skip else
                "complete DICOM series whose headers carry patient name, id and birth date")
        else:  # pragma: no cover - KINDS and this function are kept in step
            raise AssertionError(kind)

    if extra_cases:
        cases = pd.concat([cases, pd.DataFrame(extra_cases)], ignore_index=True)
    if extra_rois:
        rois = pd.concat([rois, pd.DataFrame(extra_rois)], ignore_index=True)
    meta = json.loads((out / "cohort.json").read_text(encoding="utf-8")) if (out / "cohort.json").is_file() \
        else {"simulated": True}
    meta["broken"] = {"kinds": kinds, "seed": int(seed)}
    meta.setdefault("request", {})
    if isinstance(meta["request"], dict):  # never mistaken for the intact generated cohort
        meta["request"] = {**meta["request"], "broken": kinds}
    io.write_table(cases, out / "cases.csv")
    io.write_table(rois, out / "rois.csv")
    io.write_table(pd.DataFrame(defects, columns=DEFECT_COLUMNS), out / _DEFECT_FILE)
    readme = out / "README.md"
    note = ("\nBROKEN ON PURPOSE: this copy carries one defect per case for vcfnb's bad-input "
            "tests (see defects.csv).\n")
    io.write_text((readme.read_text(encoding="utf-8") if readme.is_file() else "") + note, readme)
    io.write_json(meta, out / "cohort.json")
    return out
