"""Feature composition of extraction settings: image types x feature classes, with counts.

:func:`composition` answers "how many features will these settings give, and where from?"
without extracting anything. It reads the settings with :func:`vcfnb.features.load_settings`
and asks pyradiomics which features each enabled class computes (the class's
``getFeatureNames()``, deprecated features left out as pyradiomics leaves them out when a class
is enabled without a feature list) and which derived images each image type yields (wavelet
decompositions from pyradiomics' own ``getWaveletImage`` on a tiny image; LoG one image per
sigma; LBP3D one per level plus the kurtosis image). Nothing is hard-coded: change the
settings and the table follows. The result has the layout of
:func:`vcfnb.features.feature_counts`, which counts the columns of an extracted table, so the
two can be compared directly.

Each row also carries the image type's IBSI status (:func:`vcfnb.filters.ibsi_status`): the
original image's features follow IBSI chapter 1 definitions (checked on the IBSI digital
phantom, ``docs/ibsi.md``); LoG, wavelet and mean filters are filter families that IBSI
chapter 2 defines, but pyradiomics' responses have not been checked against its reference
responses; LBP2D/LBP3D and every other image type are not IBSI-standardised.
"""
from __future__ import annotations

import os
from typing import Mapping

import numpy as np
import pandas as pd

__all__ = ["composition", "image_names", "class_features", "versus", "image_types_text",
           "LBP_DEFAULTS"]

#: the LBP filters' arguments when not given: pyradiomics' code defaults (``getLBP2DImage`` /
#: ``getLBP3DImage``; the LBP2D docstring says 9 samples, its code uses 8)
LBP_DEFAULTS = {"LBP2D": {"lbp2DRadius": 1, "lbp2DSamples": 8, "lbp2DMethod": "uniform"},
                "LBP3D": {"lbp3DLevels": 2, "lbp3DIcosphereRadius": 1,
                          "lbp3DIcosphereSubdivision": 1}}
#: order of the feature-class columns (pyradiomics' classes; absent ones are dropped)
CLASS_ORDER = ["shape", "shape2D", "firstorder", "glcm", "glrlm", "glszm", "gldm", "ngtdm"]


def class_features(settings: dict) -> dict[str, list[str]]:
    """The features each enabled class computes, as pyradiomics decides it.

    Parameters
    ----------
    settings : dict
        Settings as returned by :func:`vcfnb.features.load_settings`.

    Returns
    -------
    dict
        ``{class: [feature names]}``: the listed features, or, for a class enabled without a
        list, every feature pyradiomics enables by default (its non-deprecated features).

    Examples
    --------
    >>> from vcfnb.features import load_settings
    >>> len(class_features(load_settings({"featureClass": {"ngtdm": []}}))["ngtdm"])
    5
    """
    from radiomics import getFeatureClasses

    classes = getFeatureClasses()
    out = {}
    for cls, names in settings["featureClass"].items():
        if cls not in classes:
            raise ValueError(f"unknown feature class {cls!r}; pyradiomics has {sorted(classes)}")
        if names:
            out[cls] = list(names)
        else:
            out[cls] = [n for n, deprecated in classes[cls].getFeatureNames().items()
                        if not deprecated]
    return out


def image_names(image_type: str, args: dict, setting: dict | None = None) -> list[str]:
    """Feature-name prefixes of the images one ``imageType`` entry yields.

    Parameters
    ----------
    image_type : str
        Settings name (``"Wavelet"``, ``"LoG"``, ``"LBP3D"``, ``"BoxSigma"``, ...).
    args : dict
        Its arguments from the ``imageType`` section.
    setting : dict, optional
        The ``setting`` section (pyradiomics reads filter options such as ``sigma``,
        ``lbp3DLevels`` or ``force2D`` from either place; ``args`` win).

    Returns
    -------
    list of str
        E.g. ``["original"]``, ``["wavelet-LLH", ..., "wavelet-LLL"]``,
        ``["log-sigma-1-0-mm-3D", ...]``, ``["lbp-3D-m1", "lbp-3D-m2", "lbp-3D-k"]``,
        ``["boxsigmaimage"]``. LoG sigmas that pyradiomics skips for a too small image are data
        dependent and still listed.

    Examples
    --------
    >>> image_names("LoG", {"sigma": [1.0, 3]})
    ['log-sigma-1-0-mm-3D', 'log-sigma-3-mm-3D']
    >>> len(image_names("Wavelet", {}))
    8
    """
    from vcfnb import filters

    kw = {**dict(setting or {}), **dict(args or {})}
    if filters.is_vcfnb_image_type(image_type):
        return [filters.get_filter(image_type).prefix]
    t = image_type.lower()
    if t == "log":
        # radiomics.imageoperations.getLoGImage names each sigma's image so
        return ["log-sigma-%s-mm-3D" % str(s).replace(".", "-") for s in (kw.get("sigma") or [])]
    if t == "lbp2d":
        return ["lbp-2D"]
    if t == "lbp3d":  # getLBP3DImage: one image per spherical-harmonics level, then kurtosis
        return [f"lbp-3D-m{i + 1}" for i in range(int(kw.get("lbp3DLevels", 2)))] + ["lbp-3D-k"]
    if t == "wavelet":
        import SimpleITK as sitk
        from radiomics import imageoperations

        tiny = sitk.GetImageFromArray(np.zeros((4, 4, 4)))
        return [name for _, name, _ in imageoperations.getWaveletImage(tiny, tiny, **kw)]
    if t in ("original", "square", "squareroot", "logarithm", "exponential", "gradient"):
        return [t]
    raise ValueError(f"unknown image type {image_type!r}")


