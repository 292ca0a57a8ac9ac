"""Image preprocessing: pure functions on SimpleITK images and numpy arrays.

Every function takes images/arrays and returns new ones; inputs are never mutated and
nothing here reads or writes files (that is :mod:`vcfnb.io`).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import SimpleITK as sitk

__all__ = [
    "largest_area_slices", "bbox_slices", "grid_differences", "same_grid", "resample",
    "resample_mask", "resample_to_reference", "n4_correct", "normalize", "crop_to_rois",
    "surface_depth", "split_cortical_cancellous", "dice",
]


def largest_area_slices(mask: sitk.Image | np.ndarray, k: int = 0, *, axis: int = 0,
                        label: int | None = None) -> list[int]:
    """Index of the slice with the largest ROI area along ``axis`` and the slices ``±k`` away.

    Parameters
    ----------
    mask : SimpleITK.Image or ndarray
        ROI mask. A SimpleITK image is converted with ``GetArrayFromImage`` so array axis 0 is
        the image's z (for a sagittal acquisition stored as (x, y, z) = (AP, SI, LR) that is the
        left-right, i.e. sagittal-slice, axis).
    k : int
        Distance of the neighbour slices (paper seed 001: k = 5). Neighbours falling outside the
        volume are clipped to the first/last slice.
    axis : int
        Array axis along which slices are taken.
    label : int, optional
        Mask value of the ROI; default: any non-zero voxel.

    Returns
    -------
    list of int
        ``[centre - k, centre, centre + k]`` (just ``[centre]`` when ``k == 0``).

    Examples
    --------
    >>> m = np.zeros((9, 4, 4), np.uint8); m[3, :3, :3] = 1; m[4, :2, :2] = 1
    >>> largest_area_slices(m, k=2)
    [1, 3, 5]
    """
    arr = sitk.GetArrayFromImage(mask) if isinstance(mask, sitk.Image) else np.asarray(mask)
    roi = arr == label if label is not None else arr != 0
    other = tuple(i for i in range(roi.ndim) if i != axis)
    area = roi.sum(axis=other)
    if area.max() == 0:
        raise ValueError("mask is empty: no slice contains the ROI")
    centre = int(np.argmax(area))
    if k == 0:
        return [centre]
    n = roi.shape[axis]
    return [int(np.clip(centre - k, 0, n - 1)), centre, int(np.clip(centre + k, 0, n - 1))]


def bbox_slices(mask: np.ndarray, margin: int | tuple[int, ...] = 0) -> tuple[slice, ...]:
    """Array slices of the bounding box of the non-zero voxels of ``mask`` plus ``margin`` voxels.

    The box is clipped to the array; ``margin`` is one int for every axis or one per axis.

    Examples
    --------
    >>> m = np.zeros((5, 5), bool); m[2, 1:3] = True
    >>> bbox_slices(m, margin=1)
    (slice(1, 4, None), slice(0, 4, None))
    """
    arr = np.asarray(mask) != 0
    if not arr.any():
        raise ValueError("mask is empty: no bounding box")
    margins = (margin,) * arr.ndim if np.isscalar(margin) else tuple(margin)
    out = []
    for ax in range(arr.ndim):
        other = tuple(i for i in range(arr.ndim) if i != ax)
        idx = np.flatnonzero(arr.any(axis=other))
        lo = max(int(idx[0]) - int(margins[ax]), 0)
        hi = min(int(idx[-1]) + int(margins[ax]) + 1, arr.shape[ax])
        out.append(slice(lo, hi))
    return tuple(out)


# --------------------------------------------------------------------------------------------
# geometry
# --------------------------------------------------------------------------------------------

_INTERPOLATORS = {
    "nearest": sitk.sitkNearestNeighbor,
    "linear": sitk.sitkLinear,
    "bspline": sitk.sitkBSpline,
}


def grid_differences(a: sitk.Image, b: sitk.Image, tol: float = 1e-4) -> list[str]:
    """Describe how the voxel grids of two images differ (empty list: same grid).

    Compares size exactly and spacing, origin and direction cosines with absolute tolerance
    ``tol`` (mm for spacing/origin, unitless for the direction cosines).

    Examples
    --------
    >>> a = sitk.Image(4, 4, 4, sitk.sitkUInt8); b = sitk.Image(a)
    >>> b.SetOrigin((0.0, 0.0, 1.0))
    >>> grid_differences(a, b)
    ['origin differs: (0.0, 0.0, 0.0) vs (0.0, 0.0, 1.0)']
    """
    out = []
    if a.GetSize() != b.GetSize():
        out.append(f"size differs: {a.GetSize()} vs {b.GetSize()}")
    for what, get in (("spacing", "GetSpacing"), ("origin", "GetOrigin"),
                      ("direction", "GetDirection")):
        va, vb = np.asarray(getattr(a, get)()), np.asarray(getattr(b, get)())
        if va.shape != vb.shape or not np.allclose(va, vb, rtol=0.0, atol=tol):
            out.append(f"{what} differs: {tuple(np.round(va, 6).tolist())} vs "
                       f"{tuple(np.round(vb, 6).tolist())}")
    return out


def same_grid(a: sitk.Image, b: sitk.Image, tol: float = 1e-4) -> bool:
    """True when ``a`` and ``b`` share size, spacing, origin and direction (within ``tol``).

    See :func:`grid_differences` for a description of what differs.

    Examples
    --------
    >>> a = sitk.Image(4, 4, 4, sitk.sitkUInt8)
    >>> same_grid(a, sitk.Image(a))
    True
    """
    return not grid_differences(a, b, tol)


def _output_size(image: sitk.Image, spacing) -> tuple[list[float], list[int]]:
    dim = image.GetDimension()
    sp = [float(spacing)] * dim if np.isscalar(spacing) else [float(s) for s in spacing]
    if len(sp) != dim:
        raise ValueError(f"spacing has {len(sp)} values for a {dim}-D image")
    if any(s <= 0 for s in sp):
        raise ValueError(f"spacing must be positive, got {sp}")
    size = [max(1, int(round(n * s0 / s1)))
            for n, s0, s1 in zip(image.GetSize(), image.GetSpacing(), sp, strict=True)]
    return sp, size


def resample(image: sitk.Image, spacing: float | Sequence[float], interpolator: str = "linear",
             *, default_value: float | None = None) -> sitk.Image:
    """Resample an image to a new voxel spacing, keeping origin, direction and physical extent.

    The first voxel centre stays where it is and the new size is
    ``round(size * old_spacing / new_spacing)`` per axis (as in the SimpleITK notebooks).
    Linear and B-spline output is 32-bit float (no silent integer truncation); nearest keeps
    the input pixel type.

    Parameters
    ----------
    image : SimpleITK.Image
    spacing : float or sequence of float
        New spacing in mm (one value for every axis, or one per axis in x, y, z order).
    interpolator : {"linear", "bspline", "nearest"}
        Image interpolator (seed 001: 1 mm isotropic resampling before extraction).
    default_value : float, optional
        Value outside the input; default: the input's minimum (air for CT).

    Returns
    -------
    SimpleITK.Image

    Examples
    --------
    >>> img = sitk.GaussianSource(sitk.sitkFloat32, size=(20, 20, 10), spacing=(1, 1, 2))
    >>> resample(img, 1.0).GetSize()
    (20, 20, 20)
    """
    if interpolator not in _INTERPOLATORS:
        raise ValueError(f"interpolator must be one of {sorted(_INTERPOLATORS)}, "
                         f"got {interpolator!r}")
    sp, size = _output_size(image, spacing)
    if default_value is None:
        default_value = float(sitk.GetArrayViewFromImage(image).min())
    if interpolator == "nearest":
        pixel = image.GetPixelID()
        src = image
    else:
        pixel = sitk.sitkFloat32
        src = sitk.Cast(image, sitk.sitkFloat32)
    return sitk.Resample(src, size, sitk.Transform(), _INTERPOLATORS[interpolator],
                         image.GetOrigin(), sp, image.GetDirection(), float(default_value), pixel)


def resample_mask(mask: sitk.Image, spacing: float | Sequence[float]) -> sitk.Image:
    """Resample a (label) mask to a new spacing with nearest-neighbour interpolation.

    Same grid rule as :func:`resample`, so ``resample(img, s)`` and ``resample_mask(msk, s)``
    stay on one grid when ``img`` and ``msk`` were. Labels are kept; outside is 0.

    Examples
    --------
    >>> m = sitk.Image(10, 10, 5, sitk.sitkUInt8); m.SetSpacing((1, 1, 2)); m[5, 5, 2] = 3
    >>> r = resample_mask(m, 1.0)
    >>> r.GetSize(), int(sitk.GetArrayViewFromImage(r).max())
    ((10, 10, 10), 3)
    """
    sp, size = _output_size(mask, spacing)
    return sitk.Resample(mask, size, sitk.Transform(), sitk.sitkNearestNeighbor,
                         mask.GetOrigin(), sp, mask.GetDirection(), 0, mask.GetPixelID())


def resample_to_reference(mask: sitk.Image, reference: sitk.Image, *,
                          interpolator: str = "nearest", default_value: float = 0) -> sitk.Image:
    """Put ``mask`` on the voxel grid of ``reference`` through physical space.

    Use this for a mask stored on another grid of the same physical space (another direction,
    origin or spacing, e.g. TotalSegmentator's ``example_seg_dicom.nii.gz``, stored y-flipped
    relative to its DICOM series). Copying the reference header onto such a mask would
    silently move every label; resampling keeps each label where it is in the patient.

    Parameters
    ----------
    mask : SimpleITK.Image
        Label mask (or image with ``interpolator != "nearest"``).
    reference : SimpleITK.Image
        Image whose grid (size, spacing, origin, direction) the output takes.
    interpolator : {"nearest", "linear", "bspline"}
        Nearest neighbour (default) keeps label values.
    default_value : float
        Value for reference voxels outside the mask's extent.

    Examples
    --------
    >>> ref = sitk.Image(4, 4, 1, sitk.sitkInt16)
    >>> m = sitk.Image(4, 4, 1, sitk.sitkUInt8); m[1, 0, 0] = 1
    >>> m.SetDirection((1, 0, 0, 0, -1, 0, 0, 0, 1)); m.SetOrigin((0, 3, 0))  # y-flipped
    >>> r = resample_to_reference(m, ref)
    >>> int(r[1, 3, 0]), int(r[1, 0, 0])
    (1, 0)
    """
    if interpolator not in _INTERPOLATORS:
        raise ValueError(f"interpolator must be one of {sorted(_INTERPOLATORS)}, "
                         f"got {interpolator!r}")
    pixel = mask.GetPixelID() if interpolator == "nearest" else sitk.sitkFloat32
    src = mask if interpolator == "nearest" else sitk.Cast(mask, sitk.sitkFloat32)
    return sitk.Resample(src, reference, sitk.Transform(), _INTERPOLATORS[interpolator],
                         float(default_value), pixel)


# --------------------------------------------------------------------------------------------
# intensity
# --------------------------------------------------------------------------------------------

def _binary(mask: sitk.Image, label: int | None = None) -> sitk.Image:
    """uint8 0/1 image of ``mask == label`` (``!= 0`` when label is None), same grid."""
    arr = sitk.GetArrayViewFromImage(mask)
    out = sitk.GetImageFromArray((arr == label if label is not None else arr != 0).astype(np.uint8))
    out.CopyInformation(mask)
    return out


def n4_correct(image: sitk.Image, mask: sitk.Image | None = None, shrink_factor: int = 4,
               n_iterations: Sequence[int] = (50, 50, 50, 50), *,
               convergence_threshold: float = 1e-6, n_control_points: int = 4,
               bias_fwhm: float = 0.15) -> sitk.Image:
    """N4 bias-field correction (Tustison et al. 2010, IEEE TMI 29:1310) via SimpleITK.

    The bias field is estimated on an image shrunk by ``shrink_factor`` (for speed) and then
    evaluated at full resolution, so the output has the input's grid; the corrected image is
    ``image / exp(log_bias_field)`` in 32-bit float.

    Parameters
    ----------
    image : SimpleITK.Image
        MR image (positive intensities).
    mask : SimpleITK.Image, optional
        Region used to fit the field (any non-zero voxel). Default: Otsu foreground of the image,
        as in the SimpleITK N4 example.
    shrink_factor : int
        Integer downsampling for the fit (1 = none).
    n_iterations : sequence of int
        Maximum iterations per fitting level (its length is the number of levels).
    convergence_threshold, n_control_points, bias_fwhm
        Passed to ``N4BiasFieldCorrectionImageFilter``.

    Returns
    -------
    SimpleITK.Image
        Corrected image, float32, same grid as ``image``.

    Examples
    --------
    >>> img = sitk.GaussianSource(sitk.sitkFloat32, (32, 32, 8), sigma=(20, 20, 20),
    ...                           mean=(16, 16, 4), scale=100) + 50
    >>> n4_correct(img, shrink_factor=2, n_iterations=(5,)).GetSize()
    (32, 32, 8)
    """
    if shrink_factor < 1:
        raise ValueError(f"shrink_factor must be >= 1, got {shrink_factor}")
    img = sitk.Cast(image, sitk.sitkFloat32)
    if mask is None:
        fit_mask = sitk.OtsuThreshold(img, 0, 1, 200)
    else:
        if not same_grid(mask, image):
            raise ValueError("N4 mask is not on the image grid: "
                             + "; ".join(grid_differences(mask, image)))
        fit_mask = _binary(mask)
    if not sitk.GetArrayViewFromImage(fit_mask).any():
        raise ValueError("N4 mask is empty")
    small_img, small_mask = img, fit_mask
    if shrink_factor > 1:
        f = [shrink_factor] * img.GetDimension()
        small_img = sitk.Shrink(img, f)
        small_mask = sitk.Shrink(fit_mask, f)
    n4 = sitk.N4BiasFieldCorrectionImageFilter()
    n4.SetMaximumNumberOfIterations([int(i) for i in n_iterations])
    n4.SetConvergenceThreshold(convergence_threshold)
    n4.SetNumberOfControlPoints([n_control_points] * img.GetDimension())
    n4.SetBiasFieldFullWidthAtHalfMaximum(bias_fwhm)
    n4.Execute(small_img, small_mask)
    log_bias = n4.GetLogBiasFieldAsImage(img)
    out = img / sitk.Exp(log_bias)
    out.CopyInformation(image)
    return sitk.Cast(out, sitk.sitkFloat32)


def normalize(image: sitk.Image, mask: sitk.Image | None = None, method: str = "zscore",
              scale: float = 1.0, *, remove_outliers: float | None = None) -> sitk.Image:
    """Intensity normalisation.

    ``"zscore"``: ``scale * (x - mean) / sd`` with mean and SD taken inside ``mask`` (e.g. the
    body or the ROI; whole image when None). ``"pyradiomics"``: pyradiomics'
    ``imageoperations.normalizeImage`` (whole-image mean/SD, optional outlier clipping at
    ``remove_outliers`` SDs, then ``scale``), exactly what ``normalize: true`` does in a
    pyradiomics parameter file; ``mask`` must then be None.

    Returns
    -------
    SimpleITK.Image
        Same grid as ``image``; 32-bit float for ``"zscore"``, pyradiomics' 64-bit float for
        ``"pyradiomics"``.

    Examples
    --------
    >>> img = sitk.GetImageFromArray(np.arange(8, dtype=np.float32).reshape(2, 2, 2))
    >>> arr = sitk.GetArrayFromImage(normalize(img))
    >>> round(float(arr.mean()), 6), round(float(arr.std()), 6)
    (0.0, 1.0)
    """
    img = sitk.Cast(image, sitk.sitkFloat32)
    if method == "pyradiomics":
        if mask is not None:
            raise ValueError("pyradiomics normalisation uses the whole image; pass mask=None")
        from radiomics import imageoperations

        kw = {"normalizeScale": scale}
        if remove_outliers is not None:
            kw["removeOutliers"] = remove_outliers
        return imageoperations.normalizeImage(image, **kw)
    if method != "zscore":
        raise ValueError(f"method must be 'zscore' or 'pyradiomics', got {method!r}")
    arr = sitk.GetArrayFromImage(img).astype(np.float64)
    if mask is not None:
        if not same_grid(mask, image):
            raise ValueError("normalisation mask is not on the image grid: "
                             + "; ".join(grid_differences(mask, image)))
        sel = sitk.GetArrayViewFromImage(mask) != 0
        if not sel.any():
            raise ValueError("normalisation mask is empty")
        vals = arr[sel]
    else:
        vals = arr.ravel()
    mu, sd = vals.mean(), vals.std()
    if not np.isfinite(sd) or sd == 0:
        raise ValueError("cannot z-score: intensity SD inside the region is 0")
    z = (arr - mu) / sd
    if remove_outliers is not None:
        z = np.clip(z, -remove_outliers, remove_outliers)
    out = sitk.GetImageFromArray((scale * z).astype(np.float32))
    out.CopyInformation(image)
    return out


# --------------------------------------------------------------------------------------------
# cropping
# --------------------------------------------------------------------------------------------

def crop_to_rois(image: sitk.Image, masks: Sequence[sitk.Image], *,
                 margin_mm: float | Sequence[float] | None = None,
                 margin_voxels: int | Sequence[int] | None = None
                 ) -> tuple[sitk.Image, list[sitk.Image]]:
    """Crop an image and its masks to the union bounding box of the masks plus a margin.

    The crop is a SimpleITK region extraction, so every output keeps its physical position
    (origin moves with the crop; spacing and direction are unchanged).

    Parameters
    ----------
    image : SimpleITK.Image
    masks : sequence of SimpleITK.Image
        Masks on the image grid (any non-zero voxel counts).
    margin_mm : float or sequence of float, optional
        Margin in mm (per axis in x, y, z order or one value), rounded up to whole voxels.
    margin_voxels : int or sequence of int, optional
        Margin in voxels (x, y, z order). Give at most one of the two margins (default 0).

    Returns
    -------
    (SimpleITK.Image, list of SimpleITK.Image)
        Cropped image and cropped masks in the input order.

    Examples
    --------
    >>> img = sitk.Image(20, 20, 20, sitk.sitkInt16)
    >>> m = sitk.Image(20, 20, 20, sitk.sitkUInt8); m[5:8, 5:8, 5:8] = 1
    >>> c, (cm,) = crop_to_rois(img, [m], margin_voxels=2)
    >>> c.GetSize(), cm.GetOrigin()
    ((7, 7, 7), (3.0, 3.0, 3.0))
    """
    if isinstance(masks, sitk.Image):
        masks = [masks]
    masks = list(masks)
    if not masks:
        raise ValueError("no masks given")
    if margin_mm is not None and margin_voxels is not None:
        raise ValueError("give margin_mm or margin_voxels, not both")
    dim = image.GetDimension()
    for i, m in enumerate(masks):
        diff = grid_differences(m, image)
        if diff:
            raise ValueError(f"mask {i} is not on the image grid: " + "; ".join(diff)
                             + " (use resample_to_reference first)")
    if margin_mm is not None:
        mm = [float(margin_mm)] * dim if np.isscalar(margin_mm) else list(margin_mm)
        if len(mm) != dim:
            raise ValueError(f"margin_mm has {len(mm)} values for a {dim}-D image")
        vox_xyz = [int(np.ceil(m / s - 1e-9)) for m, s in zip(mm, image.GetSpacing(), strict=True)]
    elif margin_voxels is not None:
        vox_xyz = [int(margin_voxels)] * dim if np.isscalar(margin_voxels) else list(margin_voxels)
    else:
        vox_xyz = [0] * dim
    if len(vox_xyz) != dim or min(vox_xyz) < 0:
        raise ValueError(f"margin must be non-negative with one value per axis, got {vox_xyz}")
    union = np.zeros(sitk.GetArrayViewFromImage(masks[0]).shape, bool)
    for m in masks:
        union |= sitk.GetArrayViewFromImage(m) != 0
    sl = bbox_slices(union, margin=tuple(vox_xyz[::-1]))  # array order is z, y, x
    index = [s.start for s in sl[::-1]]
    size = [s.stop - s.start for s in sl[::-1]]
    return (sitk.RegionOfInterest(image, size, index),
            [sitk.RegionOfInterest(m, size, index) for m in masks])


# --------------------------------------------------------------------------------------------
# compartments
# --------------------------------------------------------------------------------------------

def surface_depth(mask: sitk.Image, label: int | None = None, *, slice_axis: int | None = None,
                  border_is_surface: bool = True) -> np.ndarray:
    """Physical depth (mm) of every voxel centre below the surface of a binary region.

    The surface is taken halfway between the region's boundary voxels and the background:
    ``depth = (d_background + d_boundary) / 2``, where ``d_background`` is the Euclidean
    distance (in mm, using the image spacing) to the nearest background voxel centre and
    ``d_boundary`` to the nearest inside-boundary voxel centre (both from
    ``sitk.SignedMaurerDistanceMap(useImageSpacing=True)``). A boundary voxel of an axis with
    spacing ``s`` gets depth ``s / 2``, so the result is right on anisotropic grids.

    Parameters
    ----------
    mask : SimpleITK.Image
    label : int, optional
        Region = ``mask == label`` (default: ``mask != 0``).
    slice_axis : int, optional
        Image axis (0 = x, 1 = y, 2 = z) along which to work slice by slice in 2-D (e.g. the
        sagittal axis for ROIs drawn on a few sagittal MR slices). Default: 3-D.
    border_is_surface : bool
        Treat the image border as background (a region cut by the field of view gets a surface
        there). Default True.

    Returns
    -------
    ndarray
        float array in ``GetArrayFromImage`` order (z, y, x); 0 outside the region.

    Examples
    --------
    >>> m = sitk.Image(9, 9, 9, sitk.sitkUInt8); m[2:7, 2:7, 2:7] = 1
    >>> surface_depth(m)[4, 4, 2:7].tolist()
    [0.5, 1.5, 2.5, 1.5, 0.5]
    """
    region = _binary(mask, label)
    if slice_axis is not None:
        if mask.GetDimension() != 3 or slice_axis not in (0, 1, 2):
            raise ValueError("slice_axis must be 0, 1 or 2 for a 3-D mask")
        arr = sitk.GetArrayViewFromImage(region)
        out = np.zeros(arr.shape, np.float64)
        ax = 2 - slice_axis  # array axis
        for i in range(arr.shape[ax]):
            sl = [slice(None)] * 3
            sl[ax] = i
            plane = sitk.Extract(region, [0 if d == slice_axis else n
                                          for d, n in enumerate(region.GetSize())],
                                 [i if d == slice_axis else 0 for d in range(3)])
            out[tuple(sl)] = surface_depth(plane, 1, border_is_surface=border_is_surface)
        return out
    pad = [1] * region.GetDimension() if border_is_surface else [0] * region.GetDimension()
    padded = sitk.ConstantPad(region, pad, pad, 0)
    inside = sitk.GetArrayViewFromImage(padded) != 0
    if not inside.any():
        return np.zeros(sitk.GetArrayViewFromImage(region).shape, np.float64)
    if inside.all():
        raise ValueError("region fills the whole image and border_is_surface=False: no surface")
    d_boundary = sitk.GetArrayFromImage(sitk.SignedMaurerDistanceMap(
        padded, insideIsPositive=True, squaredDistance=False, useImageSpacing=True))
    d_background = sitk.GetArrayFromImage(sitk.SignedMaurerDistanceMap(
        1 - padded, insideIsPositive=False, squaredDistance=False, useImageSpacing=True))
    depth = np.where(inside, 0.5 * (d_boundary + d_background), 0.0)
    if border_is_surface:
        depth = depth[(slice(1, -1),) * depth.ndim]
    return depth


def split_cortical_cancellous(mask: sitk.Image, shell_mm: float, *, label: int | None = None,
                              slice_axis: int | None = None, border_is_surface: bool = True
                              ) -> tuple[sitk.Image, sitk.Image]:
    """Split a whole-vertebra (or vertebral-body) mask into cortical shell and cancellous core.

    Morphological erosion by a ball of radius ``shell_mm`` in physical units, done with a
    distance transform so it is exact on anisotropic grids: a voxel is *cortical* when its
    centre lies less than ``shell_mm`` below the mask surface (see :func:`surface_depth`), and
    *cancellous* otherwise. This replaces the 3D U-Net compartment segmentation of seed 003
    (cortical thickness of lumbar vertebral bodies is ~0.4-0.6 mm in histology, but at CT
    resolution the visible shell is 1-3 mm; the thickness is a study parameter).

    Parameters
    ----------
    mask : SimpleITK.Image
        Whole-vertebra mask (label image).
    shell_mm : float
        Shell thickness in mm (>= 0; 0 gives an empty shell).
    label : int, optional
        Use ``mask == label`` (default: every non-zero voxel).
    slice_axis : int, optional
        Erode slice by slice in 2-D perpendicular to this image axis (0 = x, 1 = y, 2 = z),
        e.g. for ROIs drawn on a few sagittal MR slices. Default: 3-D.
    border_is_surface : bool
        Treat the image border as background (default True).

    Returns
    -------
    (SimpleITK.Image, SimpleITK.Image)
        ``(cortical, cancellous)`` uint8 0/1 masks on the input grid; they are disjoint and
        their union is the input region.

    Notes
    -----
    The shell is exact on faces aligned with the grid (``shell_mm`` rounded to whole voxels of
    that axis: a 2 mm shell is 4 voxels of 0.5 mm in-plane and 1 voxel of 2 mm through-plane).
    On oblique surfaces, as for any erosion of a voxelised object, the staircase boundary makes
    the shell up to about half a voxel thicker than on the smooth surface it samples.
    On real CT the best Dice with manual-derived shells was reached at 2.5 mm (TPTBox
    label 49, 1.5 mm voxels) and 1.75-2 mm (Bonelab label 2, 1 mm voxels); see
    ``tests/test_realct.py``.

    Examples
    --------
    >>> m = sitk.Image(12, 12, 12, sitk.sitkUInt8); m[1:11, 1:11, 1:11] = 1
    >>> cort, canc = split_cortical_cancellous(m, 2.0)
    >>> int(sitk.GetArrayViewFromImage(canc).sum())  # 6 x 6 x 6 core
    216
    """
    if not np.isfinite(shell_mm) or shell_mm < 0:
        raise ValueError(f"shell_mm must be >= 0, got {shell_mm}")
    region = sitk.GetArrayViewFromImage(mask)
    region = region == label if label is not None else region != 0
    if not region.any():
        raise ValueError(f"mask is empty (label={label})")
    depth = surface_depth(mask, label, slice_axis=slice_axis, border_is_surface=border_is_surface)
    cort = region & (depth < shell_mm)
    canc = region & ~cort
    out = []
    for a in (cort, canc):
        img = sitk.GetImageFromArray(a.astype(np.uint8))
        img.CopyInformation(mask)
        out.append(img)
    return out[0], out[1]


def dice(a: sitk.Image | np.ndarray, b: sitk.Image | np.ndarray) -> float:
    """Dice coefficient ``2|A∩B| / (|A|+|B|)`` of two binary masks (non-zero = inside).

    Examples
    --------
    >>> dice(np.array([1, 1, 0, 0]), np.array([1, 0, 1, 0]))
    0.5
    """
    x = (sitk.GetArrayViewFromImage(a) if isinstance(a, sitk.Image) else np.asarray(a)) != 0
    y = (sitk.GetArrayViewFromImage(b) if isinstance(b, sitk.Image) else np.asarray(b)) != 0
    if x.shape != y.shape:
        raise ValueError(f"shapes differ: {x.shape} vs {y.shape}")
    n = x.sum() + y.sum()
    return float("nan") if n == 0 else float(2.0 * (x & y).sum() / n)


def split_vertebrae(mask: sitk.Image, labels: Sequence[int], shell_mm: float, *,
                    slice_axis: int | None = None) -> tuple[sitk.Image, list[tuple[int, int]]]:
    """Split every labelled vertebra of one mask into cortical shell and cancellous
    (:func:`split_cortical_cancellous`): a compartment label map (no file I/O).

    Vertebra ``i`` of ``labels`` becomes label ``2i + 1`` (cortical shell) and ``2i + 2``
    (cancellous); returns the label map and the voxel counts ``[(n cortical, n cancellous)]``.
    """
    arr = sitk.GetArrayFromImage(mask)
    out = np.zeros(arr.shape, np.uint8)
    counts = []
    for i, label in enumerate(labels):
        region = arr == int(label)
        if not region.any():
            raise ValueError(f"label {label} is absent from the mask")
        # split inside the label's bounding box + 1 voxel (identical result, much faster)
        sl = bbox_slices(region, margin=1)
        sub = sitk.GetImageFromArray(region[sl].astype(np.uint8))
        sub.SetSpacing(mask.GetSpacing())
        sub.SetDirection(mask.GetDirection())
        sub.SetOrigin(mask.TransformIndexToPhysicalPoint([int(s.start) for s in sl[::-1]]))
        cort, canc = split_cortical_cancellous(sub, shell_mm, label=1, slice_axis=slice_axis)
        c = sitk.GetArrayViewFromImage(cort) != 0
        k = sitk.GetArrayViewFromImage(canc) != 0
        out[sl][c], out[sl][k] = 2 * i + 1, 2 * i + 2
        counts.append((int(c.sum()), int(k.sum())))
    img = sitk.GetImageFromArray(out)
    img.CopyInformation(mask)
    return img, counts


__all__ += ["split_vertebrae"]
