"""vcfnb.preprocess: geometry, resampling, N4, normalisation, cropping, compartments."""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from vcfnb import preprocess as pp


def _image(arr: np.ndarray, spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0),
           direction=(1, 0, 0, 0, 1, 0, 0, 0, 1)) -> sitk.Image:
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    img.SetDirection(direction)
    return img


def _ball(shape_zyx, spacing_xyz, radius_mm, centre_mm=None) -> np.ndarray:
    z, y, x = np.indices(shape_zyx).astype(float)
    sx, sy, sz = spacing_xyz
    if centre_mm is None:
        centre_mm = ((shape_zyx[2] - 1) * sx / 2, (shape_zyx[1] - 1) * sy / 2,
                     (shape_zyx[0] - 1) * sz / 2)
    cx, cy, cz = centre_mm
    r2 = (x * sx - cx) ** 2 + (y * sy - cy) ** 2 + (z * sz - cz) ** 2
    return (r2 <= radius_mm**2).astype(np.uint8)


# ---------------------------------------------------------------------------- slices / bbox
def test_largest_area_slices_and_bbox():
    m = np.zeros((12, 5, 5), np.uint8)
    m[6, :4, :4] = 1
    m[5, :2, :2] = 1
    assert pp.largest_area_slices(m, k=2) == [4, 6, 8]
    assert pp.largest_area_slices(m, k=9) == [0, 6, 11]  # clipped to the volume
    assert pp.bbox_slices(m, margin=(1, 0, 0)) == (slice(4, 8), slice(0, 4), slice(0, 4))
    with pytest.raises(ValueError, match="empty"):
        pp.largest_area_slices(np.zeros((3, 3, 3)))


# ---------------------------------------------------------------------------------- geometry
def test_same_grid_and_differences():
    a = _image(np.zeros((4, 5, 6), np.uint8), spacing=(1, 1, 2))
    assert pp.same_grid(a, sitk.Image(a))
    b = sitk.Image(a)
    b.SetOrigin((0, 0, 5e-5))
    assert pp.same_grid(a, b, tol=1e-4) and not pp.same_grid(a, b, tol=1e-6)
    b.SetDirection((1, 0, 0, 0, -1, 0, 0, 0, 1))
    assert any(d.startswith("direction") for d in pp.grid_differences(a, b))
    c = _image(np.zeros((4, 5, 7), np.uint8))
    assert pp.grid_differences(a, c)[0].startswith("size")


def test_resample_linear_ramp_exact_and_extent_kept():
    z, y, x = np.indices((10, 12, 14)).astype(np.float32)
    img = _image(2 * x + 3 * z, spacing=(1.0, 1.0, 2.0), origin=(5, -3, 10),
                 direction=(0, 1, 0, -1, 0, 0, 0, 0, 1))
    out = pp.resample(img, (0.5, 1.0, 1.0))
    assert out.GetSize() == (28, 12, 20)
    assert out.GetOrigin() == img.GetOrigin() and out.GetDirection() == img.GetDirection()
    assert out.GetPixelID() == sitk.sitkFloat32
    arr = sitk.GetArrayFromImage(out)
    # voxel (i, j, k) of the output sits at x = i / 2, z = k / 2 in input index units
    i, k = 9, 7
    assert arr[k, 4, i] == pytest.approx(2 * i / 2 + 3 * k / 2, abs=1e-4)
    assert pp.resample(img, 1.0, "bspline").GetSize() == (14, 12, 20)
    with pytest.raises(ValueError, match="interpolator"):
        pp.resample(img, 1.0, "cubic")
    with pytest.raises(ValueError, match="spacing"):
        pp.resample(img, (1.0, 1.0))


