"""LBP2D / LBP3D image types: the SciPy sph_harm shim, exactness against pyradiomics, composition.

pyradiomics' LBP3D (``radiomics.imageoperations.getLBP3DImage``) imports
``scipy.special.sph_harm``, which SciPy 1.17 removed; :mod:`vcfnb.compat` maps it onto
``sph_harm_y``. The reference values below were computed with SciPy 1.16.3 (NumPy 2.4.6) in a
throwaway virtual environment::

    python3 -m venv /tmp/oldscipy && /tmp/oldscipy/bin/pip install 'scipy<1.17' numpy
    /tmp/oldscipy/bin/python - <<'PY'
    import numpy as np
    from scipy.special import sph_harm   # old convention: sph_harm(m, n, theta=azimuth, phi=polar)
    pts = [(0.0, 0.0), (0.3, 0.7), (np.pi / 2, np.pi / 2), (np.pi, np.pi), (2 * np.pi, 1.2),
           (-1.0, 2.5), (7.0, 4.0)]
    cases = [(m, n, t, p) for n in range(4) for m in range(-n, n + 1) for t, p in pts]
    cases += [(m, n, 0.3, 0.7) for m, n in [(-5, 5), (-2, 5), (0, 5), (4, 5), (5, 5), (3, 2),
                                            (-3, 2), (0, -1), (1.5, 2), (-1.5, 2.5)]]
    for m, n, t, p in cases:
        v = complex(sph_harm(m, n, t, p))
        print(f"({m!r}, {n!r}, {float(t)!r}, {float(p)!r}, {v.real!r}, {v.imag!r}),")
    PY

Rows are ``(m, n, theta, phi, real, imag)``; they include negative orders, angles at and beyond
the ends of their ranges, degree 5 (``lbp3DLevels`` up to 6), ``|m| > n`` and ``n < 0`` (NaN in
the old function, 0 in ``sph_harm_y``) and non-integer m, n (truncated by the old ufunc).
"""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from scipy import ndimage

from vcfnb import compat, composition, features, filters

NAN = float("nan")

