"""Issue 17 defect 11: the same scan under two patient ids is a validation problem; report
files are group/world-readable (0644 with the usual umask), not the 0600 of a temporary file."""
from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from vcfnb import features, io


def _cohort(folder: Path, n: int = 4) -> Path:
    rng = np.random.default_rng(5)
    folder.mkdir(parents=True, exist_ok=True)
    cases, rois = [], []
    for i in range(n):
        pid = f"P{i:02d}"
        img = sitk.GetImageFromArray(rng.normal(100, 10, (10, 10, 10)).astype(np.float32))
        m = np.zeros((10, 10, 10), np.uint8)
        m[3:7, 3:7, 3:7] = 1
        msk = sitk.GetImageFromArray(m)
        sitk.WriteImage(img, str(folder / f"{pid}_img.nii.gz"))
        sitk.WriteImage(msk, str(folder / f"{pid}_msk.nii.gz"))
        cases.append({"patient_id": pid, "outcome": i % 2})
        rois.append({"patient_id": pid, "roi": "L1", "sequence": "T2", "reader": 1,
                     "image": f"{pid}_img.nii.gz", "mask": f"{pid}_msk.nii.gz", "label": 1})
    pd.DataFrame(cases).to_csv(folder / "cases.csv", index=False)
    pd.DataFrame(rois).to_csv(folder / "rois.csv", index=False)
    return folder


def test_distinct_scans_pass(tmp_path):
    c = io.load_cohort(_cohort(tmp_path / "c"))
    assert c.problems.empty, c.problems.to_string()
    assert len(c.rois) == 4


def test_byte_identical_scan_under_another_patient_is_a_problem(tmp_path):
    folder = _cohort(tmp_path / "c")
    shutil.copyfile(folder / "P00_img.nii.gz", folder / "P03_img.nii.gz")  # a copied scan
    c = io.load_cohort(folder)
    dup = c.problems[c.problems.problem.str.contains("byte-identical")]
    assert set(dup.row) == {"rois.csv:1", "rois.csv:4"}, c.problems.to_string()
    p0 = dup.set_index("patient_id").loc["P00"]
    p3 = dup.set_index("patient_id").loc["P03"]
    assert p0.file == "P00_img.nii.gz" and "P03_img.nii.gz of patient 'P03'" in p0.problem
    assert p3.file == "P03_img.nii.gz" and "P00_img.nii.gz of patient 'P00'" in p3.problem
    assert "leakage" in p0.problem
    assert set(c.rois.patient_id) == {"P01", "P02"}  # both sides excluded
    assert len(c.problems) == 2


def test_one_image_file_named_for_two_patients_is_a_problem(tmp_path):
    folder = _cohort(tmp_path / "c")
    rois = pd.read_csv(folder / "rois.csv", dtype={"patient_id": str})
    rois.loc[2, "image"] = "P01_img.nii.gz"
    rois.to_csv(folder / "rois.csv", index=False)
    c = io.load_cohort(folder)
    dup = c.problems[c.problems.problem.str.contains("byte-identical")]
    assert set(dup.patient_id) == {"P01", "P02"}, c.problems.to_string()


def test_two_rois_of_one_patient_may_share_a_scan(tmp_path):
    folder = _cohort(tmp_path / "c")
    rois = pd.read_csv(folder / "rois.csv", dtype={"patient_id": str})
    extra = rois.iloc[[0]].assign(reader=2)
    pd.concat([rois, extra]).to_csv(folder / "rois.csv", index=False)
    assert io.load_cohort(folder).problems.empty


@pytest.fixture
def umask022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_written_files_are_0644(tmp_path, umask022):
    df = pd.DataFrame({"a": [1.0]})
    assert _mode(io.write_table(df, tmp_path / "t.csv")) == 0o644
    assert _mode(io.write_json({"a": 1}, tmp_path / "m.json")) == 0o644
    assert _mode(io.write_text("x", tmp_path / "r.html")) == 0o644
    assert (tmp_path / "r.html").read_text(encoding="utf-8") == "x"
    assert not list(tmp_path.glob(".*.tmp"))


def test_written_files_follow_the_umask_and_keep_an_existing_mode(tmp_path, umask022):
    os.umask(0o027)
    assert _mode(io.write_text("x", tmp_path / "a.txt")) == 0o640
    os.umask(0o022)
    p = tmp_path / "private.txt"
    p.write_text("old")
    p.chmod(0o600)
    io.write_text("new", p)
    assert _mode(p) == 0o600 and p.read_text(encoding="utf-8") == "new"


def test_feature_cache_entries_are_readable_and_complete(tmp_path, umask022):
    folder = _cohort(tmp_path / "c", n=1)
    rois = pd.DataFrame({"image": [str(folder / "P00_img.nii.gz")],
                         "mask": [str(folder / "P00_msk.nii.gz")], "label": [1]})
    cache = tmp_path / "cache"
    features.extract(rois, {"featureClass": {"firstorder": ["Mean"]}}, n_jobs=1,
                     cache_dir=cache, progress=False)
    entries = list(cache.rglob("*.json"))
    assert entries and not list(cache.rglob("*.tmp"))
    for e in entries:
        assert _mode(e) == 0o644
        assert json.loads(e.read_text(encoding="utf-8"))["key"] == e.stem
