"""Simulated osteoporosis cohort: contract, geometry, determinism, balance, DXA rule, signal=0."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from scipy import stats

from vcfnb import io, synth
from vcfnb.studies import osteoporosis as study
from vcfnb.synth import _phantom
from vcfnb.synth import osteoporosis as gen

SMALL = {"n_abnormal": 6, "n_normal": 6, "n_external_abnormal": 3, "n_external_normal": 3}


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return synth.make_cohort("osteoporosis", tmp_path_factory.mktemp("op1"), seed=5, **SMALL)


def _roi_stats(cohort, reader: str = "1") -> pd.DataFrame:
    """Per patient and sequence: mean, SD and voxel count inside the ROIs (mean over L1-L4)."""
    rows = []
    rois = cohort.rois[cohort.rois.reader == reader]
    for (pid, seq), g in rois.groupby(["patient_id", "sequence"]):
        img = sitk.GetArrayFromImage(io.read_image(g.image.iloc[0]))
        msk = sitk.GetArrayFromImage(io.read_image(g["mask"].iloc[0]))
        vals = [(img[msk == lab].mean(), img[msk == lab].std(), (msk == lab).sum())
                for lab in g.label]
        m = np.mean(vals, axis=0)
        rows.append({"patient_id": pid, "sequence": seq, "mean": m[0], "sd": m[1],
                     "volume": m[2]})
    return pd.DataFrame(rows).pivot(index="patient_id", columns="sequence")


def test_contract_geometry_and_balance(small):
    c = io.load_cohort(small)
    assert c.problems.empty and c.simulated
    assert "SIMULATED" in (small / "README.md").read_text(encoding="utf-8")
    cases = c.cases
    assert len(cases) == 18
    internal, external = cases[cases.split != "external"], cases[cases.split == "external"]
    assert internal.outcome.sum() == 6 and len(internal) == 12
    assert external.outcome.sum() == 3 and len(external) == 6
    assert set(external.center) == {"B"} and set(internal.center) == {"A"}
    for col in ("age", "sex", "height_cm", "weight_kg", "bmi", "t_score", "z_score"):
        assert col in cases
    np.testing.assert_allclose(cases.bmi, cases.weight_kg / (cases.height_cm / 100) ** 2,
                               atol=0.01)
    # 4 levels x 2 sequences x 2 readers per patient
    assert len(c.rois) == 18 * 16
    assert set(c.rois.roi) == {"L1", "L2", "L3", "L4"}
    assert set(c.rois.sequence) == {"T1", "T2"}
    img = io.read_image(c.rois.image.iloc[0])
    assert img.GetDirection() == pytest.approx(_phantom.SAGITTAL_DIRECTION)
    arr = sitk.GetArrayFromImage(img)
    assert arr.shape == gen.SHAPE  # (slices, SI, AP)
    m = sitk.GetArrayFromImage(io.read_image(c.rois["mask"].iloc[0]))
    assert set(np.unique(m)) == {0, 1, 2, 3, 4}
    slices = np.flatnonzero((m > 0).any(axis=(1, 2)))
    assert len(slices) == 3 and np.all(np.diff(slices) == 1)  # mid-sagittal slice +/- 1
    # L1 is cranial to L4 (rows run superior -> inferior)
    assert np.argwhere(m == 1)[:, 1].mean() < np.argwhere(m == 4)[:, 1].mean()
    # the cortex is excluded: the ROI never touches the dark cortical shell
    k = slices[1]
    assert arr[k][m[k] > 0].min() > 0.5 * arr[k][m[k] > 0].mean()


def test_outcome_is_the_dxa_rule(small):
    c = io.load_cohort(small)
    rule = study.dxa_rule(c.cases)
    assert rule["agrees"].all()
    young = rule[rule.age < 50]
    old = rule[rule.age >= 50]
    assert ((old.t_score < -1) == (old.abnormal == 1)).all()
    assert ((young.z_score < -2) == (young.abnormal == 1)).all()


def test_readers_differ_slightly(small):
    c = io.load_cohort(small)
    r = c.rois[(c.rois.patient_id == c.cases.patient_id.iloc[0]) & (c.rois.sequence == "T1")]
    a = sitk.GetArrayFromImage(io.read_image(r[r.reader == "1"]["mask"].iloc[0]))
    b = sitk.GetArrayFromImage(io.read_image(r[r.reader == "2"]["mask"].iloc[0]))
    for lab in range(1, 5):
        dice = 2 * ((a == lab) & (b == lab)).sum() / ((a == lab).sum() + (b == lab).sum())
        assert 0.8 < dice < 1.0


def test_sizes():
    assert gen.SIZES["paper"] == ((86, 74), (17, 18))
    assert sum(gen.SIZES["paper"][0]) == 160 and sum(gen.SIZES["paper"][1]) == 35


def test_deterministic(small, tmp_path):
    again = synth.make_cohort("osteoporosis", tmp_path / "a", seed=5, **SMALL)
    for rel in ("cases.csv", "rois.csv", "images/OP001_T1.nii.gz", "images/EX002_T2.nii.gz",
                "masks/OP003_T2_reader2.nii.gz"):
        assert (small / rel).read_bytes() == (again / rel).read_bytes(), rel
    other = synth.make_cohort("osteoporosis", tmp_path / "b", seed=6, **SMALL)
    assert (small / "cases.csv").read_bytes() != (other / "cases.csv").read_bytes()


@pytest.mark.slow
def test_signal_effect_and_negative_control(tmp_path):
    """signal=1: abnormal bone brighter on T1 (marrow fat); signal=0: nothing differs by class."""
    opts = {"n_abnormal": 30, "n_normal": 30, "n_external_abnormal": 3, "n_external_normal": 3}
    on = io.load_cohort(synth.make_cohort("osteoporosis", tmp_path / "on", seed=1, signal=1.0,
                                          **opts))
    off = io.load_cohort(synth.make_cohort("osteoporosis", tmp_path / "off", seed=1, signal=0.0,
                                           **opts))
    p = {}
    for name, c in (("on", on), ("off", off)):
        internal = c.cases[c.cases.split != "external"].set_index("patient_id")
        feats = _roi_stats(c)
        feats.columns = [f"{a}_{b}" for a, b in feats.columns]
        table = feats.loc[internal.index].join(internal[["age", "height_cm", "weight_kg", "bmi"]])
        y = internal.outcome.to_numpy()
        p[name] = {col: stats.mannwhitneyu(table[col][y == 1], table[col][y == 0]).pvalue
                   for col in table}
        p[name]["sex"] = stats.fisher_exact(pd.crosstab(internal.sex, internal.outcome)).pvalue
    assert p["on"]["mean_T1"] < 1e-3  # fatty marrow: brighter T1
    assert min(p["on"].values()) < 1e-4
    assert min(p["off"].values()) > 0.05 / len(p["off"])  # nothing significant after Bonferroni


def test_latent_state_is_the_generated_cohorts_truth(small):
    """`latent_state` replays the generator: the same covariates and DXA scores as the written
    cases, and its marrow fat fraction is what the T1 intensity inside the ROIs follows."""
    c = io.load_cohort(small)
    lat = gen.latent_state(size="paper", seed=5, **SMALL).set_index("patient_id")
    cases = c.cases.set_index("patient_id")
    assert list(lat.index) == list(cases.index)
    for col in ("age", "t_score", "z_score", "outcome"):
        assert (lat[col] == cases[col]).all(), col
    assert set(lat.centre) == {"internal", "external"}
    internal = lat.index[lat.centre == "internal"]
    t1 = _roi_stats(c)[("mean", "T1")].loc[internal]
    r = stats.pearsonr(lat.loc[internal, "fat_fraction_l1_l4"], t1).statistic
    assert r > 0.8, r  # fat shortens T1: the marrow is brighter
    # the truth is drawn before any image: another seed gives other patients
    assert not np.allclose(gen.latent_state(size="paper", seed=6, **SMALL).fat_fraction,
                           lat.fat_fraction)


def test_an_abnormal_dxa_score_never_rounds_onto_the_cutoff():
    """Seed 55 drew a young abnormal patient's Z-score 0.004 below -2: rounded to -2.00 it was
    normal by the rule and the generator stopped on its own assertion. It is now -2.01; every
    cohort that generated before is unchanged (only a rounding onto the cut-off moves)."""
    s = gen.latent_state(size="paper", seed=55).set_index("patient_id")
    assert s.loc["EX024", "outcome"] == 1 and s.loc["EX024", "z_score"] == -2.01
    rule = study.dxa_rule(s.reset_index())
    assert (rule["abnormal"].to_numpy() == s["outcome"].to_numpy()).all()
