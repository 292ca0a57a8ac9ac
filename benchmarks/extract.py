"""Benchmark: vcfnb.features.extract vs a naive per-ROI pyradiomics loop, on real CT.

The naive loop is what users write: ``RadiomicsFeatureExtractor(settings).execute(image, mask,
label)`` once per ROI, which reads and filters the whole scan again for every ROI. vcfnb filters
each scan once (cropped to its ROIs plus a filter-safe margin) and shares the filtered images
across the scan's ROIs, on a process pool. Both run in this process, one after the other, on:

* ``../shared/data/totalseg/example_ct_dicom`` (512x512x20 DICOM series, 0.98 mm) with T12 and
  T11 (labels 32/33 of ``example_seg_dicom.nii.gz``, resampled onto the CT grid in physical
  space with nearest neighbour: the file is stored y-flipped with another origin);
* ``../shared/data/totalseg/example_ct.nii.gz`` (3 mm) with L1-L4 from
  ``spine_report/totalseg.nii.gz`` intersected with the vertebral-body mask, each split into
  cortical shell and cancellous core (:func:`vcfnb.preprocess.split_cortical_cancellous`);

10 ROIs with Original + Wavelet + LoG(1, 3, 5 mm) + Square/SquareRoot/Logarithm/Exponential/
Gradient. It prints both times, the speed ratio and the worst relative difference per image
type and feature class. ``--quick`` (for CI) uses only the 3 mm CT with fewer image types,
checks equality and prints the ratio without any speed claim.

Usage::

    python benchmarks/extract.py [--quick] [--n-jobs 2] [--cpu] [--dask] [--data ../shared/data]
"""
from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FULL_SETTINGS = {
    "setting": {"binWidth": 25},
    "imageType": {"Original": {}, "Wavelet": {}, "LoG": {"sigma": [1.0, 3.0, 5.0]},
                  "Square": {}, "SquareRoot": {}, "Logarithm": {}, "Exponential": {},
                  "Gradient": {}},
}
QUICK_SETTINGS = {
    "setting": {"binWidth": 25},
    "imageType": {"Original": {}, "Wavelet": {}, "LoG": {"sigma": [1.0, 3.0]},
                  "Logarithm": {}, "Gradient": {}},
}
LEVELS = {"L1": 31, "L2": 30, "L3": 29, "L4": 28}


def build_rois(data: Path, out: Path, *, quick: bool = False, shell_mm: float = 3.0) -> pd.DataFrame:
    """Write the benchmark's masks under ``out`` and return its rois table (10 ROIs; 2 if quick)."""
    from vcfnb import io, preprocess

    ts = data / "totalseg"
    rows = []
    if not quick:
        ct = io.read_image(ts / "example_ct_dicom")
        seg = preprocess.resample_to_reference(io.read_image(ts / "example_seg_dicom.nii.gz"), ct)
        seg_path = out / "dicom_seg_on_ct.nii.gz"
        sitk.WriteImage(seg, str(seg_path))
        for roi, label in (("T12", 32), ("T11", 33)):
            rows.append(("totalseg_dicom", roi, str(ts / "example_ct_dicom"), str(seg_path), label))
    ct3 = io.read_image(ts / "example_ct.nii.gz")
    vert = sitk.GetArrayFromImage(io.read_image(ts / "spine_report" / "totalseg.nii.gz"))
    body = sitk.GetArrayFromImage(io.read_image(ts / "spine_report" /
                                                "totalseg_vertebrae_body.nii.gz")) == 1
    comp = np.zeros(vert.shape, np.uint8)
    levels = ["L1"] if quick else list(LEVELS)
    for i, level in enumerate(levels):
        m = sitk.GetImageFromArray(((vert == LEVELS[level]) & body).astype(np.uint8))
        m.CopyInformation(ct3)
        cort, canc = preprocess.split_cortical_cancellous(m, shell_mm)
        comp[sitk.GetArrayViewFromImage(cort) > 0] = 2 * i + 1
        comp[sitk.GetArrayViewFromImage(canc) > 0] = 2 * i + 2
        rows.append(("totalseg_3mm", f"{level}_cortical", str(ts / "example_ct.nii.gz"), None,
                     2 * i + 1))
        rows.append(("totalseg_3mm", f"{level}_cancellous", str(ts / "example_ct.nii.gz"), None,
                     2 * i + 2))
    comp_img = sitk.GetImageFromArray(comp)
    comp_img.CopyInformation(ct3)
    comp_path = out / "ct3mm_compartments.nii.gz"
    sitk.WriteImage(comp_img, str(comp_path))
    rows = [(p, r, im, str(comp_path) if m is None else m, lab) for p, r, im, m, lab in rows]
    return pd.DataFrame(rows, columns=["patient_id", "roi", "image", "mask", "label"]).assign(
        sequence="CT", reader="r1")


def naive(rois: pd.DataFrame, settings: dict) -> pd.DataFrame:
    """The per-ROI loop: read, filter and extract the whole scan again for every ROI."""
    from radiomics import featureextractor

    from vcfnb import io

    rows = []
    for _, r in rois.iterrows():
        ex = featureextractor.RadiomicsFeatureExtractor(settings)
        image = io.read_image(r["image"]) if Path(r["image"]).is_dir() else r["image"]
        res = ex.execute(image, r["mask"], label=int(r["label"]))
        rows.append({k: float(v) for k, v in res.items() if not k.startswith("diagnostics")})
    return pd.DataFrame(rows, index=rois.index)


