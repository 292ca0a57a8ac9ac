"""Benchmark: the same extraction on vcfnb's local process pool and on a Dask LocalCluster.

Extracts the ROIs of the simulated OVF cohort (``vcfnb.synth.make_cohort("ovf", size="smoke")``,
CT vertebrae T11-L2 of two readers) twice in this process, each time with a fresh feature cache:

1. ``vcfnb.features.extract(rois, settings, n_jobs=2)`` -- the local process pool;
2. the same call with ``scheduler=`` the address of a ``dask.distributed.LocalCluster(n_workers=2,
   threads_per_worker=1, processes=True)`` started beforehand (its start-up is timed apart: a
   cluster is long-lived, a study connects to a running one).

It prints both times and their ratio, and fails (exit code 1) unless the two feature tables are
identical (``pd.testing.assert_frame_equal`` with ``check_exact=True``), both runs extracted every
ROI (``attrs["cache"]``) and neither had a failure. It then runs a few ROIs once more with only
the ``VCFNB_DASK_SCHEDULER`` environment variable set (the way a notebook is pointed at a cluster)
and checks that the result is again identical.

``--quick`` (CI) uses 3 patients, one reader and three image types; it checks the same things and
makes no speed claim.

Usage::

    python benchmarks/dask_vs_local.py [--quick] [--patients 12] [--settings ovf_ct]
        [--readers 2] [--n-workers 2]
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from _common import finish, ratio

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

#: default (full) settings: a reduced version of the OVF study's (vcfnb/settings/ovf_ct.yaml:
#: 15 image types) that still has a wavelet, a LoG and SimpleITK filters and every texture class
FULL_SETTINGS = {
    "setting": {"binWidth": 25, "minimumROIDimensions": 2, "minimumROISize": 20,
                "correctMask": True},
    "imageType": {"Original": {}, "Wavelet": {}, "LoG": {"sigma": [1.0, 3.0]},
                  "BoxMean": {"radius": 1}, "RecursiveGaussian": {"sigma": 1.0},
                  "CurvatureFlow": {"timeStep": 0.05, "numberOfIterations": 5}},
    "featureClass": {"shape": None, "firstorder": None, "glcm": None, "glrlm": None,
                     "glszm": None, "gldm": None, "ngtdm": None},
}
QUICK_SETTINGS = {
    "setting": {"binWidth": 25, "minimumROIDimensions": 2, "minimumROISize": 20,
                "correctMask": True},
    "imageType": {"Original": {}, "LoG": {"sigma": [1.0]}, "BoxMean": {"radius": 1}},
    "featureClass": {"shape": None, "firstorder": None, "glcm": None, "glszm": None},
}


def cohort_rois(patients: int, readers: int) -> pd.DataFrame:
    """The first ``patients`` patients' ROIs of the smoke OVF cohort (``readers`` readers).

    The cohort is generated once into ``data/cohorts/ovf-smoke-seed0-signal1`` -- the folder the
    OVF notebook uses -- and reused from there.
    """
    from vcfnb import io, synth
    from vcfnb.sources import data_root

    folder = data_root(ROOT) / "cohorts" / "ovf-smoke-seed0-signal1"
    t = time.perf_counter()
    synth.make_cohort("ovf", folder, size="smoke", seed=0, signal=1.0)
    print(f"cohort ovf smoke ready in {time.perf_counter() - t:.1f} s")
    rois = io.load_cohort(folder).rois
    keep = rois["patient_id"].drop_duplicates().iloc[:patients]
    readers_kept = sorted(rois["reader"].unique())[:readers]
    return rois[rois["patient_id"].isin(keep) & rois["reader"].isin(readers_kept)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="CI mode: small subset, no speed claim")
    ap.add_argument("--patients", type=int, help="patients of the smoke cohort (default 12; "
                    "quick 3)")
    ap.add_argument("--readers", type=int, help="readers' masks per vertebra (default 2; quick 1)")
    ap.add_argument("--settings", help="settings name/path instead of the built-in ones "
                    "(e.g. ovf_ct: the study's 15 image types)")
    ap.add_argument("--n-workers", type=int, default=2,
                    help="local processes and Dask workers (1 thread each)")
    args = ap.parse_args(argv)
    import radiomics
    from dask.distributed import Client, LocalCluster, get_task_stream

    from vcfnb import features

    radiomics.setVerbosity(logging.ERROR)
    patients = args.patients or (3 if args.quick else 12)
    readers = args.readers or (1 if args.quick else 2)
    settings = args.settings or (QUICK_SETTINGS if args.quick else FULL_SETTINGS)
    rois = cohort_rois(patients, readers)
    n_types = len(features.load_settings(settings)["imageType"])
    print(f"{len(rois)} ROIs on {rois['image'].nunique()} scans, {n_types} image types; "
          f"{args.n_workers} workers; load average {os.getloadavg()[0]:.1f} at start")
    for p in set(rois["image"]) | set(rois["mask"]):  # hash the files once, outside the timings
        features.file_digest(p)
    os.environ.pop("VCFNB_DASK_SCHEDULER", None)

    problems = []
    with tempfile.TemporaryDirectory(prefix="vcfnb-dask-") as tmp:
        t = time.perf_counter()
        local = features.extract(rois, settings, n_jobs=args.n_workers,
                                 cache_dir=Path(tmp) / "cache-local", progress=False)
        t_local = time.perf_counter() - t
        features.shutdown_workers()  # free the pool's memory before the cluster starts
        entries = list((Path(tmp) / "cache-local").rglob("*.json"))
        cache_bytes = sum(e.stat().st_size for e in entries)

        t = time.perf_counter()
        with LocalCluster(n_workers=args.n_workers, threads_per_worker=1, processes=True,
                          dashboard_address=None) as cluster, Client(cluster) as client:
            t_start = time.perf_counter() - t
            t = time.perf_counter()
            with get_task_stream(client) as stream:
                on_dask = features.extract(rois, settings, scheduler=client,
                                           cache_dir=Path(tmp) / "cache-dask", progress=False)
            t_dask = time.perf_counter() - t

            # the environment-variable route, as a notebook kernel would see it
            few = rois[rois["image"] == rois["image"].iloc[0]]
            os.environ["VCFNB_DASK_SCHEDULER"] = cluster.scheduler_address
            try:
                with get_task_stream(client) as env_stream:
                    via_env = features.extract(few, settings, n_jobs=1,
                                               cache_dir=Path(tmp) / "cache-env", progress=False)
            finally:
                os.environ.pop("VCFNB_DASK_SCHEDULER", None)
    per_worker = pd.Series([d["worker"] for d in stream.data]).value_counts().sort_index()
    if len(per_worker) == 0:
        problems.append("no task ran on the Dask cluster")
    if len(env_stream.data) == 0:
        problems.append("with VCFNB_DASK_SCHEDULER set, no task ran on the Dask cluster")

    for name, df in (("local", local), ("dask", on_dask), ("env", via_env)):
        c = df.attrs["cache"]
        if df.attrs["failures"]:
            problems.append(f"{name}: {len(df.attrs['failures'])} failure(s), first: "
                            f"{df.attrs['failures'][0]}")
        if c["hits"] != 0 or c["misses"] != len(df):
            problems.append(f"{name}: expected a cold extraction of every ROI, got {c}")
    try:
        pd.testing.assert_frame_equal(local, on_dask, check_exact=True)
        same = True
    except AssertionError as exc:
        same = False
        problems.append(f"local and Dask tables differ: {exc}")
    try:
        pd.testing.assert_frame_equal(local.loc[few.index], via_env, check_exact=True)
    except AssertionError as exc:
        problems.append(f"VCFNB_DASK_SCHEDULER run differs from the local one: {exc}")
    n_feat = local.shape[1] - len([c for c in features.ID_COLUMNS if c in local.columns])
    print(f"feature table: {len(local)} rows x {n_feat} features")
    print(f"feature cache: {len(entries)} entries, {cache_bytes / 2**20:.1f} MiB "
          f"({cache_bytes / len(rois) / 1024:.0f} KiB per ROI)")
    print(f"local process pool (n_jobs={args.n_workers}): {t_local:.1f} s "
          f"({t_local / len(rois):.3f} s per ROI)")
    print(f"Dask LocalCluster ({args.n_workers} workers x 1 thread): {t_dask:.1f} s "
          f"({t_dask / len(rois):.3f} s per ROI); cluster start-up {t_start:.1f} s, not included")
    print(f"Dask work units per worker: {', '.join(str(v) for v in per_worker)}")
    print(f"VCFNB_DASK_SCHEDULER route: {len(via_env)} ROIs in {len(env_stream.data)} Dask "
          f"task(s), identical to the local table: {not any('VCFNB' in p for p in problems)}")
    print(f"tables identical (assert_frame_equal, exact): {same}")
    ratio("dask/local time", t_dask / t_local)
    return finish(problems)


if __name__ == "__main__":
    sys.exit(main())
