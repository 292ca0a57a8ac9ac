"""Every vcfnb.plots function on a small table: returns Axes with the expected artists."""

from __future__ import annotations

import sys

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.axes import Axes
from matplotlib.collections import QuadMesh

from vcfnb import plots, stats


@pytest.fixture
def scored(rng):
    y = np.r_[np.zeros(30, int), np.ones(30, int)]
    return y, y + rng.normal(size=60), 0.5 * y + rng.normal(size=60)


def _legend(ax: Axes) -> list[str]:
    return [t.get_text() for t in ax.get_legend().get_texts()]


def test_stats_does_not_import_matplotlib():
    import subprocess

    code = "import sys, vcfnb.stats; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_plot_roc_overlay(scored):
    y, a, b = scored
    ax = plots.plot_roc({"A": (y, a), "B": (y, b)})
    assert isinstance(ax, Axes)
    assert len(ax.lines) == 3  # two curves + diagonal
    texts = _legend(ax)
    auc_a = stats.roc_auc_ci(y, a)
    assert texts[0] == f"A: AUC {auc_a.auc:.3f} ({auc_a.ci_low:.3f}-{auc_a.ci_high:.3f})"
    assert texts[1].startswith("B: AUC")
    # long-table input and a given ax
    long = pd.concat(
        [pd.DataFrame({"model": m, "y_true": y, "score": s}) for m, s in [("A", a), ("B", b)]]
    )
    _, ax2 = plt.subplots()
    assert plots.plot_roc(long, ax=ax2, ci=False) is ax2
    assert _legend(ax2)[0] == f"A: AUC {auc_a.auc:.3f}"


def test_plot_lasso_path_and_cv():
    lam = np.logspace(-3, 0, 15)
    path = pd.DataFrame(
        [
            (lv, f, np.sign(b) * max(0.0, abs(b) - lv))
            for lv in lam
            for f, b in [("a", 0.8), ("b", -0.3), ("c", 0.05)]
        ],
        columns=["lambda", "feature", "coef"],
    )
    ax = plots.plot_lasso_path(path, chosen_lambda=0.05)
    assert len(ax.lines) == 3 + 2  # 3 features, chosen-lambda line, zero line
    top = next(a for a in ax.figure.axes if a is not ax)
    assert top.get_xlabel() == "number of features"
    labels = [t.get_text() for t in top.get_xticklabels()]
    assert labels[0] == "3" and labels[-1] == "0"  # smallest lambda: all features; largest: none
    cv = pd.DataFrame(
        {
            "lambda": lam,
            "mean_score": np.linspace(0.8, 0.5, 15),
            "sd_score": 0.05,
            "n_nonzero": np.linspace(3, 0, 15).round(),
        }
    )
    ax = plots.plot_lasso_cv(cv, lambda_min=lam[0], lambda_1se=lam[3])
    assert len(ax.containers) == 1
    assert _legend(ax) == ["lambda.min", "lambda.1se"]
    assert len(ax.figure.axes) == 2
    with pytest.raises(ValueError, match="mean"):
        plots.plot_lasso_cv(cv.drop(columns="mean_score"))


def test_plot_auc_vs_n_features_and_coefficients():
    t = pd.DataFrame(
        {
            "n_features": list(range(1, 8)) * 2,
            "auc": np.r_[np.linspace(0.6, 0.8, 7), np.linspace(0.55, 0.7, 7)],
            "sd": 0.03,
            "split": ["train"] * 7 + ["test"] * 7,
        }
    )
    ax = plots.plot_auc_vs_n_features(t)
    assert len(ax.lines) == 2 and _legend(ax) == ["train", "test"]
    assert len(ax.collections) >= 4  # 2 bands + 2 best-point markers
    c = pd.DataFrame({"feature": ["intercept", "f1", "f2", "f3"], "coef": [0.1, 0.5, -0.2, 0.3]})
    ax = plots.plot_coefficients(c)
    assert len(ax.patches) == 3
    assert [t.get_text() for t in ax.get_yticklabels()] == ["f2", "f3", "f1"]


def test_plot_calibration_and_decision_curve(rng):
    p = rng.uniform(0.05, 0.95, 300)
    y = (rng.uniform(size=300) < p).astype(int)
    cc = stats.calibration_curve(y, p, n_bins=5)
    both = pd.concat([cc.assign(model="A"), cc.assign(model="B")])
    ax = plots.plot_calibration(both)
    assert len(ax.lines) == 3 and _legend(ax) == ["Ideal", "A", "B"]
    assert len(ax.collections) == 2  # CI bars per model
    dc = stats.decision_curve(
        y, {"A": p, "B": np.clip(p + 0.1, 0, 0.99)}, np.arange(0.05, 0.95, 0.05)
    )
    ax = plots.plot_decision_curve(dc)
    assert len(ax.lines) == 4
    assert _legend(ax) == ["A", "B", "Treat all", "Treat none"]


