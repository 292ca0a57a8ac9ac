"""The ``vcfnb`` console script (issue 19): every subcommand, run as a subprocess.

``reproduce`` and ``check-params`` run in a throw-away project folder (``tmp_path`` with its own
``notebooks/`` and ``params/``; the runner finds the project from the working directory) on a
two-cell notebook, so nothing is written into the repository. ``cohort`` and ``extract`` use the
real scans of ``../shared/data``; ``check-cohort`` checks a TotalSegmentator-built ovf cohort
against the real ``ovf_prediction_ct`` notebook's requirements in features-only mode.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = Path(sys.executable).with_name("vcfnb")


def vcfnb(*args: str, cwd: Path = ROOT, timeout: int = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ, MPLBACKEND="Agg", COLUMNS="100")
    return subprocess.run([str(SCRIPT), *map(str, args)], cwd=cwd, env=env, timeout=timeout,
                          capture_output=True, text=True)


def test_console_script_is_installed():
    """``make env`` installs the package (``pip install -e .``): the script sits beside python."""
    assert SCRIPT.is_file(), f"{SCRIPT} missing: run `make env` (pip install -e .)"
    r = vcfnb("--version")
    assert r.returncode == 0 and r.stdout.startswith("vcfnb ")


def test_help_lists_every_command_and_each_has_help():
    r = vcfnb("--help")
    assert r.returncode == 0, r.stderr
    for cmd in ("reproduce", "check-params", "check-cohort", "cohort", "extract", "timings"):
        assert cmd in r.stdout
    assert re.search(r"\bpredict\b", r.stdout)  # issue 20 (tests/test_bundle.py)
    for cmd in (["reproduce"], ["check-params"], ["check-cohort"], ["cohort"],
                ["cohort", "from-folders"], ["cohort", "from-totalseg"], ["extract"],
                ["timings"]):
        h = vcfnb(*cmd, "--help")
        assert h.returncode == 0, (cmd, h.stderr)
        assert h.stdout.startswith(f"usage: vcfnb {' '.join(cmd)}")
    bad = vcfnb("extract", "--cohort", "x")
    assert bad.returncode == 2 and "required" in bad.stderr


# ---------------------------------------------------------------------------------------------
# reproduce / check-params: delegated to vcfnb.runner, in a throw-away project folder
# ---------------------------------------------------------------------------------------------
@pytest.fixture
def tiny_project(tmp_path):
    import nbformat

    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("out_dir = ''\nn = 2")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell("print('squared', n * n)")]
    nb.metadata["kernelspec"] = {"name": "vcfnb", "display_name": "vcfnb", "language": "python"}
    (tmp_path / "notebooks").mkdir()
    nbformat.write(nb, str(tmp_path / "notebooks" / "tiny.ipynb"))
    (tmp_path / "params" / "tiny").mkdir(parents=True)
    (tmp_path / "params" / "tiny" / "three.yaml").write_text("n: 3\n")
    return tmp_path


def test_reproduce_runs_and_skips_unchanged(tiny_project):
    r = vcfnb("reproduce", "--study", "tiny", cwd=tiny_project)
    assert r.returncode == 0, r.stdout + r.stderr
    run = tiny_project / "reports" / "tiny" / "three"
    assert "squared 9" in (run / "tiny.ipynb").read_text(encoding="utf-8")
    assert (run / "tiny.html").is_file()
    again = vcfnb("reproduce", "--study", "tiny", "--params", "three", cwd=tiny_project)
    assert again.returncode == 0 and "unchanged (skipped)" in again.stdout
    t = vcfnb("timings", cwd=tiny_project)  # the runner's notebook keeps papermill's durations
    assert t.returncode == 0, t.stdout + t.stderr
    assert "| tiny/three |" in t.stdout and "tiny/three, largest steps:" in t.stdout


def test_reproduce_lanes_reach_the_runner(tiny_project):
    (tiny_project / "params" / "tiny" / "four.yaml").write_text("n: 4\n")
    r = vcfnb("reproduce", "--study", "tiny", "--lanes", "2", cwd=tiny_project)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "2 runs in 2 lanes (longest first)" in r.stdout
    four = tiny_project / "reports" / "tiny" / "four" / "tiny.ipynb"
    assert "squared 16" in four.read_text(encoding="utf-8")


def test_check_params_reports_unknown_keys(tiny_project):
    ok = vcfnb("check-params", cwd=tiny_project)
    assert ok.returncode == 0 and "0 params problem(s)" in ok.stdout
    (tiny_project / "params" / "tiny" / "typo.yaml").write_text("nn: 3\n")
    bad = vcfnb("check-params", cwd=tiny_project)
    assert bad.returncode == 1
    assert "unknown parameter 'nn'" in bad.stderr and "did you mean 'n'" in bad.stderr


# ---------------------------------------------------------------------------------------------
# cohort builders, check-cohort, extract (real data)
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def totalseg(shared_data):
    ts = shared_data / "totalseg"
    if not (ts / "spine_report" / "totalseg.nii.gz").is_file():
        pytest.skip(f"{ts} lacks spine_report/totalseg.nii.gz")
    return ts


@pytest.fixture(scope="module")
def ovf_cohort(totalseg, tmp_path_factory):
    """``vcfnb cohort from-totalseg`` with a clinical table giving age and sex."""
    tmp = tmp_path_factory.mktemp("cli")
    clinical = tmp / "clinical.csv"
    pd.DataFrame({"ID": ["ts1"], "Age": [71], "Sex": ["F"]}).to_csv(clinical, index=False)
    out = tmp / "ovf_cohort"
    r = vcfnb("cohort", "from-totalseg", out, "--study", "ovf",
              "--scan", "ts1", totalseg / "example_ct.nii.gz",
              totalseg / "spine_report" / "totalseg.nii.gz",
              "--body", "ts1", totalseg / "spine_report" / "totalseg_vertebrae_body.nii.gz",
              "--clinical", clinical, "--column", "patient_id=ID", "--column", "age=Age",
              "--column", "sex=Sex")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "validated: no problem" in r.stdout
    assert "T11 level T11 absent" in r.stdout   # listed as skipped (cut by the scan's edge)
    return out


def test_cohort_from_totalseg(ovf_cohort):
    rois = pd.read_csv(ovf_cohort / "rois.csv")
    assert rois["roi"].tolist() == ["T12", "L1", "L2"]
    assert pd.read_csv(ovf_cohort / "cases.csv").columns.tolist() == ["patient_id", "age", "sex"]


def test_cohort_from_folders(shared_data, tmp_path):
    vb3 = shared_data / "lumbar_mri" / "VB3"
    if not (vb3 / "01_image.nii.gz").is_file():
        pytest.skip(f"{vb3} lacks 01_image.nii.gz")
    clinical = tmp_path / "clinical.xlsx"
    pd.DataFrame({"ID": ["01", "02"], "Osteopenia": ["y", "n"]}).to_excel(clinical, index=False)
    out = tmp_path / "vb3"
    r = vcfnb("cohort", "from-folders", out, "--clinical", clinical,
              "--column", "patient_id=ID", "--column", "outcome=Osteopenia",
              "--outcome-value", "y=1", "--outcome-value", "n=0",
              "--images", str(vb3 / "{patient_id}_image.nii.gz"), "--sequence", "T2",
              "--masks", str(vb3 / "{patient_id}_mask.nii.gz"),
              "--roi", "L1=1", "--roi", "L2=2")
    assert r.returncode == 0, r.stdout + r.stderr
    cases = pd.read_csv(out / "cases.csv", dtype={"patient_id": str})
    assert cases.to_dict("list") == {"patient_id": ["01", "02"], "outcome": [1, 0]}
    rois = pd.read_csv(out / "rois.csv", dtype={"patient_id": str})
    assert rois[["patient_id", "roi", "sequence", "label"]].values.tolist() == [
        ["01", "L1", "T2", 1], ["01", "L2", "T2", 2], ["02", "L1", "T2", 1], ["02", "L2", "T2", 2]]
    # refuses to write again into the now non-empty folder
    again = vcfnb("cohort", "from-folders", out, "--clinical", clinical,
                  "--column", "patient_id=ID", "--images", str(vb3 / "{patient_id}_image.nii.gz"),
                  "--masks", str(vb3 / "{patient_id}_mask.nii.gz"), "--roi", "L1=1")
    assert again.returncode == 2 and "exists and is not an empty folder" in again.stderr


def test_extract_writes_a_cached_feature_table(ovf_cohort, tmp_path, monkeypatch):
    monkeypatch.delenv("VCFNB_DATA_DIR", raising=False)  # the default cache, not the session's
    settings = tmp_path / "settings.yaml"
    settings.write_text("setting: {binWidth: 25}\nimageType: {Original: {}}\n"
                        "featureClass: {shape: [VoxelVolume], firstorder: [Mean]}\n")
    out = tmp_path / "features.csv"
    # default cache: data/cache of the project folder (here: the working directory)
    r = vcfnb("extract", "--cohort", ovf_cohort, "--settings", settings, "--out", out,
              "--jobs", "1", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "0 ROI(s) from the cache" in r.stdout
    assert "%|" in r.stderr                      # tqdm progress bar
    feats = pd.read_csv(out)
    assert feats["roi"].tolist() == ["T12", "L1", "L2"]
    assert (feats["original_shape_VoxelVolume"] > 0).all()
    assert feats["original_firstorder_Mean"].between(0, 600).all()   # vertebral bone, HU
    assert any((tmp_path / "data" / "cache").rglob("*.json"))
    again = vcfnb("extract", "--cohort", ovf_cohort, "--settings", settings, "--out",
                  tmp_path / "again.csv", "--jobs", "1", "--quiet", cwd=tmp_path)
    assert again.returncode == 0 and "3 ROI(s) from the cache" in again.stdout
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "again.csv"), feats)
    missing = vcfnb("extract", "--cohort", ovf_cohort, "--settings", "no_such_settings",
                    "--out", tmp_path / "x.csv", cwd=tmp_path)
    assert missing.returncode == 2 and "ovf_ct" in missing.stderr


def test_check_cohort_features_only_on_the_totalseg_cohort(ovf_cohort):
    """The real ovf notebook's requirements, features-only: no outcome in a real scan."""
    r = vcfnb("check-cohort", "--study", "ovf_prediction_ct", "--cohort", ovf_cohort,
              "--features-only")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "meets every requirement of ovf_prediction_ct" in r.stdout
