"""vcfnb.morphometry on synthetic wedge-shaped bodies in several orientations, and grading."""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from vcfnb import morphometry as mo

HALF_LR, HALF_AP = 15.0, 17.0  # body half-widths, mm


def _height(a, ha, hp):
    """Body height at antero-posterior coordinate a (mm, anterior positive): linear wedge."""
    return hp + (ha - hp) * (a + HALF_AP) / (2 * HALF_AP)


def _phantom(direction, spacing=(1.0, 1.0, 1.0), size=(50, 50, 50), ha=18.0, hp=26.0,
             tilt_deg=0.0, label=1) -> sitk.Image:
    """Wedge body drawn in physical space on an arbitrary grid centred at the origin.

    Body frame: l = patient left (LPS +x), a = anterior (LPS -y), s = superior (LPS +z), the
    body optionally tilted by ``tilt_deg`` about the left-right axis (its height axis then
    points along ``_tilted_axis(tilt_deg)``).
    """
    img = sitk.Image(size, sitk.sitkUInt8)
    img.SetSpacing(spacing)
    img.SetDirection(direction)
    d = np.asarray(direction, float).reshape(3, 3)
    centre_index = (np.asarray(size) - 1) / 2
    img.SetOrigin((-(d @ (centre_index * np.asarray(spacing)))).tolist())
    z, y, x = np.indices(size[::-1]).astype(float)
    idx = np.stack([x, y, z], axis=-1) * np.asarray(spacing)
    phys = idx @ d.T + np.asarray(img.GetOrigin())
    t = np.deg2rad(tilt_deg)
    lr = phys[..., 0]
    ant0, sup0 = -phys[..., 1], phys[..., 2]
    a = np.cos(t) * ant0 - np.sin(t) * sup0
    s = np.sin(t) * ant0 + np.cos(t) * sup0
    inside = ((np.abs(lr) <= HALF_LR) & (np.abs(a) <= HALF_AP)
              & (np.abs(s) <= _height(a, ha, hp) / 2))
    out = sitk.GetImageFromArray((inside * label).astype(np.uint8))
    out.CopyInformation(img)
    return out


def _tilted_axis(tilt_deg):
    t = np.deg2rad(tilt_deg)
    # body superior axis (a = 0, s = 1 in body frame) in LPS: anterior = -y
    ant0, sup0 = np.sin(t), np.cos(t)
    return np.array([0.0, -ant0, sup0])


def _expected(ha, hp, erosion=3.0, positions=(0.15, 0.5, 0.85)):
    a0, a1 = -HALF_AP + erosion, HALF_AP - erosion
    post, mid, ant = (_height(a0 + p * (a1 - a0), ha, hp) for p in positions)
    return {"anterior_mm": ant, "middle_mm": mid, "posterior_mm": post}


RAS = (-1, 0, 0, 0, -1, 0, 0, 0, 1)
LPS = (1, 0, 0, 0, 1, 0, 0, 0, 1)
SAGITTAL = (0, 0, -1, 1, 0, 0, 0, -1, 0)  # TPTBox sample_ct's direction (x=P, y=I, z=R)
c, s = np.cos(np.deg2rad(25)), np.sin(np.deg2rad(25))
OBLIQUE = (c, -s, 0, s, c, 0, 0, 0, 1)  # rotated 25 degrees about the z axis


@pytest.mark.parametrize("direction", [RAS, LPS, SAGITTAL, OBLIQUE],
                         ids=["RAS", "LPS", "sagittal", "oblique"])
def test_wedge_heights_any_orientation(direction):
    m = _phantom(direction)
    got = mo.vertebral_heights(m, 1, slice_selection="centroid")
    want = _expected(18.0, 26.0)
    for k in mo.HEIGHT_KEYS:
        assert got[k] == pytest.approx(want[k], abs=1.0), (k, got, want)
    assert got["anterior_mm"] < got["middle_mm"] < got["posterior_mm"]


