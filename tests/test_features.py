"""vcfnb.features: exact pyradiomics values, filter sharing, failures, cache/resume, parallel, Dask."""
from __future__ import annotations

import ast
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
import yaml

from vcfnb import features

ROOT = Path(__file__).resolve().parents[1]

SETTINGS = {
    "setting": {"binWidth": 25},
    "imageType": {"Original": {}, "Wavelet": {}, "LoG": {"sigma": [1.0, 2.0]}, "Square": {},
                  "SquareRoot": {}, "Logarithm": {}, "Exponential": {}, "Gradient": {}},
    "featureClass": {"shape": ["VoxelVolume", "Sphericity"], "firstorder": [],
                     "glcm": ["Correlation", "JointEntropy"], "glszm": ["ZoneEntropy"],
                     "gldm": ["DependenceEntropy"], "ngtdm": ["Coarseness"],
                     "glrlm": ["RunEntropy"]},
}
FAST = {"setting": {"binWidth": 25},
        "imageType": {"Original": {}, "Mean": {"radius": 1}},
        "featureClass": {"firstorder": ["Mean", "Entropy"], "glcm": ["Correlation"]}}


def _scan(folder: Path, name: str, rng, shape=(16, 40, 36), spacing=(0.9, 0.9, 2.5)):
    """A CT-like scan with two 'vertebrae' (labels 1, 2) and a small third ROI (label 3)."""
    from scipy import ndimage

    arr = ndimage.gaussian_filter(rng.normal(0, 1, shape), 1.0) * 150 + 200
    arr[:, :, :4] = -1000  # air at the border: large whole-image max |x| outside the ROIs
    m = np.zeros(shape, np.uint8)
    m[3:9, 6:18, 8:20] = 1
    m[8:13, 20:31, 12:26] = 2
    m[12, 5:8, 26:29] = 3
    arr[m == 1] += 250
    img = sitk.GetImageFromArray(np.round(arr).astype(np.int16))
    img.SetSpacing(spacing)
    img.SetOrigin((-20.0, 10.0, 4.0))
    msk = sitk.GetImageFromArray(m)
    msk.CopyInformation(img)
    ip, mp = folder / f"{name}.nii.gz", folder / f"{name}_seg.nii.gz"
    sitk.WriteImage(img, str(ip))
    sitk.WriteImage(msk, str(mp))
    m2 = m.copy()
    m2[3, 6:18, 8:20] = 0  # reader 2 leaves out the top slice of L1
    msk2 = sitk.GetImageFromArray(m2)
    msk2.CopyInformation(img)
    sitk.WriteImage(msk2, str(folder / f"{name}_seg_r2.nii.gz"))
    return str(ip), str(mp)


def _rois(folder: Path, rng, n_scans: int = 2) -> pd.DataFrame:
    rows = []
    for i in range(n_scans):
        ip, mp = _scan(folder, f"p{i}", rng)
        for roi, label, reader in (("L1", 1, "r1"), ("L2", 2, "r1"), ("L1", 1, "r2")):
            rows.append((f"p{i}", roi, "CT", reader, ip,
                         mp.replace("_seg", "_seg_r2") if reader == "r2" else mp, label))
    df = pd.DataFrame(rows, columns=["patient_id", "roi", "sequence", "reader", "image", "mask",
                                     "label"])
    df.index = [f"row{i}" for i in range(len(df))]
    return df


def _naive(rois: pd.DataFrame, settings: dict) -> pd.DataFrame:
    from radiomics import featureextractor

    out = []
    for _, r in rois.iterrows():
        ex = featureextractor.RadiomicsFeatureExtractor(settings)
        res = ex.execute(r["image"], r["mask"], label=int(r["label"]))
        out.append({k: float(v) for k, v in res.items() if not k.startswith("diagnostics")})
    return pd.DataFrame(out, index=rois.index)