def composition(settings: Mapping | str | os.PathLike | None, *, by: str = "image_type",
                totals: bool = True) -> pd.DataFrame:
    """Number of features per image type and feature class that ``settings`` extract.

    Parameters
    ----------
    settings : dict, str or path
        Anything :func:`vcfnb.features.load_settings` accepts (a dict, a pyradiomics YAML file,
        a packaged settings name such as ``"vcf_dlr"``).
    by : {"image_type", "image"}
        One row per ``imageType`` entry (``Wavelet`` = its 8 decompositions together), or one
        row per derived image (``wavelet-LLH``, ...; the layout of
        :func:`vcfnb.features.feature_counts`).
    totals : bool
        Add the ``total`` column and the ``all`` row.

    Returns
    -------
    DataFrame
        Columns ``image_type`` (settings name, or the feature prefix with ``by="image"``),
        ``images`` (derived images, ``by="image_type"`` only), one column per enabled feature
        class (shape features, computed once on the mask, sit in the ``Original`` /
        ``original`` row as pyradiomics names them ``original_shape_*``), ``total`` and
        ``ibsi`` (:func:`vcfnb.filters.ibsi_status`).

    Examples
    --------
    >>> c = composition({"imageType": {"Original": {}, "LBP2D": {}},
    ...                  "featureClass": {"shape": [], "firstorder": [], "glcm": []}})
    >>> print(c[["image_type", "shape", "firstorder", "glcm", "total", "ibsi"]].to_string(
    ...     index=False))  # doctest: +NORMALIZE_WHITESPACE
    image_type  shape  firstorder  glcm  total             ibsi
      Original     14          18    24     56           IBSI-1
         LBP2D      0          18    24     42 not standardised
           all     14          36    48     98
    """
    from vcfnb import features, filters

    if by not in ("image_type", "image"):
        raise ValueError(f"by must be 'image_type' or 'image', got {by!r}")
    s = features.load_settings(settings)
    feats = class_features(s)
    classes = [c for c in CLASS_ORDER if c in feats] + [c for c in feats if c not in CLASS_ORDER]
    shape_classes = [c for c in classes if c.startswith("shape")]
    texture_classes = [c for c in classes if not c.startswith("shape")]
    rows = []
    for name, args in s["imageType"].items():
        images = image_names(name, args, s["setting"])
        per_image = {c: len(feats[c]) for c in texture_classes}
        label = filters.get_filter(name).name if filters.is_vcfnb_image_type(name) else name
        if by == "image_type":
            rows.append({"image_type": label, "images": len(images),
                         **{c: n * len(images) for c, n in per_image.items()},
                         "ibsi": filters.ibsi_status(name)})
        else:
            rows.extend({"image_type": im, **per_image, "ibsi": filters.ibsi_status(name)}
                        for im in images)
    if shape_classes:  # computed once per ROI on the mask, named original_shape_*
        key = "Original" if by == "image_type" else "original"
        hit = [r for r in rows if r["image_type"] == key]
        if not hit:
            rows.insert(0, {"image_type": key, "images": 0, "ibsi": filters.ibsi_status("original")}
                        if by == "image_type" else
                        {"image_type": key, "ibsi": filters.ibsi_status("original")})
            hit = rows[:1]
        for c in shape_classes:
            hit[0][c] = len(feats[c])
    cols = ["image_type"] + (["images"] if by == "image_type" else []) + classes
    out = pd.DataFrame(rows).reindex(columns=cols + ["ibsi"])
    out[classes] = out[classes].fillna(0).astype(int)
    if totals:
        out.insert(len(cols), "total", out[classes].sum(axis=1).astype(int))
        num = [c for c in out.columns if c not in ("image_type", "ibsi")]
        all_row = {"image_type": "all", **{c: int(out[c].sum()) for c in num}, "ibsi": ""}
        out = pd.concat([out, pd.DataFrame([all_row])], ignore_index=True)
    return out