def test_plot_heatmaps(rng):
    X = pd.DataFrame(rng.normal(size=(24, 5)), columns=list("abcde"))
    ax = plots.plot_correlation_heatmap(X)
    assert any(isinstance(c, QuadMesh) for c in ax.collections)
    assert len(ax.texts) == 25
    ax = plots.plot_clustered_heatmap(X, labels=[0, 1] * 12)
    assert isinstance(ax, Axes)
    assert any(isinstance(c, QuadMesh) for c in ax.collections)
    assert len(ax.figure.axes) >= 4  # heatmap, 2 dendrograms, row colours, colorbar
    with pytest.raises(ValueError, match="own figure"):
        plots.plot_clustered_heatmap(X, ax=plt.gca())
    y = np.r_[np.zeros(10, int), np.ones(10, int)]
    m = stats.delong_matrix(
        y, {"A": y + rng.normal(size=20), "B": rng.normal(size=20), "C": y + rng.normal(size=20)}
    )
    ax = plots.plot_delong_matrix(m)
    texts = [t.get_text() for t in ax.texts if t.get_text()]
    assert len(texts) == 3  # lower triangle of 3 models


@pytest.mark.parametrize("kind", ["box", "violin"])
def test_plot_radscore_by_group(rng, kind):
    from scipy.stats import mannwhitneyu

    d = pd.DataFrame(
        {
            "radscore": np.r_[rng.normal(0, 1, 15), rng.normal(1.5, 1, 15)],
            "label": [0] * 15 + [1] * 15,
        }
    )
    ax = plots.plot_radscore_by_group(d, kind=kind)
    p = mannwhitneyu(d.radscore[:15], d.radscore[15:]).pvalue
    assert ax.get_title() == ("p < 0.001" if p < 0.001 else f"p = {p:.3f}")
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0", "1"]


def test_plot_nomogram():
    nomo = stats.nomogram_points(
        {"age": 0.052, "bmi": -0.054, "male": -0.12},
        -2.34,
        {"age": [40, 60, 80], "bmi": [15, 25, 35], "male": [0, 1]},
    )
    ax = plots.plot_nomogram(nomo, labels={"male": "Male sex"}, probs=(0.1, 0.3, 0.5, 0.7, 0.9))
    assert [t.get_text() for t in ax.get_yticklabels()] == [
        "Points",
        "age",
        "bmi",
        "Male sex",
        "Total points",
        "Probability",
    ]
    texts = [t.get_text() for t in ax.texts]
    assert {"40", "80", "15", "35", "0", "1"} <= set(texts)
    assert "0.5" in texts and "0.9" not in texts  # 0.9 needs more points than reachable


def test_plot_permutation_null(rng):
    null = rng.normal(0.5, 0.05, 200)
    ax = plots.plot_permutation_null(pd.DataFrame({"auc": null}), 0.7)
    assert len(ax.patches) == 30 and len(ax.lines) == 1
    assert ax.lines[0].get_xdata()[0] == pytest.approx(0.7)
    assert "p = " in _legend(ax)[1]


def test_plot_conformance_by_family():
    from vcfnb import conformance

    table = pd.DataFrame({
        "family": ["GLCM"] * 5 + ["morphology"] * 4 + ["GLDZM"] * 2,
        "status": ["match", "match", "match", "mismatch: explained", "not in pyradiomics",
                   "match", "mismatch: unexplained", "not in pyradiomics", "not in pyradiomics",
                   "not in pyradiomics", "not in pyradiomics"],
    })
    counts = conformance.summary(table)  # IBSI family order + a "total" row
    families = ["morphology", "GLCM", "GLDZM"]
    assert list(counts.family) == families + ["total"]
    ax = plots.plot_conformance_by_family(counts, title="IBSI-1 digital_phantom")
    statuses = conformance.STATUS[:4]
    assert isinstance(ax, Axes)
    assert len(ax.patches) == len(families) * len(statuses)  # the total row is left out
    assert [t.get_text() for t in ax.get_yticklabels()] == families
    assert ax.yaxis_inverted()  # first family on top
    assert _legend(ax) == statuses
    assert ax.get_xlabel() == "IBSI reference values" and ax.get_title() == "IBSI-1 digital_phantom"
    # stacked: bars of a status follow the families; each starts where the previous status ends
    match, explained = ax.containers[0], ax.containers[1]
    assert [b.get_width() for b in match] == [1, 3, 0]
    assert [b.get_width() for b in explained] == [0, 1, 0]
    assert [b.get_x() for b in explained] == [1, 3, 0]
    assert [b.get_x() + b.get_width() for b in ax.containers[3]] == [4, 5, 2]  # row totals
    # a given ax, chosen statuses; missing columns are named
    _, ax2 = plt.subplots()
    assert plots.plot_conformance_by_family(counts, statuses=["match"], ax=ax2) is ax2
    assert len(ax2.patches) == len(families)
    with pytest.raises(ValueError, match="lacks columns"):
        plots.plot_conformance_by_family(counts.drop(columns="match"))


