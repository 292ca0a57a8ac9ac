"""Benchmark: a study notebook run cold, unchanged (skipped) and with a warm feature cache.

Runs ``python -m vcfnb.runner reproduce --study <study> --params <params>`` three times in a
throw-away project folder (a copy of the notebook and its params file; the built-in simulated
cohort is generated there first, so every run sees the same files), and prints the times and
ratios measured in this one process:

1. **cold**: ``--force`` with an empty feature cache -- every ROI is extracted;
2. **unchanged**: the same command without ``--force`` -- the runner sees that notebook, params
   and package are unchanged and skips the run (what a second ``make reproduce`` costs);
3. **warm**: ``--force`` again, reusing the feature cache -- the notebook runs in full but the
   extraction reads every value from the cache.

It checks the comparison is the right one (exit code 1 otherwise): run 1 extracts every ROI and
run 3 extracts none (``vcfnb.features.extract`` is wrapped in the kernel, through a
``sitecustomize`` on ``PYTHONPATH``, to log ``DataFrame.attrs["cache"]`` of every call -- the
notebook's own call, not a re-run of it), run 3 writes no cache entry, run 2 is reported as
skipped, and ``metrics.json`` and every ``tables/*.csv`` are byte-identical between runs 1 and 3.
It also prints the per-step (cell) times of runs 1 and 3 from papermill's metadata.

``--quick`` (CI) runs the smoke params with fewer permutations and folds; it checks the same
things and makes no speed claim. ``--breakdown reports`` only prints the per-notebook, per-step
times of the executed notebooks already under a reports folder (e.g. after ``make reproduce``).

Usage::

    python benchmarks/notebook_warm_cold.py [--quick] [--study metastasis_lytic_blastic]
        [--params smoke] [--set key=value ...] [--keep DIR]
    python benchmarks/notebook_warm_cold.py --breakdown reports
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import finish, ratio

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

#: overrides of --quick: the same notebook, less model-selection work (no speed claim in CI)
QUICK_SET = {"n_permutations": 2, "cv_folds": 3, "sfs_max_features": 2}

#: written to <tmp>/instrument/sitecustomize.py and put on the kernel's PYTHONPATH: wraps
#: vcfnb.features.extract when the module is first imported and appends each call's
#: attrs["cache"] to the file named by VCFNB_BENCH_EXTRACT_LOG (one JSON line per call).
SITECUSTOMIZE = '''
import os, sys
_LOG = os.environ.get("VCFNB_BENCH_EXTRACT_LOG")
if _LOG:
    import functools, importlib.abc, importlib.util, json

    class _WrapExtract(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name != "vcfnb.features":
                return None
            sys.meta_path.remove(self)
            try:
                spec = importlib.util.find_spec(name)
            finally:
                sys.meta_path.insert(0, self)
            if spec is None or spec.loader is None:
                return spec
            exec_module = spec.loader.exec_module

            def exec_and_wrap(module):
                exec_module(module)
                inner = module.extract

                @functools.wraps(inner)
                def extract(*args, **kwargs):
                    out = inner(*args, **kwargs)
                    rec = {"pid": os.getpid(), "rows": len(out), **out.attrs.get("cache", {})}
                    with open(_LOG, "a") as fh:
                        fh.write(json.dumps(rec) + "\\n")
                    return out

                module.extract = extract

            spec.loader.exec_module = exec_and_wrap
            return spec

    sys.meta_path.insert(0, _WrapExtract())
'''


def _set_value(text: str):
    import yaml

    return yaml.safe_load(text)


def make_project(study: str, params_name: str, where: Path, overrides: dict, *,
                 reuse_cohort: bool = False) -> Path:
    """A minimal project folder: the notebook, its params file (with overrides), the cohort.

    The built-in cohort is generated there, or with ``reuse_cohort`` copied from this project's
    ``data/cohorts`` when a complete one is there (``make_cohort`` would reuse it just the same).
    """
    from vcfnb import io, runner, synth
    from vcfnb.report import STUDY_COHORT
    from vcfnb.sources import data_root

    nb = ROOT / "notebooks" / f"{study}.ipynb"
    pf = ROOT / "params" / study / f"{params_name}.yaml"
    if not nb.is_file():
        raise SystemExit(f"no notebook {nb}")
    if not pf.is_file():
        raise SystemExit(f"no params file {pf}")
    root = where / "project"
    (root / "notebooks").mkdir(parents=True)
    (root / "params" / study).mkdir(parents=True)
    shutil.copy2(nb, root / "notebooks" / nb.name)
    params = {**io.load_yaml(pf), **overrides}
    runner.validate_params(nb, params, source=str(pf))
    import yaml

    (root / "params" / study / pf.name).write_text(yaml.safe_dump(params, sort_keys=False))
    # the built-in cohort, where start_run looks for it (generated here, timed apart)
    gen = STUDY_COHORT.get(study)
    if gen and not params.get("cohort_dir"):
        declared = runner.notebook_parameters(nb)
        get = lambda k, d: params.get(k, declared.get(k, (None, d))[1])  # noqa: E731
        size, seed, signal = get("synthetic_size", "smoke"), get("seed", 0), \
            float(get("synthetic_signal", 1.0))
        folder = root / "data" / "cohorts" / f"{gen}-{size}-seed{seed}-signal{signal:g}"
        t = time.perf_counter()
        mine = data_root(ROOT) / "cohorts" / folder.name
        if reuse_cohort and (mine / "cohort.json").is_file() and (mine / "rois.csv").is_file():
            shutil.copytree(mine, folder)
            how = "copied from data/cohorts, then checked"
        else:
            how = "generated"
        synth.make_cohort(gen, folder, size=size, seed=int(seed), signal=signal)
        print(f"cohort {gen} {size}: {how} in {time.perf_counter() - t:.1f} s")
    return root


def run_cli(root: Path, study: str, params_name: str, *, force: bool, env: dict,
            poll: float = 1.0) -> dict:
    """One ``python -m vcfnb.runner reproduce`` in ``root``: wall time, the runner's record and
    the peak memory of its process tree (runner, kernel, extraction workers), polled every
    ``poll`` seconds: the largest sum of RSS, of PSS (shared pages counted once; Linux) and the
    largest single process's RSS, in GiB."""
    import psutil

    cmd = [sys.executable, "-m", "vcfnb.runner", "reproduce", "--study", study,
           "--params", params_name] + (["--force"] if force else [])
    t = time.perf_counter()
    peak = {"rss_sum": 0, "pss_sum": 0, "rss_max": 0}
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=out, stderr=err, text=True)
        top = psutil.Process(proc.pid)
        while proc.poll() is None:
            rss = pss = biggest = 0
            try:
                procs = [top, *top.children(recursive=True)]
            except psutil.Error:
                procs = []
            for p in procs:
                try:
                    info = p.memory_full_info()
                except psutil.Error:
                    continue
                rss += info.rss
                pss += getattr(info, "pss", info.rss)
                biggest = max(biggest, info.rss)
            peak = {"rss_sum": max(peak["rss_sum"], rss), "pss_sum": max(peak["pss_sum"], pss),
                    "rss_max": max(peak["rss_max"], biggest)}
            time.sleep(poll)
        wall = time.perf_counter() - t
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if proc.returncode != 0:
        print(stdout[-3000:], stderr[-3000:], sep="\n", file=sys.stderr)
        raise SystemExit(f"runner failed (exit {proc.returncode}): {' '.join(cmd[1:])}")
    import pandas as pd

    rec = pd.read_csv(root / "reports" / "runs.csv").iloc[-1].to_dict()
    return {"wall": wall, "status": rec["status"], "seconds": float(rec["seconds"]),
            **{k: v / 2**30 for k, v in peak.items()}}