def versus(comp: pd.DataFrame, reference: Mapping[str, int]) -> pd.DataFrame:
    """The totals of a :func:`composition` table beside a reference's (a paper's) counts.

    Parameters
    ----------
    comp : DataFrame
        :func:`composition` with ``by="image_type"`` and ``totals=True``.
    reference : mapping
        The counts the reference gives: ``total`` and any of ``shape``, ``firstorder``,
        ``texture`` (every class but shape and first order) and ``images``. ``texture`` is
        derived as total - shape - first order, and ``images`` as the reference's first-order
        count over this run's first-order features per image, when not given.

    Returns
    -------
    DataFrame
        One row per part (``images``, ``shape``, ``firstorder``, ``texture``, ``total``) with
        ``this run``, ``reference``, ``difference`` (run - reference) and both counts per
        derived image (``run per image``, ``reference per image``; texture and first order).

    Examples
    --------
    >>> c = composition({"imageType": {"Original": {}, "Square": {}},
    ...                  "featureClass": {"shape": [], "firstorder": [], "ngtdm": []}})
    >>> v = versus(c, {"total": 60, "shape": 14, "firstorder": 36})
    >>> v[["this run", "reference", "difference"]].T.to_dict("list")["images"]
    [2.0, 2.0, 0.0]
    >>> float(v.loc["texture", "reference per image"])  # 60 - 14 - 36 over 2 images
    5.0
    """
    row = comp[comp["image_type"] == "all"].iloc[0]
    classes = [c for c in comp.columns if c not in ("image_type", "images", "total", "ibsi")]
    tex = [c for c in classes if not c.startswith("shape") and c != "firstorder"]
    n_img = float(row["images"])
    run = {"images": n_img, "shape": sum(row[c] for c in classes if c.startswith("shape")),
           "firstorder": row.get("firstorder", 0), "texture": sum(row[c] for c in tex),
           "total": row["total"]}
    ref = {k: float(v) for k, v in reference.items()}
    if "texture" not in ref and {"total", "shape", "firstorder"} <= set(ref):
        ref["texture"] = ref["total"] - ref["shape"] - ref["firstorder"]
    fo_per_image = run["firstorder"] / n_img if n_img else np.nan
    if "images" not in ref and "firstorder" in ref and fo_per_image:
        ref["images"] = ref["firstorder"] / fo_per_image
    out = pd.DataFrame({"this run": pd.Series(run, dtype=float),
                        "reference": pd.Series(ref, dtype=float).reindex(list(run))})
    out["difference"] = out["this run"] - out["reference"]
    per = ["firstorder", "texture"]
    out["run per image"] = (out["this run"] / n_img).where(out.index.isin(per))
    out["reference per image"] = (out["reference"] / ref.get("images", np.nan)).where(
        out.index.isin(per))
    out.index.name = "part"
    return out


def image_types_text(settings: Mapping | str | os.PathLike | None) -> str:
    """The image types of ``settings`` with the arguments each is computed with, for a report
    (LBP arguments given neither in its entry nor in ``setting`` are :data:`LBP_DEFAULTS`, as
    pyradiomics fills them in).

    Examples
    --------
    >>> image_types_text({"imageType": {"Original": {}, "LoG": {"sigma": [1.0, 3.0]},
    ...                                 "LBP3D": {"binWidth": 1}}})
    'Original; LoG (sigma 1.0, 3.0); LBP3D (lbp3DLevels 2, lbp3DIcosphereRadius 1, \
lbp3DIcosphereSubdivision 1, binWidth 1)'
    """
    from vcfnb import features

    s = features.load_settings(settings)
    out = []
    for name, args in s["imageType"].items():
        base = LBP_DEFAULTS.get(name, {})
        a = {**base, **{k: v for k, v in s["setting"].items() if k in base}, **(args or {})}
        txt = ", ".join(f"{k} {', '.join(map(str, v)) if isinstance(v, list) else v}"
                        for k, v in a.items())
        out.append(f"{name} ({txt})" if a else name)
    return "; ".join(out)
