"""Benchmark: the per-ROI cost model of feature extraction (seconds per ROI per image type).

Times ``vcfnb.features.extract`` in this process (``n_jobs=1``, one SimpleITK thread: what one
single-threaded worker of a pool or a Dask cluster does), with no cache, one image type at a time,
on CT vertebrae and MRI vertebral bodies:

* ``ct_sim``: simulated OVF cohort (smoke), CT 1 x 1 x 2.5 mm, T11-L2 of 2 patients;
* ``mri_sim``: simulated osteoporosis cohort (smoke), sagittal T1WI 1.3 x 1.3 x 4 mm, L1-L4;
* ``ct_real_3mm``: ``../shared/data/totalseg/example_ct.nii.gz`` (3 mm), L1-L4 vertebral bodies
  split into cortical shell and cancellous core (the ROIs of ``benchmarks/extract.py``);
* ``ct_real_1mm``: ``totalseg/example_ct_dicom`` (DICOM series, 512 x 512 x 20, 0.98 mm), T12 and
  T11 (partial);
* ``mri_real``: ``lumbar_mri/VB3/01`` (water image, 1 mm iso), L1-L4.

CT uses the OVF study's settings (``vcfnb/settings/ovf_ct.yaml``: 15 image types, shape and six
texture classes), MRI the osteoporosis study's (``osteoporosis_mri.yaml``). Shape is timed once
per ROI (it does not depend on the image type); each image type is timed with the texture classes.
Filtering is done once per scan and shared by the scan's ROIs, so a per-ROI cost is for the
ROIs-per-scan of its dataset (printed). The full mode also times the whole settings on one scan
of each dataset with 1 and with all its ROIs, to split the cost into a per-scan and a per-ROI
part, and prints the extrapolation to a 10,000-scan study. Peak RSS of this process is printed
per dataset, and a memory probe extracts one vertebra of a full-length 1 mm CT in a fresh
process (``--big-scan``).

``--quick`` (CI): the two simulated datasets, three image types; checks every value is finite.

Usage::

    python benchmarks/roi_cost.py [--quick] [--data ../shared/data] [--csv out.csv]
"""
from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk

from _common import finish, ratio

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

QUICK_TYPES = ["Original", "LoG", "BoxMean"]


def _bench_extract_module():
    spec = importlib.util.spec_from_file_location("bench_extract", ROOT / "benchmarks" /
                                                  "extract.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _cohort(study: str) -> pd.DataFrame:
    from vcfnb import io, synth
    from vcfnb.sources import data_root

    folder = data_root(ROOT) / "cohorts" / f"{study}-smoke-seed0-signal1"
    synth.make_cohort(study, folder, size="smoke", seed=0, signal=1.0)
    return io.load_cohort(folder).rois


def datasets(data: Path, tmp: Path, quick: bool) -> dict[str, tuple[str, pd.DataFrame]]:
    """name -> (packaged settings name, rois table)."""
    out = {}
    ovf = _cohort("ovf")
    first = ovf["patient_id"].drop_duplicates().iloc[:1 if quick else 2]
    out["ct_sim"] = ("ovf_ct", ovf[ovf["patient_id"].isin(first)
                                   & (ovf["reader"].astype(str) == "1")])
    op = _cohort("osteoporosis")
    first = op["patient_id"].drop_duplicates().iloc[:1 if quick else 2]
    out["mri_sim"] = ("osteoporosis_mri", op[op["patient_id"].isin(first)
                                             & (op["reader"].astype(str) == "1")
                                             & (op["sequence"] == "T1")])
    if quick or not (data / "totalseg").is_dir():
        return out
    rois = _bench_extract_module().build_rois(data, tmp)
    out["ct_real_3mm"] = ("ovf_ct", rois[rois["patient_id"] == "totalseg_3mm"])
    out["ct_real_1mm"] = ("ovf_ct", rois[rois["patient_id"] == "totalseg_dicom"])
    vb3 = data / "lumbar_mri" / "VB3"
    if (vb3 / "01_image.nii.gz").is_file():
        out["mri_real"] = ("osteoporosis_mri", pd.DataFrame({
            "patient_id": "VB3_01", "roi": ["L1", "L2", "L3", "L4"], "sequence": "water",
            "reader": 1, "image": str(vb3 / "01_image.nii.gz"),
            "mask": str(vb3 / "01_mask.nii.gz"), "label": [1, 2, 3, 4]}))
    return out


def roi_geometry(rois: pd.DataFrame) -> tuple[float, str]:
    """Median ROI voxel count and the image spacing (mm) of a rois table."""
    from vcfnb import io

    voxels = []
    spacing = ""
    for (image, mask), grp in rois.groupby(["image", "mask"], sort=False):
        m = sitk.GetArrayFromImage(io.read_image(mask))
        voxels += [int(np.count_nonzero(m == lab)) for lab in grp["label"]]
        spacing = "x".join(f"{s:.2g}" for s in io.read_image(image).GetSpacing())
    return float(np.median(voxels)), spacing


def time_extract(rois: pd.DataFrame, settings: dict) -> tuple[float, float, pd.DataFrame]:
    from vcfnb import features

    t, c = time.perf_counter(), time.process_time()
    out = features.extract(rois, settings, n_jobs=1, progress=False)
    return time.perf_counter() - t, time.process_time() - c, out


def measure(name: str, settings_name: str, rois: pd.DataFrame, types: list[str] | None
            ) -> list[dict]:
    from vcfnb import features

    full = features.load_settings(settings_name)
    texture = {k: v for k, v in full["featureClass"].items() if not k.startswith("shape")}
    base = {"setting": full["setting"], "vcfnb": {"crop": full["vcfnb"]["crop"]}}
    voxels, spacing = roi_geometry(rois)
    n, scans = len(rois), rois["image"].nunique()
    rows = []
    plan = [("shape", {**base, "imageType": {"Original": {}},
                       "featureClass": {"shape": full["featureClass"].get("shape") or []}})]
    for t_name, args in full["imageType"].items():
        if types is None or t_name in types:
            plan.append((t_name, {**base, "imageType": {t_name: args}, "featureClass": texture}))
    for label, s in plan:
        wall, cpu, out = time_extract(rois, s)
        n_feat = out.shape[1] - len([c for c in features.ID_COLUMNS if c in out.columns])
        bad = len(out.attrs["failures"])
        rows.append({"dataset": name, "settings": settings_name, "image_type": label,
                     "rois": n, "scans": scans, "median_voxels": voxels, "spacing_mm": spacing,
                     "features": n_feat, "failed": bad, "seconds": round(wall, 3),
                     "cpu_seconds": round(cpu, 3), "s_per_roi": cpu / n,
                     "wall_s_per_roi": wall / n})
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"{name}: {n} ROIs on {scans} scan(s), median {voxels:.0f} voxels, {spacing} mm; "
          f"{sum(r['seconds'] for r in rows):.1f} s wall, "
          f"{sum(r['cpu_seconds'] for r in rows):.1f} s CPU; peak RSS of this process so far "
          f"{rss:.2f} GiB", flush=True)
    return rows