#: sph_harm(m, n, theta, phi) of SciPy 1.16.3 (see the module docstring for the exact call)
SPH_HARM_SCIPY_1_16 = [
    (0, 0, 0.0, 0.0, 0.28209479177387814, 0.0),
    (0, 0, 0.3, 0.7, 0.28209479177387814, 0.0),
    (0, 0, 1.5707963267948966, 1.5707963267948966, 0.28209479177387814, 0.0),
    (0, 0, 3.141592653589793, 3.141592653589793, 0.28209479177387814, 0.0),
    (0, 0, 6.283185307179586, 1.2, 0.28209479177387814, 0.0),
    (0, 0, -1.0, 2.5, 0.28209479177387814, -0.0),
    (0, 0, 7.0, 4.0, 0.28209479177387814, 0.0),
    (-1, 1, 0.0, 0.0, 0.0, -0.0),
    (-1, 1, 0.3, 0.7, 0.2126325305827379, -0.06577494955546766),
    (-1, 1, 1.5707963267948966, 1.5707963267948966, 2.115541521371041e-17, -0.3454941494713355),
    (-1, 1, 3.141592653589793, 3.141592653589793, -4.231083042742082e-17, -5.1815823052207346e-33),
    (-1, 1, 6.283185307179586, 1.2, 0.3220140512802878, 7.887069543617522e-17),
    (-1, 1, -1.0, 2.5, 0.111717564549627, 0.17398979800922174),
    (-1, 1, 7.0, 4.0, 0.1971234515249661, -0.17178283417908674),
    (0, 1, 0.0, 0.0, 0.48860251190291987, 0.0),
    (0, 1, 0.3, 0.7, 0.3737038139165246, 0.0),
    (0, 1, 1.5707963267948966, 1.5707963267948966, 2.991827511286337e-17, 0.0),
    (0, 1, 3.141592653589793, 3.141592653589793, -0.48860251190291987, -0.0),
    (0, 1, 6.283185307179586, 1.2, 0.17704890904480425, 0.0),
    (0, 1, -1.0, 2.5, -0.391440782951219, 0.0),
    (0, 1, 7.0, 4.0, -0.3193719150432806, -0.0),
    (1, 1, 0.0, 0.0, -0.0, -0.0),
    (1, 1, 0.3, 0.7, -0.2126325305827379, -0.06577494955546766),
    (1, 1, 1.5707963267948966, 1.5707963267948966, -2.115541521371041e-17, -0.3454941494713355),
    (1, 1, 3.141592653589793, 3.141592653589793, 4.231083042742082e-17, -5.1815823052207346e-33),
    (1, 1, 6.283185307179586, 1.2, -0.3220140512802878, 7.887069543617522e-17),
    (1, 1, -1.0, 2.5, -0.111717564549627, 0.17398979800922174),
    (1, 1, 7.0, 4.0, -0.1971234515249661, -0.17178283417908674),
    (-2, 2, 0.0, 0.0, 0.0, -0.0),
    (-2, 2, 0.3, 0.7, 0.1323096677788881, -0.09051791382699816),
    (-2, 2, 1.5707963267948966, 1.5707963267948966, -0.3862742020231896, -4.730494651008972e-17),
    (-2, 2, 3.141592653589793, 3.141592653589793, 5.7931851327418124e-33, 1.418921125936059e-48),
    (-2, 2, 6.283185307179586, 1.2, 0.3355551855353995, 1.6437463356128929e-16),
    (-2, 2, -1.0, 2.5, -0.057574501122526434, 0.12580258006011533),
    (-2, 2, 7.0, 4.0, 0.030251544671998417, -0.2191605406778473),
    (-1, 2, 0.0, 0.0, 0.0, -0.0),
    (-1, 2, 0.3, 0.7, 0.3636524725884646, -0.11249089203178195),
    (-1, 2, 1.5707963267948966, 1.5707963267948966, 2.896592566370907e-33, -4.7304946510089723e-17),
    (-1, 2, 3.141592653589793, 3.141592653589793, 9.460989302017945e-17, 1.1586370265483628e-32),
    (-1, 2, 6.283185307179586, 1.2, 0.2609140010634415, 6.390549925101454e-17),
    (-1, 2, -1.0, 2.5, -0.2001321392819654, -0.31168733966944373),
    (-1, 2, 7.0, 4.0, -0.2881139748622058, 0.25107634218835434),
    (0, 2, 0.0, 0.0, 0.63078313050504, 0.0),
    (0, 2, 0.3, 0.7, 0.23810508748746873, 0.0),
    (0, 2, 1.5707963267948966, 1.5707963267948966, -0.31539156525252, -0.0),
    (0, 2, 3.141592653589793, 3.141592653589793, 0.63078313050504, 0.0),
    (0, 2, 6.283185307179586, 1.2, -0.19115585460162732, -0.0),
    (0, 2, -1.0, 2.5, 0.29189277364055644, -0.0),
    (0, 2, 7.0, 4.0, 0.08886155751547026, 0.0),
    (1, 2, 0.0, 0.0, -0.0, -0.0),
    (1, 2, 0.3, 0.7, -0.3636524725884646, -0.11249089203178195),
    (1, 2, 1.5707963267948966, 1.5707963267948966, -2.896592566370907e-33, -4.7304946510089723e-17),
    (1, 2, 3.141592653589793, 3.141592653589793, -9.460989302017945e-17, 1.1586370265483628e-32),
    (1, 2, 6.283185307179586, 1.2, -0.2609140010634415, 6.390549925101454e-17),
    (1, 2, -1.0, 2.5, 0.2001321392819654, -0.31168733966944373),
    (1, 2, 7.0, 4.0, 0.2881139748622058, 0.25107634218835434),
    (2, 2, 0.0, 0.0, 0.0, 0.0),
    (2, 2, 0.3, 0.7, 0.1323096677788881, 0.09051791382699816),
    (2, 2, 1.5707963267948966, 1.5707963267948966, -0.3862742020231896, 4.730494651008972e-17),
    (2, 2, 3.141592653589793, 3.141592653589793, 5.7931851327418124e-33, -1.418921125936059e-48),
    (2, 2, 6.283185307179586, 1.2, 0.3355551855353995, -1.6437463356128929e-16),
    (2, 2, -1.0, 2.5, -0.057574501122526434, -0.12580258006011533),
    (2, 2, 7.0, 4.0, 0.030251544671998417, 0.2191605406778473),
    (-3, 3, 0.0, 0.0, 0.0, -0.0),
    (-3, 3, 0.3, 0.7, 0.06934018598940031, -0.08737960518101168),
    (-3, 3, 1.5707963267948966, 1.5707963267948966, -7.664277302098633e-17, 0.4172238236327841),
    (-3, 3, 3.141592653589793, 3.141592653589793, -7.663049907237104e-49, -2.815358862181302e-64),
    (-3, 3, 6.283185307179586, 1.2, 0.33780920126362673, 2.4821817423001466e-16),
    (-3, 3, -1.0, 2.5, -0.08853863551979843, 0.012620876421860728),
    (-3, 3, 7.0, 4.0, -0.09905643796132677, -0.1513085631388532),
    (-2, 3, 0.0, 0.0, 0.0, -0.0),
    (-2, 3, 0.3, 0.7, 0.26773949122043095, -0.1831704409905742),
    (-2, 3, 1.5707963267948966, 1.5707963267948966, -6.257856212445511e-17, -7.663663580095775e-33),
    (-2, 3, 3.141592653589793, 3.141592653589793, -1.5327327160191544e-32, -3.754112429242573e-48),
    (-2, 3, 6.283185307179586, 1.2, 0.32169960992773666, 1.575873590339819e-16),
    (-2, 3, -1.0, 2.5, 0.12203645391688907, -0.26665451657947997),
    (-2, 3, 7.0, 4.0, -0.05231636994527689, 0.3790115198356164),
    (-1, 3, 0.0, 0.0, 0.0, -0.0),
    (-1, 3, 0.3, 0.7, 0.3828652372322057, -0.1184340965913092),
    (-1, 3, 1.5707963267948966, 1.5707963267948966, -1.9789078901162346e-17, 0.32318018411415067),
    (-1, 3, 3.141592653589793, 3.141592653589793, -1.5831263120929877e-16, -1.938770570750631e-32),
    (-1, 3, 6.283185307179586, 1.2, -0.10346315707176415, -2.534116482752316e-17),
    (-1, 3, -1.0, 2.5, 0.23086163405640062, 0.35954569220589155),
    (-1, 3, 7.0, 4.0, 0.20951551329640625, -0.18258187141160342),
    (0, 3, 0.0, 0.0, 0.7463526651802307, 0.0),
    (0, 3, 0.3, 0.7, -0.021430020450454834, -0.0),
    (0, 3, 1.5707963267948966, 1.5707963267948966, -6.855138018360493e-17, -0.0),
    (0, 3, 3.141592653589793, 3.141592653589793, -0.7463526651802307, -0.0),
    (0, 3, 6.283185307179586, 1.2, -0.31689376785772516, -0.0),
    (0, 3, -1.0, 2.5, -0.06253075642598777, 0.0),
    (0, 3, 7.0, 4.0, 0.2106896600106975, 0.0),
    (1, 3, 0.0, 0.0, 0.0, 0.0),
    (1, 3, 0.3, 0.7, -0.3828652372322057, -0.1184340965913092),
    (1, 3, 1.5707963267948966, 1.5707963267948966, 1.9789078901162346e-17, 0.32318018411415067),
    (1, 3, 3.141592653589793, 3.141592653589793, 1.5831263120929877e-16, -1.938770570750631e-32),
    (1, 3, 6.283185307179586, 1.2, 0.10346315707176415, -2.534116482752316e-17),
    (1, 3, -1.0, 2.5, -0.23086163405640062, 0.35954569220589155),
    (1, 3, 7.0, 4.0, -0.20951551329640625, -0.18258187141160342),
    (2, 3, 0.0, 0.0, 0.0, 0.0),
    (2, 3, 0.3, 0.7, 0.26773949122043095, 0.1831704409905742),
    (2, 3, 1.5707963267948966, 1.5707963267948966, -6.257856212445511e-17, 7.663663580095775e-33),
    (2, 3, 3.141592653589793, 3.141592653589793, -1.5327327160191544e-32, 3.754112429242573e-48),
    (2, 3, 6.283185307179586, 1.2, 0.32169960992773666, -1.575873590339819e-16),
    (2, 3, -1.0, 2.5, 0.12203645391688907, 0.26665451657947997),
    (2, 3, 7.0, 4.0, -0.05231636994527689, -0.3790115198356164),
    (3, 3, 0.0, 0.0, 0.0, 0.0),
    (3, 3, 0.3, 0.7, -0.06934018598940031, -0.08737960518101168),
    (3, 3, 1.5707963267948966, 1.5707963267948966, 7.664277302098633e-17, 0.4172238236327841),
    (3, 3, 3.141592653589793, 3.141592653589793, 7.663049907237104e-49, -2.815358862181302e-64),
    (3, 3, 6.283185307179586, 1.2, -0.33780920126362673, 2.4821817423001466e-16),
    (3, 3, -1.0, 2.5, 0.08853863551979843, 0.012620876421860728),
    (3, 3, 7.0, 4.0, 0.09905643796132677, -0.1513085631388532),
    (-5, 5, 0.3, 0.7, 0.0036429465545886066, -0.05137071921135627),
    (-2, 5, 0.3, 0.7, 0.3351948836945583, -0.22931915790325988),
    (0, 5, 0.3, 0.7, -0.3926688893487552, -0.0),
    (4, 5, 0.3, 0.7, 0.0700618619068036, 0.180209731752775),
    (5, 5, 0.3, 0.7, -0.0036429465545886066, -0.05137071921135627),
    (3, 2, 0.3, 0.7, NAN, 0.0),
    (-3, 2, 0.3, 0.7, NAN, 0.0),
    (0, -1, 0.3, 0.7, NAN, 0.0),
    (1.5, 2, 0.3, 0.7, -0.3636524725884646, -0.11249089203178195),
    (-1.5, 2.5, 0.3, 0.7, 0.3636524725884646, -0.11249089203178195),
]

