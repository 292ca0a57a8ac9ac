"""Cohort builders (issue 19) on the real scans of ``../shared/data``.

- ``totalseg/example_ct.nii.gz`` + ``spine_report/totalseg.nii.gz`` (TotalSegmentator ``total``
  labels 26 S1 … 33 T11) and ``totalseg_vertebrae_body.nii.gz`` (1 = body) → an ovf cohort of
  the T11-L2 vertebral bodies present (T12-L2: T11 is cut by the scan's edge, no body voxel)
  that ``vcfnb.studies.ovf.compartment_rois`` splits into cortical and cancellous VOIs; the
  same output as a folder with one file per class → an osteoporosis cohort of L1-L4;
- ``lumbar_mri/VB3`` (``NN_image.nii.gz``, ``NN_mask.nii.gz`` with 1..5 = L1..L5) + a clinical
  XLSX/CSV written in the test → a folder-built cohort.

Every output folder lives in ``tmp_path``; the inputs are read only and checked unchanged.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from vcfnb import builders
from vcfnb.builders import BuildError

pytestmark = pytest.mark.realdata

TOTALSEG = {"T11": 33, "T12": 32, "L1": 31, "L2": 30, "L3": 29, "L4": 28}


@pytest.fixture(scope="module")
def totalseg(shared_data):
    folder = shared_data / "totalseg"
    files = {"image": folder / "example_ct.nii.gz",
             "seg": folder / "spine_report" / "totalseg.nii.gz",
             "body": folder / "spine_report" / "totalseg_vertebrae_body.nii.gz"}
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        pytest.skip(f"missing {missing}")
    return files


@pytest.fixture(scope="module")
def vb3(shared_data):
    folder = shared_data / "lumbar_mri" / "VB3"
    if not (folder / "01_image.nii.gz").is_file():
        pytest.skip(f"{folder} lacks 01_image.nii.gz")
    return folder


def _digest(paths) -> dict:
    return {str(p): hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in paths}


def _array(path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


# ---------------------------------------------------------------------------------------------
# TotalSegmentator
# ---------------------------------------------------------------------------------------------
def test_totalseg_multilabel_to_ovf_cohort(totalseg, tmp_path):
    from vcfnb.studies import ovf

    before = _digest(totalseg.values())
    out = tmp_path / "ovf_cohort"
    res = builders.from_totalseg(out, [{"patient_id": "ts1", "image": totalseg["image"],
                                        "segmentation": totalseg["seg"],
                                        "body": totalseg["body"]}], study="ovf")
    assert res.folder == out and res.ok, res.cohort.problems.to_string()
    rois = pd.read_csv(out / "rois.csv", dtype=str)
    # T11 is cut by the scan's upper edge: its partial vertebra holds no body voxel
    assert rois["roi"].tolist() == ["T12", "L1", "L2"]
    assert res.skipped.to_dict("records") == [{
        "patient_id": "ts1", "roi": "T11",
        "reason": "level T11 absent from totalseg.nii.gz ∩ body mask"}]
    assert set(rois["sequence"]) == {"CT"}
    # self-contained: relative paths, real copies (no links) of only the needed files
    for col in ("image", "mask"):
        for rel in rois[col]:
            assert not Path(rel).is_absolute()
            assert (out / rel).is_file() and not (out / rel).is_symlink()
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert files == ["README.md", "cases.csv", "cohort.json", "images/ts1/example_ct.nii.gz",
                     "masks/ts1_vertebrae.nii.gz", "rois.csv"]
    assert _digest([out / "images/ts1/example_ct.nii.gz"]).popitem()[1] == \
        before[str(totalseg["image"])]
    # each level = TotalSegmentator vertebra ∩ vertebral body, with its own label value
    seg, body = _array(totalseg["seg"]), _array(totalseg["body"]) == 1
    written = _array(out / "masks/ts1_vertebrae.nii.gz")
    for lev in ("T12", "L1", "L2"):
        np.testing.assert_array_equal(written == TOTALSEG[lev], (seg == TOTALSEG[lev]) & body)
    assert set(np.unique(written)) == {0, 30, 31, 32}   # L3-S1 not copied
    # no outcome column: a real scan without labels
    assert list(pd.read_csv(out / "cases.csv").columns) == ["patient_id"]
    assert _digest(totalseg.values()) == before
    # the ovf study's compartment split takes these ROI names as whole vertebral bodies
    voi = ovf.compartment_rois(res.cohort.rois, tmp_path / "compartments")
    assert sorted(voi["roi"]) == sorted(f"{lv}_{c}" for lv in ("T12", "L1", "L2")
                                        for c in ("cortical", "cancellous"))
    assert voi["derived"].all() and (voi["n_voxels"] > 0).all()


def test_totalseg_class_folder_to_osteoporosis_cohort(totalseg, tmp_path):
    """TotalSegmentator's one-file-per-class output (vertebrae_L1.nii.gz …), no body mask."""
    seg_img = sitk.ReadImage(str(totalseg["seg"]))
    seg = sitk.GetArrayFromImage(seg_img)
    classes = tmp_path / "totalseg_out"
    classes.mkdir()
    for name, value in {"S1": 26, "L5": 27, **TOTALSEG}.items():
        img = sitk.GetImageFromArray((seg == value).astype(np.uint8))
        img.CopyInformation(seg_img)
        sitk.WriteImage(img, str(classes / f"vertebrae_{name}.nii.gz"), True)
    out = tmp_path / "osteo"
    res = builders.from_totalseg(out, [{"patient_id": "ts1", "image": totalseg["image"],
                                        "segmentation": classes}], study="osteoporosis",
                                 sequence="CT")
    assert res.ok, res.cohort.problems.to_string()
    assert res.cohort.rois["roi"].tolist() == ["L1", "L2", "L3", "L4"]
    assert res.skipped.empty
    written = _array(out / "masks/ts1_vertebrae.nii.gz")
    for lev in ("L1", "L2", "L3", "L4"):
        np.testing.assert_array_equal(written == TOTALSEG[lev], seg == TOTALSEG[lev])
    assert "whole vertebrae" in (out / "README.md").read_text(encoding="utf-8")
    # a level absent from the output is listed, not silently dropped
    res2 = builders.from_totalseg(tmp_path / "thoracic", [{"patient_id": "ts1",
                                                           "image": totalseg["image"],
                                                           "segmentation": classes}],
                                  levels=["T10", "T11"])
    assert res2.cohort.rois["roi"].tolist() == ["T11"]
    assert res2.skipped.to_dict("records") == [
        {"patient_id": "ts1", "roi": "T10", "reason": "level T10 absent from totalseg_out"}]


