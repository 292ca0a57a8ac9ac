"""Figures of the papers, drawn from the tidy tables of :mod:`vcfnb.stats` and :mod:`vcfnb.selection`.

The only vcfnb module importing matplotlib/seaborn. Every function is
``plot_x(table, *, ax=None, **kw) -> matplotlib.axes.Axes``: it draws on ``ax`` (a new figure when
None), never calls ``plt.show()`` and never saves (that is :mod:`vcfnb.report`). Extra keyword
arguments go to the main matplotlib/seaborn call. The expected table columns are documented per
function.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes

__all__ = [
    "plot_auc_vs_n_features",
    "plot_calibration",
    "plot_clustered_heatmap",
    "plot_coefficients",
    "plot_conformance_by_family",
    "plot_correlation_heatmap",
    "plot_decision_curve",
    "plot_delong_matrix",
    "plot_lasso_cv",
    "plot_lasso_path",
    "plot_nomogram",
    "plot_permutation_null",
    "plot_radscore_by_group",
    "plot_roc",
]


def _ax(ax: Axes | None, figsize=(5, 4.5)) -> Axes:
    if ax is None:
        _, ax = plt.subplots(figsize=figsize)
    return ax


def _need(table: pd.DataFrame, cols: Sequence[str], fn: str) -> None:
    missing = [c for c in cols if c not in table.columns]
    if missing:
        raise ValueError(f"{fn}: table lacks columns {missing}; it has {list(table.columns)}")


# --------------------------------------------------------------------------------------------
def plot_roc(
    curves: Mapping[str, tuple] | pd.DataFrame,
    *,
    ax: Axes | None = None,
    ci: bool = True,
    diagonal: bool = True,
    **kw,
) -> Axes:
    """Overlay of ROC curves with AUC (and DeLong 95% CI) in the legend.

    Parameters
    ----------
    curves : mapping or DataFrame
        ``{"model name": (y_true, score), ...}``, or a long DataFrame with columns ``model,
        y_true, score`` (one row per subject and model).
    ci : bool
        Add the DeLong 95% CI (:func:`vcfnb.stats.roc_auc_ci`) to the legend labels.
    diagonal : bool
        Draw the chance line.
    **kw
        Passed to ``ax.plot`` for every curve.

    Returns
    -------
    Axes
        One line per model (plus the dashed diagonal); legend texts
        ``"name: AUC 0.852 (0.781-0.923)"``.

    Examples
    --------
    >>> y = np.r_[np.zeros(20), np.ones(20)]; s = y + np.random.default_rng(0).normal(size=40)
    >>> ax = plot_roc({"model": (y, s)})
    """
    from sklearn.metrics import roc_curve

    from vcfnb.stats import roc_auc_ci

    if isinstance(curves, pd.DataFrame):
        _need(curves, ["model", "y_true", "score"], "plot_roc")
        curves = {
            m: (g.y_true.to_numpy(), g.score.to_numpy())
            for m, g in curves.groupby("model", sort=False)
        }
    ax = _ax(ax)
    for name, (y, s) in curves.items():
        fpr, tpr, _ = roc_curve(np.asarray(y), np.asarray(s, float))
        r = roc_auc_ci(y, s)
        label = f"{name}: AUC {r.auc:.3f}" + (f" ({r.ci_low:.3f}-{r.ci_high:.3f})" if ci else "")
        ax.plot(fpr, tpr, label=label, **kw)
    if diagonal:
        ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=0.8)
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="1 - Specificity", ylabel="Sensitivity")
    ax.set_aspect("equal")
    ax.legend(loc="lower right", fontsize="small")
    return ax


def _feature_count_axis(ax: Axes, x: np.ndarray, counts: np.ndarray, n_ticks: int = 6) -> Axes:
    """Top axis labelling the number of non-zero features at positions ``x``."""
    top = ax.twiny()
    top.set_xlim(ax.get_xlim())
    idx = np.unique(np.linspace(0, len(x) - 1, min(n_ticks, len(x))).round().astype(int))
    top.set_xticks(x[idx])
    top.set_xticklabels([str(int(c)) for c in counts[idx]])
    top.set_xlabel("number of features")
    return top


def plot_lasso_path(
    path: pd.DataFrame, *, chosen_lambda: float | None = None, ax: Axes | None = None, **kw
) -> Axes:
    """LASSO coefficient paths against log(lambda), with the feature count on a top axis.

    Parameters
    ----------
    path : DataFrame
        Long table with columns ``lambda, feature, coef`` (one row per lambda and feature; the
        ``path_`` of :class:`vcfnb.selection.LassoSelector` works as is). Larger lambda =
        stronger penalty.
    chosen_lambda : float, optional
        Draws a dashed vertical line at ``log(chosen_lambda)``.

    Returns
    -------
    Axes
        One line per feature (+1 vertical line when ``chosen_lambda`` is given); a twin top
        axis shows the number of non-zero coefficients.

    Examples
    --------
    >>> lam = np.logspace(-3, 0, 20)
    >>> path = pd.DataFrame([(l, f, max(0, b - l)) for l in lam for f, b in [("a", .8), ("b", .3)]],
    ...                     columns=["lambda", "feature", "coef"])
    >>> ax = plot_lasso_path(path, chosen_lambda=0.1)
    """
    _need(path, ["lambda", "feature", "coef"], "plot_lasso_path")
    ax = _ax(ax)
    wide = path.pivot_table(index="lambda", columns="feature", values="coef", sort=True)
    x = np.log(wide.index.to_numpy(float))
    for f in wide.columns:
        ax.plot(x, wide[f].to_numpy(), label=str(f), **kw)
    if chosen_lambda is not None:
        ax.axvline(np.log(chosen_lambda), ls="--", color="k", lw=1)
    ax.axhline(0, color="grey", lw=0.5)
    ax.set(xlabel="log(lambda)", ylabel="coefficient")
    counts = (wide.abs() > 0).sum(axis=1).to_numpy()
    _feature_count_axis(ax, x, counts)
    return ax


def _first(table: pd.DataFrame, names: Sequence[str]) -> str | None:
    return next((c for c in names if c in table.columns), None)


def plot_lasso_cv(
    cv: pd.DataFrame,
    *,
    lambda_min: float | None = None,
    lambda_1se: float | None = None,
    metric: str | None = None,
    err: str | None = None,
    ax: Axes | None = None,
    **kw,
) -> Axes:
    """Cross-validation curve of the LASSO: metric ± error against log(lambda), chosen lambdas marked.

    Parameters
    ----------
    cv : DataFrame
        Columns ``lambda``, a CV mean (``mean_auc`` or ``mean_score``, or name it with
        ``metric``), an error column (``sd``, ``sd_score`` or ``se_score``, or ``err``) and
        optionally the feature count ``n_features`` / ``n_nonzero`` (drawn on a top axis). The
        ``cv_results_`` table of :class:`vcfnb.selection.LassoSelector` works as is.
    lambda_min, lambda_1se : float, optional
        Dashed vertical lines (best and one-SE lambda), e.g. the selector's ``lambda_min_``
        and ``lambda_1se_``.

    Returns
    -------
    Axes
        One errorbar container (``ax.containers``) and one vertical line per chosen lambda.

    Examples
    --------
    >>> cv = pd.DataFrame({"lambda": np.logspace(-3, 0, 10), "mean_auc": np.linspace(.8, .5, 10), "sd": .05})
    >>> ax = plot_lasso_cv(cv, lambda_min=0.001)
    """
    metric = metric or _first(cv, ["mean_auc", "mean_score"])
    err = err or _first(cv, ["sd", "sd_score", "se_score"])
    if metric is None or err is None:
        raise ValueError(
            f"plot_lasso_cv: need a CV mean (mean_auc/mean_score) and an error column (sd/sd_score/"
            f"se_score); table has {list(cv.columns)}"
        )
    _need(cv, ["lambda", metric, err], "plot_lasso_cv")
    ax = _ax(ax)
    c = cv.sort_values("lambda")
    x = np.log(c["lambda"].to_numpy(float))
    kw.setdefault("fmt", "o")
    kw.setdefault("color", "tab:red")
    kw.setdefault("ecolor", "grey")
    kw.setdefault("ms", 3)
    kw.setdefault("capsize", 2)
    ax.errorbar(x, c[metric].to_numpy(float), yerr=c[err].to_numpy(float), **kw)
    for lam, lab in ((lambda_min, "lambda.min"), (lambda_1se, "lambda.1se")):
        if lam is not None:
            ax.axvline(np.log(lam), ls="--", color="k", lw=1, label=lab)
    ax.set(xlabel="log(lambda)", ylabel="CV AUC" if metric == "mean_auc" else f"CV {metric}")
    if lambda_min is not None or lambda_1se is not None:
        ax.legend(fontsize="small")
    count = _first(c, ["n_features", "n_nonzero"])
    if count is not None:
        _feature_count_axis(ax, x, c[count].to_numpy())
    return ax


def plot_auc_vs_n_features(table: pd.DataFrame, *, ax: Axes | None = None, **kw) -> Axes:
    """AUC against the number of selected features (RFE/SFS curves).

    Parameters
    ----------
    table : DataFrame
        Columns ``n_features, auc``; optional ``sd`` (shaded band) and ``split`` or ``model``
        (one line each).

    Returns
    -------
    Axes
        One line per split/model, legend when there is more than one; best point marked.

    Examples
    --------
    >>> t = pd.DataFrame({"n_features": range(1, 11), "auc": np.linspace(.6, .8, 10)})
    >>> ax = plot_auc_vs_n_features(t)
    """
    _need(table, ["n_features", "auc"], "plot_auc_vs_n_features")
    ax = _ax(ax)
    key = "split" if "split" in table else ("model" if "model" in table else None)
    groups = table.groupby(key, sort=False) if key else [(None, table)]
    for name, g in groups:
        g = g.sort_values("n_features")
        (line,) = ax.plot(
            g.n_features, g.auc, marker="o", ms=3, label=None if name is None else str(name), **kw
        )
        if "sd" in g:
            ax.fill_between(
                g.n_features, g.auc - g.sd, g.auc + g.sd, alpha=0.2, color=line.get_color()
            )
        best = g.loc[g.auc.idxmax()]
        ax.scatter(
            [best.n_features], [best.auc], color=line.get_color(), s=40, zorder=3, edgecolor="k"
        )
    ax.set(xlabel="number of features", ylabel="AUC")
    if key:
        ax.legend(fontsize="small")
    return ax


def plot_coefficients(
    table: pd.DataFrame, *, ax: Axes | None = None, sort: bool = True, **kw
) -> Axes:
    """Horizontal bar chart of model coefficients (radscore formula), coloured by sign.

    Parameters
    ----------
    table : DataFrame
        Columns ``feature, coef`` (intercept rows named ``intercept``/``const`` are dropped).

    Returns
    -------
    Axes
        One bar per feature, sorted by coefficient.

    Examples
    --------
    >>> ax = plot_coefficients(pd.DataFrame({"feature": ["a", "b"], "coef": [0.5, -0.2]}))
    """
    _need(table, ["feature", "coef"], "plot_coefficients")
    t = table[~table.feature.astype(str).str.lower().isin(["intercept", "const", "(intercept)"])]
    if sort:
        t = t.sort_values("coef")
    ax = _ax(ax, figsize=(5, max(2.5, 0.3 * len(t) + 1)))
    colors = np.where(t.coef.to_numpy() >= 0, "tab:red", "tab:blue")
    ax.barh(t.feature.astype(str), t.coef, color=colors, **kw)
    ax.axvline(0, color="k", lw=0.6)
    ax.set(xlabel="coefficient", ylabel="")
    return ax


def plot_calibration(
    table: pd.DataFrame, *, ax: Axes | None = None, errorbars: bool = True, **kw
) -> Axes:
    """Calibration curve(s): observed event rate against mean predicted probability.

    Parameters
    ----------
    table : DataFrame
        :func:`vcfnb.stats.calibration_curve` output — columns ``mean_predicted, observed``,
        optional ``ci_low, ci_high`` (error bars) and ``model`` (one curve each; put e.g. the
        Hosmer–Lemeshow p in the model name).

    Returns
    -------
    Axes
        One line per model plus the dashed ideal diagonal; legend with model names.

    Examples
    --------
    >>> t = pd.DataFrame({"mean_predicted": [.1, .5, .9], "observed": [.15, .45, .85]})
    >>> ax = plot_calibration(t)
    """
    _need(table, ["mean_predicted", "observed"], "plot_calibration")
    ax = _ax(ax)
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=0.8, label="Ideal")
    groups = table.groupby("model", sort=False) if "model" in table else [("Model", table)]
    for name, g in groups:
        (line,) = ax.plot(g.mean_predicted, g.observed, marker="o", ms=4, label=str(name), **kw)
        if errorbars and {"ci_low", "ci_high"} <= set(g.columns):
            ax.vlines(g.mean_predicted, g.ci_low, g.ci_high, color=line.get_color(), lw=0.8)
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="Predicted probability", ylabel="Observed frequency")
    ax.set_aspect("equal")
    ax.legend(loc="upper left", fontsize="small")
    return ax


def plot_decision_curve(
    table: pd.DataFrame, *, ax: Axes | None = None, ymin: float | None = None, **kw
) -> Axes:
    """Decision curves: net benefit against threshold probability for each model.

    Parameters
    ----------
    table : DataFrame
        :func:`vcfnb.stats.decision_curve` output — columns ``model, threshold, net_benefit``;
        rows of ``"Treat all"`` and ``"Treat none"`` are drawn grey/black.
    ymin : float, optional
        Lower y limit (default: a little below 0, so a steep treat-all line does not squash the
        plot).

    Returns
    -------
    Axes
        One line per model, legend with the model names.

    Examples
    --------
    >>> t = pd.DataFrame({"model": ["m"] * 3 + ["Treat none"] * 3, "threshold": [.1, .2, .3] * 2,
    ...                   "net_benefit": [.3, .2, .1, 0, 0, 0]})
    >>> ax = plot_decision_curve(t)
    """
    _need(table, ["model", "threshold", "net_benefit"], "plot_decision_curve")
    ax = _ax(ax)
    style = {"Treat all": {"color": "grey", "lw": 1}, "Treat none": {"color": "k", "lw": 1}}
    for name, g in table.groupby("model", sort=False):
        ax.plot(g.threshold, g.net_benefit, label=str(name), **{**kw, **style.get(name, {})})
    top = float(table.net_benefit.max())
    ax.set_ylim(ymin if ymin is not None else -0.05 * max(top, 0.1), top * 1.1 if top > 0 else 0.1)
    ax.set(xlabel="Threshold probability", ylabel="Net benefit")
    ax.legend(fontsize="small")
    return ax


def plot_correlation_heatmap(
    data: pd.DataFrame,
    *,
    method: str = "pearson",
    ax: Axes | None = None,
    annot: bool | None = None,
    **kw,
) -> Axes:
    """Heatmap of the feature correlation matrix.

    Parameters
    ----------
    data : DataFrame
        Numeric feature columns (rows = patients); or an already square correlation matrix
        (index equal to columns), drawn as is.
    method : {"pearson", "spearman", "kendall"}
        Correlation for :meth:`DataFrame.corr`.
    annot : bool, optional
        Print coefficients in the cells (default when there are at most 12 features).

    Returns
    -------
    Axes
        The seaborn heatmap (one QuadMesh; a colorbar axis is added to the figure).

    Examples
    --------
    >>> ax = plot_correlation_heatmap(pd.DataFrame(np.random.default_rng(0).normal(size=(20, 3)), columns=list("abc")))
    """
    import seaborn as sns

    square = data.shape[0] == data.shape[1] and list(data.index) == list(data.columns)
    corr = data if square else data.select_dtypes("number").corr(method=method)
    ax = _ax(ax, figsize=(0.45 * len(corr) + 3, 0.45 * len(corr) + 2.5))
    kw.setdefault("cmap", "RdBu_r")
    sns.heatmap(
        corr,
        vmin=-1,
        vmax=1,
        center=0,
        square=True,
        annot=len(corr) <= 12 if annot is None else annot,
        fmt=".2f",
        ax=ax,
        **kw,
    )
    return ax


def plot_clustered_heatmap(
    data: pd.DataFrame,
    labels: pd.Series | Sequence | None = None,
    *,
    ax: Axes | None = None,
    z_score: int | None = 1,
    **kw,
) -> Axes:
    """Clustered heatmap (seaborn ``clustermap``) of selected features, rows coloured by label.

    Parameters
    ----------
    data : DataFrame
        Rows = patients, numeric columns = selected features.
    labels : Series or sequence, optional
        Class label per row (drawn as a colour strip beside the rows).
    ax : None
        Must be None: ``clustermap`` builds its own figure (a ``ClusterGrid``) with the
        dendrograms; pass ``figsize=`` instead.
    z_score : int or None
        Standardise columns (1, default) or rows (0) before clustering, as ``clustermap``.

    Returns
    -------
    Axes
        The heatmap axes of the grid (``grid.ax_heatmap``); the grid is reachable as
        ``ax.figure`` and its dendrogram axes are in the same figure.

    Examples
    --------
    >>> g = np.random.default_rng(0); X = pd.DataFrame(g.normal(size=(12, 4)), columns=list("abcd"))
    >>> ax = plot_clustered_heatmap(X, labels=[0, 1] * 6)
    """
    import seaborn as sns

    if ax is not None:
        raise ValueError(
            "plot_clustered_heatmap draws its own figure (seaborn clustermap); call it with ax=None"
        )
    num = data.select_dtypes("number")
    row_colors = None
    if labels is not None:
        lab = pd.Series(np.asarray(labels), index=num.index, name="label")
        levels = list(pd.unique(lab))
        pal = dict(zip(levels, sns.color_palette("Set1", len(levels))))
        row_colors = lab.map(pal)
    kw.setdefault("cmap", "RdBu_r")
    kw.setdefault("figsize", (6, 6))
    grid = sns.clustermap(
        num, z_score=z_score, row_colors=row_colors, center=0 if z_score is not None else None, **kw
    )
    if labels is not None:
        from matplotlib.patches import Patch

        grid.ax_heatmap.legend(
            handles=[Patch(color=c, label=str(k)) for k, c in pal.items()],
            title="label",
            loc="upper left",
            bbox_to_anchor=(1.15, 1.2),
            fontsize="small",
        )
    return grid.ax_heatmap


def plot_radscore_by_group(
    data: pd.DataFrame,
    *,
    score: str = "radscore",
    group: str = "label",
    kind: str = "box",
    ax: Axes | None = None,
    test: str = "mannwhitney",
    points: bool = True,
    **kw,
) -> Axes:
    """Radscore distribution per group (box or violin) with the between-group p-value.

    Parameters
    ----------
    data : DataFrame
        Columns ``score`` and ``group`` (e.g. ``radscore``, ``label``; add a ``split`` column
        and call once per split for train/test panels).
    kind : {"box", "violin"}
    test : {"mannwhitney", "ttest"}
        Two-group test (scipy) whose p is written in the title (Kruskal–Wallis / ANOVA for
        more than two groups).
    points : bool
        Overlay the individual patients (strip plot).

    Returns
    -------
    Axes
        Title ``"p = 0.003"`` (or ``"p < 0.001"``).

    Examples
    --------
    >>> d = pd.DataFrame({"radscore": np.r_[np.zeros(10), np.ones(10)] + np.random.default_rng(0).normal(size=20),
    ...                   "label": [0] * 10 + [1] * 10})
    >>> ax = plot_radscore_by_group(d)
    """
    import seaborn as sns
    from scipy import stats as sps

    _need(data, [score, group], "plot_radscore_by_group")
    ax = _ax(ax, figsize=(4, 4.5))
    d = data[[score, group]].dropna()
    order = sorted(d[group].unique())
    if kind == "box":
        sns.boxplot(data=d, x=group, y=score, order=order, ax=ax, showfliers=not points, **kw)
    elif kind == "violin":
        sns.violinplot(
            data=d,
            x=group,
            y=score,
            order=order,
            ax=ax,
            inner="quartile" if not points else None,
            **kw,
        )
    else:
        raise ValueError(f"kind must be 'box' or 'violin', got {kind!r}")
    if points:
        sns.stripplot(data=d, x=group, y=score, order=order, ax=ax, color="k", size=3, alpha=0.6)
    xs = [d.loc[d[group] == g, score].to_numpy(float) for g in order]
    if len(xs) == 2:
        p = (
            sps.mannwhitneyu(*xs, alternative="two-sided").pvalue
            if test == "mannwhitney"
            else sps.ttest_ind(*xs).pvalue
        )
    else:
        p = sps.kruskal(*xs).pvalue if test == "mannwhitney" else sps.f_oneway(*xs).pvalue
    ax.set_title("p < 0.001" if p < 0.001 else f"p = {p:.3f}")
    return ax


def plot_nomogram(
    nomogram,
    *,
    ax: Axes | None = None,
    probs: Sequence[float] = (0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95),
    labels: Mapping[str, str] | None = None,
    **kw,
) -> Axes:
    """Draw a points nomogram (rms style) from :func:`vcfnb.stats.nomogram_points`.

    Rows from top to bottom: ``Points`` (0-100), one scale per predictor (its values placed at
    their points), ``Total points`` and ``Probability`` (the ``probs`` ticks placed at
    :meth:`~vcfnb.stats.Nomogram.probability_to_total_points`, within the reachable range).

    Parameters
    ----------
    nomogram : vcfnb.stats.Nomogram
        Output of :func:`vcfnb.stats.nomogram_points` (its ``points`` table has columns
        ``variable, value, points``).
    probs : sequence of float
        Probability ticks.
    labels : mapping, optional
        Display names of the predictors.

    Returns
    -------
    Axes
        y tick labels = row names (``Points``, predictors..., ``Total points``, ``Probability``);
        one horizontal scale line per row.

    Examples
    --------
    >>> from vcfnb.stats import nomogram_points
    >>> pts = nomogram_points({"age": .05, "score": 2.}, -4.,
    ...                       {"age": [40, 60, 80], "score": [-1, 0, 1, 2]})
    >>> ax = plot_nomogram(pts)
    """
    pts = nomogram.points
    variables = list(dict.fromkeys(pts.variable))
    labels = dict(labels or {})
    max_points = float(pts.points.max())
    total_max = float(sum(pts.groupby("variable").points.max()))
    rows = ["Points", *[labels.get(v, v) for v in variables], "Total points", "Probability"]
    ax = _ax(ax, figsize=(8, 0.6 * len(rows) + 1))
    ypos = np.arange(len(rows))[::-1].astype(float)
    color = kw.pop("color", "k")

    def scale(y, xs, texts, x_of=lambda x: x, above=True):
        xs = np.asarray(xs, float)
        ax.hlines(y, x_of(xs.min()), x_of(xs.max()), color=color, lw=1)
        for x, t in zip(xs, texts):
            ax.vlines(x_of(x), y, y + (0.12 if above else -0.12), color=color, lw=1)
            ax.text(
                x_of(x),
                y + (0.18 if above else -0.2),
                t,
                ha="center",
                va="bottom" if above else "top",
                fontsize=8,
            )

    # Points row: 0..max_points, in the same units as the total points (scaled to the top width)
    ticks = np.arange(0, max_points + 1e-9, 10)
    scale(ypos[0], ticks, [f"{t:g}" for t in ticks])
    for k, v in enumerate(variables):
        sub = pts[pts.variable == v]
        scale(ypos[k + 1], sub.points.to_numpy(), [f"{x:g}" for x in sub.value])
    # totals are drawn on a shrunken axis so that 0..total_max spans the same width as 0..max_points
    shrink = max_points / total_max if total_max > 0 else 1.0
    tstep = 10 ** np.floor(np.log10(max(total_max, 1) / 2))
    tticks = np.arange(0, total_max + 1e-9, tstep if total_max / tstep <= 12 else 2 * tstep)
    scale(ypos[-2], tticks, [f"{t:g}" for t in tticks], x_of=lambda x: x * shrink)
    p = np.asarray(probs, float)
    tp = nomogram.probability_to_total_points(p)
    keep = (tp >= 0) & (tp <= total_max)
    if keep.sum() >= 1:
        scale(
            ypos[-1], tp[keep], [f"{q:g}" for q in p[keep]], x_of=lambda x: x * shrink, above=False
        )
    for y in ypos:
        ax.axhline(y, color="0.9", lw=0.5, zorder=0)
    ax.set_yticks(ypos)
    ax.set_yticklabels(rows)
    ax.set_xticks([])
    ax.set_xlim(-0.05 * max_points, 1.05 * max_points)
    ax.set_ylim(ypos[-1] - 0.8, ypos[0] + 0.8)
    for s in ("top", "right", "bottom"):
        ax.spines[s].set_visible(False)
    return ax


def plot_delong_matrix(
    matrix: pd.DataFrame, *, ax: Axes | None = None, alpha: float = 0.05, **kw
) -> Axes:
    """Heatmap of pairwise DeLong p-values (lower triangle, annotated).

    Parameters
    ----------
    matrix : DataFrame
        Square p-value matrix of :func:`vcfnb.stats.delong_matrix` (model names as index and
        columns, NaN diagonal).
    alpha : float
        Cells with p < alpha get a ``*``.

    Returns
    -------
    Axes
        Seaborn heatmap with one text annotation per lower-triangle cell.

    Examples
    --------
    >>> m = pd.DataFrame([[np.nan, .03], [.03, np.nan]], index=["a", "b"], columns=["a", "b"])
    >>> ax = plot_delong_matrix(m)
    """
    import seaborn as sns

    if matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"plot_delong_matrix: matrix must be square, got {matrix.shape}")
    ax = _ax(ax, figsize=(0.8 * len(matrix) + 2.5, 0.8 * len(matrix) + 1.5))
    if len(matrix) > 2:  # drop the empty first row and last column of the lower triangle
        matrix = matrix.iloc[1:, :-1]
        mask = np.triu(np.ones(matrix.shape, dtype=bool), k=1)
    else:
        mask = np.triu(np.ones(matrix.shape, dtype=bool))
    annot = matrix.map(
        lambda p: (
            ""
            if pd.isna(p)
            else ("<0.001" if p < 0.001 else f"{p:.3f}") + ("*" if p < alpha else "")
        )
    )
    kw.setdefault("cmap", "viridis_r")
    sns.heatmap(
        matrix.astype(float),
        mask=mask,
        annot=annot.to_numpy(),
        fmt="",
        vmin=0,
        vmax=1,
        ax=ax,
        cbar_kws={"label": "DeLong p"},
        square=True,
        **kw,
    )
    ax.set(xlabel="", ylabel="")
    return ax


def plot_permutation_null(
    null_auc,
    observed: float,
    *,
    p_value: float | None = None,
    ax: Axes | None = None,
    bins: int = 30,
    **kw,
) -> Axes:
    """Histogram of the label-permutation null AUCs with the observed AUC as a vertical line.

    Parameters
    ----------
    null_auc : array-like or DataFrame
        Null AUCs (a DataFrame/Series must have an ``auc`` column/name).
    observed : float
        AUC of the real labels.
    p_value : float, optional
        Permutation p; computed as ``(1 + #(null >= observed)) / (1 + n)`` when omitted.

    Returns
    -------
    Axes
        Histogram patches, one vertical line at ``observed``, legend with the p-value.

    Examples
    --------
    >>> ax = plot_permutation_null(np.random.default_rng(0).normal(.5, .05, 200), 0.71)
    """
    if isinstance(null_auc, pd.DataFrame):
        _need(null_auc, ["auc"], "plot_permutation_null")
        null_auc = null_auc["auc"]
    null = np.asarray(null_auc, float)
    ax = _ax(ax)
    if null.size == 0:  # no permutation was run: say so instead of an empty histogram
        ax.axvline(observed, color="tab:red", lw=2, label=f"observed AUC {observed:.3f}")
        ax.text(0.5, 0.5, "no label permutations were run", transform=ax.transAxes,
                ha="center", va="center")
        ax.set(xlabel="AUC", ylabel="count")
        ax.legend(fontsize="small")
        return ax
    if p_value is None:
        p_value = (1 + np.sum(null >= observed)) / (1 + len(null))
    kw.setdefault("color", "lightgrey")
    kw.setdefault("edgecolor", "grey")
    ax.hist(null, bins=bins, label=f"null (n = {len(null)})", **kw)
    ax.axvline(
        observed, color="tab:red", lw=2, label=f"observed AUC {observed:.3f}, p = {p_value:.3g}"
    )
    ax.set(xlabel="AUC", ylabel="count")
    ax.legend(fontsize="small")
    return ax


# bar colours of plot_conformance_by_family, by vcfnb.conformance.STATUS value
_STATUS_COLORS = {
    "match": "#2a9d8f",
    "mismatch: explained": "#e9c46a",
    "mismatch: unexplained": "#e76f51",
    "not in pyradiomics": "#bbbbbb",
    "no reference value": "#eeeeee",
}


def plot_conformance_by_family(
    counts: pd.DataFrame,
    *,
    statuses: Sequence[str] | None = None,
    title: str | None = None,
    ax: Axes | None = None,
    **kw,
) -> Axes:
    """Stacked horizontal bars: IBSI reference values per feature family, by conformance status.

    Parameters
    ----------
    counts : DataFrame
        :func:`vcfnb.conformance.summary`'s table: a ``family`` column and one count column per
        status. Its ``total`` row is left out; families are drawn top to bottom in table order.
    statuses : sequence of str, optional
        Status columns to stack, left to right (default: the first four of
        :data:`vcfnb.conformance.STATUS` -- match, explained and unexplained mismatch, not in
        pyradiomics): green, yellow, red, grey (other names: grey).
    title : str, optional
        Axes title.
    **kw
        Passed to ``ax.barh`` for every status (default ``height=0.5``).

    Returns
    -------
    Axes
        One bar per family and status (``len(families) * len(statuses)`` patches), families as
        y tick labels (first on top), a legend with the statuses, x label
        ``"IBSI reference values"``.

    Examples
    --------
    >>> counts = pd.DataFrame({"family": ["GLCM", "NGTDM", "total"], "match": [20, 5, 25],
    ...     "mismatch: explained": [3, 0, 3], "mismatch: unexplained": [0, 0, 0],
    ...     "not in pyradiomics": [2, 0, 2]})
    >>> ax = plot_conformance_by_family(counts, title="IBSI-1 digital phantom")
    """
    from vcfnb.conformance import STATUS

    statuses = list(STATUS[:4] if statuses is None else statuses)
    _need(counts, ["family", *statuses], "plot_conformance_by_family")
    d = counts[counts["family"] != "total"]
    y = np.arange(len(d))
    left = np.zeros(len(d))
    ax = _ax(ax, figsize=(7, 4.5))
    kw.setdefault("height", 0.5)
    for status in statuses:
        width = d[status].to_numpy(float)
        ax.barh(y, width, left=left, label=status,
                color=_STATUS_COLORS.get(status, "grey"), **kw)
        left += width
    ax.set_yticks(y, [str(f) for f in d["family"]])
    if not ax.yaxis_inverted():
        ax.invert_yaxis()  # first family on top, as the table reads
    ax.set(xlabel="IBSI reference values", ylabel="")
    if title:
        ax.set_title(title)
    ax.legend()
    return ax


def plot_scatter_grid(data: pd.DataFrame, x: str, ys: Sequence[str], *, hue: str | None = None,
                      ncols: int = 3, axes=None, **kw) -> np.ndarray:
    """Scatter of ``x`` against each of ``ys`` with Pearson r in each title (seed 004 fig 3).

    Parameters
    ----------
    data : DataFrame
        One row per subject with columns ``x``, ``ys`` and optionally ``hue`` (e.g. the class).
    x : str
        The reference quantity (e.g. ``"mvr"``).
    ys : sequence of str
        Features to plot, one panel each.
    hue : str, optional
        Column coloring the points (categorical).
    axes : array of Axes, optional
        Panels to draw into (at least ``len(ys)``); created when omitted.

    Returns
    -------
    ndarray of Axes
        One panel per feature (title ``"<feature>\\nr = 0.88"``), unused panels hidden.

    Examples
    --------
    >>> d = pd.DataFrame({"m": [1, 2, 3, 4.0], "a": [2, 4, 5, 9.0], "b": [1, 0, 1, 0.0]})
    >>> axs = plot_scatter_grid(d, "m", ["a", "b"])
    """
    _need(data, [x, *ys] + ([hue] if hue else []), "plot_scatter_grid")
    n = max(len(ys), 1)
    if axes is None:
        nrows = int(np.ceil(n / ncols))
        _, axes = plt.subplots(nrows, min(ncols, n), figsize=(3.6 * min(ncols, n), 3.2 * nrows),
                               squeeze=False)
    axes = np.ravel(axes)
    groups = [(None, data)] if hue is None else list(data.groupby(hue))
    for ax, col in zip(axes, ys):
        for name, part in groups:
            ax.scatter(part[x], part[col], s=14, alpha=0.8,
                       label=None if name is None else str(name), **kw)
        ok = data[[x, col]].dropna()
        r = np.corrcoef(ok[x], ok[col])[0, 1] if len(ok) > 2 else np.nan
        ax.set_title(f"{col}\nr = {r:.2f}", fontsize="small")
        ax.set_xlabel(x)
    for ax in axes[len(ys):]:
        ax.set_visible(False)
    if hue is not None and len(ys):
        axes[0].legend(fontsize="x-small", title=hue)
    return axes[: len(ys)]


# --------------------------------------------------------------------------------------------
# reviewer figures: cohort flow, example cases, feature contributions
# --------------------------------------------------------------------------------------------
class _Box:
    """A stage of a flow diagram: centred text in a rounded frame drawn as its own patch in data
    coordinates, so arrows can end exactly on the frame at any dpi (a text's own ``bbox`` is
    re-measured at every dpi and font hinting moves its edges by a point or two)."""

    def __init__(self, ax: Axes, x: float, y: float, text: str, *, color: str = "#eef3fa",
                 fontsize: float = 8.5, pad: float = 0.6):
        from matplotlib.patches import FancyBboxPatch

        self.ax, self.pad = ax, pad
        self.text = ax.text(x, y, text, ha="center", va="center", fontsize=fontsize)
        self.frame = FancyBboxPatch((x, y), 0, 0, boxstyle="round,pad=0", facecolor=color,
                                    edgecolor="#34495e", linewidth=1.0, zorder=2)
        ax.add_patch(self.frame)
        self.fit()

    def move(self, x: float, y: float) -> None:
        self.text.set_position((x, y))
        self.fit()

    def fit(self) -> None:
        """Frame = the text's extent plus ``pad`` font sizes on each side (data coordinates),
        plus 5% of the text's width each side: hinting makes a line up to ~10% wider at a
        lower dpi than the one measured here (the figure's; reports save at 120)."""
        ax, fig = self.ax, self.ax.figure
        renderer = (fig.canvas.get_renderer() if hasattr(fig.canvas, "get_renderer")
                    else fig._get_renderer())
        ext = self.text.get_window_extent(renderer)
        pad = renderer.points_to_pixels(self.text.get_fontsize()) * self.pad
        pad_x = pad + 0.05 * ext.width
        to_data = ax.transData.inverted()
        (x0, y0), (x1, y1) = to_data.transform([(ext.x0 - pad_x, ext.y0 - pad),
                                                (ext.x1 + pad_x, ext.y1 + pad)])
        # round corners of ~pad/2 points, circular on screen whatever the axes' aspect
        (ox, oy), (rx, ry) = to_data.transform([(0, 0), (pad / 2, pad / 2)])
        self.frame.set_bounds(x0, y0, x1 - x0, y1 - y0)
        self.frame.set_boxstyle("round", pad=0, rounding_size=rx - ox)
        self.frame.set_mutation_aspect((ry - oy) / (rx - ox))

    @property
    def x0(self) -> float:
        return self.frame.get_x()

    @property
    def x1(self) -> float:
        return self.frame.get_x() + self.frame.get_width()

    @property
    def y0(self) -> float:
        return self.frame.get_y()

    @property
    def y1(self) -> float:
        return self.frame.get_y() + self.frame.get_height()

    @property
    def xc(self) -> float:
        return self.frame.get_x() + self.frame.get_width() / 2

    @property
    def yc(self) -> float:
        return self.frame.get_y() + self.frame.get_height() / 2


def _arrow(ax: Axes, start: tuple[float, float], end: tuple[float, float]) -> None:
    ax.annotate("", xy=end, xytext=start, arrowprops={"arrowstyle": "-|>", "color": "#34495e",
                                                      "linewidth": 1.0, "shrinkA": 0,
                                                      "shrinkB": 0})


def plot_cohort_flow(card_data: Mapping, problems: pd.DataFrame | None = None,
                     split_counts: pd.DataFrame | Sequence[Mapping] | None = None, *,
                     ax: Axes | None = None, max_reasons: int = 6) -> Axes:
    """Cohort flow diagram (the papers' Figure 1): cases in → excluded with reasons → per split.

    Parameters
    ----------
    card_data : mapping
        The run card data (``run.card_data()`` or ``run_card.json``): ``patients``,
        ``positive``, ``negative``, ``rois``, ``problems`` (rows excluded).
    problems : DataFrame, optional
        The cohort's validation problems (``row, patient_id, file, problem``;
        ``tables/cohort_problems.csv``): grouped by kind of problem (the text before the first
        colon) in the exclusion box.
    split_counts : DataFrame or list of dict, optional
        One row per split: ``split``, ``patients`` (or ``n``), ``positive``, ``negative``
        (e.g. ``card_data["split_counts"]``, or patients per split of the predictions
        table). None: no split row.
    ax : Axes, optional
    max_reasons : int
        Kinds of problem listed before "... and k more".

    Returns
    -------
    Axes
        Axis off; one box per stage: its text (the non-empty ``ax.texts``, in reading order)
        in a rounded frame (``ax.patches``, same order, fitted to the measured text), arrows
        (empty annotations) between them. Every arrow starts on its source frame's edge (the
        exclusion branch on the main vertical arrow) and its head ends on the target frame's
        edge, for any text and any number of splits.

    Examples
    --------
    >>> card = {"patients": 40, "positive": 15, "negative": 25, "rois": 120, "problems": 2}
    >>> probs = pd.DataFrame({"row": ["rois.csv:3", "cases.csv:9"], "patient_id": ["P3", "P9"],
    ...                       "file": ["m.nii.gz", ""], "problem": ["empty mask: 0 voxels",
    ...                                                              "outcome missing"]})
    >>> splits = pd.DataFrame({"split": ["train", "test"], "patients": [28, 12],
    ...                        "positive": [10, 5], "negative": [18, 7]})
    >>> ax = plot_cohort_flow(card, probs, splits)
    >>> len([t for t in ax.texts if t.get_text()])  # boxes: in, excluded, analysed, 2 splits
    5
    """
    import textwrap

    probs = problems if problems is not None else pd.DataFrame(columns=["row", "problem"])
    n_prob = int(card_data.get("problems", len(probs)) or 0)
    rows = [] if split_counts is None else (
        split_counts.to_dict("records") if isinstance(split_counts, pd.DataFrame)
        else [dict(r) for r in split_counts])
    if ax is None:
        width = max(7.0, 2.6 * max(len(rows), 1))
        _, ax = plt.subplots(figsize=(width, 5.2))
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.axis("off")
    rows_col = probs["row"].astype(str) if "row" in probs else pd.Series(dtype=str)
    bad_cases = int(rows_col.str.startswith("cases.csv").sum())
    bad_rois = int(rows_col.str.startswith("rois.csv").sum())
    n_pat, n_roi = card_data.get("patients"), card_data.get("rois")
    top = (f"Cases in the cohort tables\n{(n_pat or 0) + bad_cases} patient rows, "
           f"{(n_roi or 0) + bad_rois} ROI rows")
    if "problem" in probs and len(probs):
        kinds = (probs["problem"].astype(str).str.split(":").str[0].str.strip()
                 .value_counts())
        lines = [textwrap.shorten(f"{k}: {v}", 60, placeholder=" ...")
                 for k, v in kinds.head(max_reasons).items()]
        if len(kinds) > max_reasons:
            lines.append(f"... and {len(kinds) - max_reasons} more kinds")
        excl = (f"Excluded: {n_prob} row(s)\n({probs['patient_id'].astype(str).nunique()} "
                "patient(s))\n" + "\n".join(lines))
    else:
        excl = f"Excluded: {n_prob} row(s)"
    pos, neg = card_data.get("positive"), card_data.get("negative")
    # boxes first (the texts' order is the reading order), arrows from their frames
    x_main = 0.3
    top_box = _Box(ax, x_main, 0.88, top)
    excl_box = _Box(ax, 0.74, 0.66, excl, color="#fbeeee")
    mid_box = _Box(ax, x_main, 0.44, f"Analysed\n{n_pat} patients ({pos} positive, {neg} "
                   f"negative)\n{n_roi} ROIs", color="#eef8ee")
    xs = np.linspace(0.5 / max(len(rows), 1), 1 - 0.5 / max(len(rows), 1), len(rows))
    split_boxes = [_Box(ax, float(x), 0.13, f"{r.get('split')}\n{r.get('patients', r.get('n'))}"
                        f" patients\n{r.get('positive')} positive, {r.get('negative')} negative")
                   for x, r in zip(xs, rows)]
    # the exclusion box: right of the main column, centred on the gap between its two boxes
    left = max(top_box.x1, mid_box.x1) + 0.05
    excl_box.move(left + (excl_box.x1 - excl_box.x0) / 2, (top_box.y0 + mid_box.y1) / 2)
    _arrow(ax, (x_main, top_box.y0), (x_main, mid_box.y1))
    _arrow(ax, (x_main, excl_box.yc), (excl_box.x0, excl_box.yc))
    for box in split_boxes:
        _arrow(ax, (x_main, mid_box.y0), (box.xc, box.y1))
    return ax


def _robust_limits(img: np.ndarray) -> tuple[float, float]:
    vals = img[np.isfinite(img)]
    if vals.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(vals, [1, 99])
    return (float(lo), float(hi)) if hi > lo else (float(vals.min()), float(vals.max()) + 1e-9)


def plot_case_montage(images: Sequence[np.ndarray], masks: Sequence[np.ndarray],
                      titles: Sequence[str], *, ncols: int = 3, color: str = "#ff3b30",
                      axes=None, panel_size: float = 2.6) -> np.ndarray:
    """Slices with the ROI outlined (seed 004 Figures 5–6), one panel per slice.

    Parameters
    ----------
    images, masks : sequence of 2-D arrays
        Each slice and its ROI mask (same shapes), e.g. from
        :func:`vcfnb.montage.montage_slices`.
    titles : sequence of str
        Panel titles (e.g. ``"P012 T2 lesion — FP"``).
    ncols : int
        Panels per row (e.g. the number of sequences, so a patient is one row).
    color : str
        Contour colour.
    axes : array of Axes, optional
    panel_size : float
        Inches per panel.

    Returns
    -------
    ndarray of Axes
        One per slice (grey image at the 1st–99th percentile window, ROI contour), unused
        panels hidden.

    Examples
    --------
    >>> img = np.random.default_rng(0).normal(size=(32, 32)); m = np.zeros((32, 32), bool)
    >>> m[10:20, 8:22] = True
    >>> plot_case_montage([img, img], [m, m], ["a", "b"], ncols=2).shape
    (2,)
    """
    if not (len(images) == len(masks) == len(titles)):
        raise ValueError(f"images, masks and titles differ in length ({len(images)}, "
                         f"{len(masks)}, {len(titles)})")
    n = max(len(images), 1)
    ncols = max(1, min(int(ncols), n))
    if axes is None:
        nrows = int(np.ceil(n / ncols))
        _, axes = plt.subplots(nrows, ncols, figsize=(panel_size * ncols, panel_size * nrows),
                               squeeze=False)
    axes = np.ravel(axes)
    for ax, img, m, title in zip(axes, images, masks, titles):
        img, m = np.asarray(img, dtype=float), np.asarray(m).astype(bool)
        if img.shape != m.shape:
            raise ValueError(f"{title}: image {img.shape} and mask {m.shape} differ")
        vmin, vmax = _robust_limits(img)
        ax.imshow(img, cmap="gray", vmin=vmin, vmax=vmax, interpolation="nearest")
        if m.any() and not m.all():
            ax.contour(m.astype(float), levels=[0.5], colors=[color], linewidths=1.2)
        ax.set_title(title, fontsize="small")
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in axes[len(images):]:
        ax.set_visible(False)
    return axes[: len(images)]


def plot_feature_contributions(table: pd.DataFrame, *, top: int = 20, ax: Axes | None = None,
                               **kw) -> Axes:
    """Bar chart of per-feature contributions (:func:`vcfnb.models.feature_contributions`).

    Parameters
    ----------
    table : DataFrame
        ``feature, mean_abs`` (+ ``mean``, ``std``, ``method``).
    top : int
        Largest features shown.
    ax : Axes, optional
    **kw
        Passed to ``ax.barh``.

    Returns
    -------
    Axes
        Horizontal bars of ``mean_abs`` (largest on top), coloured by ``direction`` (red: a
        higher value raises the score; blue: lowers it; grey: unknown), with ``std`` error
        bars for permutation importance.

    Examples
    --------
    >>> t = pd.DataFrame({"feature": ["a", "b"], "mean_abs": [0.8, 0.2], "mean": [0.1, -0.2],
    ...                   "std": [0.3, 0.1], "method": "linear"})
    >>> len(plot_feature_contributions(t).patches)
    2
    """
    _need(table, ["feature", "mean_abs"], "plot_feature_contributions")
    t = table.sort_values("mean_abs", ascending=False, kind="stable").head(int(top))[::-1]
    method = str(t["method"].iloc[0]) if "method" in t and len(t) else ""
    ax = _ax(ax, figsize=(6.5, 0.32 * len(t) + 1.4))
    direction = (t["direction"].to_numpy(float) if "direction" in t
                 else np.full(len(t), np.nan))
    colors = np.where(direction > 0, "#c0392b", np.where(direction < 0, "#2e86c1", "#5d6d7e"))
    xerr = t["std"].to_numpy(float) if method == "permutation" and "std" in t else None
    ax.barh(t["feature"].astype(str), t["mean_abs"].to_numpy(float), color=colors, xerr=xerr,
            **kw)
    labels = {"linear": "mean |coefficient × standardised value| (log-odds)",
              "tree": "mean |TreeSHAP contribution| (log-odds)",
              "permutation": "mean AUC drop when shuffled (permutation importance)"}
    ax.set_xlabel(labels.get(method, "mean |contribution|"))
    ax.tick_params(axis="y", labelsize="small")
    if np.isfinite(direction).any():
        from matplotlib.patches import Patch

        ax.legend(handles=[Patch(color="#c0392b", label="higher value → higher score"),
                           Patch(color="#2e86c1", label="higher value → lower score")],
                  fontsize="x-small", loc="lower right")
    ax.set_title("Feature contributions" + (f" ({method})" if method else ""))
    return ax


__all__ += ["plot_cohort_flow", "plot_case_montage", "plot_feature_contributions"]