# ---------------------------------------------------------------------------------------------
# the SciPy shim
# ---------------------------------------------------------------------------------------------


def test_sph_harm_shim_equals_scipy_1_16():
    m, n, theta, phi, re, im = (np.array(c, dtype=float) for c in zip(*SPH_HARM_SCIPY_1_16))
    want = re + 1j * im
    got = compat.sph_harm(m, n, theta, phi)  # vectorised, as pyradiomics calls it on vertices
    assert got.dtype == np.complex128 and got.shape == want.shape
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    # atol only for the exact zeros that both round to ~1e-17 (e.g. Y_1^1 at phi = pi)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15, equal_nan=True)
    for (mi, ni, t, p, r, i) in SPH_HARM_SCIPY_1_16:  # scalar calls with int m, n as LBP3D does
        one = compat.sph_harm(mi, ni, t, p)
        assert isinstance(one, np.complex128)
        if np.isnan(r):
            assert np.isnan(one)
        else:
            np.testing.assert_allclose(one, complex(r, i), rtol=1e-12, atol=1e-15)


def test_shim_is_installed_only_where_scipy_lacks_sph_harm():
    import scipy
    import scipy.special

    from scipy.special import sph_harm  # what radiomics.imageoperations.getLBP3DImage does

    major, minor = (int(v) for v in scipy.__version__.split(".")[:2])
    if (major, minor) >= (1, 17):
        assert sph_harm is compat.sph_harm and compat.SHIMMED == ["sph_harm"]
    else:  # an older SciPy keeps its own function
        assert sph_harm is not compat.sph_harm and compat.SHIMMED == []
    assert compat.install() == compat.SHIMMED  # idempotent