def test_reoriented_copies_give_identical_heights():
    m = _phantom(RAS, spacing=(1.0, 1.2, 1.5), size=(40, 40, 30))
    ref = mo.vertebral_heights(m)
    for orient in ("LPS", "PIR", "ASL"):
        r = sitk.PermuteAxes(sitk.DICOMOrient(m, orient), [2, 0, 1])
        got = mo.vertebral_heights(r)
        for k in mo.HEIGHT_KEYS:
            assert got[k] == pytest.approx(ref[k], abs=1e-6), orient


def test_tilted_body_needs_its_height_axis():
    m = _phantom(LPS, tilt_deg=20.0, ha=20.0, hp=20.0)
    aligned = mo.vertebral_heights(m, height_axis=_tilted_axis(20.0), slice_selection="centroid")
    for k in mo.HEIGHT_KEYS:
        assert aligned[k] == pytest.approx(20.0, abs=1.0)
    naive = mo.vertebral_heights(m, slice_selection="centroid")  # vertical extent instead
    assert naive["middle_mm"] == pytest.approx(20.0 / np.cos(np.deg2rad(20.0)), abs=1.0)
    assert naive["middle_mm"] > aligned["middle_mm"] + 0.6


def test_anisotropic_grid_and_sampling_resolution():
    m = _phantom(RAS, spacing=(0.8, 0.8, 2.5), size=(60, 60, 20))
    want = _expected(18.0, 26.0)
    results = []
    for res in (None, 0.2):
        got = mo.vertebral_heights(m, resolution_mm=res, slice_selection="centroid")
        results.append(got)
        for k in mo.HEIGHT_KEYS:  # heights are voxelised in 2.5 mm steps
            assert got[k] == pytest.approx(want[k], abs=2.5)
    # boundaries are located by interpolation: the sampling step barely matters
    for k in mo.HEIGHT_KEYS:
        assert results[0][k] == pytest.approx(results[1][k], abs=0.3)


def test_max_spread_picks_the_most_deformed_plane():
    m = _phantom(LPS, ha=26.0, hp=26.0)  # 50^3 voxels of 1 mm centred at 0: coord = index - 24.5
    arr = sitk.GetArrayFromImage(m)
    # crush the anterior part (a > 7 mm: y index < 18) of the left half (l > 1.5 mm: x index
    # >= 26) to a height of 17 mm; the centroid plane stays intact
    keep = np.zeros_like(arr)
    keep[25 - 8: 25 + 9] = 1
    arr[:, :18, 26:] &= keep[:, :18, 26:]
    mm = sitk.GetImageFromArray(arr)
    mm.CopyInformation(m)
    centre = mo.vertebral_heights(mm, slice_selection="centroid")
    spread = mo.vertebral_heights(mm)
    assert centre["anterior_mm"] == pytest.approx(26.0, abs=1.0)
    assert spread["anterior_mm"] == pytest.approx(17.0, abs=1.0)
    assert spread["posterior_mm"] == pytest.approx(26.0, abs=1.0)


