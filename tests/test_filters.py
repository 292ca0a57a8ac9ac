"""vcfnb.filters: the papers' twelve SimpleITK image types."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from scipy import ndimage

from vcfnb import filters


def _image(rng, shape=(14, 30, 26), spacing=(0.8, 0.8, 2.0)) -> sitk.Image:
    arr = ndimage.gaussian_filter(rng.normal(0, 1, shape), 1.2) * 200 + 300
    arr[4:10, 8:20, 6:18] += 150  # a brighter block: edges for the sharpening/flow filters
    img = sitk.GetImageFromArray(np.round(arr).astype(np.int16))
    img.SetSpacing(spacing)
    img.SetOrigin((-10.0, 5.0, 3.0))
    return img


@pytest.mark.parametrize("name", sorted(filters.IMAGE_TYPES))
def test_filter_is_pure_deterministic_and_keeps_geometry(rng, name):
    img = _image(rng)
    before = sitk.GetArrayFromImage(img).copy()
    a = filters.apply_filter(img, name)
    b = filters.apply_filter(img, name)
    assert np.array_equal(sitk.GetArrayFromImage(img), before)  # input untouched
    assert a.GetSize() == img.GetSize()
    assert a.GetSpacing() == img.GetSpacing() and a.GetOrigin() == img.GetOrigin()
    assert a.GetPixelID() == sitk.sitkFloat64
    arr = sitk.GetArrayFromImage(a)
    assert np.isfinite(arr).all()
    assert np.array_equal(arr, sitk.GetArrayFromImage(b))
    assert not np.array_equal(arr, before.astype(float))  # it does something


@pytest.mark.parametrize("name", ["AdditiveGaussianNoise", "ShotNoise", "SpeckleNoise"])
def test_noise_is_seeded_and_thread_independent(rng, name):
    img = _image(rng)
    ref = sitk.GetArrayFromImage(filters.apply_filter(img, name, seed=1))
    other = sitk.GetArrayFromImage(filters.apply_filter(img, name, seed=2))
    assert not np.array_equal(ref, other)
    old = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    try:
        for n in (1, 4):
            sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(n)
            again = sitk.GetArrayFromImage(filters.apply_filter(img, name, seed=1))
            assert np.array_equal(ref, again)
    finally:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(old)


def test_filters_compute_what_they_claim(rng):
    img = _image(rng)
    x = sitk.GetArrayFromImage(img).astype(float)
    inner = (slice(2, -2),) * 3
    mean = sitk.GetArrayFromImage(filters.apply_filter(img, "Mean", radius=1))
    np.testing.assert_allclose(mean[inner], ndimage.uniform_filter(x, 3)[inner], rtol=1e-12)
    box = sitk.GetArrayFromImage(filters.apply_filter(img, "BoxMean", radius=1))
    np.testing.assert_allclose(box[inner], mean[inner], rtol=1e-9)
    sd = sitk.GetArrayFromImage(filters.apply_filter(img, "BoxSigma", radius=1))
    m2 = ndimage.uniform_filter(x ** 2, 3)
    local_sd = np.sqrt(np.maximum(m2 - ndimage.uniform_filter(x, 3) ** 2, 0) * 27 / 26)
    np.testing.assert_allclose(sd[inner], local_sd[inner], rtol=1e-6, atol=1e-6)
    z = sitk.GetArrayFromImage(filters.apply_filter(img, "Normalize"))
    assert abs(z.mean()) < 1e-9 and abs(z.std(ddof=1) - 1) < 1e-9
    noise = sitk.GetArrayFromImage(filters.apply_filter(img, "AdditiveGaussianNoise", mean=5.0,
                                                        standardDeviation=10.0)) - x
    assert abs(noise.mean() - 5) < 0.3 and abs(noise.std() - 10) < 0.3
    shot = sitk.GetArrayFromImage(filters.apply_filter(img, "ShotNoise", scale=1.0))
    assert abs(shot.mean() / x.mean() - 1) < 0.01
    assert abs((shot - x).var() / x.mean() - 1) < 0.1  # Poisson: variance = mean (scale 1)
    speckle = sitk.GetArrayFromImage(filters.apply_filter(img, "SpeckleNoise",
                                                          standardDeviation=0.2)) / x
    assert abs(speckle.mean() - 1) < 0.02 and abs(speckle.std() - 0.2) < 0.02
    # smoothing filters lower the voxel-to-voxel variability, sharpening raises it
    rough = np.abs(np.diff(x, axis=2)).mean()
    for name in ("BinomialBlur", "CurvatureFlow", "DiscreteGaussian", "RecursiveGaussian", "Mean"):
        out = sitk.GetArrayFromImage(filters.apply_filter(img, name))
        assert np.abs(np.diff(out, axis=2)).mean() < 0.8 * rough, name
    sharp = sitk.GetArrayFromImage(filters.apply_filter(img, "LaplacianSharpening"))
    assert np.abs(np.diff(sharp, axis=2)).mean() > rough


def test_recursive_gaussian_matches_scipy_gaussian(rng):
    img = _image(rng, spacing=(1.0, 1.0, 1.0))
    x = sitk.GetArrayFromImage(img).astype(float)
    out = sitk.GetArrayFromImage(filters.apply_filter(img, "RecursiveGaussian", sigma=1.5))
    ref = ndimage.gaussian_filter(x, 1.5, mode="nearest")
    inner = (slice(5, -5),) * 3
    np.testing.assert_allclose(out[inner], ref[inner], rtol=5e-3)  # Deriche approximation


@pytest.mark.parametrize("name", sorted(filters.IMAGE_TYPES))
def test_crop_with_margin_gives_the_same_values(rng, name):
    """The crop rule vcfnb.features relies on: filter(crop + margin) == filter(whole) inside."""
    img = _image(rng, shape=(30, 60, 56))
    params, _ = filters.filter_params(name, {})
    margin = filters.filter_margin(name, params, img.GetSpacing(), sigma_margin=20)
    spec = filters.get_filter(name)
    if margin is None:
        assert spec.locality == "global"
        return
    lo_roi, hi_roi = np.array([24, 22, 12]), np.array([33, 36, 17])  # x, y, z
    lo = np.maximum(lo_roi - margin, 0)
    hi = np.minimum(hi_roi + margin, np.array(img.GetSize()) - 1)
    crop = sitk.RegionOfInterest(img, [int(v) for v in hi - lo + 1], [int(v) for v in lo])
    full = sitk.GetArrayFromImage(filters.apply_filter(img, name))
    part = sitk.GetArrayFromImage(filters.apply_filter(crop, name))
    sl_full = tuple(slice(a, b + 1) for a, b in zip(lo_roi[::-1], hi_roi[::-1]))
    sl_part = tuple(slice(a - c, b - c + 1) for a, b, c in zip(lo_roi[::-1], hi_roi[::-1], lo[::-1]))
    if spec.locality == "local":
        assert np.array_equal(full[sl_full], part[sl_part])
    else:  # recursive (IIR) Gaussian, float32 inside SimpleITK: 20 sigma leave rounding only
        np.testing.assert_allclose(part[sl_part], full[sl_full], rtol=1e-6, atol=1e-4)


def test_params_are_validated():
    with pytest.raises(ValueError, match="unknown parameter"):
        filters.apply_filter(sitk.Image(5, 5, 5, sitk.sitkFloat32), "Mean", radius=1, sigma=2)
    with pytest.raises(ValueError, match="standardDeviation must be > 0"):
        filters.filter_params("AdditiveGaussianNoise", {"standardDeviation": -1})
    with pytest.raises(ValueError, match="numberOfIterations"):
        filters.filter_params("CurvatureFlow", {"numberOfIterations": 0.5})
    with pytest.raises(ValueError, match="unknown vcfnb image type"):
        filters.get_filter("Sobel")
    assert filters.filter_params("boxsigma", {"binWidth": 10}) == ({"radius": 1}, {"binWidth": 10})


def test_names_follow_the_papers():
    prefixes = {s.prefix for s in filters.IMAGE_TYPES.values()}
    assert {"boxsigmaimage", "additivegaussiannoise", "binomialblurimage", "curvatureflow",
            "recursivegaussian", "shotnoise", "specklenoise", "normalize"} <= prefixes
    assert len(filters.IMAGE_TYPES) == 12
    assert filters.to_paper_name("log-sigma-1-0-mm-3D_firstorder_Skewness") == \
        "log_firstorder_log-sigma-1-0-mm-3D-Skewness"
    assert filters.to_paper_name("wavelet-LHL_gldm_SmallDependenceLowGrayLevelEmphasis") == \
        "wavelet_gldm_wavelet-LHL-SmallDependenceLowGrayLevelEmphasis"
    assert filters.to_paper_name("original_glcm_Correlation") == "original_glcm_Correlation"


def test_paper_feature_names_come_out_of_extract(tmp_path, rng):
    from vcfnb import features

    img = _image(rng)
    m = np.zeros(sitk.GetArrayFromImage(img).shape, np.uint8)
    m[4:10, 8:20, 6:18] = 1
    msk = sitk.GetImageFromArray(m)
    msk.CopyInformation(img)
    sitk.WriteImage(img, str(tmp_path / "img.nrrd"))
    sitk.WriteImage(msk, str(tmp_path / "msk.nrrd"))
    rois = pd.DataFrame({"patient_id": ["p"], "roi": ["L1"], "image": [str(tmp_path / "img.nrrd")],
                         "mask": [str(tmp_path / "msk.nrrd")], "label": [1]})
    out = features.extract(rois, {"imageType": {"BoxSigma": {}, "AdditiveGaussianNoise": {},
                                                "LoG": {"sigma": [4.0]}},
                                  "featureClass": {"glcm": ["Correlation"],
                                                   "glszm": ["GrayLevelVariance"],
                                                   "firstorder": ["Median"]}},
                           n_jobs=1, progress=False)
    for col in ("boxsigmaimage_glcm_Correlation", "additivegaussiannoise_glszm_GrayLevelVariance",
                "log-sigma-4-0-mm-3D_firstorder_Median"):
        assert col in out.columns and np.isfinite(out[col].iloc[0]), col
