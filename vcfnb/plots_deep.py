"""Figures of the 2.5D deep-learning arm (Grad-CAM overlays, fine-tuning curves).

Kept apart from :mod:`vcfnb.plots` so that module does not depend on torch; this one needs only
numpy, pandas and matplotlib (inputs may be torch tensors, converted with ``np.asarray``).
"""
from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes

__all__ = ["plot_gradcam", "plot_training_log"]


def plot_gradcam(images, cams, *, ax: Axes | None = None, alpha: float = 0.4,
                 cmap: str = "jet", row_labels: Sequence[str] | None = None,
                 col_labels: Sequence[str] | None = ("centre−k", "centre", "centre+k"),
                 gap: int = 4) -> Axes:
    """Grad-CAM heat maps over their input slices, semi-transparent, as one mosaic.

    Parameters
    ----------
    images : array-like
        Grey slices ``(H, W)``, one case's slices ``(n_slices, H, W)``, several cases
        ``(n_cases, n_slices, H, W)``, or network inputs with a colour axis
        (``(n_slices, 3, H, W)`` / ``(n_cases, n_slices, 3, H, W)``; channels are averaged).
    cams : array-like
        Heat maps in [0, 1] of the same layout without the colour axis (from
        :func:`vcfnb.deep.gradcam`, stacked over cases).
    ax : Axes, optional
        Where to draw; a new figure otherwise.
    alpha : float
        Opacity of the heat map.
    cmap : str
        Colour map of the heat map.
    row_labels, col_labels : sequence of str, optional
        Labels of the cases (rows) and slices (columns).
    gap : int
        Pixels between panels.

    Returns
    -------
    Axes

    Examples
    --------
    >>> img = np.random.default_rng(0).normal(size=(3, 32, 32))
    >>> cam = np.zeros((3, 32, 32)); cam[:, 8:16, 8:16] = 1
    >>> ax = plot_gradcam(img, cam)
    """
    cam = np.asarray(cams, dtype=float)
    img = np.asarray(images, dtype=float)
    if img.ndim == cam.ndim + 1:  # colour axis present
        img = img.mean(axis=-3)
    if img.shape != cam.shape:
        raise ValueError(f"images {img.shape} and heat maps {cam.shape} do not match")
    while cam.ndim < 4:
        cam, img = cam[None], img[None]
    n_r, n_c, h, w = cam.shape
    lo, hi = img.min(), img.max()
    img = (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)
    H, W = n_r * h + (n_r - 1) * gap, n_c * w + (n_c - 1) * gap
    base = np.ones((H, W))
    heat = np.full((H, W), np.nan)
    for r in range(n_r):
        for c in range(n_c):
            y0, x0 = r * (h + gap), c * (w + gap)
            base[y0:y0 + h, x0:x0 + w] = img[r, c]
            heat[y0:y0 + h, x0:x0 + w] = cam[r, c]
    if ax is None:
        _, ax = plt.subplots(figsize=(2.2 * n_c + 0.8, 2.2 * n_r + 0.3))
    ax.imshow(base, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    im = ax.imshow(np.ma.masked_invalid(heat), cmap=cmap, vmin=0, vmax=1, alpha=alpha,
                   interpolation="bilinear")
    ax.figure.colorbar(im, ax=ax, fraction=0.03, pad=0.02, label="Grad-CAM")
    ax.set_xticks([c * (w + gap) + w / 2 for c in range(n_c)])
    ax.set_xticklabels(list(col_labels)[:n_c] if col_labels is not None and n_c > 1
                       else [""] * n_c)
    ax.set_yticks([r * (h + gap) + h / 2 for r in range(n_r)])
    ax.set_yticklabels(list(row_labels)[:n_r] if row_labels is not None else [""] * n_r)
    ax.tick_params(length=0)
    for s in ax.spines.values():
        s.set_visible(False)
    return ax


def plot_training_log(log: pd.DataFrame, *, ax: Axes | None = None) -> Axes:
    """Training and inner-validation loss per epoch (and validation AUC on a twin axis).

    ``log`` is :attr:`vcfnb.deep.FineTuned.log` (columns ``epoch, train_loss, val_loss,
    val_auc``).
    """
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot(log["epoch"], log["train_loss"], "o-", label="training loss")
    if log["val_loss"].notna().any():
        ax.plot(log["epoch"], log["val_loss"], "s-", label="inner validation loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("binary cross-entropy")
    if log["val_auc"].notna().any():
        ax2 = ax.twinx()
        ax2.plot(log["epoch"], log["val_auc"], "^--", color="tab:green", label="validation AUC")
        ax2.set_ylim(0, 1)
        ax2.set_ylabel("validation AUC")
        ax2.legend(loc="upper right", frameon=False)
    ax.legend(loc="upper left", frameon=False)
    return ax
