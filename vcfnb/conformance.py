"""IBSI conformance: vcfnb/pyradiomics features against the IBSI-1 reference values.

The Image Biomarker Standardisation Initiative (IBSI, chapter 1) publishes consensus values of
radiomics features for a small digital phantom (5 x 4 x 4 voxels of 2 mm, integer grey levels
1-6, a mask excluding a few voxels). This module

* extracts the phantom with :func:`vcfnb.features.extract` (pyradiomics' own code) under the
  settings IBSI prescribes for it, once per texture aggregation pyradiomics can produce
  (:data:`RUNS`, :func:`phantom_settings`);
* maps pyradiomics feature names to IBSI feature tags (:data:`IBSI_MAPPING`, an explicit table);
* compares every IBSI reference row with the vcfnb value (:func:`compare`) and gives, for each
  mismatch, the specific documented definitional difference (:data:`KNOWN_DIFFERENCES`) --
  verified, where the difference has a closed form, by converting the vcfnb value to the IBSI
  definition and checking that the converted value matches; a mismatch without a known reason
  is reported as ``unexplained``;
* summarises the result per feature family (:func:`summary`).

Everything here is a pure function over DataFrames, except :func:`load_reference` (reads the
reference CSV) and :func:`extract_phantom` (runs the extraction).

References
----------
Zwanenburg A, Vallieres M, et al. The Image Biomarker Standardization Initiative: standardized
quantitative radiomics for high-throughput image-based phenotyping. Radiology 2020;295:328-338.
Zwanenburg A, Leger S, Vallieres M, Loeck S. Image biomarker standardisation initiative,
reference manual (arXiv:1612.07003), sections 3.1-3.11 (feature definitions) and 5.1 (digital
phantom).
van Griethuysen JJM et al. Computational radiomics system to decode the radiographic phenotype.
Cancer Res 2017;77:e104-e107 (pyradiomics; its feature docstrings note where it departs from IBSI).
"""
from __future__ import annotations

import copy
import math
import os
import re
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
import pandas as pd

__all__ = [
    "CONFIGURATIONS", "RUNS", "IBSI_MAPPING", "KNOWN_DIFFERENCES", "NOT_IN_PYRADIOMICS",
    "STATUS", "CONFORMANCE_COLUMNS", "reference_path", "load_reference", "phantom_rois",
    "phantom_settings", "settings_table", "extract_phantom", "tidy_values", "compare", "summary",
    "pyradiomics_only", "family_of",
]

#: IBSI-1 configurations and where their data live inside ``ibsi_dir``. Only the digital
#: phantom ships with the project's shared data; configurations A-E need the IBSI CT phantom
#: (lung cancer CT), which is not included.
CONFIGURATIONS: dict[str, dict] = {
    "digital_phantom": {
        "reference": "reference/ibsi_1_reference_values_digital_phantom.csv",
        "image": "ibsi_1_digital_phantom/nifti/image/phantom.nii.gz",
        "mask": "ibsi_1_digital_phantom/nifti/mask/mask.nii.gz",
        "label": 1,
    },
}
for _c in "ABCDE":
    CONFIGURATIONS[_c] = {"reference": f"reference/ibsi_1_reference_values_config_{_c}.csv",
                          "image": None, "mask": None, "label": 1}

#: Settings shared by every run on the digital phantom (IBSI manual, section 5.1: no
#: interpolation, no re-segmentation, no discretisation beyond the phantom's integer grey
#: levels). Each choice, in pyradiomics' terms:
_PHANTOM_SETTING = {
    # fixed bin width 1 with pyradiomics' binning floor(x/1) - floor(min/1) + 1: the
    # phantom's minimum grey level is 1, so the bins ARE the grey levels 1..6 (identity)
    "binWidth": 1,
    # IBSI applies no shift to intensities (pyradiomics' firstorder note); Energy needs 0
    "voxelArrayShift": 0,
    # no resampling (pyradiomics' default: resampledPixelSpacing None), no resegmentation
    "resampledPixelSpacing": None,
    "resegmentRange": None,
    # texture neighbourhood: distance 1 (Chebyshev: 26 neighbours in 3D, 8 in-plane in 2.5D),
    # symmetric GLCM, GLDM coarseness alpha 0 (IBSI NGLDM with a = 0, d = 1)
    "distances": [1],
    "symmetricalGLCM": True,
    "gldm_a": 0,
    # the phantom is tiny: keep pyradiomics' default checks (minimumROIDimensions 2)
}

