"""Masks stored as DICOM objects: segmentations (SEG) and RT structure sets (RTSTRUCT).

A ``mask`` in ``rois.csv`` may name a DICOM SEG file (``label`` = segment number or segment
label text) or an RTSTRUCT file (``label`` = ROI name or ROI number) instead of a label image.
The mask is put onto that row's image grid in physical space:

- **SEG** is read with `highdicom <https://highdicom.readthedocs.io>`_ as a volume (its frames'
  positions and orientation) and resampled onto the image grid, nearest neighbour; on the grid
  of the series it was made from this is an exact copy of the segment's voxels.
- **RTSTRUCT** closed planar contours (patient coordinates, mm) are mapped to the image's
  continuous voxel indices and filled slice by slice: a voxel belongs to the ROI when its centre
  lies inside the polygon (several contours in one slice combine even-odd, so inner contours
  are holes). Slices between contour planes take the nearest plane within half the plane gap.

The image may be a DICOM series folder or any other format on the same frame of reference.
Problems raise :class:`DicomMaskError` with the file and the cause: segment or ROI absent (with
those present), frame of reference different from the image series', contours or segment
voxels outside the image, an image series lacking the UIDs needed to check the reference.

Only geometry, segment/ROI names and UIDs are read; nothing from the DICOM headers (patient
name, id, dates) is returned.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

__all__ = [
    "DicomMaskError", "SEG_SOP_CLASS", "RTSTRUCT_SOP_CLASS", "dicom_kind", "is_dicom_object",
    "mask_labels", "resolve_label", "read_mask", "check_mask", "label_numbers",
]

SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
RTSTRUCT_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.481.3"
_KINDS = {SEG_SOP_CLASS: "SEG", RTSTRUCT_SOP_CLASS: "RTSTRUCT"}
_MODALITIES = {"SEG": "SEG", "RTSTRUCT": "RTSTRUCT"}
#: tolerance (voxels) for contour points and segment voxels just outside the image grid
_EDGE_TOL = 0.5 + 1e-3


class DicomMaskError(ValueError):
    """A DICOM SEG/RTSTRUCT mask cannot be used for an image.

    ``str(exc)`` is ``"<file>: <cause>"``; ``exc.file`` is the file at fault (the mask, or the
    image series when it lacks UIDs) and ``exc.cause`` the cause alone (for problem tables).
    """

    def __init__(self, file: str | os.PathLike, cause: str):
        self.file = Path(file)
        self.cause = cause
        super().__init__(f"{file}: {cause}")


# ---------------------------------------------------------------------------------------------
# recognising and describing DICOM mask objects
# ---------------------------------------------------------------------------------------------
def _stamp(path: Path) -> tuple:
    st = path.stat()
    return str(path.resolve()), st.st_size, st.st_mtime_ns


def dicom_kind(path: str | os.PathLike) -> str | None:
    """``"SEG"``, ``"RTSTRUCT"`` or ``None`` (not a file, not DICOM, or another DICOM object).

    Recognised by the SOP Class UID (or, when that is empty, the Modality) of a DICOM Part-10
    file; only the header is read.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "m.nii"; _ = p.write_bytes(b"\\0" * 400)
    >>> dicom_kind(p) is None
    True
    """
    p = Path(path)
    if not p.is_file():
        return None
    return _kind(*_stamp(p))


@lru_cache(maxsize=512)
def _kind(path: str, size: int, mtime: int) -> str | None:
    if size < 132:
        return None
    with open(path, "rb") as fh:
        head = fh.read(132)
    if head[128:132] != b"DICM":
        return None
    import pydicom

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True,
                             specific_tags=["SOPClassUID", "Modality"])
    except Exception:  # noqa: BLE001 - a damaged header is "not a mask object" here
        return None
    kind = _KINDS.get(str(ds.get("SOPClassUID", "") or ""))
    return kind or _MODALITIES.get(str(ds.get("Modality", "") or "").upper())


def is_dicom_object(path: str | os.PathLike) -> bool:
    """True when ``path`` is a DICOM SEG or RTSTRUCT file (a mask to rasterise, not a label image).

    Examples
    --------
    >>> is_dicom_object("no/such/file.dcm")
    False
    """
    return dicom_kind(path) is not None


@dataclass(frozen=True)
class _Obj:
    """What vcfnb needs of a SEG/RTSTRUCT file: kind, labels, UIDs (no identifiers)."""

    kind: str
    labels: dict[int, str]                 # segment / ROI number -> label / name
    frame_of_reference: str
    referenced_instances: frozenset[str]   # SOP Instance UIDs of the images it was made on


def _describe(path: Path) -> _Obj:
    kind = dicom_kind(path)
    if kind is None:
        raise DicomMaskError(path, "not a DICOM SEG or RTSTRUCT file")
    return _describe_cached(*_stamp(path), kind)


@lru_cache(maxsize=64)
def _describe_cached(path: str, size: int, mtime: int, kind: str) -> _Obj:
    import pydicom

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except Exception as exc:  # noqa: BLE001
        raise DicomMaskError(path, f"unreadable {kind} ({exc})") from None
    refs: set[str] = set()
    if kind == "SEG":
        labels = {int(s.SegmentNumber): str(s.get("SegmentLabel", "") or "")
                  for s in ds.get("SegmentSequence", [])}
        for series in ds.get("ReferencedSeriesSequence", []):
            for inst in series.get("ReferencedInstanceSequence", []):
                refs.add(str(inst.get("ReferencedSOPInstanceUID", "") or ""))
        for_uid = str(ds.get("FrameOfReferenceUID", "") or "")
    else:
        labels = {int(s.ROINumber): str(s.get("ROIName", "") or "")
                  for s in ds.get("StructureSetROISequence", [])}
        for_uids = {int(s.ROINumber): str(s.get("ReferencedFrameOfReferenceUID", "") or "")
                    for s in ds.get("StructureSetROISequence", [])}
        for_uid = next((u for u in for_uids.values() if u), "")
        for ref in ds.get("ReferencedFrameOfReferenceSequence", []):
            for_uid = for_uid or str(ref.get("FrameOfReferenceUID", "") or "")
            for study in ref.get("RTReferencedStudySequence", []):
                for series in study.get("RTReferencedSeriesSequence", []):
                    for img in series.get("ContourImageSequence", []):
                        refs.add(str(img.get("ReferencedSOPInstanceUID", "") or ""))
    refs.discard("")
    return _Obj(kind, labels, for_uid, frozenset(refs))


def mask_labels(path: str | os.PathLike) -> dict[int, str]:
    """Segment numbers → segment labels (SEG) or ROI numbers → ROI names (RTSTRUCT)."""
    return dict(_describe(Path(path)).labels)


def label_numbers(path: str | os.PathLike) -> np.ndarray:
    """The segment/ROI numbers of a SEG/RTSTRUCT, with 0 (background) first, like ``np.unique``
    of a label image (what :func:`vcfnb.io.load_cohort` checks labels against)."""
    return np.array([0, *sorted(mask_labels(path))], dtype=np.int64)


def _present(obj: _Obj) -> str:
    what = "segments" if obj.kind == "SEG" else "ROIs"
    items = ", ".join(f"{n} {name!r}" for n, name in sorted(obj.labels.items()))
    return f"{what} present: {items or 'none'}"


def resolve_label(path: str | os.PathLike, label: Any) -> int:
    """The segment number (SEG) or ROI number (RTSTRUCT) that ``label`` names.

    ``label`` may be the exact segment label / ROI name, or the number. An integer is taken as
    a number first; for text (a CSV cell) a name match wins, so a ROI named ``"1"`` is found by
    its name. A blank
    ``label`` (None/NaN/"") picks the only segment/ROI when there is exactly one.

    Raises
    ------
    DicomMaskError
        When no segment/ROI matches, naming the file and listing those present.
    """
    p = Path(path)
    obj = _describe(p)
    what = "segment" if obj.kind == "SEG" else "ROI"
    blank = label is None or (isinstance(label, float) and np.isnan(label)) or \
        (isinstance(label, str) and not label.strip())
    if blank:
        if len(obj.labels) == 1:
            return next(iter(obj.labels))
        raise DicomMaskError(p, f"no {what} named in the label column and the {obj.kind} holds "
                             f"{len(obj.labels)} ({_present(obj)})")
    if isinstance(label, np.generic):
        label = label.item()
    if isinstance(label, int) and not isinstance(label, bool) and label in obj.labels:
        return label  # an integer (not text) is a number first
    text = str(label).strip()
    by_name = [n for n, name in obj.labels.items() if name == text]
    if len(by_name) == 1:
        return by_name[0]
    if len(by_name) > 1:
        raise DicomMaskError(p, f"{len(by_name)} {what}s are named {text!r} (numbers "
                             f"{sorted(by_name)}); give the number in the label column")
    try:
        number = float(text)
    except ValueError:
        number = None
    if number is not None and number == int(number) and int(number) in obj.labels:
        return int(number)
    raise DicomMaskError(p, f"{what} {text!r} absent from {obj.kind} ({_present(obj)})")


# ---------------------------------------------------------------------------------------------
# the image a mask is put on
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Series:
    frame_of_reference: set[str]
    instances: set[str]
    n_files: int
    files_without_instance_uid: int


@lru_cache(maxsize=32)
def _series_uids(folder: str, stamp: tuple) -> _Series:
    import pydicom

    fors, insts, n, missing = set(), set(), 0, 0
    for f in sorted(Path(folder).iterdir()):
        if not f.is_file():
            continue
        try:
            ds = pydicom.dcmread(f, stop_before_pixels=True,
                                 specific_tags=["FrameOfReferenceUID", "SOPInstanceUID"])
        except Exception:  # noqa: BLE001 - non-DICOM files beside a series are ignored
            continue
        n += 1
        fors.add(str(ds.get("FrameOfReferenceUID", "") or ""))
        uid = str(ds.get("SOPInstanceUID", "") or "")
        if uid:
            insts.add(uid)
        else:
            missing += 1
    return _Series(fors, insts, n, missing)


def _check_reference(path: Path, obj: _Obj, image_path: Path | None) -> None:
    """Frame of reference and UIDs of a DICOM-series image against the mask's references."""
    if not obj.frame_of_reference:
        raise DicomMaskError(path, f"{obj.kind} has no FrameOfReferenceUID: cannot tell which "
                             "image space its contours/segments are in")
    if image_path is None or not Path(image_path).is_dir():
        return  # NIfTI/NRRD/MHA images carry no frame of reference: geometry checks only
    folder = Path(image_path)
    stamp = tuple(sorted((f.name, f.stat().st_size, f.stat().st_mtime_ns)
                         for f in folder.iterdir() if f.is_file()))
    series = _series_uids(str(folder.resolve()), stamp)
    if series.n_files == 0:
        raise DicomMaskError(folder, f"no DICOM files to check the reference of {path.name}")
    fors = series.frame_of_reference - {""}
    if "" in series.frame_of_reference:
        raise DicomMaskError(
            folder, f"image series lacks FrameOfReferenceUID, needed to check that "
            f"{obj.kind} {path.name} (frame {obj.frame_of_reference}) lies on it")
    if obj.frame_of_reference not in fors:
        raise DicomMaskError(
            path, f"frame of reference of the {obj.kind} ({obj.frame_of_reference}) differs "
            f"from the image series' ({', '.join(sorted(fors))} in {folder.name})")
    if obj.referenced_instances and series.files_without_instance_uid:
        n_refs = len(obj.referenced_instances)
        raise DicomMaskError(
            folder, f"image series lacks SOP Instance UIDs ({series.files_without_instance_uid}"
            f" of {series.n_files} files empty), needed to check the {n_refs} image references "
            f"of {obj.kind} {path.name} (an anonymiser removed them?)")