def snapshot(out_dir: Path) -> dict[str, bytes]:
    """metrics.json and tables/*.csv of a report folder, as bytes."""
    files = [out_dir / "metrics.json", *sorted((out_dir / "tables").glob("*.csv"))]
    return {str(f.relative_to(out_dir)): f.read_bytes() for f in files if f.is_file()}


def cache_state(cache: Path) -> dict[str, int]:
    return {str(p.relative_to(cache)): p.stat().st_mtime_ns for p in cache.rglob("*.json")} \
        if cache.is_dir() else {}


def read_log(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def cell_times(executed: Path) -> list[tuple[str, float]]:
    """(label, seconds) for every code cell of a papermill-executed notebook; the label is the
    cell's ``features.extract`` line if it has one, else its first call."""
    import nbformat

    nb = nbformat.read(str(executed), as_version=4)
    out = []
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        dur = cell.get("metadata", {}).get("papermill", {}).get("duration")
        if dur is None:
            continue
        lines = [ln.strip() for ln in cell.source.strip().splitlines() if ln.strip()] or [""]
        # label: the extraction call if the cell has one, else its first call, else line 1
        label = next((ln for ln in lines if "features.extract" in ln),
                     next((ln for ln in lines if "(" in ln and not ln.startswith("#")),
                          lines[0]))
        out.append((label[:70], float(dur)))
    return out


def breakdown(reports: Path, top: int = 5) -> int:
    """Print, per executed notebook under ``reports``, its total and its ``top`` slowest cells."""
    import pandas as pd

    runs = reports / "runs.csv"
    if runs.is_file():
        print(f"{runs}:")
        print(pd.read_csv(runs).to_string(index=False))
    found = sorted(reports.glob("*/*/*.ipynb"))
    if not found:
        print(f"no executed notebooks under {reports}")
        return 0
    for nb in found:
        times = cell_times(nb)
        if not times:
            continue
        total = sum(t for _, t in times)
        print(f"\n{nb.relative_to(reports)}: {total:.1f} s in {len(times)} code cells")
        for src, t in sorted(times, key=lambda x: -x[1])[:top]:
            print(f"  {t:7.1f} s  {src}")
    return 0


def _dask_run(root: Path, study: str, pname: str, env: dict, log: Path, cache: Path):
    """Run 4: the notebook with ``VCFNB_DASK_SCHEDULER`` pointing at a LocalCluster and an empty
    feature cache (the local run's cache is moved aside). Returns (record, outputs, tasks)."""
    from dask.distributed import Client, LocalCluster, get_task_stream

    if cache.is_dir():
        cache.rename(cache.with_name(cache.name + "-local"))
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        env4 = dict(env, VCFNB_DASK_SCHEDULER=cluster.scheduler_address,
                    VCFNB_BENCH_EXTRACT_LOG=str(log))
        with get_task_stream(client) as stream:
            rec = run_cli(root, study, pname, force=True, env=env4)
        tasks = len(stream.data)
    return rec, snapshot(root / "reports" / study / pname), tasks


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help=f"CI mode: overrides {QUICK_SET}; checks only, no speed claim")
    ap.add_argument("--study", default="metastasis_lytic_blastic")
    ap.add_argument("--params", default="smoke", help="params file name (params/<study>/X.yaml)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a parameter in the copied params file (YAML value)")
    ap.add_argument("--keep", help="use this folder instead of a temporary one and keep it")
    ap.add_argument("--reuse-cohort", action="store_true",
                    help="copy the built-in cohort from data/cohorts instead of generating it")
    ap.add_argument("--dask", action="store_true",
                    help="4th run: --force with an empty cache on a Dask LocalCluster named only "
                         "by VCFNB_DASK_SCHEDULER; its outputs must equal the cold run's")
    ap.add_argument("--cold-only", action="store_true",
                    help="only the cold run: its time, per-step times and peak memory")
    ap.add_argument("--breakdown", metavar="REPORTS",
                    help="only print per-step times of executed notebooks under this folder")
    args = ap.parse_args(argv)
    if args.breakdown:
        return breakdown(Path(args.breakdown))

    overrides = dict(QUICK_SET) if args.quick else {}
    for item in args.set:
        key, _, value = item.partition("=")
        overrides[key.strip()] = _set_value(value)
    tmp_ctx = tempfile.TemporaryDirectory(prefix="vcfnb-warmcold-") if not args.keep else None
    where = Path(args.keep or tmp_ctx.name)
    where.mkdir(parents=True, exist_ok=True)
    try:
        return _benchmark(args, overrides, where)
    finally:
        if tmp_ctx is not None:
            tmp_ctx.cleanup()