#: Texture aggregations pyradiomics can produce, as the extra settings of each run, the
#: pyradiomics feature classes extracted in it and the IBSI tag suffixes it answers.
#: pyradiomics has no per-slice (IBSI "2D") aggregation, so ``*_2D*`` tags are not computed.
RUNS: dict[str, dict] = {
    "3D": {
        "setting": {},
        "classes": ["shape", "firstorder", "glcm", "glrlm", "glszm", "gldm", "ngtdm"],
        "suffixes": ["_3D_avg", "_3D", ""],
        "description": "3D, 26-connected; GLCM/GLRLM features computed per direction "
                       "(13 matrices) and averaged (pyradiomics' default)",
    },
    "3D_merged": {
        "setting": {"weightingNorm": "no_weighting"},
        "classes": ["glcm", "glrlm"],
        "suffixes": ["_3D_comb"],
        "description": "3D; the 13 directional GLCM/GLRLM matrices summed with weight 1 "
                       "(weightingNorm: no_weighting) before computing features",
    },
    "2.5D": {
        "setting": {"force2D": True, "force2Ddimension": 0},
        "classes": ["glcm", "glrlm", "glszm", "gldm", "ngtdm"],
        "suffixes": ["_2_5D_avg", "_2_5D"],
        "description": "in-plane (axial) neighbourhoods only, each direction's matrix "
                       "accumulated over all slices, features averaged over the 4 directions "
                       "(force2D, force2Ddimension 0)",
    },
    "2.5D_merged": {
        "setting": {"force2D": True, "force2Ddimension": 0, "weightingNorm": "no_weighting"},
        "classes": ["glcm", "glrlm"],
        "suffixes": ["_2_5D_comb"],
        "description": "in-plane neighbourhoods, all slices and the 4 directions merged into "
                       "one GLCM/GLRLM (force2D + weightingNorm: no_weighting)",
    },
}