def _continuous_index(points: np.ndarray, reference: sitk.Image) -> np.ndarray:
    """Patient coordinates (n, 3; mm, LPS) → continuous (x, y, z) indices of ``reference``."""
    d = np.asarray(reference.GetDirection(), float).reshape(3, 3)
    m = d * np.asarray(reference.GetSpacing(), float)[None, :]
    return np.linalg.solve(m, (points - np.asarray(reference.GetOrigin(), float)).T).T


def _outside(idx: np.ndarray, size: tuple[int, ...]) -> np.ndarray:
    hi = np.asarray(size, float) - 1 + _EDGE_TOL
    return np.any((idx < -_EDGE_TOL) | (idx > hi), axis=1)


def _empty_like(reference: sitk.Image, value: int) -> np.ndarray:
    dtype = np.uint8 if value <= 255 else np.uint16
    return np.zeros(reference.GetSize()[::-1], dtype)


def _to_image(arr: np.ndarray, reference: sitk.Image) -> sitk.Image:
    out = sitk.GetImageFromArray(arr)
    out.CopyInformation(reference)
    return out


# ---------------------------------------------------------------------------------------------
# SEG
# ---------------------------------------------------------------------------------------------
def _seg_mask(path: Path, number: int, reference: sitk.Image, value: int) -> np.ndarray:
    import highdicom as hd

    try:
        seg = hd.seg.segread(str(path))
        vol = seg.get_volume(segment_numbers=[number], combine_segments=False,
                             skip_overlap_checks=True)
    except Exception as exc:  # noqa: BLE001 - highdicom raises several types
        raise DicomMaskError(path, f"segment {number} cannot be read as a volume "
                             f"({type(exc).__name__}: {exc})") from None
    arr = np.asarray(vol.array)
    if arr.ndim == 4:
        arr = arr[..., 0]
    on = arr > 0.5 if np.issubdtype(arr.dtype, np.floating) else arr > 0
    if not on.any():
        raise DicomMaskError(path, f"segment {number} is empty (no voxel in the SEG)")
    # highdicom: array axes (slice, row, column); affine maps (slice, row, column, 1) to LPS mm
    aff = np.asarray(vol.affine, float)
    vecs = [aff[:3, 2], aff[:3, 1], aff[:3, 0]]               # x = column, y = row, z = slice
    spacing = [float(np.linalg.norm(v)) for v in vecs]
    direction = np.stack([v / s for v, s in zip(vecs, spacing)], axis=1)
    src = sitk.GetImageFromArray(on.astype(np.uint8))         # numpy (slice, row, column)
    src.SetSpacing(spacing)
    src.SetOrigin(aff[:3, 3].tolist())
    src.SetDirection(direction.ravel().tolist())
    # segment voxels must lie on the image
    zyx = np.argwhere(on)
    pts = aff[:3, 3] + zyx @ aff[:3, :3].T
    out = _outside(_continuous_index(pts, reference), reference.GetSize())
    if out.any():
        raise DicomMaskError(
            path, f"segment {number} lies outside the image: {int(out.sum())} of {len(out)} "
            f"voxels are beyond the image grid (size {reference.GetSize()})")
    res = sitk.Resample(src, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0,
                        sitk.sitkUInt8)
    arr_ref = sitk.GetArrayFromImage(res) > 0
    if not arr_ref.any():
        raise DicomMaskError(path, f"segment {number} covers no voxel centre of the image grid")
    mask = _empty_like(reference, value)
    mask[arr_ref] = value
    return mask