# ---- reviewer figures: cohort flow, case montage, feature contributions (issue 20)
def _box_texts(ax: Axes) -> list[str]:
    return [t.get_text() for t in ax.texts if t.get_text()]


def test_plot_cohort_flow():
    card = {"patients": 40, "positive": 15, "negative": 25, "rois": 120, "problems": 3}
    probs = pd.DataFrame({"row": ["rois.csv:3", "rois.csv:4", "cases.csv:9"],
                          "patient_id": ["P3", "P3", "P9"], "file": ["a", "b", ""],
                          "problem": ["empty mask: 0 voxels", "empty mask: 0 voxels",
                                      "outcome missing"]})
    splits = [{"split": "train", "patients": 28, "positive": 10, "negative": 18},
              {"split": "test", "patients": 12, "positive": 5, "negative": 7}]
    texts = _box_texts(plots.plot_cohort_flow(card, probs, splits))
    assert len(texts) == 5
    assert texts[0].endswith("41 patient rows, 122 ROI rows")
    assert "Excluded: 3 row(s)" in texts[1] and "empty mask: 2" in texts[1]
    assert "outcome missing: 1" in texts[1] and "(2 patient(s))" in texts[1]
    assert "40 patients (15 positive, 25 negative)" in texts[2]
    assert texts[3].startswith("train\n28 patients") and "5 positive, 7 negative" in texts[4]
    # without problems or splits: three boxes
    assert len(_box_texts(plots.plot_cohort_flow({**card, "problems": 0}))) == 3


@pytest.mark.parametrize("n_splits,n_kinds", [(0, 0), (1, 2), (2, 2), (5, 9)])
def test_cohort_flow_arrows_end_on_box_edges(n_splits, n_kinds):
    """issue 20: each arrow head ends on its target box's frame (the "Excluded" arrow used to
    stop short of its box), from its source frame, for any number of splits and reasons; the
    frames hold their text at any dpi and do not overlap."""
    card = {"patients": 40, "positive": 15, "negative": 25, "rois": 120, "problems": n_kinds}
    probs = pd.DataFrame({"row": [f"rois.csv:{k}" for k in range(n_kinds)],
                          "patient_id": [f"P{k}" for k in range(n_kinds)],
                          "file": ["m.nii.gz"] * n_kinds,
                          "problem": [f"problem kind {k} with a longer description: detail"
                                      for k in range(n_kinds)]})
    splits = [{"split": f"split {k}", "patients": 8, "positive": 3, "negative": 5}
              for k in range(n_splits)]
    ax = plots.plot_cohort_flow(card, probs if n_kinds else None, splits or None)
    texts = [t for t in ax.texts if t.get_text()]
    arrows = [t for t in ax.texts if not t.get_text()]
    frames = [(p.get_x(), p.get_y(), p.get_x() + p.get_width(), p.get_y() + p.get_height())
              for p in ax.patches]
    assert len(texts) == len(frames) == 3 + n_splits and len(arrows) == 2 + n_splits
    assert all(a.arrow_patch.shrinkA == a.arrow_patch.shrinkB == 0 for a in arrows)
    top, excl, mid, *split_frames = frames
    eps = 1e-9

    def on(edge: str, pt, f) -> bool:
        x, y = pt
        x0, y0, x1, y1 = f
        inside_x, inside_y = x0 - eps <= x <= x1 + eps, y0 - eps <= y <= y1 + eps
        return {"top": inside_x and abs(y - y1) < eps, "bottom": inside_x and abs(y - y0) < eps,
                "left": inside_y and abs(x - x0) < eps}[edge]

    down, branch, *to_splits = arrows
    assert on("bottom", down.xyann, top) and on("top", down.xy, mid)
    assert on("left", branch.xy, excl)  # the arrow head touches the exclusion box
    assert branch.xyann[0] == pytest.approx(down.xy[0])  # it branches off the main arrow
    assert mid[3] < branch.xy[1] < top[1]
    for a, f in zip(to_splits, split_frames):
        assert on("bottom", a.xyann, mid) and on("top", a.xy, f)
    # frames side by side, never overlapping; each holds its text at any dpi
    for i, a in enumerate(frames):
        for b in frames[i + 1:]:
            assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1]
    fig = ax.figure
    for dpi in (72, 120, 300):
        fig.set_dpi(dpi)
        fig.canvas.draw()
        for t, p in zip(texts, ax.patches):
            te, pe = t.get_window_extent(), p.get_window_extent()
            assert pe.x0 < te.x0 and te.x1 < pe.x1 and pe.y0 < te.y0 and te.y1 < pe.y1
    plt.close(fig)


