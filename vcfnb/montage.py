"""Example cases for a report: which patients to show, and their largest ROI slice per sequence.

Compute only (reads images through :mod:`vcfnb.io`, never plots): the figures are
:func:`vcfnb.plots.plot_case_montage`. Seed 004's Figures 5–6 show correctly and incorrectly
classified cases on every sequence with the ROI outlined; :func:`classified_cases` picks such
patients from a predictions table and :func:`montage_slices` returns their slices.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import SimpleITK as sitk

from vcfnb import io, preprocess

__all__ = ["montage_slices", "classified_cases", "case_panels", "OUTCOME_KINDS"]

#: classification outcomes, in display order
OUTCOME_KINDS = ("TP", "TN", "FP", "FN")


def classified_cases(predictions: pd.DataFrame, model: str, split: str, cutoff: float, *,
                     per_kind: int = 1) -> pd.DataFrame:
    """Correctly and incorrectly classified patients of one model and split.

    Parameters
    ----------
    predictions : DataFrame
        The long predictions table (``model, split, patient_id, y_true, score``).
    model, split : str
    cutoff : float
        Class = ``score >= cutoff`` (e.g. the recorded out-of-fold Youden cut-off).
    per_kind : int
        Patients per kind (TP, TN, FP, FN): the ``per_kind`` farthest from the cut-off (the
        most confident correct and the most confident wrong ones).

    Returns
    -------
    DataFrame
        ``patient_id, kind, y_true, score`` ordered by kind (TP, TN, FP, FN), then distance.

    Examples
    --------
    >>> p = pd.DataFrame({"model": "m", "split": "test", "patient_id": list("abcd"),
    ...                   "y_true": [1, 0, 0, 1], "score": [0.9, 0.1, 0.7, 0.4]})
    >>> classified_cases(p, "m", "test", 0.5)[["patient_id", "kind"]].values.tolist()
    [['a', 'TP'], ['b', 'TN'], ['c', 'FP'], ['d', 'FN']]
    """
    p = predictions[(predictions["model"] == model) & (predictions["split"] == split)]
    if p.empty:
        raise ValueError(f"no predictions of {model!r} on {split!r}")
    pos = p["score"].to_numpy(float) >= cutoff
    y = p["y_true"].to_numpy(int) == 1
    kind = np.select([pos & y, ~pos & ~y, pos & ~y], ["TP", "TN", "FP"], "FN")
    t = p.assign(kind=kind, distance=(p["score"] - cutoff).abs())
    t["order"] = t["kind"].map({k: i for i, k in enumerate(OUTCOME_KINDS)})
    t = t.sort_values(["order", "distance", "patient_id"], ascending=[True, False, True],
                      kind="stable")
    t = t.groupby("kind", sort=False).head(int(per_kind))
    return t[["patient_id", "kind", "y_true", "score"]].reset_index(drop=True)


def montage_slices(rois: pd.DataFrame, *, axis: int = 0, margin: int | None = 12,
                   sequences: Sequence[str] | None = None) -> list[dict]:
    """The largest-area slice of each ROI row, image and mask, ready for a montage.

    Parameters
    ----------
    rois : DataFrame
        ROI rows of a cohort (``vcfnb.io.load_cohort(...).rois``): ``image``, ``mask``,
        ``label`` and optional ``patient_id``, ``sequence``, ``roi``, ``resample_mask``;
        typically the rows of a few patients (:func:`classified_cases`), every sequence.
    axis : int
        Array axis of the slices (0 = the image's z; see
        :func:`vcfnb.preprocess.largest_area_slices`).
    margin : int or None
        Crop each slice to the ROI's bounding box plus this many pixels; None keeps the whole
        slice.
    sequences : sequence of str, optional
        Order of the sequences per patient (default: as in ``rois``).

    Returns
    -------
    list of dict
        One per row, ordered by patient then sequence: ``patient_id, sequence, roi, slice``
        (index along ``axis``), ``image`` (2-D float array), ``mask`` (2-D bool array, the
        ROI's label only), ``title`` (``"<patient> <sequence> <roi>"``).
    """
    r = rois.copy()
    if sequences is not None and "sequence" in r:
        r["_o"] = r["sequence"].astype(str).map({s: i for i, s in enumerate(sequences)})
        r = r[r["_o"].notna()]
        r = r.sort_values([c for c in ("patient_id", "_o") if c in r], kind="stable")
    out = []
    cache: dict[str, np.ndarray] = {}
    for row in r.itertuples(index=False):
        d = row._asdict()
        img_path, mask_path = str(d["image"]), str(d["mask"])
        if img_path not in cache:
            cache[img_path] = sitk.GetArrayFromImage(io.read_image(img_path)).astype(float)
        img = cache[img_path]
        mimg = io.read_image(mask_path)
        if bool(d.get("resample_mask", False)):
            mimg = preprocess.resample_to_reference(mimg, io.read_image(img_path))
        m = sitk.GetArrayFromImage(mimg)
        label = int(d.get("label", 1) if pd.notna(d.get("label", 1)) else 1)
        roi = m == label
        if img.shape != roi.shape:
            raise ValueError(f"{mask_path}: mask shape {roi.shape} differs from image shape "
                             f"{img.shape}")
        k = preprocess.largest_area_slices(roi, axis=axis)[0]
        im2, m2 = np.take(img, k, axis=axis), np.take(roi, k, axis=axis)
        if margin is not None:
            box = preprocess.bbox_slices(m2, margin=int(margin))
            im2, m2 = im2[box], m2[box]
        pid, seq, name = (str(d.get(c, "")) for c in ("patient_id", "sequence", "roi"))
        out.append({"patient_id": pid, "sequence": seq, "roi": name, "slice": int(k),
                    "image": im2, "mask": m2.astype(bool),
                    "title": " ".join(x for x in (pid, seq, name) if x)})
    return out


def case_panels(rois: pd.DataFrame, predictions: pd.DataFrame, model: str, split: str,
                cutoff: float, *, per_kind: int = 1, sequences: Sequence[str] | None = None,
                reader: str | None = "1", roi: str | None = None, axis: int = 0,
                margin: int | None = 12) -> dict:
    """Everything :func:`vcfnb.plots.plot_case_montage` needs for correctly and incorrectly
    classified cases: one row of panels per patient, one panel per sequence.

    Parameters
    ----------
    rois : DataFrame
        The cohort's ROI rows.
    predictions, model, split, cutoff, per_kind
        See :func:`classified_cases`.
    sequences : sequence of str, optional
        Sequences shown, in order (default: every sequence of the chosen patients).
    reader : str or None
        Reader whose masks are outlined (None: all rows).
    roi : str, optional
        Only this ROI name (default: the first ROI name of each patient and sequence).
    axis, margin
        See :func:`montage_slices`.

    Returns
    -------
    dict
        ``images``, ``masks``, ``titles`` (``"<patient> <sequence> — TP (score 0.91)"``),
        ``ncols`` (sequences per row) and ``cases`` (the :func:`classified_cases` table).
    """
    cases = classified_cases(predictions, model, split, cutoff, per_kind=per_kind)
    r = rois[rois["patient_id"].astype(str).isin(cases["patient_id"].astype(str))]
    if reader is not None and "reader" in r:
        r = r[r["reader"].astype(str) == str(reader)]
    if roi is not None:
        r = r[r["roi"].astype(str) == str(roi)]
    seqs = list(sequences) if sequences is not None else \
        list(dict.fromkeys(r["sequence"].astype(str)))
    r = r[r["sequence"].astype(str).isin(seqs)]
    r = r.drop_duplicates(["patient_id", "sequence"], keep="first")
    order = {p: i for i, p in enumerate(cases["patient_id"].astype(str))}
    r = r.assign(_p=r["patient_id"].astype(str).map(order),
                 _s=r["sequence"].astype(str).map({s: i for i, s in enumerate(seqs)}))
    r = r.sort_values(["_p", "_s"], kind="stable").drop(columns=["_p", "_s"])
    slices = montage_slices(r, axis=axis, margin=margin)
    info = cases.set_index(cases["patient_id"].astype(str))
    titles = [f"{s['patient_id']} {s['sequence']} — {info.loc[s['patient_id'], 'kind']} "
              f"(score {info.loc[s['patient_id'], 'score']:.2f})" for s in slices]
    return {"images": [s["image"] for s in slices], "masks": [s["mask"] for s in slices],
            "titles": titles, "ncols": max(1, len(seqs)), "cases": cases}
