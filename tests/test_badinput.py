"""Bad input, one class per case: every entry point names the case and the file, the batch goes on.

A broken cohort (:func:`vcfnb.synth.broken.make_broken_cohort`, built from the simulated
metastasis smoke cohort) carries one defect per case; ``defects.csv`` in it says which case,
which file and which entry point must report it. The checks run the real entry points:

* :func:`vcfnb.io.load_cohort` -- a problems-table row naming the row, case and file;
* :func:`vcfnb.features.extract` -- a failures-table row naming the case and the file, for the
  defects validation cannot see (a one-voxel mask) and for unvalidated input;
* :func:`vcfnb.models.split_by_patient` -- a clear error when a split would have one class;
* :func:`vcfnb.runner.run_notebook` -- unknown params keys rejected before running; and one
  papermill run of the metastasis notebook on the broken cohort that must complete, show the
  problems and failures tables and name the broken cases and files.

The broken cohort and the papermill run are shared with ``test_privacy.py`` and
``test_determinism.py`` through the session fixture ``broken_study`` (``tests/conftest.py``).
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from vcfnb import features, io, models, runner
from vcfnb.synth import broken

ROOT = Path(__file__).resolve().parents[1]
STUDY = "metastasis_lytic_blastic"
NOTEBOOK = ROOT / "notebooks" / f"{STUDY}.ipynb"


@pytest.fixture(scope="module")
def cohort_dir(broken_study) -> Path:
    return broken_study.cohort


@pytest.fixture(scope="module")
def defects(broken_study) -> pd.DataFrame:
    return broken_study.defects


@pytest.fixture(scope="module")
def small(broken_study) -> dict:
    """A small pyradiomics settings dict (a few features of four classes)."""
    return broken_study.settings


@pytest.fixture(scope="module")
def cohort(cohort_dir):
    return io.load_cohort(cohort_dir)


def _defect(defects: pd.DataFrame, kind: str) -> pd.Series:
    return defects.set_index("kind").loc[kind]


LOAD_KINDS = [k for k, (stage, _) in broken.KINDS.items() if stage == "load_cohort"]


# ---------------------------------------------------------------------------------------------
# the generator itself
# ---------------------------------------------------------------------------------------------

def test_every_default_kind_is_in_the_table(defects):
    assert list(defects.columns) == broken.DEFECT_COLUMNS
    assert sorted(defects.kind) == sorted(broken.DEFAULT_KINDS)
    real = defects[defects.patient_id != "GHOST01"]
    assert real.patient_id.is_unique, "one defect per case"


def test_unknown_kind_rejected(tmp_path):
    with pytest.raises(ValueError, match="unknown defect kind.*'nope'"):
        broken.make_broken_cohort(tmp_path / "x", ["nope"])


# ---------------------------------------------------------------------------------------------
# cohort validation
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", LOAD_KINDS)
def test_load_cohort_reports_each_defect(kind, cohort, defects):
    if kind not in set(defects.kind):
        pytest.skip(f"{kind} is not a default defect")
    d = _defect(defects, kind)
    rows = cohort.problems[(cohort.problems.patient_id == d.patient_id)
                           & (cohort.problems.row == d.row)]
    assert len(rows) == 1, f"{kind}: expected one problem row {d.row} for {d.patient_id}, got\n" \
        f"{cohort.problems.to_string()}"
    problem = rows.iloc[0]
    assert problem.file == d.file, f"{kind}: the problem must name the file {d.file}"
    assert d.expect.lower() in problem.problem.lower(), f"{kind}: {problem.problem!r}"
    # the damaged row is excluded, nothing else of a ROI-level defect's case
    if d.row.startswith("rois.csv"):
        n = int(d.row.split(":")[1])
        assert n not in set(cohort.rois.file_row)
        if d.patient_id != "GHOST01":
            assert d.patient_id in set(cohort.cases.patient_id)
    else:
        assert d.patient_id not in set(cohort.cases.patient_id)
        assert d.patient_id not in set(cohort.rois.patient_id)


def test_duplicate_id_flags_both_rows(cohort, defects):
    d = _defect(defects, "duplicate_id")
    rows = cohort.problems[cohort.problems.patient_id == d.patient_id]
    assert len(rows) == 2 and rows.problem.str.contains("duplicate patient_id").all()


def test_rest_of_the_batch_goes_on(cohort, cohort_dir, defects):
    raw_cases = pd.read_csv(cohort_dir / "cases.csv", dtype={"patient_id": str})
    raw_rois = pd.read_csv(cohort_dir / "rois.csv", dtype={"patient_id": str})
    lost_cases = set(defects[defects.row.str.startswith("cases.csv")].patient_id)
    assert set(cohort.cases.patient_id) == set(raw_cases.patient_id) - lost_cases
    bad_rows = {int(r.split(":")[1]) for r in cohort.problems.row if r.startswith("rois.csv")}
    expected = {i + 1 for i, pid in enumerate(raw_rois.patient_id)
                if pid not in lost_cases and pid != "GHOST01" and i + 1 not in bad_rows}
    assert set(cohort.rois.file_row) == expected
    # the ROI-level defects cost one ROI each; the valid defect cases keep all of theirs
    roi_defects = defects[defects.stage.eq("load_cohort") & defects.row.str.startswith("rois")
                          & defects.patient_id.ne("GHOST01")]
    assert len(bad_rows) == len(roi_defects) + 3  # + the three GHOST01 rows
    for kind in ("multilabel_mask", "dicom_identifiers", "tiny_mask"):
        pid = _defect(defects, kind).patient_id
        assert (cohort.rois.patient_id == pid).sum() == 3, kind
    assert cohort.summary().at[0, "positive"] > 5 and cohort.summary().at[0, "negative"] > 5


def test_problem_messages_are_readable(cohort):
    """One line each, no numpy reprs, no absolute path of this machine, the file relative."""
    folder = str(cohort.folder)
    for p in cohort.problems.itertuples():
        assert "\n" not in p.problem, f"{p.row}: multi-line problem {p.problem!r}"
        assert "np.float64(" not in p.problem and "np.int64(" not in p.problem, \
            f"{p.row}: numpy repr in {p.problem!r}"
        assert folder not in p.problem and folder not in p.file, f"{p.row}: absolute path"
        assert not Path(p.file).is_absolute()


def test_dicom_folder_with_missing_slice(cohort_dir, defects):
    d = _defect(defects, "dicom_missing_slice")
    with pytest.raises(io.ImageReadError, match="slice is missing") as err:
        io.read_image(cohort_dir / d.file)
    assert Path(d.file).name in str(err.value)
    # the complete series of the same writer reads on the mask's grid
    ok = _defect(defects, "dicom_identifiers")
    img = io.read_image(cohort_dir / ok.file)
    roi = pd.read_csv(cohort_dir / "rois.csv").iloc[int(ok.row.split(":")[1]) - 1]
    msk = sitk.ReadImage(str(cohort_dir / roi["mask"]))
    assert not io.geometry_mismatch(io.read_image_info(cohort_dir / ok.file),
                                    io.read_image_info(cohort_dir / roi["mask"]))
    assert img.GetSize() == msk.GetSize()


def test_missing_label_column_defaults_to_1(cohort_dir, defects, tmp_path):
    d = _defect(defects, "multilabel_mask")
    raw = pd.read_csv(cohort_dir / "rois.csv", dtype={"patient_id": str})
    rows = raw[raw.patient_id == d.patient_id].drop(columns="label")
    cases = pd.read_csv(cohort_dir / "cases.csv", dtype={"patient_id": str})
    cases[cases.patient_id == d.patient_id].to_csv(tmp_path / "cases.csv", index=False)
    rows = rows.assign(image=[str(cohort_dir / p) for p in rows.image],
                       mask=[str(cohort_dir / p) for p in rows["mask"]])
    rows.to_csv(tmp_path / "rois.csv", index=False)
    c = io.load_cohort(tmp_path)
    assert c.problems.empty, c.problems.to_string()
    assert c.rois.label.tolist() == [1, 1, 1]


# ---------------------------------------------------------------------------------------------
# feature extraction
# ---------------------------------------------------------------------------------------------

def test_multilabel_mask_uses_only_the_given_label(cohort, defects, small, tmp_path):
    d = _defect(defects, "multilabel_mask")
    row = cohort.rois[cohort.rois.file_row == int(d.row.split(":")[1])]
    assert len(row) == 1 and int(row.label.iloc[0]) == 1
    m = sitk.ReadImage(row["mask"].iloc[0])
    assert set(np.unique(sitk.GetArrayFromImage(m))) == {0, 1, 2, 3}
    binary = sitk.Cast(m == 1, sitk.sitkUInt8)
    sitk.WriteImage(binary, str(tmp_path / "binary.nii.gz"))
    rois = pd.concat([row, row.assign(mask=str(tmp_path / "binary.nii.gz")),
                      row.assign(label=2)], ignore_index=True)
    feats, fails = features.extract_with_failures(rois, small, n_jobs=1, progress=False)
    assert fails.empty, fails.to_string()
    cols = [c for c in feats.columns if c.startswith("original_")]
    np.testing.assert_array_equal(feats.loc[0, cols].to_numpy(float),
                                  feats.loc[1, cols].to_numpy(float))
    # the other labels are really there: asking for 2 gives another region
    assert feats.loc[2, "original_shape_VoxelVolume"] > feats.loc[0, "original_shape_VoxelVolume"]


def test_tiny_mask_is_a_failure_row_and_the_rest_is_extracted(cohort, defects, small):
    d = _defect(defects, "tiny_mask")
    ok_pid = sorted(set(cohort.cases.patient_id) - set(defects.patient_id))[0]
    rois = cohort.rois[cohort.rois.patient_id.isin([d.patient_id, ok_pid])]
    feats, fails = features.extract_with_failures(rois, small, n_jobs=1, progress=False)
    assert len(feats) == len(rois) == 6
    assert len(fails) == 1, fails.to_string()
    f = fails.iloc[0]
    assert f.patient_id == d.patient_id and f["mask"].endswith(d.file)
    assert d.expect in f.reason and Path(d.file).name in f.reason
    good = feats.drop(index=f.row)
    assert good.filter(like="original_").notna().all().all()


def test_extract_on_unvalidated_rows_names_case_and_file(broken_study, defects, small):
    """Without load_cohort in front, extraction still turns every bad ROI into a failures row."""
    extract_fails = broken_study.extract_fails
    kinds = extract_fails + ["multilabel_mask", "dicom_identifiers"]
    rois = broken_study.raw_rois(kinds)
    feats, fails = features.extract_with_failures(rois, small, n_jobs=1, progress=False)
    assert list(feats.index) == kinds
    by_row = fails.groupby("row")
    assert set(by_row.groups) == set(extract_fails), fails[["row", "reason"]].to_string()
    for kind in extract_fails:
        d = _defect(defects, kind)
        f = by_row.get_group(kind).iloc[0]
        assert f.patient_id == d.patient_id
        assert Path(d.file).name in f.reason or Path(d.file).name in (f.image + f["mask"]), kind
        # no intensity feature from a bad ROI (shape needs only the mask: a NaN image keeps it)
        assert feats.loc[kind].filter(like="original_firstorder").isna().all(), kind
        if kind != "nonfinite_voxels":
            assert feats.loc[kind].filter(like="original_").isna().all(), kind
    for kind in ("multilabel_mask", "dicom_identifiers"):
        assert feats.loc[kind].filter(like="original_").notna().all(), kind


def test_extract_reason_for_nonfinite_voxels_says_so(broken_study, defects, small):
    """A NaN/Inf image must not fail with numpy's 'arange: cannot compute length'."""
    rois = broken_study.raw_rois(["nonfinite_voxels"])
    _, fails = features.extract_with_failures(rois, small, n_jobs=1, progress=False)
    assert len(fails) == 1
    reason = fails.reason.iloc[0]
    assert re.search(r"nan|inf|non-?finite", reason, re.I), reason
    assert Path(_defect(defects, "nonfinite_voxels").file).name in reason, reason


