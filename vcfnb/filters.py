"""The papers' extra image types: SimpleITK filters usable from a pyradiomics ``imageType`` section.

Seeds 002 and 003 extracted their 2286 features with a commercial tool (United Imaging's uAI
Research Portal) whose 15 image types are pyradiomics' *original*, *wavelet* and *LoG* plus twelve
SimpleITK filters. This module provides those twelve as image types of :func:`vcfnb.features.extract`,
so a settings file can say::

    imageType:
      Original: {}
      BoxSigma: {radius: 1}
      AdditiveGaussianNoise: {standardDeviation: 10.0, seed: 42}

and the feature table gets columns named like the papers' features:
``boxsigmaimage_glcm_Correlation``, ``additivegaussiannoise_glszm_GrayLevelVariance``.

Every filter runs on a 64-bit float copy of the image (no integer truncation), is a pure function
of its input, and is deterministic: the noise filters take a ``seed`` (default 42) and are run
single-threaded so the noise field does not depend on the machine. Parameter names, defaults and
meaning are those of the SimpleITK filter; ``docs/filters.md`` lists them with the feature prefix
of each image type.

Each image type also declares how far its output at a voxel depends on the input
(:func:`filter_margin`): :mod:`vcfnb.features` crops a scan to the union of its ROIs plus that
margin before filtering only where the result inside the ROIs stays identical to filtering the
whole image, and filters the whole image otherwise.

References
----------
Lowekamp BC et al. The design of SimpleITK. Front Neuroinform 2013;7:45.
van Griethuysen JJM et al. Computational radiomics system to decode the radiographic phenotype.
Cancer Res 2017;77:e104-e107 (pyradiomics).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import SimpleITK as sitk

__all__ = [
    "IMAGE_TYPES", "FilterSpec", "get_filter", "is_vcfnb_image_type", "apply_filter",
    "filter_params", "filter_margin", "builtin_margin", "to_paper_name", "IBSI_STATUS",
    "ibsi_status",
]


@dataclass(frozen=True)
class FilterSpec:
    """One extra image type.

    Attributes
    ----------
    name : str
        Name used in the settings ``imageType`` section (matched case-insensitively).
    prefix : str
        Feature-name prefix: features are named ``<prefix>_<class>_<feature>``.
    defaults : dict
        Filter parameters and their defaults (SimpleITK's names and defaults).
    sitk_filter : str
        The SimpleITK filter class it wraps.
    locality : str
        ``"local"`` (output at a voxel depends only on a bounded neighbourhood, computed the same
        way everywhere: cropping with :attr:`margin` is exact), ``"recursive"`` (infinite impulse
        response: cropping with a margin of many sigmas agrees to float precision) or ``"global"``
        (depends on whole-image statistics, on the noise realisation of the whole grid, or uses
        running sums over the image: never cropped).
    """

    name: str
    prefix: str
    defaults: dict
    sitk_filter: str
    locality: str
    doc: str
    _run: Callable[[sitk.Image, dict], sitk.Image] = field(repr=False, compare=False)
    _margin: Callable[[dict, Sequence[float], float], "Sequence[int] | None"] = field(
        repr=False, compare=False)


def _radius(value: Any, ndim: int = 3) -> list[int]:
    if np.isscalar(value):
        return [int(value)] * ndim
    vals = [int(v) for v in value]
    if len(vals) != ndim:
        raise ValueError(f"radius must be one int or {ndim} ints, got {value!r}")
    return vals


def _seeded(flt, seed: int):
    flt.SetSeed(int(seed))
    flt.SetNumberOfThreads(1)  # one work unit: the noise field is the same on every machine
    if hasattr(flt, "SetNumberOfWorkUnits"):
        flt.SetNumberOfWorkUnits(1)
    return flt


def _box_mean(img, p):
    return sitk.BoxMean(img, _radius(p["radius"], img.GetDimension()))


def _box_sigma(img, p):
    return sitk.BoxSigma(img, _radius(p["radius"], img.GetDimension()))


def _additive_noise(img, p):
    f = _seeded(sitk.AdditiveGaussianNoiseImageFilter(), p["seed"])
    f.SetMean(float(p["mean"]))
    f.SetStandardDeviation(float(p["standardDeviation"]))
    return f.Execute(img)


def _binomial_blur(img, p):
    return sitk.BinomialBlur(img, int(p["repetitions"]))


def _curvature_flow(img, p):
    return sitk.CurvatureFlow(img, timeStep=float(p["timeStep"]),
                              numberOfIterations=int(p["numberOfIterations"]))


def _discrete_gaussian(img, p):
    f = sitk.DiscreteGaussianImageFilter()
    f.SetVariance(float(p["variance"]))
    f.SetMaximumKernelWidth(int(p["maximumKernelWidth"]))
    f.SetMaximumError(float(p["maximumError"]))
    f.SetUseImageSpacing(bool(p["useImageSpacing"]))
    return f.Execute(img)


def _laplacian_sharpening(img, p):
    return sitk.LaplacianSharpening(img, bool(p["useImageSpacing"]))


def _mean(img, p):
    return sitk.Mean(img, _radius(p["radius"], img.GetDimension()))


def _normalize(img, p):
    return sitk.Normalize(img)


def _recursive_gaussian(img, p):
    f = sitk.SmoothingRecursiveGaussianImageFilter()
    f.SetSigma(float(p["sigma"]))
    f.SetNormalizeAcrossScale(bool(p["normalizeAcrossScale"]))
    return f.Execute(img)


def _shot_noise(img, p):
    f = _seeded(sitk.ShotNoiseImageFilter(), p["seed"])
    f.SetScale(float(p["scale"]))
    return f.Execute(img)


def _speckle_noise(img, p):
    f = _seeded(sitk.SpeckleNoiseImageFilter(), p["seed"])
    f.SetStandardDeviation(float(p["standardDeviation"]))
    return f.Execute(img)


def _global(p, spacing, k):
    return None


def _radius_margin(p, spacing, k):
    return [r + 1 for r in _radius(p["radius"], len(spacing))]


def _binomial_margin(p, spacing, k):
    return [int(p["repetitions"]) + 1] * len(spacing)


def _curvature_margin(p, spacing, k):
    return [int(p["numberOfIterations"]) + 1] * len(spacing)


def _discrete_gaussian_margin(p, spacing, k):
    # the kernel never exceeds maximumKernelWidth voxels
    return [int(p["maximumKernelWidth"]) // 2 + 1] * len(spacing)


def _sigma_margin(p, spacing, k):
    return [int(math.ceil(k * float(p["sigma"]) / s)) + 1 for s in spacing]


_SPECS = [
    FilterSpec("BoxMean", "boxmean", {"radius": 1}, "BoxMeanImageFilter", "global",
               "Mean over a (2r+1)^3 box, computed from a running-sum image.",
               _box_mean, _global),
    FilterSpec("BoxSigma", "boxsigmaimage", {"radius": 1}, "BoxSigmaImageFilter", "global",
               "Standard deviation over a (2r+1)^3 box (running sums): a local-heterogeneity map.",
               _box_sigma, _global),
    FilterSpec("AdditiveGaussianNoise", "additivegaussiannoise",
               {"mean": 0.0, "standardDeviation": 1.0, "seed": 42},
               "AdditiveGaussianNoiseImageFilter", "global",
               "Adds N(mean, standardDeviation^2) noise to every voxel (seeded).",
               _additive_noise, _global),
    FilterSpec("BinomialBlur", "binomialblurimage", {"repetitions": 1}, "BinomialBlurImageFilter",
               "local", "Repeated [1 2 1]/4 nearest-neighbour averaging along every axis.",
               _binomial_blur, _binomial_margin),
    FilterSpec("CurvatureFlow", "curvatureflow", {"timeStep": 0.05, "numberOfIterations": 5},
               "CurvatureFlowImageFilter", "local",
               "Edge-preserving smoothing: iso-intensity contours move with their curvature.",
               _curvature_flow, _curvature_margin),
    FilterSpec("DiscreteGaussian", "discretegaussian",
               {"variance": 1.0, "maximumKernelWidth": 32, "maximumError": 0.01,
                "useImageSpacing": True},
               "DiscreteGaussianImageFilter", "local",
               "Convolution with a truncated sampled Gaussian kernel (variance in mm^2).",
               _discrete_gaussian, _discrete_gaussian_margin),
    FilterSpec("LaplacianSharpening", "laplaciansharpening", {"useImageSpacing": True},
               "LaplacianSharpeningImageFilter", "global",
               "Image minus its Laplacian, rescaled to the input's intensity statistics.",
               _laplacian_sharpening, _global),
    FilterSpec("Mean", "mean", {"radius": 1}, "MeanImageFilter", "local",
               "Mean over a (2r+1)^3 neighbourhood.", _mean, _radius_margin),
    FilterSpec("Normalize", "normalize", {}, "NormalizeImageFilter", "global",
               "(x - mean) / sd over the whole image.", _normalize, _global),
    FilterSpec("RecursiveGaussian", "recursivegaussian",
               {"sigma": 1.0, "normalizeAcrossScale": False},
               "SmoothingRecursiveGaussianImageFilter", "recursive",
               "Gaussian smoothing (sigma in mm) by Deriche's recursive filter.",
               _recursive_gaussian, _sigma_margin),
    FilterSpec("ShotNoise", "shotnoise", {"scale": 1.0, "seed": 42}, "ShotNoiseImageFilter",
               "global", "Poisson noise: Poisson(scale * x) / scale (seeded).",
               _shot_noise, _global),
    FilterSpec("SpeckleNoise", "specklenoise", {"standardDeviation": 1.0, "seed": 42},
               "SpeckleNoiseImageFilter", "global",
               "Multiplicative Gamma noise with mean 1 and the given standard deviation (seeded).",
               _speckle_noise, _global),
]

#: The twelve extra image types, by settings name.
IMAGE_TYPES: dict[str, FilterSpec] = {s.name: s for s in _SPECS}
_BY_LOWER = {**{s.name.lower(): s for s in _SPECS}, **{s.prefix: s for s in _SPECS}}


def is_vcfnb_image_type(name: str) -> bool:
    """True when ``name`` (any case, or a feature prefix) is one of vcfnb's extra image types."""
    return str(name).lower() in _BY_LOWER


def get_filter(name: str) -> FilterSpec:
    """The :class:`FilterSpec` of an image type, matched case-insensitively.

    Examples
    --------
    >>> get_filter("boxsigma").prefix
    'boxsigmaimage'
    """
    try:
        return _BY_LOWER[str(name).lower()]
    except KeyError:
        raise ValueError(f"unknown vcfnb image type {name!r}; available: {sorted(IMAGE_TYPES)}") \
            from None


def filter_params(name: str, args: dict | None = None) -> tuple[dict, dict]:
    """Split an ``imageType`` entry into (filter parameters with defaults, other settings).

    The other settings (e.g. ``binWidth``) are pyradiomics settings that apply to this image
    type only, as pyradiomics allows for its own image types.

    Examples
    --------
    >>> filter_params("Mean", {"radius": 2, "binWidth": 10})
    ({'radius': 2}, {'binWidth': 10})
    """
    spec = get_filter(name)
    args = dict(args or {})
    params = dict(spec.defaults)
    other = {}
    for key, val in args.items():
        if key in spec.defaults:
            params[key] = val
        else:
            other[key] = val
    for key, val in params.items():
        default = spec.defaults[key]
        if isinstance(default, bool):
            if not isinstance(val, bool):
                raise ValueError(f"{spec.name}.{key} must be true/false, got {val!r}")
        elif key == "radius":
            _radius(val)
        elif isinstance(default, (int, float)):
            if isinstance(val, bool) or not isinstance(val, (int, float)) or not np.isfinite(val):
                raise ValueError(f"{spec.name}.{key} must be a number, got {val!r}")
    for key in ("standardDeviation", "sigma", "variance", "scale", "timeStep"):
        if key in params and not params[key] > 0:
            raise ValueError(f"{spec.name}.{key} must be > 0, got {params[key]!r}")
    for key in ("repetitions", "numberOfIterations", "maximumKernelWidth"):
        if key in params and (int(params[key]) != params[key] or params[key] < 1):
            raise ValueError(f"{spec.name}.{key} must be an integer >= 1, got {params[key]!r}")
    return params, other


def apply_filter(image: sitk.Image, name: str, **params: Any) -> sitk.Image:
    """Apply one extra image type to ``image`` (cast to 64-bit float first).

    Parameters
    ----------
    image : SimpleITK.Image
        Input image; not modified.
    name : str
        Image type (``"BoxSigma"``, ``"AdditiveGaussianNoise"``, ... any case).
    **params
        Filter parameters (see ``docs/filters.md``); missing ones take their defaults.

    Examples
    --------
    >>> img = sitk.GetImageFromArray(np.arange(64, dtype=float).reshape(4, 4, 4))
    >>> out = apply_filter(img, "Mean", radius=1)
    >>> round(out[1, 1, 1], 6) == round(float(np.arange(64).reshape(4, 4, 4)[:3, :3, :3].mean()), 6)
    True
    """
    spec = get_filter(name)
    p, other = filter_params(name, params)
    if other:
        raise ValueError(f"unknown parameter(s) {sorted(other)} for image type {spec.name}; "
                         f"known: {sorted(spec.defaults)}")
    out = spec._run(sitk.Cast(image, sitk.sitkFloat64), p)
    # some SimpleITK filters (recursive Gaussian) compute in 32-bit float; return float64 always
    return out if out.GetPixelID() == sitk.sitkFloat64 else sitk.Cast(out, sitk.sitkFloat64)


def filter_margin(name: str, params: dict, spacing: Sequence[float], *,
                  sigma_margin: float = 20.0) -> list[int] | None:
    """Voxels per axis (SimpleITK x, y, z order) the filter needs around a ROI, or None.

    ``None`` means the image type must see the whole image (global statistics, noise fields,
    running sums). ``sigma_margin`` is the number of sigmas kept around the ROI for recursive
    (IIR) Gaussians.
    """
    spec = get_filter(name)
    p, _ = filter_params(name, params)
    m = spec._margin(p, list(spacing), sigma_margin)
    return None if m is None else [int(v) for v in m]


def builtin_margin(image_type: str, args: dict, spacing: Sequence[float], *,
                   sigma_margin: float = 20.0) -> dict:
    """Crop rule for one of pyradiomics' own image types.

    Returns
    -------
    dict
        ``{"margin": list[int] | None, "periodic": bool, "global_stats": bool}``; ``margin`` in
        voxels per SimpleITK axis (None = whole image), ``periodic`` when the filter wraps around
        the image (wavelet: an axis is cropped only if the margin fits inside on both sides), and
        ``global_stats`` for the intensity maps whose scale comes from the whole image.
    """
    nd = len(spacing)
    t = image_type.lower()
    if t == "original":
        return {"margin": [0] * nd, "periodic": False, "global_stats": False}
    if t in ("square", "squareroot", "logarithm", "exponential"):
        return {"margin": [0] * nd, "periodic": False, "global_stats": True}
    if t == "gradient":
        return {"margin": [2] * nd, "periodic": False, "global_stats": False}
    if t == "log":
        sigmas = [float(s) for s in (args.get("sigma") or [])]
        smax = max(sigmas) if sigmas else 0.0
        return {"margin": [int(math.ceil(sigma_margin * smax / s)) + 2 for s in spacing],
                "periodic": False, "global_stats": False}
    if t == "wavelet":
        import pywt

        wav = pywt.Wavelet(args.get("wavelet", "coif1"))
        levels = int(args.get("start_level", 0)) + int(args.get("level", 1))
        m = [wav.dec_len * levels + 2] * nd
        if args.get("force2D", False):
            # pyradiomics does not filter along the force2D dimension (a numpy axis index)
            m[nd - 1 - int(args.get("force2Ddimension", 0))] = 0
        return {"margin": m, "periodic": True, "global_stats": False}
    return {"margin": None, "periodic": False, "global_stats": False}  # LBP2D, LBP3D, unknown


_PYRAD_FILTERED = re.compile(r"^(log-sigma-[^_]+|wavelet\d*-[LH]+|lbp-[^_]+)_([A-Za-z0-9]+)_(.+)$")


def to_paper_name(feature: str) -> str:
    """Rename a pyradiomics feature to the uAI Research Portal style used by seeds 002/003.

    pyradiomics puts the filter first (``log-sigma-1-0-mm-3D_firstorder_Skewness``); the
    papers put the family first and the filter inside the feature
    (``log_firstorder_log-sigma-1-0-mm-3D-Skewness``). Original features and vcfnb's extra
    image types are already named the same way in both and are returned unchanged.

    Examples
    --------
    >>> to_paper_name("wavelet-HLH_glszm_GrayLevelVariance")
    'wavelet_glszm_wavelet-HLH-GrayLevelVariance'
    >>> to_paper_name("boxsigmaimage_glcm_Correlation")
    'boxsigmaimage_glcm_Correlation'
    """
    m = _PYRAD_FILTERED.match(feature)
    if not m:
        return feature
    image, cls, feat = m.groups()
    family = re.match(r"[a-z]+", image).group(0)
    return f"{family}_{cls}_{image}-{feat}"


#: IBSI status of each image type's features (lower-case settings name -> status). IBSI chapter 1
#: standardises feature definitions on the unfiltered image; IBSI chapter 2 standardises a set of
#: convolutional filters (mean, Laplacian of Gaussian, Laws, Gabor, wavelets, Riesz). Local binary
#: patterns, the intensity maps (square, square root, logarithm, exponential), the gradient
#: magnitude and the SimpleITK smoothing/noise filters are in neither.
IBSI_STATUS: dict[str, str] = {
    "original": "IBSI-1",
    "log": "IBSI-2 filter family",
    "wavelet": "IBSI-2 filter family",
    "mean": "IBSI-2 filter family",
    "boxmean": "IBSI-2 filter family",  # the same mean over a (2r+1)^3 box, by running sums
}
_NOT_IBSI = "not standardised"


def ibsi_status(name: str) -> str:
    """IBSI status of an image type or of a feature (by its name's image-type prefix).

    Returns
    -------
    str
        ``"IBSI-1"`` for features of the original image, shape features included (IBSI-1
        feature definitions, checked on the IBSI digital phantom: ``docs/ibsi.md``);
        ``"IBSI-2 filter family"`` for LoG, wavelet, Mean and BoxMean images (filter families
        IBSI chapter 2 defines; pyradiomics' and SimpleITK's responses, boundary handling and
        parameters are not checked against the IBSI-2 reference responses, so these are not
        IBSI-conformant values either); ``"not standardised"`` for everything else, among them
        LBP2D and LBP3D (local binary patterns are not part of IBSI).

    Examples
    --------
    >>> ibsi_status("LBP3D"), ibsi_status("lbp-3D-k_firstorder_Mean")
    ('not standardised', 'not standardised')
    >>> ibsi_status("wavelet-LLH_glcm_Correlation"), ibsi_status("original_shape_Sphericity")
    ('IBSI-2 filter family', 'IBSI-1')
    """
    text = str(name)
    head = text.split("_", 1)[0] if "_" in text else text
    if is_vcfnb_image_type(head):
        return IBSI_STATUS.get(get_filter(head).name.lower(), _NOT_IBSI)
    family = re.match(r"[A-Za-z]+", head)
    key = family.group(0).lower() if family else head.lower()
    if key == "lbp":
        return _NOT_IBSI
    return IBSI_STATUS.get(key, _NOT_IBSI)
