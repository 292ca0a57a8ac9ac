"""Simulated metastasis cohort: contract, determinism, balance, and signal=0 means no class effect."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from scipy import stats

from vcfnb import io, synth


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    return synth.make_cohort("metastasis", tmp_path_factory.mktemp("m1"), size="smoke", seed=3)


def _roi_means(cohort) -> pd.DataFrame:
    rows = []
    for r in cohort.rois.itertuples():
        img = sitk.GetArrayFromImage(io.read_image(r.image))
        m = sitk.GetArrayFromImage(io.read_image(r.mask)) == r.label
        rows.append({"patient_id": r.patient_id, "sequence": r.sequence,
                     "mean": float(img[m].mean()), "sd": float(img[m].std()),
                     "volume": int(m.sum())})
    return rows and pd.DataFrame(rows).pivot(index="patient_id", columns="sequence")


def test_contract_and_balance(smoke):
    c = io.load_cohort(smoke)
    assert c.problems.empty and c.simulated
    assert len(c.cases) == 36 and c.cases.outcome.sum() == 12
    assert len(c.rois) == 3 * 36
    assert set(c.rois.sequence) == {"T1", "T2", "FS-T2"}
    assert "SIMULATED" in (smoke / "README.md").read_text(encoding="utf-8")
    for col in ("si_t1", "si_t2", "si_fst2", "soft_tissue_mass", "severe_compression",
                "primary_tumor", "location", "mvr", "lesion_type"):
        assert col in c.cases
    assert set(c.cases.si_fst2) <= {"low", "high"}


def test_paper_size_counts():
    assert synth.metastasis.SIZES["paper"] == (26, 52)


def test_deterministic(smoke, tmp_path):
    again = synth.make_cohort("metastasis", tmp_path / "m2", size="smoke", seed=3)
    for rel in ("cases.csv", "rois.csv", "images/M001_T2.nii.gz", "masks/M005_FST2_lesion.nii.gz"):
        assert (smoke / rel).read_bytes() == (again / rel).read_bytes(), rel
    other = synth.make_cohort("metastasis", tmp_path / "m3", size="smoke", seed=4)
    assert (smoke / "cases.csv").read_bytes() != (other / "cases.csv").read_bytes()


def test_reuses_complete_cohort(smoke):
    stamp = (smoke / "cohort.json").stat().st_mtime_ns
    synth.make_cohort("metastasis", smoke, size="smoke", seed=3)
    assert (smoke / "cohort.json").stat().st_mtime_ns == stamp


def test_wide_by_sequence_one_row_per_patient():
    """vcfnb.features.wide_by_sequence (the notebook calls it directly): long → wide."""
    from vcfnb import features

    long = pd.DataFrame({
        "patient_id": ["M2", "M2", "M2", "M1", "M1"], "roi": "lesion", "reader": "1",
        "sequence": ["T1", "T2", "FS-T2", "T2", "T1"],
        "original_firstorder_Mean": [1.0, 2.0, 3.0, 4.0, 5.0],
        "original_glcm_Contrast": [10.0, 20.0, 30.0, 40.0, 50.0],
    })
    wide = features.wide_by_sequence(long)
    assert list(wide.index) == ["M1", "M2"]
    assert list(wide.columns) == [f"{s}_original_{f}" for s in ("FS-T2", "T1", "T2")
                                  for f in ("firstorder_Mean", "glcm_Contrast")]
    assert wide.loc["M2", "T2_original_glcm_Contrast"] == 20.0
    assert wide.loc["M1", "T1_original_firstorder_Mean"] == 5.0
    assert np.isnan(wide.loc["M1", "FS-T2_original_firstorder_Mean"])  # sequence missing
    with pytest.raises(ValueError):  # two readers: one row per (patient, sequence) required
        features.wide_by_sequence(pd.concat([long, long.assign(reader="2")]))


@pytest.mark.slow
def test_signal_effect_and_negative_control(tmp_path):
    """signal=1: blastic lesions darker on T2 and higher MVR; signal=0: no feature differs."""
    opts = {"n_blastic": 30, "n_lytic": 30}
    on = io.load_cohort(synth.make_cohort("metastasis", tmp_path / "on", seed=1, signal=1.0, **opts))
    off = io.load_cohort(synth.make_cohort("metastasis", tmp_path / "off", seed=1, signal=0.0, **opts))
    p_on, p_off = [], []
    for c, sink in ((on, p_on), (off, p_off)):
        feats = _roi_means(c)
        feats.columns = [f"{a}_{b}" for a, b in feats.columns]
        y = c.cases.set_index("patient_id").loc[feats.index, "outcome"].to_numpy()
        table = feats.join(c.cases.set_index("patient_id")[["mvr", "soft_tissue_mass"]])
        for col in table:
            x = table[col].to_numpy(float)
            sink.append(stats.mannwhitneyu(x[y == 1], x[y == 0]).pvalue)
    assert min(p_on) < 1e-4  # a real class effect
    assert min(p_off) > 0.05 / len(p_off)  # no feature significant after Bonferroni
    # categorical reads carry no class information either
    for col in ("si_t2", "primary_tumor", "location"):
        tab = pd.crosstab(off.cases[col], off.cases.outcome)
        assert stats.chi2_contingency(tab).pvalue > 0.001


def test_concurrent_requests_for_one_folder_take_turns(tmp_path, monkeypatch):
    """Two runner lanes asking for the same cohort: one generates it, the other waits for the
    lock and reuses it (before the lock both wrote the same files at once)."""
    import threading
    import time

    calls = []
    real = synth.importlib.import_module(synth.STUDIES["metastasis"])

    class Slow:
        @staticmethod
        def generate(out, **kw):
            t0 = time.monotonic()
            time.sleep(0.3)
            path = real.generate(out, **kw)
            calls.append((t0, time.monotonic()))
            return path

    monkeypatch.setattr(synth.importlib, "import_module", lambda name: Slow)
    out = tmp_path / "shared"
    errors = []

    def ask():
        try:
            synth.make_cohort("metastasis", out, size="smoke", seed=3)
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=ask) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(calls) == 1  # generated once, reused by the other request
    assert io.load_cohort(out).problems.empty
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []  # no lock file