def _benchmark(args, overrides: dict, where: Path) -> int:
    study, pname = args.study, args.params
    print(f"study {study}, params {pname}" + (f", overrides {overrides}" if overrides else "")
          + f"; load average {os.getloadavg()[0]:.1f} at start")
    root = make_project(study, pname, where, overrides, reuse_cohort=args.reuse_cohort)
    inst = where / "instrument"
    inst.mkdir(exist_ok=True)
    (inst / "sitecustomize.py").write_text(SITECUSTOMIZE)
    env = dict(os.environ, MPLBACKEND="Agg",
               PYTHONPATH=os.pathsep.join([str(inst), str(ROOT)]
                                          + ([os.environ["PYTHONPATH"]]
                                             if os.environ.get("PYTHONPATH") else [])))
    env.pop("VCFNB_DASK_SCHEDULER", None)  # the local pool, as make reproduce runs by default
    env.pop("VCFNB_DATA_DIR", None)  # the throwaway project's own data/ (cohort, cache)
    out_dir = root / "reports" / study / pname
    cache = root / "data" / "cache"
    logs = {i: where / f"extract-run{i}.jsonl" for i in (1, 2, 3)}

    from vcfnb import runner

    before = runner._package_hash()  # part of the runner's stamp: unchanged means skipped
    env["VCFNB_BENCH_EXTRACT_LOG"] = str(logs[1])
    cold = run_cli(root, study, pname, force=True, env=env)
    cold_files, cold_cells = snapshot(out_dir), cell_times(out_dir / f"{study}.ipynb")
    cache_after_cold = cache_state(cache)
    mem = (f"peak memory of the run's process tree: RSS sum {cold['rss_sum']:.2f} GiB, PSS sum "
           f"{cold['pss_sum']:.2f} GiB, largest process {cold['rss_max']:.2f} GiB")
    if args.cold_only:
        calls = read_log(logs[1])
        print(f"cold run: {cold['wall']:.1f} s wall, {cold['seconds']:.1f} s in the runner, "
              f"status {cold['status']}")
        print("extract() calls: " + "; ".join(f"{c['rows']} ROIs, {c['misses']} extracted"
                                             for c in calls))
        print(mem)
        print("slowest steps (s):")
        for src, t1 in sorted(cold_cells, key=lambda x: -x[1])[:8]:
            print(f"  {t1:7.1f}  {src}")
        finish([])
        return 0 if cold["status"].startswith("ok") else 1

    env["VCFNB_BENCH_EXTRACT_LOG"] = str(logs[2])
    skipped = run_cli(root, study, pname, force=False, env=env)
    if not skipped["status"].startswith("unchanged") and runner._package_hash() != before:
        # someone edited vcfnb/ meanwhile, so the runner rightly re-ran: measure the skip again
        print("note: the vcfnb package changed during run 2 (files edited by another process); "
              "run 2 repeated")
        logs[2].unlink(missing_ok=True)
        skipped = run_cli(root, study, pname, force=False, env=env)

    env["VCFNB_BENCH_EXTRACT_LOG"] = str(logs[3])
    warm = run_cli(root, study, pname, force=True, env=env)
    warm_files, warm_cells = snapshot(out_dir), cell_times(out_dir / f"{study}.ipynb")
    cache_after_warm = cache_state(cache)

    dask_run = None
    if args.dask:
        dask_run, dask_files, dask_tasks = _dask_run(root, study, pname, env, where / "extract-run4"
                                                     ".jsonl", cache)
        logs[4] = where / "extract-run4.jsonl"
    calls = {i: read_log(p) for i, p in logs.items()}
    print(f"\n{'run':34s} {'wall s':>8s} {'runner s':>9s}  status")
    for label, r in (("1 cold (--force, empty cache)", cold), ("2 unchanged (no --force)", skipped),
                     ("3 warm (--force, cache reused)", warm)):
        print(f"{label:34s} {r['wall']:8.1f} {r['seconds']:9.1f}  {r['status']}")
    for i in (1, 3):
        print(f"extract() calls in run {i}: " + "; ".join(
            f"{c['rows']} ROIs, {c['hits']} from cache, {c['misses']} extracted, "
            f"{c['entries_written']} entries written" for c in calls[i]))
    if dask_run is not None:
        print(f"{'4 Dask (--force, empty cache)':34s} {dask_run['wall']:8.1f} "
              f"{dask_run['seconds']:9.1f}  {dask_run['status']}; {dask_tasks} Dask tasks")
        print("extract() calls in run 4: " + "; ".join(
            f"{c['rows']} ROIs, {c['misses']} extracted" for c in calls[4]))
    print("\nper-step times (s), cold vs warm, slowest cold steps first:")
    for (src, t1), (_, t3) in sorted(zip(cold_cells, warm_cells), key=lambda x: -x[0][1])[:8]:
        print(f"  {t1:7.1f} {t3:7.1f}  {src}")
    feat_cold = sum(t for s, t in cold_cells if "features.extract" in s)
    feat_warm = sum(t for s, t in warm_cells if "features.extract" in s)

    problems = []
    if not cold["status"].startswith("ok") or not warm["status"].startswith("ok"):
        problems.append(f"run status: cold {cold['status']!r}, warm {warm['status']!r}")
    if not skipped["status"].startswith("unchanged"):
        problems.append(f"the unchanged re-run was not skipped: {skipped['status']!r}")
    if not calls[1] or sum(c["misses"] for c in calls[1]) == 0:
        problems.append(f"the cold run extracted nothing (extract calls: {calls[1]})")
    if calls[2]:
        problems.append("the skipped run called extract()")
    if not calls[3] or any(c["misses"] or c["hits"] != c["rows"] for c in calls[3]):
        problems.append(f"the warm run re-extracted ROIs (extract calls: {calls[3]})")
    if cache_after_warm != cache_after_cold or not cache_after_cold:
        problems.append(f"the feature cache changed during the warm run "
                        f"({len(cache_after_cold)} -> {len(cache_after_warm)} entries)")
    differ = sorted(k for k in set(cold_files) | set(warm_files)
                    if cold_files.get(k) != warm_files.get(k))
    if "metrics.json" not in cold_files or len(cold_files) < 2:
        problems.append(f"report lacks metrics.json or tables: {sorted(cold_files)}")
    if differ:
        problems.append(f"outputs differ between cold and warm runs: {differ}")
    if dask_run is not None:
        d_differ = sorted(k for k in set(cold_files) | set(dask_files)
                          if cold_files.get(k) != dask_files.get(k))
        if d_differ:
            problems.append(f"outputs differ between the local and the Dask run: {d_differ}")
        if not dask_tasks or not calls[4] or any(c["misses"] != c["rows"] for c in calls[4]):
            problems.append(f"the Dask run did not extract on the cluster ({dask_tasks} tasks, "
                            f"extract calls {calls[4]})")
        print(f"Dask run outputs byte-identical to the local cold run: {not d_differ}")
        ratio("Dask/local cold notebook run (runner seconds)",
              dask_run['seconds'] / cold['seconds'])
    print(mem + " (cold run)")
    print(f"\noutputs byte-identical (metrics.json + {len(cold_files) - 1} tables): {not differ}")
    print(f"feature cache: {len(cache_after_cold)} entries after the cold run, unchanged by "
          f"the warm run: {cache_after_warm == cache_after_cold}")
    print(f"extraction step: cold {feat_cold:.1f} s, warm {feat_warm:.1f} s")
    ratio("cold/unchanged (second `reproduce`, wall)", cold['wall'] / skipped['wall'])
    ratio("cold/warm feature cache (runner seconds)", cold['seconds'] / max(warm['seconds'], 1e-9))
    if feat_warm > 0:
        ratio("cold/warm extraction step", feat_cold / feat_warm)
    return finish(problems)


if __name__ == "__main__":
    sys.exit(main())