# ---------------------------------------------------------------------------------------------
# the explicit mapping: pyradiomics class, feature -> IBSI tag stem (without aggregation suffix)
# ---------------------------------------------------------------------------------------------
_MAP: list[tuple[str, str, str, str]] = [
    # shape (IBSI 3.1 morphology). pyradiomics' shape class works on the mask only.
    ("shape", "MeshVolume", "morph_volume", ""),
    ("shape", "VoxelVolume", "morph_vol_approx", ""),
    ("shape", "SurfaceArea", "morph_area_mesh", ""),
    ("shape", "SurfaceVolumeRatio", "morph_av", ""),
    ("shape", "Compactness1", "morph_comp_1",
     "not enabled by default in pyradiomics (correlated with Sphericity)"),
    ("shape", "Compactness2", "morph_comp_2",
     "not enabled by default in pyradiomics (correlated with Sphericity)"),
    ("shape", "SphericalDisproportion", "morph_sph_dispr",
     "not enabled by default (1/Sphericity)"),
    ("shape", "Sphericity", "morph_sphericity", ""),
    ("shape", "Maximum3DDiameter", "morph_diam", ""),
    ("shape", "MajorAxisLength", "morph_pca_maj_axis", ""),
    ("shape", "MinorAxisLength", "morph_pca_min_axis", ""),
    ("shape", "LeastAxisLength", "morph_pca_least_axis", ""),
    ("shape", "Elongation", "morph_pca_elongation", ""),
    ("shape", "Flatness", "morph_pca_flatness", ""),
    # firstorder (IBSI 3.3 intensity-based statistics; on the raw intensities)
    ("firstorder", "Mean", "stat_mean", ""),
    ("firstorder", "Variance", "stat_var", ""),
    ("firstorder", "Skewness", "stat_skew", ""),
    ("firstorder", "Kurtosis", "stat_kurt", ""),
    ("firstorder", "Median", "stat_median", ""),
    ("firstorder", "Minimum", "stat_min", ""),
    ("firstorder", "10Percentile", "stat_p10", ""),
    ("firstorder", "90Percentile", "stat_p90", ""),
    ("firstorder", "Maximum", "stat_max", ""),
    ("firstorder", "InterquartileRange", "stat_iqr", ""),
    ("firstorder", "Range", "stat_range", ""),
    ("firstorder", "MeanAbsoluteDeviation", "stat_mad", ""),
    ("firstorder", "RobustMeanAbsoluteDeviation", "stat_rmad", ""),
    ("firstorder", "Energy", "stat_energy", "with voxelArrayShift 0"),
    ("firstorder", "RootMeanSquared", "stat_rms", "with voxelArrayShift 0"),
    # firstorder on the discretised intensities (IBSI 3.4 intensity histogram)
    ("firstorder", "Entropy", "ih_entropy", "on the discretised (binned) intensities"),
    ("firstorder", "Uniformity", "ih_uniformity", "on the discretised (binned) intensities"),
    # IBSI NGLDM normalised grey level non-uniformity equals the histogram uniformity;
    # pyradiomics deprecated GLDM's own copy in favour of firstorder Uniformity
    ("firstorder", "Uniformity", "ngl_glnu_norm",
     "pyradiomics deprecated gldm GrayLevelNonUniformityNormalized as mathematically equal to "
     "firstorder Uniformity"),
    # GLCM (IBSI 3.6)
    ("glcm", "MaximumProbability", "cm_joint_max", ""),
    ("glcm", "JointAverage", "cm_joint_avg", ""),
    ("glcm", "SumSquares", "cm_joint_var", ""),
    ("glcm", "JointEntropy", "cm_joint_entr", ""),
    ("glcm", "DifferenceAverage", "cm_diff_avg", ""),
    ("glcm", "DifferenceVariance", "cm_diff_var", ""),
    ("glcm", "DifferenceEntropy", "cm_diff_entr", ""),
    ("glcm", "SumAverage", "cm_sum_avg", ""),
    ("glcm", "ClusterTendency", "cm_sum_var",
     "pyradiomics deprecated SumVariance as mathematically equal to ClusterTendency"),
    ("glcm", "SumEntropy", "cm_sum_entr", ""),
    ("glcm", "JointEnergy", "cm_energy", ""),
    ("glcm", "Contrast", "cm_contrast", ""),
    ("glcm", "DifferenceAverage", "cm_dissimilarity",
     "pyradiomics deprecated Dissimilarity as mathematically equal to DifferenceAverage"),
    ("glcm", "Id", "cm_inv_diff", ""),
    ("glcm", "Idn", "cm_inv_diff_norm", ""),
    ("glcm", "Idm", "cm_inv_diff_mom", ""),
    ("glcm", "Idmn", "cm_inv_diff_mom_norm", ""),
    ("glcm", "InverseVariance", "cm_inv_var", ""),
    ("glcm", "Correlation", "cm_corr", ""),
    ("glcm", "Autocorrelation", "cm_auto_corr", ""),
    ("glcm", "ClusterTendency", "cm_clust_tend", ""),
    ("glcm", "ClusterShade", "cm_clust_shade", ""),
    ("glcm", "ClusterProminence", "cm_clust_prom", ""),
    ("glcm", "Imc1", "cm_info_corr1", ""),
    ("glcm", "Imc2", "cm_info_corr2", ""),
    # GLRLM (IBSI 3.7)
    ("glrlm", "ShortRunEmphasis", "rlm_sre", ""),
    ("glrlm", "LongRunEmphasis", "rlm_lre", ""),
    ("glrlm", "LowGrayLevelRunEmphasis", "rlm_lgre", ""),
    ("glrlm", "HighGrayLevelRunEmphasis", "rlm_hgre", ""),
    ("glrlm", "ShortRunLowGrayLevelEmphasis", "rlm_srlge", ""),
    ("glrlm", "ShortRunHighGrayLevelEmphasis", "rlm_srhge", ""),
    ("glrlm", "LongRunLowGrayLevelEmphasis", "rlm_lrlge", ""),
    ("glrlm", "LongRunHighGrayLevelEmphasis", "rlm_lrhge", ""),
    ("glrlm", "GrayLevelNonUniformity", "rlm_glnu", ""),
    ("glrlm", "GrayLevelNonUniformityNormalized", "rlm_glnu_norm", ""),
    ("glrlm", "RunLengthNonUniformity", "rlm_rlnu", ""),
    ("glrlm", "RunLengthNonUniformityNormalized", "rlm_rlnu_norm", ""),
    ("glrlm", "RunPercentage", "rlm_r_perc", ""),
    ("glrlm", "GrayLevelVariance", "rlm_gl_var", ""),
    ("glrlm", "RunVariance", "rlm_rl_var", ""),
    ("glrlm", "RunEntropy", "rlm_rl_entr", ""),
    # GLSZM (IBSI 3.8)
    ("glszm", "SmallAreaEmphasis", "szm_sze", ""),
    ("glszm", "LargeAreaEmphasis", "szm_lze", ""),
    ("glszm", "LowGrayLevelZoneEmphasis", "szm_lgze", ""),
    ("glszm", "HighGrayLevelZoneEmphasis", "szm_hgze", ""),
    ("glszm", "SmallAreaLowGrayLevelEmphasis", "szm_szlge", ""),
    ("glszm", "SmallAreaHighGrayLevelEmphasis", "szm_szhge", ""),
    ("glszm", "LargeAreaLowGrayLevelEmphasis", "szm_lzlge", ""),
    ("glszm", "LargeAreaHighGrayLevelEmphasis", "szm_lzhge", ""),
    ("glszm", "GrayLevelNonUniformity", "szm_glnu", ""),
    ("glszm", "GrayLevelNonUniformityNormalized", "szm_glnu_norm", ""),
    ("glszm", "SizeZoneNonUniformity", "szm_zsnu", ""),
    ("glszm", "SizeZoneNonUniformityNormalized", "szm_zsnu_norm", ""),
    ("glszm", "ZonePercentage", "szm_z_perc", ""),
    ("glszm", "GrayLevelVariance", "szm_gl_var", ""),
    ("glszm", "ZoneVariance", "szm_zs_var", ""),
    ("glszm", "ZoneEntropy", "szm_zs_entr", ""),
    # NGTDM (IBSI 3.10)
    ("ngtdm", "Coarseness", "ngt_coarseness", ""),
    ("ngtdm", "Contrast", "ngt_contrast", ""),
    ("ngtdm", "Busyness", "ngt_busyness", ""),
    ("ngtdm", "Complexity", "ngt_complexity", ""),
    ("ngtdm", "Strength", "ngt_strength", ""),
    # GLDM = IBSI NGLDM (3.11) with coarseness a = 0 and distance 1
    ("gldm", "SmallDependenceEmphasis", "ngl_lde", ""),
    ("gldm", "LargeDependenceEmphasis", "ngl_hde", ""),
    ("gldm", "LowGrayLevelEmphasis", "ngl_lgce", ""),
    ("gldm", "HighGrayLevelEmphasis", "ngl_hgce", ""),
    ("gldm", "SmallDependenceLowGrayLevelEmphasis", "ngl_ldlge", ""),
    ("gldm", "SmallDependenceHighGrayLevelEmphasis", "ngl_ldhge", ""),
    ("gldm", "LargeDependenceLowGrayLevelEmphasis", "ngl_hdlge", ""),
    ("gldm", "LargeDependenceHighGrayLevelEmphasis", "ngl_hdhge", ""),
    ("gldm", "GrayLevelNonUniformity", "ngl_glnu", ""),
    ("gldm", "DependenceNonUniformity", "ngl_dcnu", ""),
    ("gldm", "DependenceNonUniformityNormalized", "ngl_dcnu_norm", ""),
    ("gldm", "GrayLevelVariance", "ngl_gl_var", ""),
    ("gldm", "DependenceVariance", "ngl_dc_var", ""),
    ("gldm", "DependenceEntropy", "ngl_dc_entr", ""),
]