def test_a_fresh_process_importing_vcfnb_features_has_the_shim():
    code = ("import scipy.special as s, vcfnb.features, vcfnb.compat as c; "
            "print(hasattr(s, 'sph_harm'), s.sph_harm(1, 2, 0.3, 0.7) == c.sph_harm(1, 2, 0.3, 0.7))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         timeout=120)
    assert out.stdout.split() == ["True", "True"]


# ---------------------------------------------------------------------------------------------
# extraction: vcfnb.features.extract == RadiomicsFeatureExtractor.execute
# ---------------------------------------------------------------------------------------------

#: LBP values are a few small numbers (LBP2D 'uniform': integers 0..P+1): bins of 1 and 0.5
LBP = {"setting": {"binWidth": 25},
       "imageType": {"Original": {}, "LBP2D": {"binWidth": 1}, "LBP3D": {"binWidth": 0.5}},
       "featureClass": {"shape": ["VoxelVolume"], "firstorder": [],
                        "glcm": ["Correlation", "JointEntropy", "Idmn"],
                        "glrlm": ["RunEntropy"], "glszm": ["ZoneEntropy"],
                        "gldm": ["DependenceEntropy"], "ngtdm": ["Coarseness"]}}


def _cohort(folder, rng) -> pd.DataFrame:
    """One CT-like scan, two ROIs (labels 1 and 2) in one mask file and a reader-2 mask."""
    shape = (14, 34, 30)
    arr = ndimage.gaussian_filter(rng.normal(0, 1, shape), 1.0) * 150 + 200
    arr[:, :, :3] = -1000
    m = np.zeros(shape, np.uint8)
    m[3:9, 6:16, 6:16] = 1
    m[7:12, 18:28, 12:24] = 2
    arr[m == 1] += 250
    img = sitk.GetImageFromArray(np.round(arr).astype(np.int16))
    img.SetSpacing((0.9, 0.9, 2.5))
    img.SetOrigin((-20.0, 10.0, 4.0))
    paths = {}
    for name, mm in (("seg", m), ("seg_r2", np.where(np.arange(shape[0])[:, None, None] == 3, 0,
                                                      m).astype(np.uint8))):
        msk = sitk.GetImageFromArray(mm)
        msk.CopyInformation(img)
        paths[name] = str(folder / f"{name}.nii.gz")
        sitk.WriteImage(msk, paths[name])
    ip = str(folder / "ct.nii.gz")
    sitk.WriteImage(img, ip)
    return pd.DataFrame({"patient_id": ["p1"] * 3, "roi": ["L1", "L2", "L1"],
                         "reader": ["r1", "r1", "r2"], "image": [ip] * 3,
                         "mask": [paths["seg"], paths["seg"], paths["seg_r2"]],
                         "label": [1, 2, 1]}, index=["a", "b", "c"])


def _naive(rois: pd.DataFrame, settings: dict) -> pd.DataFrame:
    """Plain pyradiomics, one execute() per ROI."""
    from radiomics import featureextractor

    out = []
    for _, r in rois.iterrows():
        res = featureextractor.RadiomicsFeatureExtractor(settings).execute(
            r["image"], r["mask"], label=int(r["label"]))
        out.append({k: float(v) for k, v in res.items() if not k.startswith("diagnostics")})
    return pd.DataFrame(out, index=rois.index)


def _assert_same(ref: pd.DataFrame, got: pd.DataFrame) -> None:
    assert got.attrs["failures"] == []
    feat = [c for c in got.columns if c not in features.ID_COLUMNS]
    assert set(feat) == set(ref.columns)
    np.testing.assert_allclose(got[feat].to_numpy(float), ref[feat].to_numpy(float), rtol=0,
                               atol=0, equal_nan=True)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    return _cohort(tmp_path_factory.mktemp("lbp"), np.random.default_rng(11))


@pytest.fixture(scope="module")
def reference(cohort):
    return _naive(cohort, LBP)


def test_lbp_features_equal_pyradiomics_execute(cohort, reference):
    import warnings

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        got = features.extract(cohort, LBP, n_jobs=1, progress=False)
    # scikit-image's float-image advice is not repeated per scan in the reports (the composition
    # table marks LBP features as not IBSI-standardised instead)
    assert not [w for w in seen if "local_binary_pattern" in str(w.message)]
    prefixes = {c.split("_", 1)[0] for c in got.columns if c not in features.ID_COLUMNS}
    assert prefixes == {"original", "lbp-2D", "lbp-3D-m1", "lbp-3D-m2", "lbp-3D-k"}
    _assert_same(reference, got)
    # LBP3D is computed on each ROI's own label: L1 and L2 share a mask file but differ
    assert got.loc["a", "lbp-3D-m1_firstorder_Mean"] != got.loc["b", "lbp-3D-m1_firstorder_Mean"]


def test_lbp_features_in_worker_processes(cohort, reference, tmp_path):
    """n_jobs=2: the workers import vcfnb.features, so they have the sph_harm shim."""
    got = features.extract(cohort, LBP, n_jobs=2, progress=False, cache_dir=tmp_path / "cache")
    _assert_same(reference, got)
    again = features.extract(cohort, LBP, n_jobs=2, progress=False, cache_dir=tmp_path / "cache")
    assert again.attrs["cache"]["misses"] == 0
    pd.testing.assert_frame_equal(again, got, check_like=False)


def test_missing_lbp_image_is_a_failure_not_a_silent_gap(cohort, monkeypatch):
    """pyradiomics only logs a warning when scikit-image/trimesh is missing; vcfnb says so."""
    from radiomics import imageoperations

    def no_lbp(image, mask, **kwargs):  # what getLBP2DImage does without scikit-image
        return
        yield

    monkeypatch.setattr(imageoperations, "getLBP2DImage", no_lbp)
    got = features.extract(cohort.iloc[:1], {**LBP, "imageType": {"Original": {}, "LBP2D": {}}},
                           n_jobs=1, progress=False)
    fails = features.failures_table(got)
    assert list(fails["image_type"]) == ["LBP2D"]
    assert "computed no LBP2D image" in fails["reason"].iloc[0]
    assert not any(c.startswith("lbp") for c in got.columns)


@pytest.mark.realdata
def test_lbp_on_real_ct_equals_execute(shared_data):
    """TPTBox sample CT (1.5 mm, 73 x 47 x 73): cortical (49) and cancellous (50) compartments of
    one vertebra, both in one mask file, LBP2D + LBP3D, serial and with two workers."""
    d = shared_data / "tptbox" / "sample_ct"
    img = str(d / "sub-ct_label-22_ct.nii.gz")
    msk = str(d / "sub-ct_seg-subreg_label-22_msk.nii.gz")
    rois = pd.DataFrame({"patient_id": ["tptbox"] * 2, "roi": ["cortical", "cancellous"],
                         "image": [img] * 2, "mask": [msk] * 2, "label": [49, 50]})
    ref = _naive(rois, LBP)
    _assert_same(ref, features.extract(rois, LBP, n_jobs=1, progress=False))
    _assert_same(ref, features.extract(rois, LBP, n_jobs=2, progress=False))


# ---------------------------------------------------------------------------------------------
# IBSI status and feature composition
# ---------------------------------------------------------------------------------------------

def test_lbp_features_are_labelled_not_ibsi_standardised():
    for name in ("LBP2D", "LBP3D", "lbp-2D_glcm_Idmn", "lbp-3D-m1_firstorder_Mean",
                 "lbp-3D-k_ngtdm_Coarseness"):
        assert filters.ibsi_status(name) == "not standardised"
    assert filters.ibsi_status("original_glcm_Correlation") == "IBSI-1"
    assert filters.ibsi_status("log-sigma-1-0-mm-3D_glcm_Idmn") == "IBSI-2 filter family"
    assert filters.ibsi_status("logarithm_firstorder_Mean") == "not standardised"
    comp = composition.composition(LBP)
    status = dict(zip(comp["image_type"], comp["ibsi"]))
    assert status["LBP2D"] == status["LBP3D"] == "not standardised"
    assert status["Original"] == "IBSI-1"


SMALL = {"setting": {"binWidth": 25},
         "imageType": {"Original": {}, "Wavelet": {}, "LoG": {"sigma": [1.0, 2.0]},
                       "Gradient": {}, "Mean": {"radius": 1}, "LBP2D": {"binWidth": 1},
                       "LBP3D": {"binWidth": 0.5, "lbp3DLevels": 3}},
         "featureClass": {"shape": [], "firstorder": [], "glcm": [], "glrlm": [], "glszm": [],
                          "gldm": [], "ngtdm": []}}


def test_composition_total_equals_extracted_columns(cohort):
    comp = features.composition(SMALL)
    got = features.extract(cohort.iloc[:1], SMALL, n_jobs=1, progress=False)
    assert got.attrs["failures"] == []
    n_columns = len([c for c in got.columns if c not in features.ID_COLUMNS])
    assert comp.set_index("image_type").loc["all", "total"] == n_columns
    # per derived image and class too: the layout of feature_counts on the extracted table
    per_image = composition.composition(SMALL, by="image").drop(columns="ibsi")
    counted = features.feature_counts(got)
    pd.testing.assert_frame_equal(
        per_image.set_index("image_type").sort_index(),
        counted.set_index("image_type")[per_image.columns[1:]].sort_index().astype(int),
        check_names=False)
    # what pyradiomics enables, not a fixed list: 8 wavelet images, 2 LoG, 4 LBP3D (3 levels + k)
    rows = comp.set_index("image_type")
    assert rows.loc["Wavelet", "images"] == 8 and rows.loc["LoG", "images"] == 2
    assert rows.loc["LBP3D", "images"] == 4 and rows.loc["Mean", "images"] == 1
    assert rows.loc["Original", "shape"] > 0 and rows.drop(index=["Original", "all"])["shape"].eq(0).all()


def test_composition_follows_feature_lists_and_packaged_settings():
    few = {"imageType": {"Original": {}, "LBP3D": {}}, "featureClass": {"glcm": ["Idmn", "Id"]}}
    comp = composition.composition(few).set_index("image_type")
    assert comp.loc["all", "total"] == 2 * (1 + 3)
    assert list(composition.image_names("LBP3D", {}, {"lbp3DLevels": 4})) == [
        "lbp-3D-m1", "lbp-3D-m2", "lbp-3D-m3", "lbp-3D-m4", "lbp-3D-k"]
    dlr = composition.composition("vcf_dlr").set_index("image_type")
    # every pyradiomics texture/first-order class once per derived image, shape once
    per_image = sum(len(v) for k, v in composition.class_features(
        features.load_settings("vcf_dlr")).items() if k != "shape")
    assert dlr.loc["all", "total"] == dlr.loc["all", "images"] * per_image + dlr.loc["all", "shape"]
    with pytest.raises(ValueError, match="by must be"):
        composition.composition(few, by="class")


#: arm B (seed 001) as params/vcf_benign_malignant/paper.yaml builds it with vcf.settings_b, plus
#: LBP (docs/filters.md); written out here because the composition ignores resampling/normalising
ARM_B_LBP = {"setting": {"binWidth": 10.0, "normalize": True, "normalizeScale": 100.0},
             "imageType": {"Original": {}, "Wavelet": {}, "LoG": {"sigma": [1.0, 2.0, 3.0]},
                           "Square": {}, "SquareRoot": {}, "Logarithm": {}, "Exponential": {},
                           "Gradient": {}, "LBP2D": {"binWidth": 1}, "LBP3D": {"binWidth": 1}},
             "featureClass": {c: [] for c in ("shape", "firstorder", "glcm", "glrlm", "glszm",
                                              "gldm", "ngtdm")}}


def test_docs_arm_b_composition_table_is_what_composition_computes():
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "filters.md").read_text(encoding="utf-8")
    block = text.split("| image type | images | shape |", 1)[1].split("**paper (seed 001)**")[0]
    rows = [[c.strip().strip("*").replace(",", "") for c in line.strip().strip("|").split("|")]
            for line in block.splitlines()[2:] if line.startswith("|")]
    documented = {r[0].split(" (")[0].replace("vcfnb all", "all"): [int(v) for v in r[1:10]]
                  for r in rows if r[0]}
    comp = features.composition(ARM_B_LBP).set_index("image_type")
    cols = ["images", "shape", "firstorder", "glcm", "glrlm", "glszm", "gldm", "ngtdm", "total"]
    computed = {k: [int(v) for v in comp.loc[k, cols]] for k in comp.index}
    assert documented == computed
    assert computed["all"][-1] == 1967


def test_lbp_float_advice_filter_is_process_wide_and_installed_once():
    """The filter is added once and never saves/restores the filter list (what made the former
    ``catch_warnings`` per unit unsafe with several threads per Dask worker): a filter another
    thread adds in between stays."""
    import warnings

    with warnings.catch_warnings():
        features._quiet_lbp_float_advice()
        n = len(warnings.filters)
        warnings.filterwarnings("error", message="another thread's filter")
        features._quiet_lbp_float_advice()
        assert len(warnings.filters) == n + 1
        assert warnings.filters[0][1].pattern == "another thread's filter"
        with warnings.catch_warnings(record=True) as seen:
            warnings.warn(features._LBP_FLOAT_ADVICE + " is discouraged", UserWarning)
        assert not seen