def scan_vs_roi(rois: pd.DataFrame, settings_name: str) -> dict:
    """The whole settings on the scan with the most ROIs, with 1 ROI and with all of them.

    Returns CPU seconds ``per_scan`` (reading, filtering: shared by the scan's ROIs) and
    ``per_roi`` (mask checks, features), from ``t(n) = per_scan + n * per_roi``.
    """
    counts = rois["image"].value_counts()
    scan = rois[rois["image"] == counts.index[0]]
    n = len(scan)
    _, t1, _ = time_extract(scan.iloc[:1], settings_name)
    _, tn, _ = time_extract(scan, settings_name)
    per_roi = (tn - t1) / (n - 1) if n > 1 else float("nan")
    return {"rois_on_scan": n, "t_1": t1, "t_n": tn, "per_scan": t1 - per_roi,
            "per_roi": per_roi}


def _probe(image: str, mask: str, label: int, settings_name: str, queue) -> None:
    """Child process: extract one ROI of a large scan (its peak RSS is the parent's measure)."""
    import radiomics

    from vcfnb import features

    radiomics.setVerbosity(logging.ERROR)
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    rois = pd.DataFrame({"patient_id": ["big"], "roi": ["T12"], "image": [image], "mask": [mask],
                         "label": [label]})
    c = time.process_time()
    out = features.extract(rois, settings_name, n_jobs=1, progress=False)
    queue.put((time.process_time() - c, len(out.attrs["failures"]), out.shape[1]))