#: The explicit name mapping (columns ``pyradiomics_class, pyradiomics_feature, ibsi_stem,
#: note``). The IBSI tag of a reference row is ``ibsi_stem`` plus an aggregation suffix
#: (``_3D_avg``, ``_3D_comb``, ``_2_5D_avg``, ``_2_5D_comb``, ``_3D``, ``_2_5D``, ...).
IBSI_MAPPING = pd.DataFrame(_MAP, columns=["pyradiomics_class", "pyradiomics_feature",
                                           "ibsi_stem", "note"])

#: IBSI features (by tag stem or prefix) pyradiomics does not compute, with the reason.
NOT_IN_PYRADIOMICS: dict[str, str] = {
    "morph_asphericity": "pyradiomics has no asphericity (its SphericalDisproportion is the "
                         "inverse of sphericity, not sphericity^-1/3 - 1)",
    "morph_com": "no centre-of-mass shift (needs intensities; pyradiomics' shape class uses "
                 "only the mask)",
    "morph_vol_dens": "no volume densities (AABB, OMBB, AEE, MVEE, convex hull) in pyradiomics",
    "morph_area_dens": "no area densities (AABB, OMBB, AEE, MVEE, convex hull) in pyradiomics",
    "morph_integ_int": "no integrated intensity (needs intensities; pyradiomics' shape class "
                       "uses only the mask)",
    "morph_moran_i": "no Moran's I spatial autocorrelation in pyradiomics",
    "morph_geary_c": "no Geary's C spatial autocorrelation in pyradiomics",
    "loc_peak": "no local/global intensity peak (1 cm^3 sphere mean) in pyradiomics",
    "stat_medad": "no median absolute deviation (pyradiomics has mean and robust mean "
                  "absolute deviations only)",
    "stat_cov": "no coefficient of variation in pyradiomics",
    "stat_qcod": "no quartile coefficient of dispersion in pyradiomics",
    "ih_": "pyradiomics computes its statistics on the raw intensities, not on the "
           "discretised histogram (only Entropy and Uniformity use the bins)",
    "ivh_": "no intensity-volume histogram features in pyradiomics",
    "dzm_": "pyradiomics has no grey level distance zone matrix (GLDZM)",
    "ngl_dc_perc": "pyradiomics deprecated GLDM DependencePercentage (always 1, no value "
                   "computed)",
    "ngl_dc_energy": "no dependence count energy in pyradiomics' GLDM",
    "_2D": "IBSI 2D aggregation computes features per slice and averages them (or merges "
           "per-slice matrices); pyradiomics' force2D only accumulates each direction's "
           "matrix over all slices (IBSI 2.5D), it has no per-slice aggregation",
}


def _pca_factor(ctx: Mapping[str, float]) -> float:
    n = ctx["n_voxels"]
    return math.sqrt(n / (n - 1))


#: Documented definitional differences, keyed by IBSI tag stem (or full tag): the reason
#: (specific, with its source) and, where the difference has a closed form, a conversion from
#: the pyradiomics value to the IBSI definition (``f(value, context)``; context holds
#: ``n_voxels``) that :func:`compare` uses to verify the explanation.
KNOWN_DIFFERENCES: dict[str, tuple[str, Callable | None]] = {
    "stat_kurt": (
        "pyradiomics' Kurtosis is the plain 4th standardised moment; IBSI defines excess "
        "kurtosis (minus 3) (pyradiomics firstorder.getKurtosisFeatureValue docstring). "
        "Verified: vcfnb value - 3 matches.",
        lambda v, ctx: v - 3.0),
    "morph_pca_maj_axis": (
        "pyradiomics takes the eigenvalues of the population covariance of the voxel-centre "
        "coordinates (divides by N, shape.py), the IBSI reference used the sample covariance "
        "(N - 1); axis lengths differ by sqrt(N/(N-1)) (1.0068 for the 74-voxel phantom). "
        "Verified: vcfnb value x sqrt(N/(N-1)) matches.",
        lambda v, ctx: v * _pca_factor(ctx)),
    "morph_pca_min_axis": (
        "population (N) vs sample (N - 1) covariance of voxel coordinates, as for the major "
        "axis. Verified: vcfnb value x sqrt(N/(N-1)) matches.",
        lambda v, ctx: v * _pca_factor(ctx)),
    "morph_pca_least_axis": (
        "population (N) vs sample (N - 1) covariance of voxel coordinates, as for the major "
        "axis. Verified: vcfnb value x sqrt(N/(N-1)) matches.",
        lambda v, ctx: v * _pca_factor(ctx)),
}

#: Status values of the conformance table, in display order.
STATUS = ["match", "mismatch: explained", "mismatch: unexplained", "not in pyradiomics",
          "no reference value"]