# ---------------------------------------------------------------------------------------------
# splits with a single class
# ---------------------------------------------------------------------------------------------

def test_single_class_cohort_split_is_a_clear_error(tmp_path, cohort_dir):
    d = broken.make_broken_cohort(tmp_path / "one", ["single_class"], base=_intact(cohort_dir,
                                                                                  tmp_path))
    c = io.load_cohort(d)
    assert c.problems.empty and c.summary().at[0, "positive"] == 0
    with pytest.raises(ValueError, match=r"(?i)(one|single|only 1|only one) class"):
        models.split_by_patient(c.cases, "outcome", test_size=0.3, rng=0)


def test_split_with_one_positive_is_a_clear_error():
    table = pd.DataFrame({"patient_id": [f"p{i}" for i in range(20)],
                          "outcome": [1] + [0] * 19})
    with pytest.raises(ValueError, match=r"(?i)class"):
        models.split_by_patient(table, "outcome", test_size=0.3, rng=0)


def test_cv_fold_with_one_class_is_a_clear_error(rng):
    """Fewer cases of a class than CV folds: a fold would hold one class; say so, do not return
    an empty selection (the metastasis notebook then fails with 'at least one array or dtype is
    required' after a flood of 'invalid value encountered in scalar divide' warnings)."""
    from vcfnb import selection

    X = pd.DataFrame(rng.normal(size=(24, 4)), columns=list("abcd"))
    y = np.r_[np.ones(6, int), np.zeros(18, int)]
    X["a"] += 2.0 * y
    with pytest.raises(ValueError, match=r"(?i)class"):
        selection.SFSSelector(n_splits=10, n_repeats=1, random_state=0).fit(X, y)