def test_resample_mask_keeps_labels_and_shares_grid_with_image(rng):
    lab = rng.integers(0, 4, size=(6, 8, 8)).astype(np.uint8)
    msk = _image(lab, spacing=(1, 1, 3))
    img = _image(rng.normal(size=(6, 8, 8)).astype(np.float32), spacing=(1, 1, 3))
    rm = pp.resample_mask(msk, 1.0)
    assert rm.GetPixelID() == sitk.sitkUInt8
    assert set(np.unique(sitk.GetArrayFromImage(rm))) <= {0, 1, 2, 3}
    assert pp.same_grid(rm, pp.resample(img, 1.0))
    # nearest neighbour: each output slice equals one input slice
    arr = sitk.GetArrayFromImage(rm)
    assert any(np.array_equal(arr[4], lab[j]) for j in range(6))


def test_resample_to_reference_flipped_mask_vs_header_copy():
    ref = _image(np.zeros((3, 6, 5), np.int16), spacing=(1, 2, 1), origin=(0, 0, 0))
    arr = np.zeros((3, 6, 5), np.uint8)
    arr[1, 1, 2] = 7  # index y = 1 on a y-flipped grid
    flipped = _image(arr, spacing=(1, 2, 1), origin=(0, 10, 0),
                     direction=(1, 0, 0, 0, -1, 0, 0, 0, 1))
    phys = flipped.TransformIndexToPhysicalPoint((2, 1, 1))
    good = pp.resample_to_reference(flipped, ref)
    assert pp.same_grid(good, ref) and good.GetPixelID() == sitk.sitkUInt8
    idx = ref.TransformPhysicalPointToIndex(phys)
    assert good[idx] == 7 and int(sitk.GetArrayViewFromImage(good).sum()) == 7
    copied = sitk.Image(flipped)
    copied.CopyInformation(ref)  # the silent mistake
    assert copied[idx] == 0


# ------------------------------------------------------------------------------------ N4
def test_n4_removes_smooth_multiplicative_bias(rng):
    shape = (12, 48, 48)
    z, y, x = np.indices(shape).astype(float)
    tissue = np.where(((x - 24) ** 2 + (y - 24) ** 2) < 18**2, 100.0, 10.0)
    bias = np.exp(0.4 * (x - 24) / 24 + 0.2 * (y - 24) / 24)
    img = _image((tissue * bias + rng.normal(scale=1.0, size=shape)).astype(np.float32))
    inner = (((x - 24) ** 2 + (y - 24) ** 2) < 15**2)

    def cv(a):
        return a[inner].std() / a[inner].mean()

    mask = _image(inner.astype(np.uint8))
    out = pp.n4_correct(img, mask, shrink_factor=2, n_iterations=(20, 20))
    assert pp.same_grid(out, img) and out.GetPixelID() == sitk.sitkFloat32
    before, after = cv(sitk.GetArrayFromImage(img)), cv(sitk.GetArrayFromImage(out))
    assert after < 0.5 * before, (before, after)
    assert pp.same_grid(pp.n4_correct(img, shrink_factor=4, n_iterations=(5,)), img)
    with pytest.raises(ValueError, match="not on the image grid"):
        pp.n4_correct(img, _image(inner.astype(np.uint8)[:, :, :40]))


# ---------------------------------------------------------------------------- normalisation
def test_normalize_zscore_in_mask_and_pyradiomics(rng):
    arr = rng.normal(50, 10, size=(5, 10, 10)).astype(np.float32)
    img = _image(arr)
    m = np.zeros(arr.shape, np.uint8)
    m[2, 2:8, 2:8] = 1
    z = sitk.GetArrayFromImage(pp.normalize(img, _image(m), scale=100))
    assert z[m == 1].mean() == pytest.approx(0, abs=1e-4)
    assert z[m == 1].std() == pytest.approx(100, rel=1e-4)
    whole = sitk.GetArrayFromImage(pp.normalize(img))
    assert whole.std() == pytest.approx(1, rel=1e-5)
    from radiomics import imageoperations

    ref = imageoperations.normalizeImage(img, normalizeScale=3, removeOutliers=2)
    got = pp.normalize(img, method="pyradiomics", scale=3, remove_outliers=2)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(got), sitk.GetArrayFromImage(ref))
    with pytest.raises(ValueError, match="whole image"):
        pp.normalize(img, _image(m), method="pyradiomics")
    with pytest.raises(ValueError, match="SD"):
        pp.normalize(_image(np.ones((3, 3, 3), np.float32)))
    assert sitk.GetArrayViewFromImage(img)[0, 0, 0] == arr[0, 0, 0]  # input untouched