#: Columns of :func:`compare`'s table.
CONFORMANCE_COLUMNS = [
    "family", "aggregation", "feature", "ibsi_tag", "consensus", "reference", "tolerance",
    "allowed_difference", "pyradiomics_feature", "run", "vcfnb_value", "difference", "match",
    "status", "reason", "ibsi_definition_value",
]

_FAMILIES = [
    ("Morphology", "morphology"), ("Local intensity", "local intensity"),
    ("Statistics", "intensity statistics"), ("Intensity histogram", "intensity histogram"),
    ("Intensity volume histogram", "intensity-volume histogram"),
    ("Co-occurrence matrix", "GLCM"), ("Run length matrix", "GLRLM"),
    ("Size zone matrix", "GLSZM"), ("Distance zone matrix", "GLDZM"),
    ("Neighbourhood grey tone difference matrix", "NGTDM"),
    ("Neighbouring grey level dependence matrix", "NGLDM"),
]
_FAMILY_ORDER = [f for _, f in _FAMILIES]


def family_of(ibsi_family: str) -> tuple[str, str]:
    """Split an IBSI family string into ``(family, aggregation)``.

    Examples
    --------
    >>> family_of("Co-occurrence matrix (3D, merged)")
    ('GLCM', '3D, merged')
    >>> family_of("Statistics")
    ('intensity statistics', '')
    """
    m = re.match(r"^(.*?)\s*(?:\((.*)\))?$", str(ibsi_family).strip())
    name, agg = m.group(1), (m.group(2) or "")
    for prefix, short in _FAMILIES:
        if name.startswith(prefix):
            return short, agg
    return name, agg


# ---------------------------------------------------------------------------------------------
# inputs
# ---------------------------------------------------------------------------------------------

def _config(configuration: str) -> dict:
    if configuration not in CONFIGURATIONS:
        raise ValueError(f"unknown IBSI configuration {configuration!r}; known: "
                         f"{sorted(CONFIGURATIONS)}")
    return CONFIGURATIONS[configuration]


def reference_path(ibsi_dir: str | os.PathLike, configuration: str = "digital_phantom") -> Path:
    """Path of the IBSI reference CSV of ``configuration`` inside ``ibsi_dir``."""
    return Path(ibsi_dir) / _config(configuration)["reference"]