def test_plot_case_montage_and_montage_slices(tmp_path):
    import SimpleITK as sitk

    from vcfnb import montage

    arr = np.random.default_rng(0).normal(100, 10, (6, 30, 30)).astype(np.float32)
    m = np.zeros(arr.shape, np.uint8)
    m[2, 8:20, 8:20] = 2  # largest slice of label 2 at z = 2
    m[3, 10:12, 10:12] = 2
    m[4, 5:25, 5:25] = 1  # another label: ignored
    img, msk = sitk.GetImageFromArray(arr), sitk.GetImageFromArray(m)
    msk.CopyInformation(img)
    sitk.WriteImage(img, str(tmp_path / "i.nii.gz"))
    sitk.WriteImage(msk, str(tmp_path / "m.nii.gz"))
    rois = pd.DataFrame({"patient_id": ["P1", "P1"], "sequence": ["T2", "T1"],
                         "roi": ["lesion", "lesion"], "image": [str(tmp_path / "i.nii.gz")] * 2,
                         "mask": [str(tmp_path / "m.nii.gz")] * 2, "label": [2, 2]})
    sl = montage.montage_slices(rois, margin=3, sequences=["T1", "T2"])
    assert [s["sequence"] for s in sl] == ["T1", "T2"] and sl[0]["slice"] == 2
    assert sl[0]["image"].shape == sl[0]["mask"].shape == (18, 18)
    assert int(sl[0]["mask"].sum()) == 144 and sl[0]["title"] == "P1 T1 lesion"
    np.testing.assert_array_equal(sl[0]["image"], arr[2, 5:23, 5:23])
    axes = plots.plot_case_montage([s["image"] for s in sl], [s["mask"] for s in sl],
                                   [s["title"] for s in sl], ncols=2)
    assert len(axes) == 2 and axes[1].get_title() == "P1 T2 lesion"
    assert len(axes[0].images) == 1 and len(axes[0].collections) >= 1  # image + ROI contour
    with pytest.raises(ValueError, match="differ in length"):
        plots.plot_case_montage([sl[0]["image"]], [], ["x"])
    pred = pd.DataFrame({"model": "m", "split": "test", "patient_id": list("abcdef"),
                         "y_true": [1, 1, 0, 0, 1, 0], "score": [0.9, 0.6, 0.2, 0.8, 0.1, 0.45]})
    picked = montage.classified_cases(pred, "m", "test", 0.5, per_kind=1)
    assert picked[["patient_id", "kind"]].values.tolist() == [
        ["a", "TP"], ["c", "TN"], ["d", "FP"], ["e", "FN"]]


def test_plot_feature_contributions(rng):
    from vcfnb import models

    X = pd.DataFrame(rng.normal(size=(60, 4)), columns=["a", "b", "c", "d"])
    y = (X["a"] - X["b"] + 0.5 * rng.normal(size=60) > 0).astype(int)
    pipe = models.make_radiomics_pipeline(["zscore", "LR"], rng=0).fit(X, y)
    table = models.feature_contributions(pipe, X)
    ax = plots.plot_feature_contributions(table, top=3)
    assert len(ax.patches) == 3
    assert [t.get_text() for t in ax.get_yticklabels()][-1] == table["feature"].iloc[0]
    assert "standardised" in ax.get_xlabel() and _legend(ax)
    perm = models.feature_contributions(models.make_radiomics_pipeline(
        ["zscore", "RandomForest"], rng=0).fit(X, y), X, y, n_repeats=3, rng=0)
    ax2 = plots.plot_feature_contributions(perm)
    assert "permutation" in ax2.get_xlabel() and len(ax2.patches) == 4
