"""Benchmark: vcfnb.features.extract vs a naive per-ROI pyradiomics loop, on real CT.

The naive loop is what users write: ``RadiomicsFeatureExtractor(settings).execute(image, mask,
label)`` once per ROI, which reads and filters the whole scan again for every ROI. vcfnb filters
each scan once (cropped to its ROIs plus a filter-safe margin) and shares the filtered images
across the scan's ROIs, on a process pool. Each is run ``--repeats`` times (default 3) and the
median reported: the naive loop in this process (imports done first); vcfnb's *first call of a
session* each time in a fresh Python process (``import vcfnb`` untimed, then one timed
``extract`` call that includes starting the worker processes); vcfnb *with workers running* in
this process (workers restarted, untimed, before each run so that no scan is memoised). The
load average is printed at start and end. The workload:

* ``../shared/data/totalseg/example_ct_dicom`` (512x512x20 DICOM series, 0.98 mm) with T12 and
  T11 (labels 32/33 of ``example_seg_dicom.nii.gz``, resampled onto the CT grid in physical
  space with nearest neighbour: the file is stored y-flipped with another origin);
* ``../shared/data/totalseg/example_ct.nii.gz`` (3 mm) with L1-L4 from
  ``spine_report/totalseg.nii.gz`` intersected with the vertebral-body mask, each split into
  cortical shell and cancellous core (:func:`vcfnb.preprocess.split_cortical_cancellous`);

10 ROIs with Original + Wavelet + LoG(1, 3, 5 mm) + Square/SquareRoot/Logarithm/Exponential/
Gradient. It prints the times, the ratios (``ratio first call``, ``ratio workers running``),
the worst relative difference per image type and feature class, and whether every feature is
identical bit for bit. ``--quick`` (for CI) uses only the 3 mm CT with fewer image types and one
run of each, checks equality and prints the ratios without any speed claim.

Usage::

    python benchmarks/extract.py [--quick] [--repeats 3] [--n-jobs 2] [--cpu] [--dask]
                                 [--data ../shared/data]
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # _common, also when imported by tests

from _common import finish, ratio  # noqa: E402

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


def _first_call_child(folder: Path, n_jobs: int) -> int:
    """Child process of a first-call run: import vcfnb, time one extract(), save the table."""
    t = time.perf_counter()
    import radiomics

    from vcfnb import features

    t_import = time.perf_counter() - t
    radiomics.setVerbosity(logging.ERROR)
    rois = pd.read_pickle(folder / "rois.pkl")
    settings = json.loads((folder / "settings.json").read_text())
    t = time.perf_counter()
    got = features.extract(rois, settings, n_jobs=n_jobs, progress=False)
    t_first = time.perf_counter() - t
    got.to_pickle(folder / "first.pkl")
    (folder / "first.json").write_text(json.dumps({"import": t_import, "first": t_first,
                                                   "failures": len(got.attrs["failures"])}))
    return 0


def _first_call(folder: Path, n_jobs: int) -> tuple[float, float, pd.DataFrame]:
    """One first call of the session: a fresh Python process (vcfnb imported, untimed), timed
    around its first extract() call, which includes starting the worker processes."""
    for f in ("first.pkl", "first.json"):
        (folder / f).unlink(missing_ok=True)
    subprocess.run([sys.executable, str(Path(__file__).resolve()), "--first-call-child",
                    str(folder), "--n-jobs", str(n_jobs)], check=True)
    res = json.loads((folder / "first.json").read_text())
    return res["first"], res["import"], pd.read_pickle(folder / "first.pkl")


def _load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="CI mode: small subset, no speed claim")
    ap.add_argument("--n-jobs", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=None,
                    help="runs of each of naive / first call / warm; the median is reported "
                         "(default 3, 1 with --quick)")
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--rtol", type=float, default=1e-6)
    ap.add_argument("--dask", action="store_true",
                    help="also run on a Dask LocalCluster (2 worker processes) and compare")
    ap.add_argument("--cpu", action="store_true",
                    help="also time vcfnb with n_jobs=1 and compare CPU seconds (robust to load)")
    ap.add_argument("--first-call-child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.first_call_child:
        return _first_call_child(Path(args.first_call_child), args.n_jobs)
    repeats = args.repeats or (1 if args.quick else 3)
    import radiomics

    from vcfnb import features

    radiomics.setVerbosity(logging.ERROR)
    data = Path(args.data)
    if not (data / "totalseg").is_dir():
        print(f"real-data folder {data} is absent; nothing to benchmark")
        return 0
    settings = QUICK_SETTINGS if args.quick else FULL_SETTINGS
    problems: list[str] = []
    load_start = _load()
    with tempfile.TemporaryDirectory() as tmp:
        rois = build_rois(data, Path(tmp), quick=args.quick)
        rois.to_pickle(Path(tmp) / "rois.pkl")
        (Path(tmp) / "settings.json").write_text(json.dumps(settings))
        print(f"{len(rois)} ROIs on {rois['image'].nunique()} scans; image types: "
              f"{', '.join(settings['imageType'])}; {repeats} run(s) of each; load average "
              f"(1/5/15 min) at start: {load_start}")
        t_naive, c_naive = [], []
        for _ in range(repeats):
            t, c = time.perf_counter(), time.process_time()
            ref = naive(rois, settings)
            t_naive.append(time.perf_counter() - t)
            c_naive.append(time.process_time() - c)
        # first call of a session: a fresh Python process each time (worker start included)
        t_first, t_import, firsts = [], [], []
        for _ in range(repeats):
            tf, ti, table = _first_call(Path(tmp), args.n_jobs)
            t_first.append(tf)
            t_import.append(ti)
            firsts.append(table)
        got = firsts[0]
        # steady state: worker processes already running (as after the first call of a
        # session; the naive loop's imports were also done before its timing), but each
        # worker's scan memo emptied, so images are read and filtered again
        t_warm = []
        for _ in range(repeats):
            features.shutdown_workers()
            features.start_workers(args.n_jobs)
            t = time.perf_counter()
            again = features.extract(rois, settings, n_jobs=args.n_jobs, progress=False)
            t_warm.append(time.perf_counter() - t)
            if not again.equals(got):
                problems.append("a warm extraction differs from the first call's table")
        if any(not f.equals(got) for f in firsts[1:]):
            problems.append("two first-call extractions of the same ROIs differ")
        if args.dask:
            from dask.distributed import LocalCluster

            with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                              dashboard_address=None) as cluster:
                t = time.perf_counter()
                on_dask = features.extract(rois, settings, scheduler=cluster.scheduler_address,
                                           progress=False)
                t_dask = time.perf_counter() - t
            same = on_dask.equals(got)
            print(f"Dask LocalCluster (2 workers): {t_dask:.1f} s, local pool "
                  f"{np.median(t_warm):.1f} s (ratio local/dask "
                  f"{np.median(t_warm) / t_dask:.2f}); identical table: {same}")
            if not same:
                problems.append("the Dask table differs")
        if args.cpu:
            t, c = time.perf_counter(), time.process_time()
            serial = features.extract(rois, settings, n_jobs=1, progress=False)
            t_serial, c_serial = time.perf_counter() - t, time.process_time() - c
            if float(compare(ref, serial)["worst_rel_diff"].max()) > args.rtol:
                problems.append("serial and pooled extraction differ")
    load_end = _load()
    table = compare(ref, got)
    print(table.to_string(index=False))
    worst = float(table["worst_rel_diff"].max())
    n_feat = len(ref.columns)
    med_naive, med_first, med_warm = (float(np.median(x)) for x in (t_naive, t_first, t_warm))

    def runs(x):
        return ", ".join(f"{v:.1f}" for v in x)

    print(f"load average (1/5/15 min): start {load_start}, end {load_end} "
          f"({os.cpu_count()} CPUs; wall times are noisy on a loaded machine)")
    print(f"naive pyradiomics loop: median {med_naive:.1f} s ({med_naive / len(rois):.2f} s per "
          f"ROI; runs {runs(t_naive)})")
    print(f"vcfnb.features.extract (n_jobs={args.n_jobs}), first call in a fresh Python process "
          f"(starts the worker processes): median {med_first:.1f} s (runs {runs(t_first)}; "
          f"import of vcfnb before it, untimed: median {np.median(t_import):.1f} s)")
    print(f"vcfnb.features.extract (n_jobs={args.n_jobs}), workers running: median "
          f"{med_warm:.1f} s (runs {runs(t_warm)})")
    ratio("first call", med_naive / med_first)
    ratio("workers running", med_naive / med_warm)
    print(f"speed ratio: {med_naive / med_first:.2f}x first call, {med_naive / med_warm:.2f}x "
          f"workers running; worst relative difference {worst:.2e}")
    print(f"every feature identical ({n_feat} features x {len(rois)} ROIs, bit for bit): "
          f"{worst == 0.0}")
    if args.cpu:
        print(f"CPU seconds: naive {np.median(c_naive):.1f}, vcfnb n_jobs=1 {c_serial:.1f} "
              f"(wall {t_serial:.1f} s): work ratio {np.median(c_naive) / c_serial:.2f}x")
    if got.attrs["failures"]:
        print("failures:", got.attrs["failures"])
        problems.append(f"{len(got.attrs['failures'])} failure(s)")
    if worst > args.rtol:
        problems.append(f"a feature differs by more than rtol={args.rtol}")
    return finish(problems)


if __name__ == "__main__":
    sys.exit(main())