def test_builders_refuse_existing_folders_and_their_inputs(totalseg, tmp_path):
    scan = {"patient_id": "ts1", "image": totalseg["image"], "segmentation": totalseg["seg"]}
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("keep me")
    with pytest.raises(BuildError, match="exists and is not an empty folder"):
        builders.from_totalseg(busy, [scan])
    assert (busy / "notes.txt").read_text(encoding="utf-8") == "keep me"
    classes = tmp_path / "classes"
    classes.mkdir()
    (classes / "vertebrae_L1.nii.gz").write_bytes(Path(totalseg["seg"]).read_bytes())
    with pytest.raises(BuildError, match="lies inside the input"):
        builders.from_totalseg(classes / "cohort", [dict(scan, segmentation=classes)])
    assert sorted(p.name for p in classes.iterdir()) == ["vertebrae_L1.nii.gz"]
    with pytest.raises(BuildError, match="lies inside the input"):
        builders.from_folders(tmp_path / "scans" / "cohort", clinical=tmp_path / "c.csv",
                              columns={"patient_id": "id"},
                              images=str(tmp_path / "scans" / "{patient_id}.nii.gz"),
                              masks=str(tmp_path / "m" / "{patient_id}.nii.gz"), rois={"L1": 1})
    # an empty existing folder is fine; nothing is left beside it after the build
    empty = tmp_path / "empty"
    empty.mkdir()
    res = builders.from_totalseg(empty, [scan], levels=["L1"])
    assert res.ok and res.cohort.rois["roi"].tolist() == ["L1"]
    assert not [p for p in tmp_path.iterdir() if ".building-" in p.name]


