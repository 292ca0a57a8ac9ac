"""Cohort contract: loading, and one test per validation problem (each names row and file)."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from vcfnb import io


def _img(arr, spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0), direction=None):
    im = sitk.GetImageFromArray(arr)
    im.SetSpacing(spacing)
    im.SetOrigin(origin)
    if direction is not None:
        im.SetDirection(direction)
    return im


def make_good_cohort(folder: Path, n: int = 4, rng=None) -> Path:
    """A tiny valid cohort: n patients, one 12×12×12 image and one mask each."""
    rng = rng or np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    cases, rois = [], []
    for i in range(n):
        pid = f"P{i:02d}"
        arr = rng.normal(100, 10, (12, 12, 12)).astype(np.float32)
        m = np.zeros((12, 12, 12), np.uint8)
        m[3:9, 3:9, 3:9] = 1
        m[4:6, 4:6, 4:6] = 2
        sitk.WriteImage(_img(arr), str(folder / f"{pid}_img.nii.gz"))
        sitk.WriteImage(_img(m), str(folder / f"{pid}_msk.nii.gz"))
        cases.append({"patient_id": pid, "outcome": i % 2, "age": 60 + i})
        rois.append({"patient_id": pid, "roi": "L1", "sequence": "T2", "reader": 1,
                     "image": f"{pid}_img.nii.gz", "mask": f"{pid}_msk.nii.gz", "label": 1})
    pd.DataFrame(cases).to_csv(folder / "cases.csv", index=False)
    pd.DataFrame(rois).to_csv(folder / "rois.csv", index=False)
    return folder


@pytest.fixture
def cohort_dir(tmp_path):
    return make_good_cohort(tmp_path / "cohort")


def _edit(folder, table, fn):
    df = pd.read_csv(folder / table, dtype={"patient_id": str})
    df = fn(df)
    df.to_csv(folder / table, index=False)


def _only_problem(c, substring):
    assert len(c.problems) >= 1, "expected a problem"
    hits = c.problems[c.problems.problem.str.contains(substring, regex=False)]
    assert len(hits) >= 1, c.problems.to_string()
    return hits.iloc[0]


def test_good_cohort_loads(cohort_dir):
    c = io.load_cohort(cohort_dir)
    assert c.problems.empty
    assert len(c.cases) == 4 and len(c.rois) == 4
    assert list(c.problems.columns) == ["row", "patient_id", "file", "problem"]
    assert Path(c.rois.image.iloc[0]).is_absolute()
    assert c.rois.label.dtype.kind == "i"
    assert not c.simulated


def test_missing_file(cohort_dir):
    (cohort_dir / "P01_img.nii.gz").unlink()
    c = io.load_cohort(cohort_dir)
    p = _only_problem(c, "image file not found")
    assert p.row == "rois.csv:2" and p.patient_id == "P01" and p.file == "P01_img.nii.gz"
    assert len(c.rois) == 3  # the rest goes on


def test_unreadable_file(cohort_dir):
    (cohort_dir / "P02_msk.nii.gz").write_bytes(b"\x1f\x8b not really a nifti")
    c = io.load_cohort(cohort_dir)
    p = _only_problem(c, "unreadable mask")
    assert p.patient_id == "P02" and p.file == "P02_msk.nii.gz"
    assert len(c.rois) == 3


def test_truncated_nifti(cohort_dir):
    data = (cohort_dir / "P03_img.nii.gz").read_bytes()
    (cohort_dir / "P03_img.nii.gz").write_bytes(data[: len(data) // 2])
    c = io.load_cohort(cohort_dir)
    p = c.problems.set_index("patient_id").loc["P03"]
    assert "image" in p.problem and p.file == "P03_img.nii.gz"


@pytest.mark.parametrize("what,kwargs,word", [
    ("spacing", {"spacing": (1.0, 1.0, 1.5)}, "spacing"),
    ("origin", {"origin": (0.0, 5.0, 0.0)}, "origin"),
    ("direction", {"direction": (1, 0, 0, 0, 0, 1, 0, 1, 0)}, "direction"),
])
def test_geometry_mismatch(cohort_dir, what, kwargs, word):
    m = np.zeros((12, 12, 12), np.uint8)
    m[3:9, 3:9, 3:9] = 1
    sitk.WriteImage(_img(m, **kwargs), str(cohort_dir / "P00_msk.nii.gz"))
    c = io.load_cohort(cohort_dir)
    p = _only_problem(c, "geometry mismatch")
    assert word in p.problem and p.patient_id == "P00" and p.file == "P00_msk.nii.gz"


def test_geometry_size_mismatch(cohort_dir):
    m = np.zeros((12, 12, 10), np.uint8)
    m[3:9, 3:9, 3:9] = 1
    sitk.WriteImage(_img(m), str(cohort_dir / "P00_msk.nii.gz"))
    p = _only_problem(io.load_cohort(cohort_dir), "geometry mismatch")
    assert "size" in p.problem


def test_geometry_tolerance(cohort_dir):
    m = np.zeros((12, 12, 12), np.uint8)
    m[3:9, 3:9, 3:9] = 1
    sitk.WriteImage(_img(m, origin=(0.0, 0.0005, 0.0)), str(cohort_dir / "P00_msk.nii.gz"))
    assert io.load_cohort(cohort_dir, geometry_tol=1e-3).problems.empty
    assert not io.load_cohort(cohort_dir, geometry_tol=1e-5).problems.empty


def test_flipped_mask_grid_resample_option(cohort_dir):
    """Same physical box, y axis flipped: a problem when strict, flagged for resampling otherwise."""
    m = np.zeros((12, 12, 12), np.uint8)
    m[3:9, 3:9, 3:9] = 1
    flipped = m[:, ::-1, :].copy()
    sitk.WriteImage(_img(flipped, origin=(0.0, 11.0, 0.0), direction=(1, 0, 0, 0, -1, 0, 0, 0, 1)),
                    str(cohort_dir / "P00_msk.nii.gz"))
    strict = io.load_cohort(cohort_dir)
    _only_problem(strict, "geometry mismatch")
    ok = io.load_cohort(cohort_dir, mask_grid="resample")
    assert ok.problems.empty
    assert ok.rois.set_index("patient_id").loc["P00", "resample_mask"]


def test_empty_mask(cohort_dir):
    sitk.WriteImage(_img(np.zeros((12, 12, 12), np.uint8)), str(cohort_dir / "P01_msk.nii.gz"))
    p = _only_problem(io.load_cohort(cohort_dir), "empty mask")
    assert p.patient_id == "P01" and p.file == "P01_msk.nii.gz"


def test_label_absent(cohort_dir):
    _edit(cohort_dir, "rois.csv", lambda d: d.assign(label=np.where(d.patient_id == "P02", 7, 1)))
    p = _only_problem(io.load_cohort(cohort_dir), "label 7 absent")
    assert p.patient_id == "P02" and "values present: [1, 2]" in p.problem


def test_nan_voxels(cohort_dir):
    arr = np.ones((12, 12, 12), np.float32)
    arr[0, 0, :3] = np.nan
    arr[1, 1, 1] = np.inf
    # NIfTI through ITK reads NaN back as 0, so the broken file is an MHA (NRRD behaves the same)
    sitk.WriteImage(_img(arr), str(cohort_dir / "P03_img.mha"))
    _edit(cohort_dir, "rois.csv", lambda d: d.assign(
        image=d.image.str.replace("P03_img.nii.gz", "P03_img.mha")))
    p = _only_problem(io.load_cohort(cohort_dir), "NaN/Inf")
    assert p.patient_id == "P03" and "4 NaN/Inf" in p.problem


def test_duplicate_ids(cohort_dir):
    _edit(cohort_dir, "cases.csv", lambda d: pd.concat([d, d.iloc[[1]]], ignore_index=True))
    c = io.load_cohort(cohort_dir)
    hits = c.problems[c.problems.problem.str.contains("duplicate patient_id")]
    assert set(hits.row) == {"cases.csv:2", "cases.csv:5"}
    assert "P01" not in set(c.cases.patient_id)


def test_roi_without_case(cohort_dir):
    _edit(cohort_dir, "rois.csv", lambda d: pd.concat(
        [d, d.iloc[[0]].assign(patient_id="GHOST")], ignore_index=True))
    p = _only_problem(io.load_cohort(cohort_dir), "no row in cases.csv")
    assert p.row == "rois.csv:5" and p.patient_id == "GHOST"


@pytest.mark.parametrize("value,word", [(2, "must be 0 or 1"), ("yes", "not a number"),
                                        (None, "missing or not a number (empty)")])
def test_outcome_not_binary(cohort_dir, value, word):
    _edit(cohort_dir, "cases.csv", lambda d: d.assign(
        outcome=[value if i == 2 else v for i, v in enumerate(d.outcome)]))
    c = io.load_cohort(cohort_dir)
    p = _only_problem(c, word)
    assert p.row == "cases.csv:3" and p.patient_id == "P02"
    assert "P02" not in set(c.rois.patient_id)  # its ROIs go with it


def test_other_outcome_column(cohort_dir):
    _edit(cohort_dir, "cases.csv", lambda d: d.rename(columns={"outcome": "malignant"}))
    with pytest.raises(io.CohortError, match="outcome column 'outcome' is missing"):
        io.load_cohort(cohort_dir)
    c = io.load_cohort(cohort_dir, outcome="malignant")
    assert c.problems.empty and c.outcome == "malignant"


def test_missing_tables(tmp_path):
    (tmp_path / "c").mkdir()
    with pytest.raises(io.CohortError, match="cases.csv"):
        io.load_cohort(tmp_path / "c")


def test_duplicate_roi_rows(cohort_dir):
    _edit(cohort_dir, "rois.csv", lambda d: pd.concat([d, d.iloc[[0]]], ignore_index=True))
    _only_problem(io.load_cohort(cohort_dir), "duplicate ROI row")


def _dicom_series(folder: Path, arr: np.ndarray, patient_name="Doe^Jane"):
    folder.mkdir(parents=True, exist_ok=True)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(arr.shape[0]):
        sl = sitk.GetImageFromArray(arr[k:k + 1].astype(np.int16))
        sl.SetSpacing((0.8, 0.8, 2.0))
        sl.SetOrigin((0.0, 0.0, 2.0 * k))
        for tag, val in (("0010|0010", patient_name), ("0010|0020", "SECRET-ID-123"),
                         ("0010|0030", "19500101"), ("0020|000e", "1.2.826.0.1.3680043.2.1125.1"),
                         ("0020|000d", "1.2.826.0.1.3680043.2.1125.2"),
                         ("0020|0032", f"0\\0\\{2.0 * k}"), ("0020|0037", "1\\0\\0\\0\\1\\0"),
                         ("0020|0013", str(k + 1)), ("0008|0060", "CT")):
            sl.SetMetaData(tag, val)
        writer.SetFileName(str(folder / f"slice{k:03d}.dcm"))
        writer.Execute(sl)
    return folder


def test_dicom_series_read(tmp_path, rng):
    arr = rng.integers(-100, 400, (6, 10, 10))
    d = _dicom_series(tmp_path / "series", arr)
    img = io.read_image(d)
    assert img.GetSize() == (10, 10, 6)
    assert np.allclose(img.GetSpacing(), (0.8, 0.8, 2.0))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(img), arr)
    assert not img.GetMetaDataKeys()  # identifiers are not carried along


def test_dicom_missing_slice(tmp_path, rng):
    d = _dicom_series(tmp_path / "series", rng.integers(0, 100, (6, 8, 8)))
    (d / "slice003.dcm").unlink()
    with pytest.raises(io.ImageReadError, match="slice is missing"):
        io.read_image(d)


def test_read_image_errors_name_file(tmp_path):
    with pytest.raises(io.ImageReadError, match="nothere.nii.gz: file not found"):
        io.read_image(tmp_path / "nothere.nii.gz")
    bad = tmp_path / "bad.nrrd"
    bad.write_text("garbage")
    with pytest.raises(io.ImageReadError, match="bad.nrrd: unreadable"):
        io.read_image(bad)


def test_load_yaml_is_safe(tmp_path):
    p = tmp_path / "x.yaml"
    p.write_text("a: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ValueError, match="invalid YAML"):
        io.load_yaml(p)
    p.write_text("a: 1\nb: [1, 2]\n")
    assert io.load_yaml(p) == {"a": 1, "b": [1, 2]}


def test_write_table_is_byte_stable(tmp_path):
    df = pd.DataFrame({"a": [0.1 + 0.2, 1 / 3], "b": ["x", "y"]})
    io.write_table(df, tmp_path / "t1.csv")
    io.write_table(df.copy(), tmp_path / "t2.csv")
    assert (tmp_path / "t1.csv").read_bytes() == (tmp_path / "t2.csv").read_bytes()
    assert not list(tmp_path.glob(".*.tmp"))


def test_copy_of_cohort_keeps_relative_paths(cohort_dir, tmp_path):
    moved = tmp_path / "elsewhere"
    shutil.copytree(cohort_dir, moved)
    c = io.load_cohort(moved)
    assert c.problems.empty and str(moved.resolve()) in c.rois.image.iloc[0]