# ------------------------------------------------------------------------------- cropping
def test_crop_to_rois_keeps_physical_position(rng):
    arr = rng.normal(size=(20, 30, 40)).astype(np.float32)
    img = _image(arr, spacing=(0.5, 1.0, 2.0), origin=(10, 20, 30),
                 direction=(0, 0, 1, 1, 0, 0, 0, 1, 0))
    m1 = np.zeros(arr.shape, np.uint8)
    m1[5:8, 10:12, 10:15] = 1
    m2 = np.zeros(arr.shape, np.uint8)
    m2[9, 14, 20] = 2
    masks = [_image(m, (0.5, 1.0, 2.0), (10, 20, 30), (0, 0, 1, 1, 0, 0, 0, 1, 0))
             for m in (m1, m2)]
    cimg, (c1, c2) = pp.crop_to_rois(img, masks, margin_mm=(1.0, 1.0, 3.0))
    # margins: x 1 mm / 0.5 = 2 voxels, y 1 voxel, z ceil(3 / 2) = 2 voxels
    assert cimg.GetSize() == (11 + 4, 5 + 2, 5 + 4)  # union box 11 x 5 x 5 voxels
    for c in (c1, c2):
        assert pp.same_grid(c, cimg)
    p = img.TransformIndexToPhysicalPoint((20, 14, 9))
    assert c2[c2.TransformPhysicalPointToIndex(p)] == 2
    q = (12, 11, 6)
    assert cimg[cimg.TransformPhysicalPointToIndex(img.TransformIndexToPhysicalPoint(q))] == \
        pytest.approx(float(arr[q[2], q[1], q[0]]))
    assert int(sitk.GetArrayViewFromImage(c1).sum()) == int(m1.sum())
    full, _ = pp.crop_to_rois(img, masks, margin_voxels=100)
    assert full.GetSize() == img.GetSize()
    with pytest.raises(ValueError, match="not both"):
        pp.crop_to_rois(img, masks, margin_mm=1, margin_voxels=1)
    other = _image(m1[:, :, :39])
    with pytest.raises(ValueError, match="mask 0 is not on the image grid"):
        pp.crop_to_rois(img, [other])


# ----------------------------------------------------------------------------- compartments
def test_split_is_a_partition_and_shell_is_physical_on_anisotropic_grid():
    spacing = (0.5, 0.5, 2.0)
    box = np.zeros((14, 60, 60), np.uint8)
    box[2:12, 10:50, 10:50] = 1  # 20 x 20 x 20 mm
    m = _image(box, spacing=spacing)
    cort, canc = pp.split_cortical_cancellous(m, 2.0)
    c, k = sitk.GetArrayFromImage(cort), sitk.GetArrayFromImage(canc)
    assert not (c & k).any() and np.array_equal(c | k, box)
    assert pp.same_grid(cort, m) and cort.GetPixelID() == sitk.sitkUInt8
    zz, yy, xx = np.nonzero(k)
    # 2 mm shell: 4 voxels of 0.5 mm in x and y, 1 voxel of 2 mm in z
    assert (xx.min(), xx.max()) == (14, 45) and (yy.min(), yy.max()) == (14, 45)
    assert (zz.min(), zz.max()) == (3, 10)