def _intact(cohort_dir: Path, tmp_path: Path) -> Path:
    """A valid cohort: the broken one's cases/rois without any damaged row."""
    c = io.load_cohort(cohort_dir)
    dst = tmp_path / "intact"
    dst.mkdir()
    cases = c.cases.copy()
    rois = c.rois.drop(columns=["file_row", "resample_mask"])
    io.write_cohort(dst, cases, rois)
    return dst


# ---------------------------------------------------------------------------------------------
# report files under a C/POSIX locale
# ---------------------------------------------------------------------------------------------

def test_report_files_are_utf8_under_a_c_locale(tmp_path):
    """Reports hold non-ASCII text (λ, ±, •); a C/POSIX locale (a bare server, or GDCM's DICOM
    writer, which switches the process to "C") must not make writing them fail."""
    import locale

    saved = locale.setlocale(locale.LC_ALL)
    try:
        locale.setlocale(locale.LC_ALL, "C")
        io.write_text("λ = 0.1 ± 0.02 •\n", tmp_path / "r.html")
        io.write_table(pd.DataFrame({"note": ["λ_min", "≥ 0.5"]}), tmp_path / "t.csv")
        io.write_json({"note": "λ"}, tmp_path / "m.json")
    finally:
        locale.setlocale(locale.LC_ALL, saved)
    assert "λ = 0.1" in (tmp_path / "r.html").read_text(encoding="utf-8")
    assert "≥ 0.5" in (tmp_path / "t.csv").read_text(encoding="utf-8")


