"""DICOM SEG and RTSTRUCT masks (issue 19) on a real CT DICOM series.

``../shared/data/totalseg/example_ct_dicom`` (20 axial slices, 512 x 512, 0.98 x 0.98 x 2 mm) is
anonymised down to empty SOP Class/Instance, Study and Series UIDs; the test repairs a copy
(generated UIDs), as an archive would hold it. TotalSegmentator's labels of that series
(``example_seg_dicom.nii.gz``, stored y-flipped: resampled onto the CT grid nearest neighbour)
give T12 (32) and T11 (33). From them the test writes, inside ``tmp_path``:

- a DICOM SEG (highdicom, segments 1 "T12" and 2 "T11"),
- an RTSTRUCT (pydicom; ROIs "T12", "T11"; per slice, closed contours of the label at level 0.5
  by contourpy, in patient coordinates),

names them in ``rois.csv`` and checks that they load without problems, that SEG-based features
equal label-map features (rtol 1e-6), that RTSTRUCT masks reach Dice >= 0.95 and a volume within
5 % of the label map they were drawn from, and that each validation problem names the file.

Measured on 2026-11-30 (highdicom 0.28.2, pydicom 3.0.2): SEG masks equal the label map voxel
for voxel (T12 23576, T11 9930 voxels); RTSTRUCT masks reach Dice 1.000 and volume ratio 1.000
on the series itself and on a NIfTI copy of it.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from vcfnb import dicom_masks, features, io
from vcfnb.preprocess import resample_to_reference

pytestmark = pytest.mark.realdata

LEVELS = {"T12": 32, "T11": 33}
SETTINGS = {"setting": {"binWidth": 25}, "imageType": {"Original": {}},
            "featureClass": {"shape": [], "firstorder": [], "glcm": []}}


# ---------------------------------------------------------------------------------------------
# fixtures: a repaired copy of the public series, a label map, a SEG and an RTSTRUCT
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def source(shared_data):
    folder = shared_data / "totalseg"
    dicom, seg = folder / "example_ct_dicom", folder / "example_seg_dicom.nii.gz"
    if not dicom.is_dir() or not seg.is_file():
        pytest.skip(f"{folder} lacks example_ct_dicom/ or example_seg_dicom.nii.gz")
    return dicom, seg


def _repair_series(src: Path, dst: Path) -> list:
    """Copy a DICOM series, filling the empty SOP Class/Instance, Study and Series UIDs."""
    import pydicom
    from pydicom.uid import generate_uid

    dst.mkdir(parents=True)
    study, series = generate_uid(), generate_uid()
    out = []
    for f in sorted(src.iterdir()):
        ds = pydicom.dcmread(f)
        assert not ds.SOPInstanceUID and not ds.StudyInstanceUID  # the public series' state
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.save_as(dst / f.name)
        out.append(ds)
    return out


@pytest.fixture(scope="module")
def ct(source, tmp_path_factory):
    """The repaired series folder, its image, the label map on its grid, its datasets."""
    root = tmp_path_factory.mktemp("dicom_masks")
    folder = root / "cohort" / "scans" / "ct"
    datasets = _repair_series(source[0], folder)
    image = io.read_image(folder)
    labels = resample_to_reference(sitk.ReadImage(str(source[1])), image)
    lab = sitk.GetArrayFromImage(labels)
    sitk.WriteImage(sitk.Cast(labels, sitk.sitkUInt8),
                    str(root / "cohort" / "labelmap.nii.gz"), True)
    # slice index of every dataset on the image grid
    k_of = [image.TransformPhysicalPointToIndex([float(v) for v in ds.ImagePositionPatient])[2]
            for ds in datasets]
    return {"root": root, "cohort": root / "cohort", "folder": folder, "image": image,
            "lab": lab, "datasets": datasets, "k_of": k_of}


@pytest.fixture(scope="module")
def seg_file(ct):
    import highdicom as hd
    from pydicom.sr.codedict import codes
    from pydicom.uid import generate_uid

    dss, k_of, lab = ct["datasets"], ct["k_of"], ct["lab"]
    pixels = np.zeros((len(dss), *lab.shape[1:], len(LEVELS)), bool)
    for i, k in enumerate(k_of):
        for j, v in enumerate(LEVELS.values()):
            pixels[i, :, :, j] = lab[k] == v
    algo = hd.AlgorithmIdentificationSequence(name="TotalSegmentator", version="2",
                                              family=codes.DCM.ArtificialIntelligence)
    desc = [hd.seg.SegmentDescription(
        segment_number=n, segment_label=name, segmented_property_category=codes.SCT.Tissue,
        segmented_property_type=codes.SCT.Bone,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC, algorithm_identification=algo)
        for n, name in enumerate(LEVELS, start=1)]
    seg = hd.seg.Segmentation(
        source_images=dss, pixel_array=pixels,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY, segment_descriptions=desc,
        series_instance_uid=generate_uid(), series_number=90, sop_instance_uid=generate_uid(),
        instance_number=1, manufacturer="vcfnb tests", manufacturer_model_name="test",
        software_versions="0", device_serial_number="0")
    path = ct["cohort"] / "masks" / "vertebrae_seg.dcm"
    path.parent.mkdir(exist_ok=True)
    seg.save_as(path)
    return path


def _contours(binary: np.ndarray, image: sitk.Image) -> list[tuple[int, np.ndarray]]:
    """Closed contours (level 0.5) of each slice of a 0/1 array, in patient coordinates."""
    import contourpy

    out = []
    for k in range(binary.shape[0]):
        if not binary[k].any():
            continue
        gen = contourpy.contour_generator(z=np.pad(binary[k].astype(float), 1),
                                          line_type=contourpy.LineType.Separate)
        for line in gen.lines(0.5):
            pts = [image.TransformContinuousIndexToPhysicalPoint((x - 1.0, y - 1.0, float(k)))
                   for x, y in line]
            out.append((k, np.asarray(pts)))
    return out


def _write_rtstruct(path: Path, ct: dict, levels: dict[str, int],
                    shift_mm: tuple = (0.0, 0.0, 0.0)) -> Path:
    from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    dss, image = ct["datasets"], ct["image"]
    ref = dss[0]
    by_k = dict(zip(ct["k_of"], dss))
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = dicom_masks.RTSTRUCT_SOP_CLASS
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "RTSTRUCT"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = ref.StudyInstanceUID, generate_uid()
    ds.FrameOfReferenceUID = ref.FrameOfReferenceUID
    ds.PatientName, ds.PatientID, ds.StructureSetLabel = "", "", "vertebrae"

    def item(**kw) -> Dataset:
        d = Dataset()
        for k, v in kw.items():
            setattr(d, k, v)
        return d

    def image_ref(d) -> Dataset:
        return item(ReferencedSOPClassUID=d.SOPClassUID, ReferencedSOPInstanceUID=d.SOPInstanceUID)

    series = item(SeriesInstanceUID=ref.SeriesInstanceUID,
                  ContourImageSequence=Sequence([image_ref(d) for d in dss]))
    study = item(ReferencedSOPClassUID="1.2.840.10008.3.1.2.3.1",
                 ReferencedSOPInstanceUID=ref.StudyInstanceUID,
                 RTReferencedSeriesSequence=Sequence([series]))
    ds.ReferencedFrameOfReferenceSequence = Sequence([item(
        FrameOfReferenceUID=ref.FrameOfReferenceUID, RTReferencedStudySequence=Sequence([study]))])
    rois, contours, observations = [], [], []
    for n, (name, value) in enumerate(levels.items(), start=1):
        rois.append(item(ROINumber=n, ReferencedFrameOfReferenceUID=ref.FrameOfReferenceUID,
                         ROIName=name, ROIGenerationAlgorithm="AUTOMATIC"))
        seq = []
        for k, pts in _contours(ct["lab"] == value, image):
            pts = pts + np.asarray(shift_mm)
            seq.append(item(ContourGeometricType="CLOSED_PLANAR", NumberOfContourPoints=len(pts),
                            ContourData=[f"{v:.4f}" for v in pts.ravel()],
                            ContourImageSequence=Sequence([image_ref(by_k[k])])))
        contours.append(item(ReferencedROINumber=n, ROIDisplayColor=[255, 0, 0],
                             ContourSequence=Sequence(seq)))
        observations.append(item(ObservationNumber=n, ReferencedROINumber=n,
                                 RTROIInterpretedType="ORGAN", ROIInterpreter=""))
    ds.StructureSetROISequence = Sequence(rois)
    ds.ROIContourSequence = Sequence(contours)
    ds.RTROIObservationsSequence = Sequence(observations)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture(scope="module")
def rt_file(ct):
    return _write_rtstruct(ct["cohort"] / "masks" / "vertebrae_rtstruct.dcm", ct, LEVELS)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * float((a & b).sum()) / float(a.sum() + b.sum())


def _write_cohort(folder: Path, rows: list[dict]) -> Path:
    rois = pd.DataFrame([{"patient_id": "ct1", "sequence": "CT", "reader": "1", **r}
                         for r in rows])
    return io.write_cohort(folder, pd.DataFrame({"patient_id": ["ct1"], "outcome": [1]}), rois)


# ---------------------------------------------------------------------------------------------
# SEG
# ---------------------------------------------------------------------------------------------
def test_recognises_dicom_mask_objects(ct, seg_file, rt_file, source):
    assert dicom_masks.dicom_kind(seg_file) == "SEG"
    assert dicom_masks.dicom_kind(rt_file) == "RTSTRUCT"
    assert dicom_masks.mask_labels(seg_file) == {1: "T12", 2: "T11"}
    assert dicom_masks.mask_labels(rt_file) == {1: "T12", 2: "T11"}
    # CT slices, label images and folders are not mask objects
    assert not dicom_masks.is_dicom_object(next(ct["folder"].iterdir()))
    assert not dicom_masks.is_dicom_object(source[1])
    assert not dicom_masks.is_dicom_object(ct["folder"])


def test_seg_mask_equals_the_label_map(ct, seg_file):
    for number, (name, value) in enumerate(LEVELS.items(), start=1):
        truth = ct["lab"] == value
        for label in (name, number, str(number)):
            m = dicom_masks.read_mask(seg_file, label, ct["image"], reference_path=ct["folder"])
            arr = sitk.GetArrayFromImage(m)
            assert m.GetSize() == ct["image"].GetSize()
            assert m.GetPixelID() == sitk.sitkUInt8
            assert set(np.unique(arr)) == {0, number}
            np.testing.assert_array_equal(arr > 0, truth)
        assert dicom_masks.read_mask(seg_file, name, ct["image"], value=1).GetSize() == \
            ct["image"].GetSize()


def test_seg_cohort_loads_and_features_equal_label_map_features(ct, seg_file, tmp_path):
    rows = [{"roi": f"{name}_seg", "image": "scans/ct", "mask": "masks/vertebrae_seg.dcm",
             "label": label} for name, label in (("T12", "T12"), ("T11", 2))]
    rows += [{"roi": f"{name}_map", "image": "scans/ct", "mask": "labelmap.nii.gz",
              "label": value} for name, value in LEVELS.items()]
    folder = _write_cohort(ct["cohort"], rows)
    cohort = io.load_cohort(folder)
    assert cohort.problems.empty, cohort.problems.to_string()
    assert len(cohort.rois) == 4
    # the SEG rows carry the resolved segment numbers; no resampling flag (already on the grid)
    assert cohort.rois.set_index("roi").loc[["T12_seg", "T11_seg"], "label"].tolist() == [1, 2]
    assert not cohort.rois["resample_mask"].any()
    cache = tmp_path / "cache"
    feats = features.extract(cohort.rois, SETTINGS, n_jobs=1, cache_dir=cache, progress=False)
    assert not feats.attrs["failures"], feats.attrs["failures"]
    cols = [c for c in feats.columns if c.startswith("original_")]
    assert len(cols) > 50
    by = feats.set_index("roi")[cols]
    for name, value in LEVELS.items():
        np.testing.assert_allclose(by.loc[f"{name}_seg"].to_numpy(float),
                                   by.loc[f"{name}_map"].to_numpy(float), rtol=1e-6)
        assert by.loc[f"{name}_seg", "original_shape_VoxelVolume"] == pytest.approx(
            (ct["lab"] == value).sum() * np.prod(ct["image"].GetSpacing()))
    # the cache key (file digests + resolved label) works for SEG masks: a re-run reads it all
    again = features.extract(cohort.rois, SETTINGS, n_jobs=1, cache_dir=cache, progress=False)
    assert again.attrs["cache"]["hits"] == 4 and again.attrs["cache"]["misses"] == 0
    pd.testing.assert_frame_equal(again[cols], feats[cols])


def test_extract_takes_segment_and_roi_names_directly(ct, seg_file, rt_file):
    """vcfnb.features.extract on a rois table not from load_cohort: text labels resolve."""
    rois = pd.DataFrame({"patient_id": "ct1", "roi": ["seg", "rt", "bad"],
                         "image": str(ct["folder"]),
                         "mask": [str(seg_file), str(rt_file), str(rt_file)],
                         "label": ["T11", "T11", "L5"]})
    feats = features.extract(rois, {"imageType": {"Original": {}},
                                    "featureClass": {"shape": ["VoxelVolume"]}},
                             n_jobs=1, progress=False)
    vol = feats["original_shape_VoxelVolume"]
    expected = (ct["lab"] == 33).sum() * np.prod(ct["image"].GetSpacing())
    assert vol.iloc[0] == pytest.approx(expected)
    assert vol.iloc[1] == pytest.approx(expected, rel=0.05)
    assert np.isnan(vol.iloc[2])
    fail = features.failures_table(feats)
    assert len(fail) == 1 and "'L5' absent" in fail.reason.iloc[0]
    assert str(rt_file) in fail.reason.iloc[0]


# ---------------------------------------------------------------------------------------------
# RTSTRUCT
# ---------------------------------------------------------------------------------------------
def test_rtstruct_masks_match_the_label_map(ct, rt_file):
    for name, value in LEVELS.items():
        truth = ct["lab"] == value
        m = dicom_masks.read_mask(rt_file, name, ct["image"], reference_path=ct["folder"])
        arr = sitk.GetArrayFromImage(m) > 0
        assert _dice(arr, truth) >= 0.95
        assert abs(arr.sum() / truth.sum() - 1) <= 0.05


def test_rtstruct_on_a_nifti_copy_of_the_series(ct, rt_file, tmp_path):
    """Any image format on the same frame: contours go through physical space, not the files."""
    nifti = tmp_path / "ct.nii.gz"
    sitk.WriteImage(ct["image"], str(nifti))
    image = io.read_image(nifti)
    for name, value in LEVELS.items():
        arr = sitk.GetArrayFromImage(dicom_masks.read_mask(rt_file, name, image)) > 0
        assert _dice(arr, ct["lab"] == value) >= 0.95
    # a 2 mm in-plane grid of the same space: contours are rasterised, not copied
    coarse = sitk.Resample(image, [256, 256, 20], sitk.Transform(), sitk.sitkLinear,
                           image.GetOrigin(), [2 * s for s in image.GetSpacing()[:2]] +
                           [image.GetSpacing()[2]], image.GetDirection())
    arr = sitk.GetArrayFromImage(dicom_masks.read_mask(rt_file, "T12", coarse)) > 0
    vol = arr.sum() * np.prod(coarse.GetSpacing())
    vol_truth = (ct["lab"] == 32).sum() * np.prod(image.GetSpacing())
    assert abs(vol / vol_truth - 1) <= 0.05


def test_rtstruct_cohort_loads_and_extracts(ct, rt_file, tmp_path):
    rows = [{"roi": name, "image": "scans/ct", "mask": "masks/vertebrae_rtstruct.dcm",
             "label": name} for name in LEVELS]
    folder = tmp_path / "rt_cohort"
    (folder / "masks").mkdir(parents=True)
    os.symlink(ct["folder"].parent, folder / "scans")
    os.symlink(rt_file, folder / "masks" / rt_file.name)
    cohort = io.load_cohort(_write_cohort(folder, rows))
    assert cohort.problems.empty, cohort.problems.to_string()
    assert cohort.rois["label"].tolist() == [1, 2]
    feats = features.extract(cohort.rois, {"imageType": {"Original": {}},
                                           "featureClass": {"shape": ["VoxelVolume"]}},
                             n_jobs=1, progress=False)
    for name, value in LEVELS.items():
        vol = feats.set_index("roi").loc[name, "original_shape_VoxelVolume"]
        truth = (ct["lab"] == value).sum() * np.prod(ct["image"].GetSpacing())
        assert abs(vol / truth - 1) <= 0.05


# ---------------------------------------------------------------------------------------------
# validation problems name the file and the cause
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def problem_cohort(ct, seg_file, rt_file, source):
    """One cohort with one row per problem class (plus two good rows)."""
    import pydicom

    folder = ct["root"] / "problems"
    (folder / "masks").mkdir(parents=True)
    os.symlink(ct["folder"], folder / "ct")
    os.symlink(source[0], folder / "ct_anonymised")  # the public series: no SOP Instance UIDs
    for f in (seg_file, rt_file):
        os.symlink(f, folder / "masks" / f.name)
    other = pydicom.dcmread(seg_file)
    other.FrameOfReferenceUID = pydicom.uid.generate_uid()
    other.save_as(folder / "masks" / "other_frame_seg.dcm")
    # a NIfTI crop of the lower 10 slices: T11 (slices 3-19) reaches beyond it
    sitk.WriteImage(ct["image"][:, :, :10], str(folder / "ct_lower.nii.gz"))
    rows = [
        {"roi": "T12", "image": "ct", "mask": "masks/vertebrae_seg.dcm", "label": "T12"},
        {"roi": "T11", "image": "ct", "mask": "masks/vertebrae_rtstruct.dcm", "label": "T11"},
        {"roi": "L5", "image": "ct", "mask": "masks/vertebrae_seg.dcm", "label": "L5"},
        {"roi": "L1", "image": "ct", "mask": "masks/vertebrae_rtstruct.dcm", "label": "L1"},
        {"roi": "T12_other", "image": "ct", "mask": "masks/other_frame_seg.dcm", "label": 1},
        {"roi": "T11_crop", "image": "ct_lower.nii.gz", "mask": "masks/vertebrae_rtstruct.dcm",
         "label": "T11"},
        {"roi": "T12_anon", "image": "ct_anonymised", "mask": "masks/vertebrae_seg.dcm",
         "label": "T12"},
    ]
    return io.load_cohort(_write_cohort(folder, rows))


def _problem(cohort, roi: str) -> pd.Series:
    rois = pd.read_csv(cohort.folder / "rois.csv")
    where = f"rois.csv:{int(np.flatnonzero(rois['roi'] == roi)[0]) + 1}"
    hits = cohort.problems[cohort.problems["row"] == where]
    assert len(hits) == 1, cohort.problems.to_string()
    return hits.iloc[0]


def test_good_rows_pass_beside_bad_ones(problem_cohort):
    assert sorted(problem_cohort.rois["roi"]) == ["T11", "T12"]
    assert len(problem_cohort.problems) == 5


def test_problem_segment_or_roi_absent(problem_cohort):
    p = _problem(problem_cohort, "L5")
    assert p.file == "masks/vertebrae_seg.dcm"
    assert "segment 'L5' absent from SEG" in p.problem
    assert "1 'T12', 2 'T11'" in p.problem  # what is present
    p = _problem(problem_cohort, "L1")
    assert p.file == "masks/vertebrae_rtstruct.dcm"
    assert "ROI 'L1' absent from RTSTRUCT" in p.problem and "1 'T12', 2 'T11'" in p.problem


def test_problem_frame_of_reference_differs(problem_cohort, ct):
    p = _problem(problem_cohort, "T12_other")
    assert p.file == "masks/other_frame_seg.dcm"
    assert "frame of reference of the SEG" in p.problem and "differs" in p.problem
    assert ct["datasets"][0].FrameOfReferenceUID in p.problem


def test_problem_contours_outside_the_image(problem_cohort):
    p = _problem(problem_cohort, "T11_crop")
    assert p.file == "masks/vertebrae_rtstruct.dcm"
    assert "contours of ROI 2 'T11' lie outside the image" in p.problem


def test_problem_series_lacks_uids(problem_cohort):
    p = _problem(problem_cohort, "T12_anon")
    assert p.file == "ct_anonymised"  # the image series is at fault, not the SEG
    assert "lacks SOP Instance UIDs (20 of 20 files empty)" in p.problem
    assert "vertebrae_seg.dcm" in p.problem


def test_read_mask_errors_name_the_file(ct, seg_file, rt_file):
    with pytest.raises(dicom_masks.DicomMaskError, match="vertebrae_seg.dcm: segment 'L5'"):
        dicom_masks.read_mask(seg_file, "L5", ct["image"])
    shifted = _write_rtstruct(ct["root"] / "shifted_rt.dcm", ct, {"T12": 32},
                              shift_mm=(400.0, 0.0, 0.0))
    with pytest.raises(dicom_masks.DicomMaskError,
                       match=r"shifted_rt.dcm: contours of ROI 1 'T12' lie outside the image"):
        dicom_masks.read_mask(shifted, "T12", ct["image"])
    # a segment beyond the image: the SEG on a crop of the upper 5 slices misses T12's lower part
    with pytest.raises(dicom_masks.DicomMaskError, match="segment 1 lies outside the image"):
        dicom_masks.read_mask(seg_file, "T12", ct["image"][:, :, 15:])