def load_reference(path: str | os.PathLike) -> pd.DataFrame:
    """Read an IBSI-1 reference-values CSV.

    Returns
    -------
    DataFrame
        ``dataset, family, feature, consensus, reference, tolerance, tag, reference_text``
        (``reference_text`` keeps the value as printed).

    Raises
    ------
    FileNotFoundError
        Naming the file.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: IBSI reference values not found")
    raw = pd.read_csv(p, encoding="utf-8-sig", dtype=str, keep_default_na=False)
    need = {"dataset", "family", "feature", "consensus", "reference value", "tolerance", "tag"}
    missing = need - set(raw.columns)
    if missing:
        raise ValueError(f"{p}: not an IBSI reference file (missing columns {sorted(missing)})")
    out = pd.DataFrame({
        "dataset": raw["dataset"], "family": raw["family"], "feature": raw["feature"],
        "consensus": raw["consensus"],
        "reference": pd.to_numeric(raw["reference value"], errors="coerce"),
        "tolerance": pd.to_numeric(raw["tolerance"], errors="coerce"),
        "tag": raw["tag"].str.strip(), "reference_text": raw["reference value"].str.strip(),
    })
    return out


def phantom_rois(ibsi_dir: str | os.PathLike, configuration: str = "digital_phantom"
                 ) -> pd.DataFrame:
    """The ``rois`` table (as :func:`vcfnb.features.extract` takes it) of an IBSI phantom.

    Parameters
    ----------
    ibsi_dir : path
        Folder holding ``ibsi_1_digital_phantom/`` and ``reference/``.
    configuration : str
        ``"digital_phantom"``; configurations ``"A"``-``"E"`` need the IBSI CT phantom, which
        is not part of the shared data, and raise.

    Returns
    -------
    DataFrame
        One row: ``patient_id, roi, sequence, reader, image, mask, label`` with absolute paths.

    Examples
    --------
    >>> phantom_rois("/data/ibsi")[["patient_id", "label"]].to_dict("records")
    [{'patient_id': 'ibsi_digital_phantom', 'label': 1}]
    """
    cfg = _config(configuration)
    if cfg["image"] is None:
        raise ValueError(f"IBSI configuration {configuration!r} is computed on the IBSI CT "
                         f"phantom, which is not in {ibsi_dir}; only 'digital_phantom' can be "
                         "extracted from the shared data")
    base = Path(ibsi_dir).resolve()
    return pd.DataFrame({
        "patient_id": ["ibsi_digital_phantom"], "roi": ["phantom"], "sequence": ["phantom"],
        "reader": ["1"], "image": [str(base / cfg["image"])], "mask": [str(base / cfg["mask"])],
        "label": [int(cfg["label"])],
    })


def phantom_settings(run: str = "3D") -> dict:
    """pyradiomics settings for the digital phantom in one aggregation ``run`` (:data:`RUNS`).

    The common part (:data:`_PHANTOM_SETTING`): fixed bin width 1 (the phantom's grey levels
    1..6 are kept as they are), voxelArrayShift 0, no resampling, no resegmentation, distance
    1, symmetric GLCM, GLDM alpha 0. The run adds ``weightingNorm: no_weighting`` (merge the
    directional GLCM/GLRLM matrices) and/or ``force2D`` with ``force2Ddimension: 0`` (axial
    in-plane neighbourhoods: IBSI 2.5D). The ``3D`` run also enables the shape features
    pyradiomics leaves off by default (Compactness1/2, SphericalDisproportion) and the
    diagnostics (for the voxel count used to verify explanations).

    Examples
    --------
    >>> s = phantom_settings("3D_merged")
    >>> s["setting"]["weightingNorm"], sorted(s["featureClass"])
    ('no_weighting', ['glcm', 'glrlm'])
    """
    if run not in RUNS:
        raise ValueError(f"unknown run {run!r}; known: {list(RUNS)}")
    setting = {k: copy.deepcopy(v) for k, v in _PHANTOM_SETTING.items() if v is not None}
    setting.update(RUNS[run]["setting"])
    classes: dict[str, list | None] = {c: None for c in RUNS[run]["classes"]}
    if "shape" in classes:
        names = IBSI_MAPPING.loc[IBSI_MAPPING.pyradiomics_class == "shape", "pyradiomics_feature"]
        classes["shape"] = sorted(set(names) | {
            "Maximum2DDiameterSlice", "Maximum2DDiameterColumn", "Maximum2DDiameterRow"})
    return {"setting": setting, "imageType": {"Original": {}}, "featureClass": classes,
            "vcfnb": {"diagnostics": run == "3D",
                      "description": f"IBSI digital phantom, {RUNS[run]['description']}"}}


def settings_table(runs: list[str] | None = None) -> pd.DataFrame:
    """The extraction runs and their pyradiomics settings, one row per run.

    Returns
    -------
    DataFrame
        ``run, aggregation, feature_classes, ibsi_suffixes, settings`` (settings as
        ``key: value`` text).

    Examples
    --------
    >>> settings_table(["3D_merged"]).loc[0, "ibsi_suffixes"]
    '_3D_comb'
    """
    runs = list(RUNS) if runs is None else list(runs)
    rows = []
    for run in runs:
        s = phantom_settings(run)["setting"]
        rows.append({"run": run, "aggregation": RUNS[run]["description"],
                     "feature_classes": ", ".join(RUNS[run]["classes"]),
                     "ibsi_suffixes": ", ".join(x or "(none)" for x in RUNS[run]["suffixes"]),
                     "settings": "; ".join(f"{k}: {v}" for k, v in s.items())})
    return pd.DataFrame(rows, columns=["run", "aggregation", "feature_classes",
                                       "ibsi_suffixes", "settings"])


def extract_phantom(rois: pd.DataFrame, runs: list[str] | None = None, *,
                    cache_dir: str | os.PathLike | None = None, n_jobs: int = 1) -> pd.DataFrame:
    """Extract the phantom once per aggregation run with :func:`vcfnb.features.extract`.

    Returns
    -------
    DataFrame
        Long format, see :func:`tidy_values`: ``run, pyradiomics_class, pyradiomics_feature,
        value`` plus the ``n_voxels`` context row (class ``diagnostics``).

    Raises
    ------
    RuntimeError
        When pyradiomics fails on the phantom (the failure reason is included).
    """
    from vcfnb import features

    runs = list(RUNS) if runs is None else list(runs)
    tables = {}
    for run in runs:
        feats = features.extract(rois, phantom_settings(run), n_jobs=n_jobs,
                                 cache_dir=cache_dir, progress=False)
        fails = features.failures_table(feats)
        if len(fails):
            raise RuntimeError(f"IBSI phantom extraction failed ({run}): "
                               f"{fails['reason'].iloc[0]}")
        tables[run] = feats
    return tidy_values(tables)


def tidy_values(tables: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """Long table of the phantom's values from ``{run: extract() output with one row}``.

    Columns ``run, pyradiomics_class, pyradiomics_feature, value``. The mask voxel count
    (pyradiomics diagnostics ``Mask-original_VoxelNum``) becomes the row
    ``class = "diagnostics", feature = "n_voxels"`` when present.
    """
    rows = []
    for run, df in tables.items():
        if len(df) != 1:
            raise ValueError(f"run {run!r}: expected one row (the phantom), got {len(df)}")
        rec = df.iloc[0]
        for col, val in rec.items():
            m = re.match(r"^original_([A-Za-z0-9]+)_(.+)$", str(col))
            if m:
                rows.append((run, m.group(1), m.group(2), float(val)))
            elif col == "diagnostics_Mask-original_VoxelNum":
                rows.append((run, "diagnostics", "n_voxels", float(val)))
    return pd.DataFrame(rows, columns=["run", "pyradiomics_class", "pyradiomics_feature",
                                       "value"])


# ---------------------------------------------------------------------------------------------
# comparison
# ---------------------------------------------------------------------------------------------

def _half_unit(text: str) -> float:
    """Half a unit in the 3rd significant digit of a reference value (IBSI rounds its reference
    values to 3 significant digits): ``"0.0411"`` -> 5e-5, ``"1490"`` -> 5; 0 for a zero value.

    Examples
    --------
    >>> _half_unit("0.0411"), _half_unit("1490"), _half_unit("556"), _half_unit("0")
    (5e-05, 5.0, 0.5, 0.0)
    """
    try:
        x = float(str(text).strip())
    except ValueError:
        return float("nan")
    if not np.isfinite(x):
        return float("nan")
    if x == 0:
        return 0.0
    return float(f"{0.5 * 10.0 ** (math.floor(math.log10(abs(x))) - 2):.3g}")


def _split_tag(tag: str) -> tuple[str, str]:
    """``cm_joint_max_3D_comb`` -> (``cm_joint_max``, ``_3D_comb``)."""
    m = re.match(r"^(.*?)(_2D_avg|_2D_comb|_2_5D_avg|_2_5D_comb|_3D_avg|_3D_comb|_2D|_2_5D|_3D)?$",
                 tag)
    return m.group(1), m.group(2) or ""


def _run_for_suffix(suffix: str) -> str | None:
    for name, spec in RUNS.items():
        if suffix in spec["suffixes"]:
            return name
    return None


def _not_in_pyradiomics(stem: str, suffix: str) -> str:
    if suffix.startswith("_2D"):
        return NOT_IN_PYRADIOMICS["_2D"]
    for key in sorted(NOT_IN_PYRADIOMICS, key=len, reverse=True):
        if key != "_2D" and (stem == key or stem.startswith(key)):
            return NOT_IN_PYRADIOMICS[key]
    return "no pyradiomics feature mapped to this IBSI feature"


def compare(values: pd.DataFrame, reference: pd.DataFrame,
            mapping: pd.DataFrame | None = None,
            known: Mapping[str, tuple[str, Callable | None]] | None = None) -> pd.DataFrame:
    """Conformance table: every IBSI reference row against the vcfnb value.

    A value matches when ``|vcfnb - reference| <= tolerance + half a unit in the 3rd
    significant digit of the reference`` (IBSI rounds its reference values to 3 significant
    digits and gives the digital phantom tolerance 0, so there a value matches when it rounds
    to the reference).
    A mismatch is ``explained`` when :data:`KNOWN_DIFFERENCES` has a specific reason for the
    tag; when that entry has a conversion to the IBSI definition, the converted value must
    match too (else the row is ``unexplained`` and says that the documented difference does
    not account for it). Any other mismatch is ``unexplained``.

    Parameters
    ----------
    values : DataFrame
        Long table from :func:`extract_phantom` / :func:`tidy_values`.
    reference : DataFrame
        From :func:`load_reference`.
    mapping : DataFrame, optional
        Name mapping (default :data:`IBSI_MAPPING`).
    known : mapping, optional
        Known differences (default :data:`KNOWN_DIFFERENCES`).

    Returns
    -------
    DataFrame
        Columns :data:`CONFORMANCE_COLUMNS`, one row per reference row, in the reference's
        order. ``match`` is ``"yes"``, ``"no"`` or ``""`` (not compared); ``status`` one of
        :data:`STATUS`; ``ibsi_definition_value`` the vcfnb value converted to the IBSI
        definition where a conversion is known.

    Examples
    --------
    >>> ref = pd.DataFrame({"dataset": ["x"], "family": ["Statistics"], "feature": ["Mean"],
    ...     "consensus": ["≥ 10"], "reference": [2.15], "tolerance": [0.0], "tag": ["stat_mean"],
    ...     "reference_text": ["2.15"]})
    >>> vals = pd.DataFrame({"run": ["3D"], "pyradiomics_class": ["firstorder"],
    ...     "pyradiomics_feature": ["Mean"], "value": [2.1486]})
    >>> compare(vals, ref)[["ibsi_tag", "match", "status"]].to_dict("records")
    [{'ibsi_tag': 'stat_mean', 'match': 'yes', 'status': 'match'}]
    """
    mapping = IBSI_MAPPING if mapping is None else mapping
    known = KNOWN_DIFFERENCES if known is None else known
    lookup = {(r.run, r.pyradiomics_class, r.pyradiomics_feature): r.value
              for r in values.itertuples(index=False)}
    nvox = values.loc[values.pyradiomics_feature == "n_voxels", "value"]
    ctx = {"n_voxels": float(nvox.iloc[0]) if len(nvox) else float("nan")}
    by_stem: dict[str, list] = {}
    for r in mapping.itertuples(index=False):
        by_stem.setdefault(r.ibsi_stem, []).append((r.pyradiomics_class, r.pyradiomics_feature))

    rows = []
    for r in reference.itertuples(index=False):
        fam, agg = family_of(r.family)
        stem, suffix = _split_tag(r.tag)
        allowed = (r.tolerance if np.isfinite(r.tolerance) else 0.0) + _half_unit(r.reference_text)
        row = {"family": fam, "aggregation": agg, "feature": r.feature, "ibsi_tag": r.tag,
               "consensus": r.consensus, "reference": r.reference, "tolerance": r.tolerance,
               "allowed_difference": allowed, "pyradiomics_feature": "", "run": "",
               "vcfnb_value": np.nan, "difference": np.nan, "match": "", "status": "",
               "reason": "", "ibsi_definition_value": np.nan}
        run = _run_for_suffix(suffix)
        cands = by_stem.get(stem, [])
        value = None
        if run is not None:
            for cls, feat in cands:
                if (run, cls, feat) in lookup:
                    value, row["pyradiomics_feature"] = lookup[(run, cls, feat)], f"{cls}_{feat}"
                    break
        if run is not None and cands and value is None:
            # mapped but not extracted (run not requested): say so rather than guess
            row["pyradiomics_feature"] = f"{cands[0][0]}_{cands[0][1]}"
            row["run"] = run
            row["status"] = "not in pyradiomics"
            row["reason"] = f"run {run!r} was not extracted"
            rows.append(row)
            continue
        if value is None:
            row["status"] = "not in pyradiomics"
            row["reason"] = (_not_in_pyradiomics(stem, suffix) if not cands or run is None
                             else "no pyradiomics value")
            if cands and run is None:
                row["pyradiomics_feature"] = f"{cands[0][0]}_{cands[0][1]}"
            rows.append(row)
            continue
        row["run"] = run
        row["vcfnb_value"] = value
        if not np.isfinite(r.reference):
            row["status"] = "no reference value"
            row["reason"] = f"IBSI consensus: {r.consensus}"
            rows.append(row)
            continue
        diff = value - r.reference
        row["difference"] = diff
        ok = bool(np.isfinite(value) and abs(diff) <= allowed + 1e-12)
        row["match"] = "yes" if ok else "no"
        if ok:
            row["status"] = "match"
            mapped_note = mapping.loc[(mapping.ibsi_stem == stem), "note"]
            row["reason"] = next((n for n in mapped_note if n), "")
            entry = known.get(r.tag) or known.get(stem)
            if entry is not None:  # a known difference smaller than the tolerance
                row["reason"] = ("within tolerance despite a known difference: " +
                                 entry[0].split(" Verified:")[0])
        else:
            entry = known.get(r.tag) or known.get(stem)
            if entry is None:
                row["status"] = "mismatch: unexplained"
                row["reason"] = "unexplained"
            else:
                reason, convert = entry
                if convert is not None:
                    conv = float(convert(value, ctx))
                    row["ibsi_definition_value"] = conv
                    if abs(conv - r.reference) <= allowed + 1e-12:
                        row["status"] = "mismatch: explained"
                        row["reason"] = reason
                    else:
                        row["status"] = "mismatch: unexplained"
                        row["reason"] = ("unexplained: the documented difference (" + reason +
                                         f") gives {conv:.4g}, still not the reference")
                else:
                    row["status"] = "mismatch: explained"
                    row["reason"] = reason
        rows.append(row)
    out = pd.DataFrame(rows, columns=CONFORMANCE_COLUMNS)
    return out


def summary(table: pd.DataFrame) -> pd.DataFrame:
    """Counts per family and status of a :func:`compare` table.

    Returns
    -------
    DataFrame
        One row per family (IBSI order) plus ``total``; one column per :data:`STATUS` value
        and ``compared`` (match + mismatches) and ``match_rate`` (matches / compared).
    """
    counts = (table.groupby(["family", "status"]).size().unstack("status", fill_value=0)
              .reindex(columns=STATUS, fill_value=0))
    order = [f for f in _FAMILY_ORDER if f in counts.index] + \
        [f for f in counts.index if f not in _FAMILY_ORDER]
    counts = counts.loc[order]
    counts.loc["total"] = counts.sum()
    counts["compared"] = counts[["match", "mismatch: explained", "mismatch: unexplained"]].sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        counts["match_rate"] = np.round(counts["match"] / counts["compared"].replace(0, np.nan), 3)
    counts = counts.reset_index().rename(columns={"index": "family"})
    counts.columns.name = None
    return counts


def pyradiomics_only(values: pd.DataFrame, mapping: pd.DataFrame | None = None) -> pd.DataFrame:
    """pyradiomics features extracted that no IBSI feature corresponds to (with the reason).

    Returns
    -------
    DataFrame
        ``pyradiomics_feature, value, reason`` (values of the ``3D`` run).
    """
    mapping = IBSI_MAPPING if mapping is None else mapping
    mapped = set(zip(mapping.pyradiomics_class, mapping.pyradiomics_feature))
    reasons = {
        ("firstorder", "TotalEnergy"): "Energy scaled by the voxel volume (mm^3); not in IBSI",
        ("firstorder", "StandardDeviation"): "square root of Variance; not in IBSI",
        ("glcm", "MCC"): "maximal correlation coefficient; not in IBSI",
        ("shape", "Maximum2DDiameterSlice"): "largest in-plane (axial) diameter; IBSI defines "
                                             "only the 3D maximum diameter",
        ("shape", "Maximum2DDiameterColumn"): "largest coronal-plane diameter; not in IBSI",
        ("shape", "Maximum2DDiameterRow"): "largest sagittal-plane diameter; not in IBSI",
    }
    v = values[(values.run == "3D") & (values.pyradiomics_class != "diagnostics")]
    rows = [(f"{c}_{f}", val, reasons.get((c, f), "no IBSI counterpart"))
            for c, f, val in zip(v.pyradiomics_class, v.pyradiomics_feature, v.value)
            if (c, f) not in mapped]
    return pd.DataFrame(rows, columns=["pyradiomics_feature", "value", "reason"])
