"""Privacy: reports carry no DICOM patient identifiers and no absolute path of this machine.

The broken cohort (session fixture ``broken_study``, tests/conftest.py) includes a case whose
T1 image is a DICOM series with a patient name, id and birth date in every header
(``dicom_identifiers``; the missing-slice series carries them too). The metastasis notebook is
run on it through the project's runner (the papermill run is shared with the bad-input and
determinism tests) and every file of the
report folder -- executed notebook, HTML, tables, metrics, params, figures and their PNG text
chunks -- is searched for the identifiers and for absolute paths (the cohort folder, the run's
temporary folder, the home folder, the project folder).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pandas as pd
import pytest

from vcfnb import features, io
from vcfnb.synth import broken

ROOT = Path(__file__).resolve().parents[1]


def _identifier_strings() -> list[str]:
    ids = broken.IDENTIFIERS
    name = ids["PatientName"]
    return [ids["PatientID"], ids["PatientBirthDate"], name, name.replace("^", " "),
            *[part for part in name.split("^") if len(part) > 4]]


def _path_strings(cohort: Path, report: Path) -> list[str]:
    paths = {str(cohort.resolve()), str(cohort.resolve().parent), str(ROOT.resolve()),
             str(Path(sys.prefix).resolve()),
             str(report.resolve().parents[2])}  # the run's temporary root
    home = str(Path.home())
    if len(home) > 1:
        paths.add(home + os.sep)
    paths.add("/tmp/pytest-of-")
    return sorted(paths)


def _png_text(path: Path) -> str:
    from PIL import Image

    with Image.open(path) as im:
        im.load()
        chunks = dict(getattr(im, "text", {}) or {})
        chunks.update({k: v for k, v in im.info.items() if isinstance(v, (str, bytes))})
    return "\n".join(f"{k}={v!r}" for k, v in chunks.items())


def _leaks(report: Path, forbidden: list[str]) -> list[str]:
    found = []
    for p in sorted(report.rglob("*")):
        if not p.is_file():
            continue
        data = p.read_bytes().decode("utf-8", errors="replace")
        if p.suffix == ".png":
            data += "\n" + _png_text(p)
        for s in forbidden:
            i = data.find(s)
            if i >= 0:
                ctx = data[max(0, i - 60): i + len(s) + 60].replace("\n", " ")
                found.append(f"{p.relative_to(report)}: {s!r} in ...{ctx}...")
    return found


@pytest.fixture(scope="module")
def run(broken_study):
    report, record = broken_study.run()
    assert (report / f"{broken_study.study}.ipynb").is_file(), record
    return report, record, broken_study.cohort


@pytest.mark.slow
def test_the_dicom_case_was_used(run):
    report, record, cohort = run
    d = broken.read_defects(cohort).set_index("kind").loc["dicom_identifiers"]
    c = io.load_cohort(cohort)
    assert d.patient_id in set(c.rois.patient_id)
    assert any(p.endswith(d.file) for p in c.rois.image), "the DICOM series must be a valid ROI"


@pytest.mark.slow
def test_report_has_no_dicom_identifiers(run):
    report, _, _ = run
    leaks = _leaks(report, _identifier_strings())
    assert not leaks, "DICOM identifiers in the report:\n" + "\n".join(leaks)


@pytest.mark.slow
def test_report_has_no_absolute_paths(run):
    report, _, cohort = run
    leaks = _leaks(report, _path_strings(cohort, report))
    assert not leaks, "absolute paths in the report:\n" + "\n".join(leaks[:40])


@pytest.mark.slow
def test_report_uses_the_cohort_ids(run):
    """Cases are named by the ids of cases.csv/rois.csv, never by a DICOM PatientID."""
    report, _, cohort = run
    ids = set(pd.read_csv(cohort / "cases.csv", dtype=str).patient_id) | \
        set(pd.read_csv(cohort / "rois.csv", dtype=str).patient_id)
    seen = set()
    for p in sorted((report / "tables").glob("*.csv")):
        t = pd.read_csv(p, dtype=str, keep_default_na=False)
        for col in [c for c in t.columns if c in ("patient_id", "case", "patient")]:
            values = set(t[col]) - {""}
            assert values <= ids, f"{p.name}.{col}: ids not in the cohort: {values - ids}"
            seen |= values
    assert seen, "no table names a case by its patient_id"


def test_features_with_diagnostics_carry_no_identifiers(broken_study):
    """Even pyradiomics' diagnostics (image hashes, geometry) hold no DICOM header values."""
    cohort = broken_study.cohort
    d = broken_study.defect("dicom_identifiers")
    c = io.load_cohort(cohort)
    rois = c.rois[c.rois.patient_id == d.patient_id]
    s = {"imageType": {"Original": {}}, "featureClass": {"firstorder": ["Mean"]},
         "vcfnb": {"diagnostics": True}}
    feats, fails = features.extract_with_failures(rois, s, n_jobs=1, progress=False)
    assert fails.empty, fails.to_string()
    text = feats.to_csv()
    assert any(col.startswith("diagnostics_") for col in feats.columns)
    for s_ in _identifier_strings():
        assert s_ not in text, f"{s_!r} in the feature table"