def test_spine_morphometry_uses_neighbours_body_mask_and_skips_border():
    size = (40, 40, 100)
    img = sitk.Image(size, sitk.sitkUInt8)
    arr = np.zeros(size[::-1], np.uint8)
    body = np.zeros_like(arr)
    # four stacked bodies (z = superior) with a posterior "arch" outside the body mask;
    # the first touches the image border (z = 0) and only serves for the height axis
    for lab, (z0, z1) in zip((4, 3, 2, 1), ((0, 16), (22, 44), (50, 72), (78, 96)), strict=True):
        arr[z0:z1, 8:30, 10:30] = lab
        arr[z0 + 5:z1 - 5, 30:38, 15:25] = lab  # arch (posterior: larger y in LPS)
        body[z0:z1, 8:30, 10:30] = 1
    m = sitk.GetImageFromArray(arr)
    m.CopyInformation(img)
    b = sitk.GetImageFromArray(body)
    b.CopyInformation(img)
    labels = {"L1": 1, "L2": 2, "L3": 3, "L4": 4}  # L1 most cranial = highest z
    t = mo.spine_morphometry(m, labels, body_mask=b)
    assert list(t.index) == ["L1", "L2", "L3"]  # L4 touches the border
    assert t.loc["L2", "anterior_mm"] == pytest.approx(22.0, abs=0.5)
    assert t.loc["L2", "posterior_mm"] == pytest.approx(22.0, abs=0.5)
    assert set(t.columns) >= {"wedge_ratio", "height_loss", "genant_grade", "anterior_wedge",
                              "severe_compression"}
    assert (t["genant_grade"] == 0).all() and not t["anterior_wedge"].any()
    t2 = mo.spine_morphometry(m, labels, body_mask=b, measure=["L4"])
    assert list(t2.index) == ["L4"]
    with pytest.raises(ValueError, match="absent"):
        mo.spine_morphometry(m, {**labels, "T12": 9}, body_mask=b, measure=["T12"])
    with pytest.raises(ValueError, match="grid"):
        mo.spine_morphometry(m, labels, body_mask=sitk.Image(10, 10, 10, sitk.sitkUInt8))


def test_errors():
    m = _phantom(LPS, size=(40, 40, 40))
    with pytest.raises(ValueError, match="no voxel with label 5"):
        mo.vertebral_heights(m, 5)
    with pytest.raises(ValueError, match="positions"):
        mo.vertebral_heights(m, positions=(0.1, 0.5))
    with pytest.raises(ValueError, match="slice_selection"):
        mo.vertebral_heights(m, slice_selection="middle")
    with pytest.raises(ValueError, match="left-right"):
        mo.vertebral_heights(m, height_axis=(1, 0, 0))


# ------------------------------------------------------------------------------- grading
def _h(a, m, p):
    return {"anterior_mm": a, "middle_mm": m, "posterior_mm": p}


@pytest.mark.parametrize("loss, grade", [(0.0, 0), (0.19, 0), (0.20, 1), (0.249, 1),
                                         (0.25, 2), (0.40, 2), (0.41, 3), (0.7, 3)])
def test_genant_grade_boundaries(loss, grade):
    assert mo.genant_grade(_h(20 * (1 - loss), 20, 20)) == grade
    # the same loss measured against reference heights (crush: all three heights lower)
    ref = _h(25, 25, 25)
    assert mo.genant_grade(_h(*(25 * (1 - loss),) * 3), ref) == grade


def test_height_ratios_and_loss():
    r = mo.height_ratios(_h(15, 18, 20))
    assert r["wedge_ratio"] == pytest.approx(0.75)
    assert r["biconcavity_ratio"] == pytest.approx(0.9)
    assert r["crush_ratio"] == pytest.approx(20 / 18)
    assert r["height_loss"] == pytest.approx(0.25)
    assert mo.height_loss(_h(20, 20, 20)) == 0.0
    assert np.isnan(mo.height_loss(_h(np.nan, 20, 20)))
    assert mo.genant_grade(_h(np.nan, 20, 20)) == -1
    with pytest.raises(ValueError, match="positive"):
        mo.height_loss(_h(1, 1, 1), _h(0, 1, 1))


def test_semantic_flags():
    wedge = mo.semantic_from_morphometry(_h(14, 18, 20))
    assert wedge == {"anterior_wedge": True, "severe_compression": False}
    biconcave = mo.semantic_from_morphometry(_h(20, 12, 20))
    assert biconcave == {"anterior_wedge": False, "severe_compression": False}
    crush = mo.semantic_from_morphometry(_h(11, 11, 11), _h(24, 24, 24))
    assert crush == {"anterior_wedge": False, "severe_compression": True}
    assert mo.semantic_from_morphometry(_h(9, 15, 20))["severe_compression"]
    assert not mo.semantic_from_morphometry(_h(10, 15, 20))["severe_compression"]  # exactly 50 %
    assert mo.semantic_from_morphometry(_h(np.nan, 1, 1)) == {"anterior_wedge": False,
                                                              "severe_compression": False}