def big_scan(rois_1mm: pd.DataFrame, slices: int, tmp: Path) -> dict:
    """Peak RSS and CPU time of one worker extracting one vertebra of a full-length CT.

    The real 0.98 mm DICOM CT (512 x 512 x 20) is stacked to ``slices`` slices (its own slices
    repeated; int16 as read) with the T12 mask in the middle copy, written uncompressed, and
    extracted with the OVF settings (15 image types; the global SimpleITK filters see the whole
    scan) in a fresh process, whose peak RSS is read with ``getrusage(RUSAGE_CHILDREN)``.
    """
    import multiprocessing as mp

    from vcfnb import io

    row = rois_1mm[rois_1mm["roi"] == "T12"].iloc[0]
    ct = io.read_image(row["image"])
    arr = sitk.GetArrayFromImage(ct)
    reps = int(np.ceil(slices / arr.shape[0]))
    big = np.concatenate([arr] * reps)[:slices]
    seg = sitk.GetArrayFromImage(io.read_image(row["mask"]))
    m = np.zeros(big.shape, np.uint8)
    mid = (reps // 2) * arr.shape[0]
    m[mid:mid + arr.shape[0]] = (seg == int(row["label"])).astype(np.uint8)
    img, msk = sitk.GetImageFromArray(big), sitk.GetImageFromArray(m)
    img.SetSpacing(ct.GetSpacing())
    img.SetOrigin(ct.GetOrigin())
    img.SetDirection(ct.GetDirection())
    msk.CopyInformation(img)
    sitk.WriteImage(img, str(tmp / "big_ct.mha"))
    sitk.WriteImage(msk, str(tmp / "big_mask.mha"))
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    p = ctx.Process(target=_probe, args=(str(tmp / "big_ct.mha"), str(tmp / "big_mask.mha"), 1,
                                         "ovf_ct", q))
    t = time.perf_counter()
    p.start()
    cpu, failed, cols = q.get()
    p.join()
    wall = time.perf_counter() - t
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"size": big.shape[::-1], "voxels": int(m.sum()), "cpu": cpu, "wall": wall,
            "failed": failed, "columns": cols,
            "peak_rss_gib": rss / 2**20, "rss_measured": rss > before}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="CI mode: simulated data, 3 image types")
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--csv", help="also write the per-image-type table here")
    ap.add_argument("--types", nargs="+", help="only these image types (shape is always timed)")
    ap.add_argument("--datasets", nargs="+", help="only these datasets")
    ap.add_argument("--big-scan", type=int, default=200, metavar="SLICES",
                    help="full mode: memory probe on the 1 mm CT stacked to this many slices "
                         "(0: skip)")
    args = ap.parse_args(argv)
    import radiomics

    radiomics.setVerbosity(logging.ERROR)
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    os.environ.pop("VCFNB_DASK_SCHEDULER", None)
    print(f"load average {os.getloadavg()[0]:.1f} at start; n_jobs=1, 1 SimpleITK thread")
    rows = []
    with tempfile.TemporaryDirectory(prefix="vcfnb-cost-") as tmp:
        sets = datasets(Path(args.data), Path(tmp), args.quick)
        sets = {k: v for k, v in sets.items() if not args.datasets or k in args.datasets}
        for name, (settings_name, rois) in sets.items():
            rows += measure(name, settings_name, rois,
                            args.types or (QUICK_TYPES if args.quick else None))
        split, big = {}, None
        if not args.types and not args.quick:
            for name, (settings_name, rois) in sets.items():
                split[name] = scan_vs_roi(rois, settings_name)
        if "ct_real_1mm" in sets and args.big_scan and not args.quick:
            big = big_scan(sets["ct_real_1mm"][1], args.big_scan, Path(tmp))
    table = pd.DataFrame(rows)
    if args.csv:
        table.to_csv(args.csv, index=False)
    wide = table.pivot_table(index="image_type", columns="dataset", values="s_per_roi",
                             sort=False)
    wide.loc["total (all image types + shape)"] = wide.sum()
    print("\nCPU seconds per ROI (one single-threaded worker; CPU time of this process, so "
          "robust to other load; wall times are in --csv):")
    print(wide.round(3).to_string())
    problems = []
    if table["failed"].any():
        problems.append(f"failures: {table.loc[table['failed'] > 0, ['dataset', 'image_type']]}")
    if not np.isfinite(table["s_per_roi"]).all() or (table["features"] == 0).any():
        problems.append("a timing is not finite or an image type gave no features")
    totals = wide.loc["total (all image types + shape)"]
    ref = totals.index[0]
    for ds, total in totals.items():
        ratio(f"per-ROI cost {ds}/{ref}", total / totals[ref])
    if split:
        print("\nwhole settings on one scan: CPU s = per_scan + n_rois * per_roi")
        print(pd.DataFrame(split).T.round(2).to_string())
    if big is not None:
        print(f"\nlarge scan memory probe: CT {big['size']} (1 mm DICOM stacked), one vertebra "
              f"of {big['voxels']} voxels, OVF settings: {big['cpu']:.1f} CPU s, "
              f"{big['wall']:.1f} s wall, peak RSS of the worker process "
              f"{big['peak_rss_gib']:.2f} GiB, {big['failed']} failure(s)")
        if big["failed"] or not big["rss_measured"]:
            problems.append(f"large-scan probe: {big}")
    if split:
        print("\n10,000 scans x n ROIs, all 15 image types, no cache: CPU hours, and wall "
              "hours on W single-threaded workers at perfect scaling")
        if big is not None and "ct_real_1mm" in split:
            # a full-length scan: its per-scan cost is the probe's minus one ROI's share
            per_roi = split["ct_real_1mm"]["per_roi"]
            split["ct_full_1mm"] = {"per_scan": big["cpu"] - per_roi, "per_roi": per_roi}
        for ds, m in split.items():
            for n_rois in (4, 8):
                cpu_h = 10_000 * (m["per_scan"] + n_rois * m["per_roi"]) / 3600
                print(f"  {ds:12s} n={n_rois}: {cpu_h:7.1f} CPU h; " + ", ".join(
                    f"W={w}: {cpu_h / w:.1f} h" for w in (2, 32, 128)))
    return finish(problems)


if __name__ == "__main__":
    sys.exit(main())
