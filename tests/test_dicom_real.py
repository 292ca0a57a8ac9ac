"""DICOM in (issue 10): a real CT DICOM series through the cohort contract and extraction.

``../shared/data/totalseg/example_ct_dicom`` (20 axial slices, 512 x 512, 0.98 x 0.98 x 2 mm)
with TotalSegmentator's label map ``example_seg_dicom.nii.gz`` (32 = T12, 33 = T11). The label
map has the CT's size and spacing but its y axis is flipped (direction -1, another origin): a
header copy would put the labels on the wrong rows; it must be resampled onto the CT grid in
physical space (nearest neighbour).

Measured on 2026-11-22 (vcfnb 0.1.0, pyradiomics-bhklab 3.1.4):

- ``load_cohort(mask_grid="strict")`` rejects both rows (origin and direction mismatch, naming
  the mask file); ``mask_grid="resample"`` accepts them with ``resample_mask`` set;
- after nearest-neighbour resampling onto the CT grid the label voxel counts equal the label
  map's exactly (T12 23576, T11 9930), the centres of mass are unchanged in physical space
  and T11 lies 12.6 mm superior to T12; mean CT number inside the labels 267 HU (T12) and
  292 HU (T11) -- bone -- against -273 / -341 HU if the header were copied instead;
- ``vcfnb.features.extract`` honours the ``resample_mask`` flag (nearest-neighbour resampling
  of the mask onto the image grid in physical space, ``vcfnb.preprocess.resample_to_reference``)
  so plain settings extract both vertebrae; pyradiomics' own ``correctMask: True`` does the same
  resampling and is checked below too.
"""
from __future__ import annotations

import glob
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from vcfnb import features, io

pytestmark = pytest.mark.realdata

LABELS = {"T12": 32, "T11": 33}
SETTINGS = {"setting": {"binWidth": 25}, "imageType": {"Original": {}},
            "featureClass": {"shape": ["VoxelVolume"], "firstorder": ["Mean", "Median"]},
            "vcfnb": {"diagnostics": True}}


@pytest.fixture(scope="module")
def totalseg(shared_data):
    folder = shared_data / "totalseg"
    dicom, seg = folder / "example_ct_dicom", folder / "example_seg_dicom.nii.gz"
    if not dicom.is_dir() or not seg.is_file():
        pytest.skip(f"{folder} lacks example_ct_dicom/ or example_seg_dicom.nii.gz")
    return dicom, seg


@pytest.fixture(scope="module")
def cohort_folder(totalseg, tmp_path_factory):
    """A contract cohort folder: image = a symlink to the DICOM folder, mask = a relative path."""
    dicom, seg = totalseg
    folder = tmp_path_factory.mktemp("dicom_cohort")
    (folder / "scans").mkdir()
    os.symlink(dicom, folder / "scans" / "ct_dicom")
    rel_mask = os.path.relpath(seg, folder)
    assert not Path(rel_mask).is_absolute()
    cases = pd.DataFrame({"patient_id": ["totalseg_example"]})
    rois = pd.DataFrame({"patient_id": "totalseg_example", "roi": list(LABELS),
                         "sequence": "CT", "reader": "1", "image": "scans/ct_dicom",
                         "mask": rel_mask, "label": list(LABELS.values())})
    return io.write_cohort(folder, cases, rois)


@pytest.fixture(scope="module")
def label_map(totalseg):
    """Voxel count and physical centre of mass of each label in the original NIfTI label map."""
    seg = sitk.ReadImage(str(totalseg[1]))
    arr = sitk.GetArrayFromImage(seg)
    out = {}
    for roi, lab in LABELS.items():
        idx = np.argwhere(arr == lab)[:, ::-1].mean(0)        # (x, y, z) index centroid
        zyx = np.argwhere(arr == lab)
        lo, hi = zyx.min(0)[::-1], zyx.max(0)[::-1]
        out[roi] = {"count": int((arr == lab).sum()),
                    "box": [*lo.tolist(), *(hi - lo + 1).tolist()],  # pyradiomics (x, y, z, sx, sy, sz)
                    "com": np.asarray(seg.TransformContinuousIndexToPhysicalPoint(idx.tolist()))}
    return out


def test_read_image_dicom_series_without_identifiers(totalseg):
    dicom, _ = totalseg
    img = io.read_image(dicom)
    assert img.GetSize() == (512, 512, 20)
    assert img.GetSpacing() == pytest.approx((0.9765625, 0.9765625, 2.0))
    assert img.GetMetaDataKeys() == ()
    # same voxels and geometry as SimpleITK's own series reader
    ref = sitk.ReadImage(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(dicom)))
    assert img.GetOrigin() == pytest.approx(ref.GetOrigin())
    assert np.array_equal(sitk.GetArrayViewFromImage(img), sitk.GetArrayViewFromImage(ref))
    # a single slice read by SimpleITK carries the patient module; read_image drops it
    one = sorted(glob.glob(str(dicom / "*")))[0]
    assert "0010|0010" in sitk.ReadImage(one).GetMetaDataKeys()
    assert io.read_image(one).GetMetaDataKeys() == ()