# ---------------------------------------------------------------------------------------------
# RTSTRUCT
# ---------------------------------------------------------------------------------------------
@lru_cache(maxsize=16)
def _rt_contours(path: str, size: int, mtime: int, number: int) -> tuple:
    """Closed planar contours of one ROI: tuple of (n, 3) arrays in patient coordinates."""
    import pydicom

    ds = pydicom.dcmread(path, stop_before_pixels=True)
    contours = []
    for roi in ds.get("ROIContourSequence", []):
        if int(roi.get("ReferencedROINumber", -1)) != number:
            continue
        for c in roi.get("ContourSequence", []):
            kind = str(c.get("ContourGeometricType", "CLOSED_PLANAR")).upper()
            data = np.asarray([float(v) for v in c.get("ContourData", [])], float)
            if kind != "CLOSED_PLANAR" or data.size < 9:
                continue  # points and open lines enclose no volume
            contours.append(data.reshape(-1, 3))
    return tuple(contours)


def _fill_polygon(poly: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Pixels (rows = y, columns = x) whose centre lies inside a polygon in (x, y) indices."""
    from matplotlib.path import Path as MplPath

    out = np.zeros(shape, bool)
    lo = np.maximum(np.floor(poly.min(0)).astype(int), 0)
    hi = np.minimum(np.ceil(poly.max(0)).astype(int), np.array(shape[::-1]) - 1)
    if np.any(hi < lo):
        return out
    xs, ys = np.meshgrid(np.arange(lo[0], hi[0] + 1), np.arange(lo[1], hi[1] + 1))
    inside = MplPath(poly, closed=True).contains_points(np.c_[xs.ravel(), ys.ravel()])
    out[lo[1]:hi[1] + 1, lo[0]:hi[0] + 1] = inside.reshape(xs.shape)
    return out


def _rt_mask(path: Path, number: int, name: str, reference: sitk.Image, value: int) -> np.ndarray:
    contours = _rt_contours(*_stamp(path), number)
    if not contours:
        raise DicomMaskError(path, f"ROI {number} {name!r} has no closed planar contour")
    size = reference.GetSize()
    idx = [_continuous_index(c, reference) for c in contours]
    allpts = np.concatenate(idx)
    out = _outside(allpts, size)
    if out.any():
        lo, hi = allpts.min(0), allpts.max(0)
        raise DicomMaskError(
            path, f"contours of ROI {number} {name!r} lie outside the image: {int(out.sum())} of "
            f"{len(out)} contour points beyond the image grid (size {size}; contour index range "
            f"x {lo[0]:.1f}..{hi[0]:.1f}, y {lo[1]:.1f}..{hi[1]:.1f}, z {lo[2]:.1f}..{hi[2]:.1f})")
    # the slice axis: the index axis along which every contour is flat
    spread = np.max([np.ptp(i, axis=0) for i in idx], axis=0)
    axis = int(np.argmin(spread))
    if spread[axis] > 0.5:
        raise DicomMaskError(
            path, f"contours of ROI {number} {name!r} are not parallel to the image slices "
            f"(they span {spread[axis]:.2f} voxels across every image axis)")
    plane_axes = [a for a in range(3) if a != axis]            # (x, y) of the 2-D slices
    planes: dict[int, list[np.ndarray]] = {}
    for i in idx:
        k = int(np.clip(np.rint(i[:, axis].mean()), 0, size[axis] - 1))
        planes.setdefault(k, []).append(i[:, plane_axes])
    ks = np.array(sorted(planes))
    gap = float(np.median(np.diff(ks))) if len(ks) > 1 else 1.0
    arr = np.moveaxis(np.zeros(size[::-1], bool), 2 - axis, 0)  # (slice, in-plane rows, cols)
    shape2 = arr.shape[1:]                        # numpy order: (plane_axes[1], plane_axes[0])
    filled: dict[int, np.ndarray] = {}
    for k, polys in planes.items():
        sl = np.zeros(shape2, bool)
        for poly in polys:
            sl ^= _fill_polygon(poly, shape2)     # even-odd: inner contours are holes
        filled[k] = sl
    for s in range(int(ks.min() - gap // 2), int(ks.max() + gap // 2) + 1):
        if not 0 <= s < size[axis]:
            continue
        near = ks[np.argmin(np.abs(ks - s))]      # ties go to the lower plane
        if s == near or abs(s - near) < gap / 2:
            arr[s] = filled[int(near)]
    arr = np.moveaxis(arr, 0, 2 - axis)
    if not arr.any():
        raise DicomMaskError(path, f"contours of ROI {number} {name!r} enclose no voxel centre "
                             "of the image grid")
    mask = _empty_like(reference, value)
    mask[arr] = value
    return mask


# ---------------------------------------------------------------------------------------------
# public entry points
# ---------------------------------------------------------------------------------------------
def read_mask(path: str | os.PathLike, label: Any, reference: sitk.Image, *,
              reference_path: str | os.PathLike | None = None,
              value: int | None = None) -> sitk.Image:
    """A SEG segment or RTSTRUCT ROI as a label image on ``reference``'s grid.

    Parameters
    ----------
    path : path
        DICOM SEG or RTSTRUCT file.
    label : int or str
        Segment number or segment label (SEG); ROI name or ROI number (RTSTRUCT); see
        :func:`resolve_label`.
    reference : SimpleITK.Image
        The image whose grid (size, spacing, origin, direction) the mask takes; only its
        geometry is used.
    reference_path : path, optional
        Where ``reference`` was read from. When it is a DICOM series folder, its frame of
        reference must equal the mask's and, when the mask references image instances, the
        series must carry SOP Instance UIDs.
    value : int, optional
        Value of the ROI voxels (default: the resolved segment/ROI number, so
        ``label = resolve_label(path, label)`` selects it like in a label image).

    Returns
    -------
    SimpleITK.Image
        UInt8 (UInt16 for values above 255) image on the reference grid: 0 outside the ROI,
        ``value`` inside.

    Raises
    ------
    DicomMaskError
        Naming the file and the cause (segment/ROI absent, frame of reference differs, UIDs
        missing, contours or voxels outside the image, empty ROI).
    """
    p = Path(path)
    if not p.is_file():
        raise DicomMaskError(p, "file not found")
    obj = _describe(p)
    number = resolve_label(p, label)
    _check_reference(p, obj, Path(reference_path) if reference_path is not None else None)
    if reference.GetDimension() != 3:
        raise DicomMaskError(p, f"the image is {reference.GetDimension()}-D; DICOM "
                             f"{obj.kind} masks need a 3-D image")
    value = int(number if value is None else value)
    if not 0 < value < 65536:
        raise DicomMaskError(p, f"mask value must be 1..65535, got {value}")
    if obj.kind == "SEG":
        arr = _seg_mask(p, number, reference, value)
    else:
        arr = _rt_mask(p, number, obj.labels[number], reference, value)
    return _to_image(arr, reference)


def reference_from_geometry(size, spacing, origin, direction) -> sitk.Image:
    """An empty UInt8 image with the given geometry (a reference grid without its voxels)."""
    ref = sitk.Image([int(s) for s in size], sitk.sitkUInt8)
    ref.SetSpacing([float(v) for v in spacing])
    ref.SetOrigin([float(v) for v in origin])
    ref.SetDirection([float(v) for v in direction])
    return ref


def check_mask(path: str | os.PathLike, label: Any, image_path: str | os.PathLike,
               image_geometry: Any, *, rasterise: bool = True) -> int:
    """Validate a SEG/RTSTRUCT mask for one image; returns the resolved segment/ROI number.

    Parameters
    ----------
    path, label
        As for :func:`read_mask`.
    image_path : path
        The image file or DICOM series folder of the row (its frame of reference is checked when
        it is a DICOM series).
    image_geometry : object
        Anything with ``size``, ``spacing``, ``origin`` and ``direction`` attributes (e.g.
        :class:`vcfnb.io.ImageInfo`), or a SimpleITK image.
    rasterise : bool
        Also put the mask on the grid (checks voxels/contours outside the image and an empty
        result); False checks the label and the references only.

    Raises
    ------
    DicomMaskError
        As :func:`read_mask`.
    """
    p = Path(path)
    number = resolve_label(p, label)
    if not rasterise:
        _check_reference(p, _describe(p), Path(image_path))
        return number
    if isinstance(image_geometry, sitk.Image):
        ref = image_geometry
    else:
        g = image_geometry
        ref = reference_from_geometry(g.size, g.spacing, g.origin, g.direction)
    read_mask(p, number, ref, reference_path=image_path)
    return number