def compare(ref: pd.DataFrame, got: pd.DataFrame) -> pd.DataFrame:
    """Worst relative difference per image type and feature class (0 = identical)."""
    cols = list(ref.columns)
    missing = set(cols) ^ set(c for c in got.columns if c not in ("patient_id", "roi", "sequence",
                                                                    "reader"))
    if missing:
        raise AssertionError(f"feature sets differ: {sorted(missing)[:10]}")
    a = ref[cols].to_numpy(float)
    b = got[cols].to_numpy(float)
    both_nan = np.isnan(a) & np.isnan(b)
    rel = np.where(both_nan, 0.0, np.abs(a - b) / np.maximum(np.abs(a), 1e-12))
    rel = np.where(np.isnan(rel), np.inf, rel)
    worst = pd.Series(rel.max(axis=0), index=cols)
    key = [(c.split("_")[0].split("-")[0], c.split("_")[1]) for c in cols]
    table = worst.groupby(pd.MultiIndex.from_tuples(key, names=["image_type", "class"])).max()
    return table.rename("worst_rel_diff").reset_index()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="CI mode: small subset, no speed claim")
    ap.add_argument("--n-jobs", type=int, default=2)
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--rtol", type=float, default=1e-6)
    ap.add_argument("--dask", action="store_true",
                    help="also run on a Dask LocalCluster (2 worker processes) and compare")
    ap.add_argument("--cpu", action="store_true",
                    help="also time vcfnb with n_jobs=1 and compare CPU seconds (robust to load)")
    args = ap.parse_args(argv)
    import radiomics

    from vcfnb import features

    radiomics.setVerbosity(logging.ERROR)
    data = Path(args.data)
    if not (data / "totalseg").is_dir():
        print(f"real-data folder {data} is absent; nothing to benchmark")
        return 0
    settings = QUICK_SETTINGS if args.quick else FULL_SETTINGS
    with tempfile.TemporaryDirectory() as tmp:
        rois = build_rois(data, Path(tmp), quick=args.quick)
        print(f"{len(rois)} ROIs on {rois['image'].nunique()} scans; image types: "
              f"{', '.join(settings['imageType'])}")
        t, c = time.perf_counter(), time.process_time()
        ref = naive(rois, settings)
        t_naive, c_naive = time.perf_counter() - t, time.process_time() - c
        t = time.perf_counter()
        got = features.extract(rois, settings, n_jobs=args.n_jobs, progress=False)
        t_first = time.perf_counter() - t
        # steady state: worker processes already running (as after the first call of a
        # session; the naive loop's imports were also done before its timing), but each
        # worker's scan memo emptied, so images are read and filtered again
        features.shutdown_workers()
        features.start_workers(args.n_jobs)
        t = time.perf_counter()
        again = features.extract(rois, settings, n_jobs=args.n_jobs, progress=False)
        t_vcfnb = time.perf_counter() - t
        if not again.equals(got):
            print("FAIL: two extractions of the same ROIs differ")
            return 1
        if args.dask:
            from dask.distributed import LocalCluster

            with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                              dashboard_address=None) as cluster:
                t = time.perf_counter()
                on_dask = features.extract(rois, settings, scheduler=cluster.scheduler_address,
                                           progress=False)
                t_dask = time.perf_counter() - t
            same = on_dask.equals(got)
            print(f"Dask LocalCluster (2 workers): {t_dask:.1f} s, local pool {t_vcfnb:.1f} s "
                  f"(ratio local/dask {t_vcfnb / t_dask:.2f}); identical table: {same}")
            if not same:
                return 1
        if args.cpu:
            t, c = time.perf_counter(), time.process_time()
            serial = features.extract(rois, settings, n_jobs=1, progress=False)
            t_serial, c_serial = time.perf_counter() - t, time.process_time() - c
            if float(compare(ref, serial)["worst_rel_diff"].max()) > args.rtol:
                print("FAIL: serial and pooled extraction differ")
                return 1
    table = compare(ref, got)
    print(table.to_string(index=False))
    worst = float(table["worst_rel_diff"].max())
    print(f"naive pyradiomics loop: {t_naive:.1f} s ({t_naive / len(rois):.2f} s per ROI)")
    print(f"vcfnb.features.extract (n_jobs={args.n_jobs}), first call of the session (starts "
          f"the worker processes): {t_first:.1f} s -> ratio {t_naive / t_first:.2f}x")
    print(f"vcfnb.features.extract (n_jobs={args.n_jobs}), workers running: {t_vcfnb:.1f} s")
    print(f"speed ratio: {t_naive / t_vcfnb:.2f}x; worst relative difference {worst:.2e}")
    if args.cpu:
        print(f"CPU seconds: naive {c_naive:.1f}, vcfnb n_jobs=1 {c_serial:.1f} "
              f"(wall {t_serial:.1f} s): work ratio {c_naive / c_serial:.2f}x")
    if got.attrs["failures"]:
        print("failures:", got.attrs["failures"])
        return 1
    if worst > args.rtol:
        print(f"FAIL: a feature differs by more than rtol={args.rtol}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