@pytest.mark.parametrize("t", [3.0, 4.5])
def test_shell_volume_on_a_ball_is_the_same_on_anisotropic_and_isotropic_grids(t):
    # ball of radius 15 mm: shell volume ~ 4/3 pi (R^3 - (R-t)^3). Voxel morphology thickens
    # the shell on oblique surfaces (staircase), by at most ~0.5 voxel; what must not happen is
    # a thickness that depends on the grid's anisotropy.
    R = 15.0
    want = 4 / 3 * np.pi * (R**3 - (R - t) ** 3)
    vols = {}
    for spacing, shape in (((0.6, 0.6, 1.8), (22, 60, 60)), ((0.6, 0.6, 0.6), (60, 60, 60))):
        m = _image(_ball(shape, spacing, R), spacing=spacing)
        cort, canc = pp.split_cortical_cancellous(m, t)
        vols[spacing[2]] = sitk.GetArrayViewFromImage(cort).sum() * np.prod(spacing)
    assert vols[1.8] == pytest.approx(vols[0.6], rel=0.06)
    for v in vols.values():
        assert want < v < want + 0.5 * 1.8 * 4 * np.pi * R**2


def test_split_options_and_errors():
    arr = np.zeros((3, 20, 20), np.uint8)
    arr[:, 4:16, 4:16] = 2
    arr[:, 0:2, 0:2] = 1  # another label
    m = _image(arr, spacing=(1, 1, 1))
    # 3-D erosion of a 3-slice slab by 2 mm leaves nothing; per-slice 2-D keeps an 8 x 8 core
    _, canc3 = pp.split_cortical_cancellous(m, 2.0, label=2)
    assert sitk.GetArrayViewFromImage(canc3).sum() == 0
    cort2, canc2 = pp.split_cortical_cancellous(m, 2.0, label=2, slice_axis=2)
    assert sitk.GetArrayViewFromImage(canc2).sum() == 3 * 8 * 8
    assert sitk.GetArrayViewFromImage(cort2)[:, 0:2, 0:2].sum() == 0  # label 1 ignored
    cort0, canc0 = pp.split_cortical_cancellous(m, 0.0, label=2)
    assert sitk.GetArrayViewFromImage(cort0).sum() == 0
    assert sitk.GetArrayViewFromImage(canc0).sum() == (arr == 2).sum()
    # a region cut by the image border gets a shell there only when border_is_surface
    slab = _image(np.ones((5, 5, 5), np.uint8))
    c_b, _ = pp.split_cortical_cancellous(slab, 1.0)
    assert sitk.GetArrayViewFromImage(c_b).sum() == 125 - 27
    with pytest.raises(ValueError, match="no surface"):
        pp.split_cortical_cancellous(slab, 1.0, border_is_surface=False)
    with pytest.raises(ValueError, match="empty"):
        pp.split_cortical_cancellous(m, 1.0, label=9)
    with pytest.raises(ValueError, match="shell_mm"):
        pp.split_cortical_cancellous(m, -1.0)


def test_surface_depth_values():
    arr = np.zeros((1, 9), np.uint8)
    arr[0, 1:8] = 1  # a 2-D row, no border surface along y
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((2.0, 1.0))
    d = pp.surface_depth(img, border_is_surface=False)
    np.testing.assert_allclose(d[0], [0, 1, 3, 5, 7, 5, 3, 1, 0])
    # per-slice 2-D depth of a 3-D stack equals the 2-D depth of each slice
    stack = _image(np.repeat(np.pad(np.ones((6, 6), np.uint8), 2)[None], 3, axis=0),
                   spacing=(1.0, 2.0, 3.0))
    d2 = pp.surface_depth(stack, slice_axis=2)
    np.testing.assert_allclose(d2[:, 4, 2:8], [[0.5, 1.5, 2.5, 2.5, 1.5, 0.5]] * 3)  # x: 1 mm
    np.testing.assert_allclose(d2[:, 2:8, 4], [[1, 2.5, 2.5, 2.5, 2.5, 1]] * 3)  # y: 2 mm


def test_dice():
    assert pp.dice(np.array([1, 1, 0]), np.array([1, 1, 0])) == 1.0
    assert np.isnan(pp.dice(np.zeros(3), np.zeros(3)))
    with pytest.raises(ValueError, match="shapes"):
        pp.dice(np.zeros(3), np.zeros(4))