# ---------------------------------------------------------------------------------------------
# params
# ---------------------------------------------------------------------------------------------

def test_unknown_params_key_stops_before_running(tmp_path):
    with pytest.raises(runner.ParamsError, match=r"unknown parameter 'sede'.*'seed'"):
        runner.run_notebook(NOTEBOOK, None, tmp_path, extra={"sede": 3})
    pf = tmp_path / "params" / "typo.yaml"
    pf.parent.mkdir()
    pf.write_text("seed: 1\ncohort_dri: /somewhere\n")
    with pytest.raises(runner.ParamsError, match=r"typo.yaml.*unknown parameter 'cohort_dri'"):
        runner.run_notebook(NOTEBOOK, pf, tmp_path)
    assert not (tmp_path / "reports").exists(), "nothing may run with a bad params file"


# ---------------------------------------------------------------------------------------------
# the notebook on the broken cohort (one papermill run, shared)
# ---------------------------------------------------------------------------------------------

def _tables(report: Path, word: str) -> list[Path]:
    return sorted(p for p in (report / "tables").glob("*.csv") if word in p.stem)


@pytest.mark.slow
def test_notebook_completes_and_names_every_broken_case(broken_study, defects):
    report, record = broken_study.run()
    assert record["status"] == "ok", record
    metrics = json.loads((report / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["models"], "the study must go on with the valid cases"
    problem_tables = _tables(report, "problem")
    assert problem_tables, f"no problems table in {sorted(p.name for p in report.rglob('*.csv'))}"
    problems = pd.concat([pd.read_csv(p, dtype=str, keep_default_na=False)
                          for p in problem_tables])
    text = problems.to_csv(index=False)
    for d in defects[defects.stage == "load_cohort"].itertuples():
        assert d.patient_id in text and d.file in text, f"{d.kind}: {d.patient_id} {d.file}"
    fail_tables = _tables(report, "fail")
    assert fail_tables, "no feature failures table"
    fails = pd.concat([pd.read_csv(p, dtype=str, keep_default_na=False) for p in fail_tables])
    tiny = _defect(defects, "tiny_mask")
    assert fails.apply(lambda r: tiny.patient_id in r.to_string() and tiny.file in
                       r.to_string(), axis=1).any(), fails.to_string()
    # shown in the notebook itself, not only saved
    nb = json.loads((report / f"{STUDY}.ipynb").read_text(encoding="utf-8"))
    shown = json.dumps([c.get("outputs", []) for c in nb["cells"] if c["cell_type"] == "code"])
    for d in defects[defects.stage.isin(["load_cohort", "extract"])].itertuples():
        assert d.patient_id in shown, f"{d.kind}: case {d.patient_id} not shown in the notebook"
        assert d.file in shown, f"{d.kind}: file {d.file} not shown in the notebook"