def test_strict_mask_grid_reports_mismatch_naming_the_file(cohort_folder):
    c = io.load_cohort(cohort_folder, mask_grid="strict", require_outcome=False)
    assert c.rois.empty
    assert len(c.problems) == 2
    assert list(c.problems["row"]) == ["rois.csv:1", "rois.csv:2"]
    for _, p in c.problems.iterrows():
        assert p["file"].endswith("example_seg_dicom.nii.gz")
        assert "geometry mismatch" in p["problem"]
        assert "origin" in p["problem"] and "direction" in p["problem"]


@pytest.fixture(scope="module")
def resampled(cohort_folder):
    return io.load_cohort(cohort_folder, mask_grid="resample", require_outcome=False)


def test_resample_mask_grid_accepts_and_flags(resampled, totalseg):
    c = resampled
    assert c.problems.empty
    assert list(c.rois["roi"]) == ["T12", "T11"]
    assert c.rois["resample_mask"].tolist() == [True, True]
    assert Path(c.rois["image"].iloc[0]) == totalseg[0].resolve()    # symlink followed
    assert Path(c.rois["image"].iloc[0]).is_dir()


@pytest.fixture(scope="module")
def extracted(resampled, tmp_path_factory):
    """Both vertebrae extracted, the masks resampled onto the CT grid by vcfnb."""
    c = resampled
    feats = features.extract(c.rois, SETTINGS, n_jobs=1, progress=False,
                             cache_dir=tmp_path_factory.mktemp("dicom_cache"))
    return c, feats


def test_extract_honours_resample_mask_flag(resampled, tmp_path):
    feats = features.extract(resampled.rois, SETTINGS, n_jobs=1, progress=False, cache_dir=tmp_path)
    assert features.failures_table(feats).empty
    assert feats["original_firstorder_Mean"].notna().all()


def test_both_vertebrae_extracted_on_ct_grid(extracted, label_map):
    c, feats = extracted
    assert features.failures_table(feats).empty
    assert list(feats["roi"]) == ["T12", "T11"]
    feats = feats.set_index("roi")
    for roi in LABELS:
        row = feats.loc[roi]
        # the mask pyradiomics saw is already on the CT grid (resampled by vcfnb)
        assert row["diagnostics_Mask-original_Size"] == "(512, 512, 20)"
        n = float(row["diagnostics_Mask-original_VoxelNum"])
        assert n == pytest.approx(label_map[roi]["count"], rel=0.02)
        assert row["original_shape_VoxelVolume"] == pytest.approx(n * 0.9765625 ** 2 * 2.0)
        # bone, not the soft tissue/air a header copy would have put under the labels
        assert 150 < row["original_firstorder_Mean"] < 500


def test_geometry_matches_the_nifti_label_map(extracted, label_map, totalseg):
    _, feats = extracted
    feats = feats.set_index("roi")
    ct = io.read_image(totalseg[0])
    com = {}
    for roi in LABELS:
        text = feats.loc[roi, "diagnostics_Mask-original_CenterOfMass"]
        com[roi] = np.array([float(v) for v in text.strip("()").split(",")])
        # physical centre of mass unchanged by the resampling (within a voxel)
        assert np.allclose(com[roi], label_map[roi]["com"], atol=1.0)
        # y axis flipped: the label map's row box maps to the mirrored rows of the CT
        box0 = label_map[roi]["box"]
        box1 = [int(v) for v in feats.loc[roi, "diagnostics_Mask-original_BoundingBox"]
                .strip("()").split(",")]
        assert box1[0] == box0[0] and box1[2] == box0[2] and box1[3:] == box0[3:]
        assert box1[1] == ct.GetSize()[1] - (box0[1] + box0[4])
    # T11 lies superior to T12 (DICOM/LPS: +z is superior), about one vertebra apart
    assert com["T11"][2] > com["T12"][2]
    assert 5.0 < com["T11"][2] - com["T12"][2] < 40.0


def test_header_copy_would_misplace_labels(totalseg):
    """The trap the resampling avoids: copying the CT header onto the label map."""
    dicom, seg_path = totalseg
    ct = sitk.GetArrayFromImage(io.read_image(dicom))
    seg = sitk.GetArrayFromImage(sitk.ReadImage(str(seg_path)))
    assert seg.shape == ct.shape
    for lab in LABELS.values():
        assert ct[seg == lab].mean() < 0    # fat/air under the labels: wrong rows