def _assert_same(ref: pd.DataFrame, got: pd.DataFrame, rtol: float = 0.0):
    feat = [c for c in got.columns if c not in features.ID_COLUMNS]
    assert set(feat) == set(ref.columns)
    np.testing.assert_allclose(got[feat].to_numpy(float), ref[feat].to_numpy(float), rtol=rtol,
                               atol=0, equal_nan=True)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    rng = np.random.default_rng(7)
    return _rois(tmp_path_factory.mktemp("cohort"), rng)


# --------------------------------------------------------------------------------------------
# settings
# --------------------------------------------------------------------------------------------

def test_a_plain_pyradiomics_yaml_works_unchanged(tmp_path):
    text = textwrap.dedent("""\
        imageType:
          Original: {}
          LoG:
            sigma: [1.0, 3.0]
        featureClass:
          glcm:
          firstorder: [Mean]
        setting:
          binWidth: 25
          label: 1
          interpolator: 'sitkBSpline'
          resampledPixelSpacing:
        """)
    (tmp_path / "params.yaml").write_text(text)
    s = features.load_settings(tmp_path / "params.yaml")
    assert list(s["imageType"]) == ["Original", "LoG"]
    assert s["setting"]["binWidth"] == 25 and s["featureClass"]["firstorder"] == ["Mean"]
    assert s["vcfnb"]["crop"] is True


@pytest.mark.parametrize("name", ["vcf_t2", "vcf_dlr", "osteoporosis_mri", "ovf_ct",
                                  "metastasis_original"])
def test_packaged_settings_are_valid_pyradiomics_files(name):
    from radiomics import featureextractor

    path = features.packaged_settings()[name]
    s = features.load_settings(name)
    assert s["vcfnb"]["study"]
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    raw.pop("vcfnb")
    raw["imageType"] = {k: v for k, v in raw["imageType"].items()
                        if not features._filters.is_vcfnb_image_type(k)}
    featureextractor.RadiomicsFeatureExtractor(raw)  # pyradiomics accepts the rest as is