# ---------------------------------------------------------------------------------------------
# folders + clinical table
# ---------------------------------------------------------------------------------------------
def test_from_folders_vb3_with_clinical_xlsx(vb3, tmp_path):
    clinical = tmp_path / "inputs" / "clinical.xlsx"
    clinical.parent.mkdir()
    pd.DataFrame({"Subject": ["01", "02", "03", "04", "99"],
                  "Low bone mass": ["yes", "no", "yes", "unknown", "no"],
                  "Age (y)": [61, 54, 70, 48, 66], "Site": ["A"] * 5}).to_excel(clinical,
                                                                              index=False)
    before = _digest(sorted(vb3.glob("0[1-4]_*.nii.gz")) + [clinical])
    out = tmp_path / "vb3_cohort"
    res = builders.from_folders(
        out, clinical=clinical,
        columns={"patient_id": "Subject", "outcome": "Low bone mass", "age": "Age (y)"},
        outcome_values={"yes": 1, "no": 0},
        images={"water": str(vb3 / "{patient_id}_image.nii.gz")},
        masks=str(vb3 / "{patient_id}_mask.nii.gz"),
        rois={"L1": 1, "L2": 2, "L3": 3, "L4": 4})
    cases = pd.read_csv(out / "cases.csv", dtype={"patient_id": str})
    # zero-padded ids survive the spreadsheet; the patient without files is skipped and listed
    assert cases["patient_id"].tolist() == ["01", "02", "03", "04"]
    assert list(cases.columns) == ["patient_id", "outcome", "age"]
    assert res.skipped["patient_id"].tolist() == ["99"]
    assert "not found" in res.skipped["reason"].iloc[0]
    # validation of what was written: the unmapped outcome of 04 is a listed problem
    probs = res.cohort.problems
    assert probs[["row", "patient_id"]].values.tolist() == [["cases.csv:4", "04"]]
    assert "outcome" in probs["problem"].iloc[0]
    rois = res.cohort.rois
    assert len(rois) == 12 and set(rois["patient_id"]) == {"01", "02", "03"}
    assert set(rois["sequence"]) == {"water"} and set(rois["roi"]) == {"L1", "L2", "L3", "L4"}
    written = pd.read_csv(out / "rois.csv", dtype=str)
    assert written.loc[0, "image"] == "images/01/01_image.nii.gz"
    assert written.loc[0, "mask"] == "masks/01/01_mask.nii.gz"
    np.testing.assert_array_equal(_array(out / "masks/01/01_mask.nii.gz"),
                                  _array(vb3 / "01_mask.nii.gz"))
    assert _digest(before) == before


def test_from_folders_csv_with_wildcards_and_two_sequences(vb3, tmp_path):
    clinical = tmp_path / "clinical.csv"
    pd.DataFrame({"id": ["05", "06"], "y": [0, 1]}).to_csv(clinical, index=False)
    res = builders.from_folders(
        tmp_path / "two_seq", clinical=clinical, columns={"patient_id": "id", "outcome": "y"},
        images={"T1": str(vb3 / "{patient_id}_im*.nii.gz"),
                "T2": str(vb3 / "{patient_id}_image.nii.gz")},
        masks={"T1": str(vb3 / "{patient_id}_mask.nii.gz"),
               "T2": str(vb3 / "{patient_id}_ma*.nii.gz")},
        rois={"L1": 1})
    assert res.ok, res.cohort.problems.to_string()
    assert res.cohort.rois[["patient_id", "sequence"]].values.tolist() == [
        ["05", "T1"], ["05", "T2"], ["06", "T1"], ["06", "T2"]]
    # one copy per source file, shared by both sequences' rows
    assert len(list((tmp_path / "two_seq" / "images").rglob("*.nii.gz"))) == 2
    with pytest.raises(BuildError, match=r"column\(s\) \['outcome'\] not found"):
        builders.from_folders(tmp_path / "x", clinical=clinical,
                              columns={"patient_id": "id", "outcome": "outcome"},
                              images=str(vb3 / "{patient_id}_image.nii.gz"),
                              masks=str(vb3 / "{patient_id}_mask.nii.gz"), rois={"L1": 1})
    with pytest.raises(BuildError, match="2 files match"):
        builders.from_folders(tmp_path / "y", clinical=clinical, columns={"patient_id": "id"},
                              images=str(vb3 / "{patient_id}_*.nii.gz"),
                              masks=str(vb3 / "{patient_id}_mask.nii.gz"), rois={"L1": 1})
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
