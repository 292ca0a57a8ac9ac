"""Arm B of vcf_benign_malignant (seed 001) as the paper extracts it: 1 mm isotropic resampling,
LBP2D and LBP3D among the image types, and its feature composition beside the paper's 1,835
(issue 21). Cheap: settings and counts only, no paper-sized extraction."""
from __future__ import annotations

import inspect
from pathlib import Path

import nbformat
import yaml
from radiomics import imageoperations

from vcfnb import composition, features
from vcfnb.studies import vcf

ROOT = Path(__file__).resolve().parents[1]
PARAMS = ROOT / "params" / "vcf_benign_malignant"
NOTEBOOK = ROOT / "notebooks" / "vcf_benign_malignant.ipynb"


def _settings_b(name: str) -> dict:
    """Arm B settings as the notebook builds them from a params file (notebook defaults for
    what the file leaves out)."""
    p = yaml.safe_load((PARAMS / f"{name}.yaml").read_text(encoding="utf-8"))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    ns: dict = {}
    exec([c for c in nb.cells if "parameters" in c.metadata.get("tags", [])][0].source, ns)
    get = lambda k: p.get(k, ns[k])  # noqa: E731
    return vcf.follow_axis(vcf.settings_b(get("image_types_b"), log_sigma=get("log_sigma_b"),
                                          spacing_mm=get("resample_mm_b"),
                                          interpolator=get("interpolator_b"),
                                          normalize=get("normalize_b"),
                                          lbp_bin_width=get("lbp_bin_width_b")), 0)


def test_paper_params_resample_arm_b_to_1mm_isotropic_with_lbp():
    s = features.load_settings(_settings_b("paper"))
    assert s["setting"]["resampledPixelSpacing"] == [1.0, 1.0, 1.0]
    comp, v, notes = vcf.composition_b(s)
    rows = comp.set_index("image_type")
    # LBP2D one image, LBP3D one per level (pyradiomics default 2) plus the kurtosis image
    assert rows.loc["LBP2D", "images"] == 1 and rows.loc["LBP3D", "images"] == 3
    assert rows.loc["LBP2D", "total"] == 93 and rows.loc["LBP3D", "total"] == 3 * 93
    assert (rows.loc["all", "images"], rows.loc["all", "total"]) == (21, 1967)
    # beside the paper: 1835 = 14 shape + 360 first-order (20 images x 18) + 1461 texture
    assert v.loc["total", "reference"] == 1835 and v.loc["images", "reference"] == 20
    assert v.loc["total", "difference"] == 1967 - 1835
    assert v.loc["shape", "difference"] == 0
    # one sentence per differing part, none for shape (14 = 14)
    assert len(notes) == int((v["difference"] != 0).sum()) == 4
    assert not any(n.startswith("Shape") for n in notes)
    assert any("1461 = 20 × 73 + 1" in n for n in notes)


def test_paper_lbp_settings_are_pyradiomics_defaults_with_own_bin_width():
    s = features.load_settings(_settings_b("paper"))
    for name, fn in (("LBP2D", imageoperations.getLBP2DImage),
                     ("LBP3D", imageoperations.getLBP3DImage)):
        src = inspect.getsource(fn)
        for key, value in vcf.LBP_DEFAULTS[name].items():
            assert f"kwargs.get('{key}', {value!r})" in src, (name, key)
            assert s["imageType"][name][key] == value
        assert s["imageType"][name]["binWidth"] == 1.0  # arm B's 10 would leave 1-2 bins
    assert s["imageType"]["LBP2D"]["force2Ddimension"] == 0  # the sagittal axis given above
    text = composition.image_types_text(s)
    assert "LBP2D (lbp2DRadius 1, lbp2DSamples 8, lbp2DMethod uniform, binWidth 1.0" in text


def test_lbp2d_follows_the_sagittal_axis_unless_given():
    assert vcf.follow_axis(vcf.settings_b(["LBP2D"]), 2)["imageType"]["LBP2D"][
        "force2Ddimension"] == 2
    given = vcf.settings_b(["LBP2D"])
    given["imageType"]["LBP2D"]["force2Ddimension"] = 1
    assert vcf.follow_axis(given, 2)["imageType"]["LBP2D"]["force2Ddimension"] == 1
    plain = vcf.settings_b(["Original"])
    assert vcf.follow_axis(plain, 2) is plain


def test_smoke_params_stay_cheap():
    s = features.load_settings(_settings_b("smoke"))
    assert not {"LBP2D", "LBP3D", "Wavelet"} & set(s["imageType"])
    assert s["setting"]["resampledPixelSpacing"][2] > 1.0  # not upsampled to 1 mm slices


def test_notebook_computes_the_arm_b_composition_before_extracting():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    src = [c.source for c in nb.cells]
    code = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"]
    comp = [i for i in code if "vc.studies.vcf.composition_b(settings_b_used)" in src[i]]
    built = [i for i in code if src[i].lstrip().startswith("axis_b =")]
    extract = [i for i in code if "features_b = vc.studies.vcf.extract(" in src[i]]
    assert len(comp) == 1 and built[0] < comp[0] < extract[0]
    assert "vc.composition.image_types_text(settings_b_used)" in src[comp[0]]
    assert any("lbp_bin_width=lbp_bin_width_b" in s for s in src)  # a notebook parameter
    assert 'run.table("B_composition_vs_paper"' in src[comp[0]]
    assert not any("LBP is not available" in s for s in src)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code")