def test_settings_errors_are_clear(tmp_path):
    with pytest.raises(ValueError, match="unknown section"):
        features.load_settings({"imagetypes": {}})
    with pytest.raises(ValueError, match="unknown vcfnb key"):
        features.load_settings({"vcfnb": {"n_jobs": 2}})
    with pytest.raises(ValueError, match="pyradiomics rejected"):
        features.load_settings({"imageType": {"Sobel": {}}})
    with pytest.raises(ValueError, match="BoxSigma"):
        features.load_settings({"imageType": {"BoxSigma": {"radius": "big"}}})
    with pytest.raises(ValueError, match="not found"):
        features.load_settings(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("!!python/object/apply:os.system ['echo hi']\n")
    with pytest.raises(Exception, match="could not determine a constructor|ConstructorError"):
        features.load_settings(tmp_path / "bad.yaml")  # safe loading: nothing is executed


# --------------------------------------------------------------------------------------------
# exactness and filter sharing
# --------------------------------------------------------------------------------------------

def test_equals_per_roi_pyradiomics_execute(cohort):
    got = features.extract(cohort, SETTINGS, n_jobs=1, progress=False)
    assert list(got.index) == list(cohort.index)
    assert list(got.columns[:4]) == ["patient_id", "roi", "sequence", "reader"]
    assert got.attrs["failures"] == []
    _assert_same(_naive(cohort, SETTINGS), got)  # bit for bit, every image type


def test_vcfnb_filters_cropped_equal_whole_image(cohort):
    types = {"BinomialBlur": {}, "CurvatureFlow": {"numberOfIterations": 3}, "Mean": {},
             "DiscreteGaussian": {}, "RecursiveGaussian": {"sigma": 1.5}, "BoxSigma": {},
             "ShotNoise": {}}
    base = {"imageType": types, "featureClass": {"firstorder": [], "glcm": ["Correlation"]},
            "setting": {"binWidth": 10}}
    cropped = features.extract(cohort, base, n_jobs=1, progress=False)
    whole = features.extract(cohort, {**base, "vcfnb": {"crop": False}}, n_jobs=1,
                             progress=False)
    feat = [c for c in whole.columns if c not in features.ID_COLUMNS]
    exact = [c for c in feat if not c.startswith("recursivegaussian")]
    np.testing.assert_array_equal(cropped[exact].to_numpy(), whole[exact].to_numpy())
    rec = [c for c in feat if c.startswith("recursivegaussian")]
    np.testing.assert_allclose(cropped[rec].to_numpy(), whole[rec].to_numpy(), rtol=1e-6)


def test_per_roi_settings_resampling_and_resegmentation(cohort):
    """Settings where pyradiomics builds a per-ROI grid still match execute() exactly."""
    sub = cohort.iloc[:3]
    for setting in ({"binWidth": 25, "resampledPixelSpacing": [2.0, 2.0, 2.0],
                     "interpolator": "sitkBSpline"},
                    {"binWidth": 25, "resegmentRange": [150, 800], "normalize": False},
                    {"binWidth": 5, "normalize": True, "normalizeScale": 100}):
        s = {"setting": setting, "imageType": {"Original": {}, "LoG": {"sigma": [1.0]}},
             "featureClass": {"shape": ["VoxelVolume"], "firstorder": ["Mean", "Skewness"],
                              "glszm": ["ZoneEntropy"]}}
        _assert_same(_naive(sub, s), features.extract(sub, s, n_jobs=1, progress=False))


def test_scan_is_filtered_once_for_all_its_rois(cohort, monkeypatch):
    from radiomics import imageoperations

    calls = []
    real = imageoperations.getWaveletImage

    def counting(image, mask, **kw):
        calls.append(image.GetSize())
        yield from real(image, mask, **kw)

    monkeypatch.setattr(imageoperations, "getWaveletImage", counting)
    s = {"imageType": {"Wavelet": {}}, "featureClass": {"firstorder": ["Mean"]}}
    features.extract(cohort, s, n_jobs=1, progress=False)
    assert len(calls) == cohort["image"].nunique()  # 2 scans, 6 ROIs: 2 wavelet transforms


# --------------------------------------------------------------------------------------------
# failures
# --------------------------------------------------------------------------------------------

def test_failures_are_rows_and_the_batch_goes_on(tmp_path, rng):
    ip, mp = _scan(tmp_path, "ok", rng)
    bad = tmp_path / "corrupt.nii.gz"
    bad.write_bytes(b"\x1f\x8b\x08\x00garbage" * 10)
    tiny = sitk.ReadImage(mp)
    rois = pd.DataFrame(
        [("p1", "L1", ip, mp, 1), ("p2", "L9", ip, mp, 9), ("p3", "L3", ip, mp, 3),
         ("p4", "L1", str(bad), mp, 1), ("p5", "L1", str(tmp_path / "missing.nii.gz"), mp, 1),
         ("p6", "L2", ip, mp, 2)],
        columns=["patient_id", "roi", "image", "mask", "label"])
    del tiny
    s = {"setting": {"minimumROISize": 20}, "imageType": {"Original": {}},
         "featureClass": {"firstorder": ["Mean"]}}
    feats, fails = features.extract_with_failures(rois, s, n_jobs=1, progress=False)
    assert len(feats) == 6
    ok = feats["original_firstorder_Mean"].notna().tolist()
    assert ok == [True, False, False, False, False, True]
    assert list(fails.columns) == features.FAILURE_COLUMNS
    reasons = dict(zip(fails["patient_id"], fails["reason"]))
    assert set(reasons) == {"p2", "p3", "p4", "p5"}
    assert reasons["p2"].startswith("label absent") and "label 9" in reasons["p2"]
    assert reasons["p3"].startswith("too few voxels")
    assert reasons["p4"].startswith("unreadable file") and "corrupt.nii.gz" in reasons["p4"]
    assert reasons["p5"].startswith("unreadable file") and "missing.nii.gz" in reasons["p5"]
    assert feats.attrs["failures"] == fails.to_dict("records")


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def test_fixed_bin_count_advice_silenced_and_stated_once(tmp_path, rng, monkeypatch, capsys):
    """pyradiomics logs "Fixed bin Count enabled! ..." (logger radiomics.featureextractor) each
    time binCount settings are loaded; vcfnb drops only that record and prints its own sentence
    once per run. Other records of the same logger still pass."""
    import radiomics  # noqa: F401 - creates pyradiomics' loggers

    ip, mp = _scan(tmp_path, "ct", rng)
    rois = pd.DataFrame([("p1", "L1", ip, mp, 1), ("p1", "L2", ip, mp, 2)],
                        columns=["patient_id", "roi", "image", "mask", "label"])
    s = {"setting": {"binCount": 16}, "imageType": {"Original": {}},
         "featureClass": {"firstorder": ["Entropy"]}}
    monkeypatch.setattr(features, "_BIN_COUNT_STATED", set())
    top, emitter = logging.getLogger("radiomics"), logging.getLogger("radiomics.featureextractor")
    seen = _Records()
    top.addHandler(seen)
    monkeypatch.setattr(top, "level", logging.DEBUG)
    try:
        for _ in range(2):
            feats = features.extract(rois, s, n_jobs=1, progress=False)
            features.load_settings(s)  # the notebooks and save_model load settings again
        emitter.warning("another pyradiomics warning")
        assert feats["original_firstorder_Entropy"].notna().all()
        assert not [m for m in seen.messages if "Fixed bin Count" in m]
        assert "another pyradiomics warning" in seen.messages
        out = capsys.readouterr().out
        assert out.count("fixed bin count of 16 (`binCount`)") == 1
        assert features.discretisation_note(s).startswith("Grey levels discretised with a fixed "
                                                          "bin count of 16")
        assert features.discretisation_note(FAST) is None
        # without vcfnb's filter pyradiomics' advice is emitted (the test can fail)
        monkeypatch.setattr(emitter, "filters", [])
        features.load_settings(s)
        assert [m for m in seen.messages if m.startswith(features.FIXED_BIN_COUNT_ADVICE)]
    finally:
        top.removeHandler(seen)


def test_empty_after_resampling_is_a_failure(tmp_path, rng):
    ip, _ = _scan(tmp_path, "s", rng)
    img = sitk.ReadImage(ip)
    m = np.zeros(sitk.GetArrayFromImage(img).shape, np.uint8)
    m[8, 20, 20] = 1  # one voxel: nothing left to extract on a 3 mm grid
    msk = sitk.GetImageFromArray(m)
    msk.CopyInformation(img)
    sitk.WriteImage(msk, str(tmp_path / "dot.nii.gz"))
    rois = pd.DataFrame({"patient_id": ["p"], "roi": ["dot"], "image": [ip],
                         "mask": [str(tmp_path / "dot.nii.gz")], "label": [1]})
    s = {"setting": {"resampledPixelSpacing": [3.0, 3.0, 3.0], "interpolator": "sitkBSpline"},
         "featureClass": {"firstorder": ["Mean"]}}
    feats, fails = features.extract_with_failures(rois, s, n_jobs=1, progress=False)
    assert len(feats) == 1 and list(feats.columns) == ["patient_id", "roi"]  # nothing extracted
    assert len(fails) == 1 and "dot.nii.gz" in fails["reason"].iloc[0]
    assert fails["reason"].iloc[0].startswith("too few voxels"), fails["reason"].iloc[0]


# --------------------------------------------------------------------------------------------
# cache, resume, parallel, Dask
# --------------------------------------------------------------------------------------------

def test_cache_rerun_extracts_nothing_and_settings_changes_only_add(cohort, tmp_path):
    first = features.extract(cohort, FAST, n_jobs=1, cache_dir=tmp_path, progress=False)
    assert first.attrs["cache"]["hits"] == 0 and first.attrs["cache"]["misses"] == len(cohort)
    again = features.extract(cohort, FAST, n_jobs=1, cache_dir=tmp_path, progress=False)
    assert again.attrs["cache"] == {"hits": len(cohort), "misses": 0,
                                    "entries_read": 2 * len(cohort), "entries_written": 0}
    pd.testing.assert_frame_equal(first, again)
    more = {**FAST, "imageType": {**FAST["imageType"], "Gradient": {}}}
    third = features.extract(cohort, more, n_jobs=1, cache_dir=tmp_path, progress=False)
    assert third.attrs["cache"]["entries_read"] == 2 * len(cohort)
    assert third.attrs["cache"]["entries_written"] == len(cohort)  # only the new image type
    # no temporary files are left behind and every entry is valid JSON
    assert not list(tmp_path.rglob("*.tmp"))
    for f in tmp_path.rglob("*.json"):
        json.loads(f.read_text(encoding="utf-8"))


def test_results_do_not_depend_on_n_jobs(cohort):
    s = {**FAST, "imageType": {"Original": {}, "LoG": {"sigma": [1.5]}, "Wavelet": {},
                               "AdditiveGaussianNoise": {"standardDeviation": 20.0}}}
    one = features.extract(cohort, s, n_jobs=1, progress=False)
    two = features.extract(cohort, s, n_jobs=2, progress=False)
    pd.testing.assert_frame_equal(one, two)


def test_dask_local_cluster_gives_the_same_table(cohort, monkeypatch):
    distributed = pytest.importorskip("dask.distributed")
    s = {**FAST, "imageType": {"Original": {}, "Wavelet": {}}}
    local = features.extract(cohort, s, n_jobs=1, progress=False)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        via_arg = features.extract(cohort, s, scheduler=cluster.scheduler_address,
                                   progress=False)
        monkeypatch.setenv("VCFNB_DASK_SCHEDULER", cluster.scheduler_address)
        via_env = features.extract(cohort, s, progress=False)
    pd.testing.assert_frame_equal(local, via_arg)
    pd.testing.assert_frame_equal(local, via_env)


_KILL_SCRIPT = """
import sys, pandas as pd
sys.path.insert(0, {root!r})
from vcfnb import features
rois = pd.read_pickle({rois!r})
features.extract(rois, {settings!r}, n_jobs=1, cache_dir={cache!r}, progress=False)
"""


def test_sigkill_midway_then_resume(tmp_path):
    rng = np.random.default_rng(3)
    rois = _rois(tmp_path, rng, n_scans=6)
    s = {"setting": {"binWidth": 25}, "imageType": {"Original": {}, "Wavelet": {}},
         "featureClass": {"firstorder": [], "glcm": ["Correlation"]}}
    rois.to_pickle(tmp_path / "rois.pkl")
    cache = tmp_path / "cache"
    script = _KILL_SCRIPT.format(root=str(ROOT), rois=str(tmp_path / "rois.pkl"), settings=s,
                                 cache=str(cache))
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    try:
        while time.time() < deadline and proc.poll() is None:
            if len(list(cache.rglob("*.json"))) >= 4:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "extraction finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    before = list(cache.rglob("*.json"))
    assert 4 <= len(before) < 2 * len(rois)
    for f in before:  # no corrupt entry: each is complete JSON naming its own key
        assert json.loads(f.read_text(encoding="utf-8"))["key"] == f.stem
    resumed = features.extract(rois, s, n_jobs=1, cache_dir=cache, progress=False)
    assert resumed.attrs["cache"]["entries_read"] == len(before)  # finished work not redone
    assert resumed.attrs["cache"]["entries_written"] == 2 * len(rois) - len(before)
    clean = features.extract(rois, s, n_jobs=1, progress=False)
    pd.testing.assert_frame_equal(resumed, clean)


def test_cache_ignores_a_corrupt_entry(cohort, tmp_path, caplog):
    features.extract(cohort.iloc[:1], FAST, n_jobs=1, cache_dir=tmp_path, progress=False)
    entry = next(tmp_path.rglob("*.json"))
    entry.write_text('{"features": {"orig')  # e.g. written by a tool without atomic writes
    with caplog.at_level(logging.WARNING, logger="vcfnb.features"):
        out = features.extract(cohort.iloc[:1], FAST, n_jobs=1, cache_dir=tmp_path,
                               progress=False)
    assert out.attrs["cache"]["entries_written"] == 1
    assert "unreadable" in caplog.text
    json.loads(entry.read_text(encoding="utf-8"))


# --------------------------------------------------------------------------------------------
# real data
# --------------------------------------------------------------------------------------------

def _bench():
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_extract", ROOT / "benchmarks" / "extract.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.realdata
@pytest.mark.slow
def test_tptbox_cortical_cancellous_equal_naive(shared_data):
    d = shared_data / "tptbox" / "sample_ct"
    img = str(d / "sub-ct_label-22_ct.nii.gz")
    msk = str(d / "sub-ct_seg-subreg_label-22_msk.nii.gz")
    rois = pd.DataFrame({"patient_id": ["tptbox"] * 2, "roi": ["cortical", "cancellous"],
                         "image": [img] * 2, "mask": [msk] * 2, "label": [49, 50]})
    s = {"setting": {"binWidth": 25},
         "imageType": {"Original": {}, "Wavelet": {}, "LoG": {"sigma": [1.0, 3.0, 5.0]},
                       "Square": {}, "SquareRoot": {}, "Logarithm": {}, "Exponential": {},
                       "Gradient": {}},
         "featureClass": {"shape": [], "firstorder": [], "glcm": ["Correlation", "Idmn"],
                          "glszm": ["ZoneEntropy"], "ngtdm": ["Busyness"]}}
    _assert_same(_naive(rois, s), features.extract(rois, s, n_jobs=2, progress=False))


@pytest.mark.realdata
def test_quick_benchmark_runs_and_agrees(shared_data, capsys):
    assert _bench().main(["--quick", "--data", str(shared_data)]) == 0
    out = capsys.readouterr().out
    assert "speed ratio" in out and "worst relative difference 0.00e+00" in out


@pytest.mark.realdata
@pytest.mark.slow
def test_real_ct_ten_rois_equal_naive(shared_data, tmp_path):
    """Point 5: totalseg DICOM T11/T12 + 3 mm CT L1-L4 cortical/cancellous, all image types."""
    bench = _bench()
    rois = bench.build_rois(shared_data, tmp_path)
    assert len(rois) == 10
    got = features.extract(rois, bench.FULL_SETTINGS, n_jobs=2, progress=False)
    table = bench.compare(bench.naive(rois, bench.FULL_SETTINGS), got)
    assert table["worst_rel_diff"].max() <= 1e-6, table[table["worst_rel_diff"] > 0]


# pyradiomics' own regression baselines (issue 10): brain1, brain2, breast1, every
# configuration column they have; pyradiomics' tests accept < 3 % relative difference
# (tests/testUtils.py: ``percentDiff < 0.03``), old baselines predate some definition changes.
BASELINE_CASES = ("brain1", "brain2", "breast1")


def _baseline_runs(folder: Path):
    runs: dict[tuple, dict] = {}
    for csv in sorted((folder / "baseline").glob("baseline_*.csv")):
        cls = csv.stem[len("baseline_"):]
        table = pd.read_csv(csv, index_col=0)
        for col in table.columns:
            case = col.split("_")[0]
            if case not in BASELINE_CASES:
                continue
            settings = ast.literal_eval(table.loc["diagnostics_Configuration_Settings", col])
            types = ast.literal_eval(table.loc["diagnostics_Configuration_EnabledImageTypes", col])
            key = (case, repr(sorted(settings.items())), repr(types))
            run = runs.setdefault(key, {"case": case, "column": col, "settings": settings,
                                        "types": types, "expected": {}})
            for name, val in table[col].items():
                if name.startswith("original_"):
                    run["expected"][name] = (cls, float(val))
    return list(runs.values())


def _largest_slice_case(folder: Path, case: str, out: Path) -> tuple[str, str]:
    """shape2D baselines are computed on the mask's largest axial slice, as a 1-slice volume."""
    img = sitk.ReadImage(str(folder / f"{case}_image.nrrd"))
    msk = sitk.ReadImage(str(folder / f"{case}_label.nrrd"))
    z = int(np.argmax((sitk.GetArrayViewFromImage(msk) == 1).sum(axis=(1, 2))))
    paths = (str(out / f"{case}_2d_image.nrrd"), str(out / f"{case}_2d_label.nrrd"))
    sitk.WriteImage(img[:, :, z:z + 1], paths[0])
    sitk.WriteImage(msk[:, :, z:z + 1], paths[1])
    return paths


@pytest.mark.realdata
def test_pyradiomics_baselines_reproduced(shared_data, tmp_path):
    folder = shared_data / "pyradiomics"
    worst: dict[str, tuple[float, str]] = {}
    compared = 0
    for run in _baseline_runs(folder):
        setting = {k: v for k, v in run["settings"].items()
                   if k not in ("label", "additionalInfo") and v is not None}
        classes = sorted({cls for cls, _ in run["expected"].values()})
        s = {"setting": setting, "imageType": run["types"], "featureClass": {c: [] for c in classes}}
        if "shape2D" in classes:
            image, mask = _largest_slice_case(folder, run["case"], tmp_path)
        else:
            image = str(folder / f"{run['case']}_image.nrrd")
            mask = str(folder / f"{run['case']}_label.nrrd")
        rois = pd.DataFrame({"patient_id": [run["case"]], "roi": [run["column"]],
                             "image": [image], "mask": [mask], "label": [1]})
        got, fails = features.extract_with_failures(rois, s, n_jobs=1, progress=False)
        assert fails.empty, fails["reason"].tolist()
        for name, (cls, expected) in run["expected"].items():
            if name not in got.columns:
                continue  # deprecated in pyradiomics 3 (e.g. glcm SumAverage, Homogeneity1)
            value = float(got[name].iloc[0])
            rel = 0.0 if value == expected else abs(value - expected) / max(abs(expected), 1e-12)
            compared += 1
            if rel > worst.get(cls, (-1.0, ""))[0]:
                worst[cls] = (rel, f"{run['column']}:{name}")
    report = {cls: f"{rel:.2e} ({where})" for cls, (rel, where) in sorted(worst.items())}
    print("worst relative difference per class vs pyradiomics baselines:", report)
    assert compared > 1500
    assert set(worst) >= {"firstorder", "glcm", "glrlm", "glszm", "gldm", "ngtdm", "shape",
                          "shape2D"}
    # pyradiomics' own tolerance is 3 %; we reproduce the baselines far closer. The one larger
    # gap is shape (~1e-3, SurfaceVolumeRatio of the plain brain1/brain2/breast1 columns, which
    # were generated by pyradiomics 1.3 before its mesh-based shape features were revised).
    assert worst["shape"][0] < 3e-3, report
    assert all(rel < 1e-9 for cls, (rel, _) in worst.items() if cls != "shape"), report


def test_scans_read_while_workers_start_give_the_same_table(cohort, monkeypatch):
    # extract reads the first scans itself while the worker processes start and sends them with
    # the units: force that path (as if the start took long) and compare with one process
    s = {**FAST, "imageType": {"Original": {}, "Wavelet": {}}}
    one = features.extract(cohort, s, n_jobs=1, progress=False)

    class _Starting:
        def is_alive(self):
            return True

    read = []
    original = features._read_while_starting

    def spy(units, starting, n_jobs):
        out = original(units, _Starting(), n_jobs)
        read.append(len(out))
        return out

    monkeypatch.setattr(features, "_read_while_starting", spy)
    features.shutdown_workers()
    two = features.extract(cohort, s, n_jobs=2, progress=False)
    assert read and read[0] >= 1
    pd.testing.assert_frame_equal(one, two)


def test_cache_unit_write_is_all_or_nothing(tmp_path, monkeypatch):
    # a unit's entries become visible only after one flush to disk; a failure (or a kill)
    # before that leaves no entry and no temporary file
    cache = features._Cache(tmp_path)
    items = [(f"{i:02d}" + "ab" * 31, {"features": {"x": float(i)}}) for i in range(5)]

    def boom(folder, files):
        assert all(Path(f).exists() and f.endswith(".tmp") for f in files)
        assert not list(tmp_path.rglob("*.json"))  # nothing visible before the flush
        raise OSError("disk full")

    monkeypatch.setattr(features, "_flush_to_disk", boom)
    with pytest.raises(OSError):
        cache.put_many(items)
    assert not list(tmp_path.rglob("*.json")) and not list(tmp_path.rglob("*.tmp"))
    monkeypatch.undo()
    cache.put_many(items)
    assert not list(tmp_path.rglob("*.tmp"))
    for key, entry in items:
        assert cache.get(key) == {**entry, "key": key}


def _bin_edges_cases(rng):
    yield rng.integers(-1200, 2400, 5000).astype(np.int16)      # CT-like integers
    yield rng.normal(300.0, 80.0, 3000)                         # a filtered image
    yield rng.normal(0.0, 1e-3, 2000).astype(np.float32)        # float32, around zero
    yield np.full(50, 75.0)                                     # flat, a multiple of the width
    yield np.full(7, 13.0)                                      # flat, not a multiple
    yield np.array([5.0])                                       # one voxel
    yield np.array([0.0, -0.0, 3.0, -7.0])                      # signed zeros, min < 0
    yield np.array([-0.0, 0.0, 30.0])                           # the first zero is -0.0
    yield np.array([0.0, -0.0, 30.0])                           # the first zero is +0.0
    yield np.array([-5.0, -0.0, 0.0])                           # the maximum is a zero
    yield np.array([1.0, np.nan, 3.0])                          # NaN: pyradiomics' own path
    yield np.arange(-50, 51, 25, dtype=np.int64)                # edges on the values
    yield np.array([3, 7, 200], dtype=np.uint8)                 # unsigned
    yield np.array([True, False, True])                         # a boolean map


def test_fast_bin_edges_equal_pyradiomics_bit_for_bit(rng):
    # extract's work units compute pyradiomics' bin edges with ndarray.min/max instead of the
    # builtins: same edges, same dtype, same sign of every zero, for every bin width
    from radiomics import imageoperations

    original = imageoperations.getBinEdges
    features._GET_BIN_EDGES = original
    n = 0
    for values in _bin_edges_cases(rng):
        for width in (25, 0.5, 3, 1e-4):
            ref = np.asarray(original(values.copy(), binWidth=width))
            got = np.asarray(features._bin_edges(values.copy(), binWidth=width))
            assert ref.dtype == got.dtype and ref.shape == got.shape, (values[:4], width)
            assert np.array_equal(np.signbit(ref), np.signbit(got)), (values[:4], width)
            assert np.array_equal(ref, got, equal_nan=True), (values[:4], width)
            n += 1
    assert n == 56
    # fixed bin count and an empty array are pyradiomics' own
    v = rng.normal(size=100)
    assert np.array_equal(features._bin_edges(v, binCount=16), original(v, binCount=16))
    with pytest.raises(ValueError):
        features._bin_edges(np.array([]), binWidth=25)
    with pytest.raises(ValueError):
        original(np.array([]), binWidth=25)


def test_fast_bin_edges_only_during_a_unit(cohort):
    # pyradiomics' own getBinEdges is back after extract, also after units ran in threads of
    # one process, and a caller's pyradiomics in the same session gives the same features
    import threading

    from radiomics import featureextractor, imageoperations

    original = imageoperations.getBinEdges
    seen = []

    def probe():
        with features._fast_bin_edges():
            seen.append(imageoperations.getBinEdges is features._bin_edges)
            time.sleep(0.05)

    threads = [threading.Thread(target=probe) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == [True] * 4 and imageoperations.getBinEdges is original
    r = cohort.iloc[0]
    s = {**FAST, "imageType": {"Original": {}, "Wavelet": {}}}
    ours = features.extract(cohort.iloc[:1], s, n_jobs=1, progress=False)
    assert imageoperations.getBinEdges is original
    ex = featureextractor.RadiomicsFeatureExtractor(s)
    ref = {k: float(v) for k, v in ex.execute(r["image"], r["mask"], label=int(r["label"])).items()
           if not k.startswith("diagnostics")}
    assert len(ref) == 27 and all(ours[k].iat[0] == v for k, v in ref.items())

