"""vcfnb.parallel: one parallel map, and worker processes that start from any caller.

Issue 17 defect 12: ``features.extract(..., n_jobs=2)`` from a script piped on stdin or a file
without an ``if __name__ == "__main__"`` guard returned a table without feature columns
(forkserver workers re-imported the caller's main module and the pool broke). Each way of
calling is run here in a subprocess and must give the features of ``n_jobs=1``.
"""
from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from vcfnb import features, parallel

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = {"setting": {"binWidth": 25}, "imageType": {"Original": {}},
            "featureClass": {"firstorder": ["Mean", "Energy"], "glcm": ["Correlation"]}}


def _square(x: int) -> int:
    return x * x


def _fail_on_three(x: int) -> int:
    if x == 3:
        raise ValueError("three")
    return x


def _die_in_worker(args: tuple[int, int]) -> int:
    """Kills the worker process running it (never the caller: its pid is passed in)."""
    x, parent = args
    if x == 2 and os.getpid() != parent:
        os._exit(3)
    return x + 100


@pytest.fixture(autouse=True)
def _fresh_pool():
    parallel.shutdown_workers()
    yield
    parallel.shutdown_workers()


# ---------------------------------------------------------------------------------------------
# pmap
# ---------------------------------------------------------------------------------------------

def test_pmap_order_and_results_do_not_depend_on_n_jobs():
    items = list(range(23))
    expected = [x * x for x in items]
    assert parallel.pmap(_square, items) == expected
    assert parallel.pmap(_square, items, n_jobs=2) == expected
    assert parallel.pmap(_square, iter(items), n_jobs=-1, progress=True, desc="sq") == expected
    assert parallel.pmap(_square, [], n_jobs=2) == []


def test_pmap_uses_worker_processes_and_the_features_pool():
    assert parallel.pmap(_pid_of, [1], n_jobs=2) == [os.getpid()]  # one item: in-process
    assert parallel._POOL is None
    pids = parallel.pmap(_pid_of, range(8), n_jobs=2)
    assert os.getpid() not in pids
    # the same kept pool serves features.extract; the old entry points still work
    assert parallel._POOL is not None and parallel._POOL_SIZE == 2
    features.shutdown_workers()
    assert parallel._POOL is None
    features.start_workers(2)
    assert parallel._POOL_SIZE == 2


def _pid_of(_x) -> int:
    return os.getpid()


def _nested(x: int) -> list[int]:
    """A pmap inside a pmap worker runs in that worker (no pool of pools)."""
    return parallel.pmap(_pid_of, range(3), n_jobs=2) + [parallel.resolve_n_jobs(2)]


def test_nested_pmap_runs_in_the_worker():
    for *pids, n in parallel.pmap(_nested, range(4), n_jobs=2):
        assert n == 1 and len(set(pids)) == 1 and pids[0] != os.getpid()


def test_pmap_sends_lambdas_and_closures_by_value():
    offset = 7
    assert parallel.pmap(lambda x: x + offset, range(5), n_jobs=2) == [7, 8, 9, 10, 11]


def test_pmap_reraises_the_first_error_in_input_order():
    with pytest.raises(ValueError, match="three"):
        parallel.pmap(_fail_on_three, range(10), n_jobs=2)
    with pytest.raises(ValueError, match="three"):
        parallel.pmap(_fail_on_three, range(10), n_jobs=1)


def test_pmap_finishes_in_process_when_a_worker_dies(caplog):
    items = [(x, os.getpid()) for x in range(6)]
    with caplog.at_level(logging.WARNING, logger="vcfnb.parallel"), \
            pytest.warns(RuntimeWarning, match="pool broke"):
        out = parallel.pmap(_die_in_worker, items, n_jobs=2)
    assert out == [x + 100 for x in range(6)]
    assert "running the map in this process" in caplog.text


def test_pmap_and_extract_run_in_process_and_say_so_when_no_worker_can_start(
        monkeypatch, caplog, tmp_path):
    def no_processes():
        raise OSError("process creation is not allowed here")

    monkeypatch.setattr(parallel, "_context", no_processes)
    with caplog.at_level(logging.WARNING, logger="vcfnb.parallel"), \
            pytest.warns(RuntimeWarning, match="process creation is not allowed"):
        assert parallel.pmap(_square, range(5), n_jobs=2) == [0, 1, 4, 9, 16]
    assert "running the map in this process" in caplog.text
    rois = _write_rois(tmp_path)
    with pytest.warns(RuntimeWarning, match="running the extraction in this process"):
        two = features.extract(rois, SETTINGS, n_jobs=2, progress=False)
    one = features.extract(rois, SETTINGS, n_jobs=1, progress=False)
    assert any(c.startswith("original_") for c in two.columns)
    pd.testing.assert_frame_equal(two, one)


def test_pmap_on_a_dask_cluster_keeps_input_order(monkeypatch):
    distributed = pytest.importorskip("dask.distributed")
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                                  dashboard_address=None) as cluster:
        via_arg = parallel.pmap(_square, range(12), scheduler=cluster.scheduler_address)
        monkeypatch.setenv("VCFNB_DASK_SCHEDULER", cluster.scheduler_address)
        via_env = parallel.pmap(_square, range(12), n_jobs=1)
    assert via_arg == via_env == [x * x for x in range(12)]


def test_ovf_uses_pmap():
    from vcfnb.studies import ovf

    assert not hasattr(ovf, "_pmap")
    assert ovf.parallel.pmap is parallel.pmap


# ---------------------------------------------------------------------------------------------
# defect 12: extraction with workers from scripts, stdin, -m and a notebook
# ---------------------------------------------------------------------------------------------

def _write_rois(folder: Path, n: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(12)
    rows = []
    for i in range(n):
        img = sitk.GetImageFromArray(rng.normal(100, 20, (8, 16, 16)))
        m = np.zeros((8, 16, 16), np.uint8)
        m[2:6, 3:11, 3:11] = 1
        msk = sitk.GetImageFromArray(m)
        msk.CopyInformation(img)
        sitk.WriteImage(img, str(folder / f"ct{i}.nrrd"))
        sitk.WriteImage(msk, str(folder / f"seg{i}.nrrd"))
        rows.append({"patient_id": f"p{i}", "roi": "body", "image": str(folder / f"ct{i}.nrrd"),
                     "mask": str(folder / f"seg{i}.nrrd"), "label": 1})
    return pd.DataFrame(rows)


_BODY = """\
import pandas as pd
from vcfnb import features
rois = pd.read_pickle({rois!r})
out = features.extract(rois, {settings!r}, n_jobs=2, progress=False)
out.to_pickle({out!r})
"""


@pytest.fixture(scope="module")
def roi_set(tmp_path_factory):
    folder = tmp_path_factory.mktemp("rois")
    rois = _write_rois(folder)
    rois.to_pickle(folder / "rois.pkl")
    expected = features.extract(rois, SETTINGS, n_jobs=1, progress=False)
    cols = [c for c in expected.columns if c.startswith("original_")]
    assert len(cols) >= 3 and expected[cols].notna().all().all()
    return folder, expected


def _check(result: subprocess.CompletedProcess, out: Path, expected: pd.DataFrame) -> None:
    assert result.returncode == 0, result.stderr[-3000:]
    assert "BrokenProcessPool" not in result.stderr, result.stderr[-3000:]
    assert "in this process instead" not in result.stderr, "the pool should have started"
    pd.testing.assert_frame_equal(pd.read_pickle(out), expected)


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return env


@pytest.mark.parametrize("how", ["unguarded_file", "guarded_file", "stdin", "module"])
def test_extract_with_workers_from_scripts(how, roi_set, tmp_path):
    folder, expected = roi_set
    out = tmp_path / "out.pkl"
    body = _BODY.format(rois=str(folder / "rois.pkl"), settings=SETTINGS, out=str(out))
    if how == "guarded_file":
        body = "def main():\n" + textwrap.indent(body, "    ") + \
            '\n\nif __name__ == "__main__":\n    main()\n'
    script = tmp_path / "user_extract.py"
    script.write_text(body, encoding="utf-8")
    if how in ("unguarded_file", "guarded_file"):
        cmd, stdin = [sys.executable, str(script)], None
    elif how == "stdin":
        cmd, stdin = [sys.executable, "-"], body
    else:  # python -m user_extract: the way a console-script / CLI module runs
        cmd, stdin = [sys.executable, "-m", "user_extract"], None
    result = subprocess.run(cmd, input=stdin, capture_output=True, text=True, cwd=tmp_path,
                            env=_env(), timeout=600)
    _check(result, out, expected)


def test_extract_with_workers_from_a_notebook(roi_set, tmp_path):
    import nbformat
    from nbclient import NotebookClient

    folder, expected = roi_set
    out = tmp_path / "out.pkl"
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(
        _BODY.format(rois=str(folder / "rois.pkl"), settings=SETTINGS, out=str(out)))]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        NotebookClient(nb, kernel_name="vcfnb", timeout=600,
                       resources={"metadata": {"path": str(tmp_path)}}).execute()
    errors = [o for o in nb.cells[0].outputs if o.output_type == "error"]
    assert not errors, errors
    pd.testing.assert_frame_equal(pd.read_pickle(out), expected)


def test_extract_with_workers_from_the_cli(tmp_path):
    import yaml

    from vcfnb import io

    exe = Path(sys.executable).with_name("vcfnb")
    if not exe.is_file():
        pytest.skip("the vcfnb console script is not installed in this environment")
    cohort = tmp_path / "cohort"
    cohort.mkdir()
    rois = _write_rois(cohort)
    rois["image"] = [Path(p).name for p in rois["image"]]
    rois["mask"] = [Path(p).name for p in rois["mask"]]
    rois.to_csv(cohort / "rois.csv", index=False)
    pd.DataFrame({"patient_id": rois.patient_id, "outcome": [0, 1, 0]}).to_csv(
        cohort / "cases.csv", index=False)
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(SETTINGS))
    result = subprocess.run([str(exe), "extract", "--cohort", str(cohort), "--settings",
                             str(tmp_path / "s.yaml"), "--out", str(tmp_path / "f.csv"),
                             "--no-cache", "--jobs", "2", "--quiet"],
                            capture_output=True, text=True, cwd=tmp_path, env=_env(), timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "in this process instead" not in result.stderr
    expected = features.extract(io.load_cohort(cohort).rois, SETTINGS, n_jobs=1, progress=False)
    io.write_table(expected, tmp_path / "expected.csv")
    got = pd.read_csv(tmp_path / "f.csv")
    assert any(c.startswith("original_") for c in got.columns)
    pd.testing.assert_frame_equal(got, pd.read_csv(tmp_path / "expected.csv"))


def _running(pid: int) -> bool:
    """The process exists and is not a zombie (an exited worker nobody reaped yet)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in ("Z", "X")


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc (Linux)")
def test_workers_exit_when_the_process_that_started_them_is_killed(tmp_path):
    """A killed notebook kernel must not leave its workers running to the end of a long chunk
    (they held both cores for 10 minutes after a kernel was killed mid-extraction)."""
    import signal
    import time

    script = tmp_path / "owner.py"
    script.write_text(textwrap.dedent(f"""
        import os, time
        from pathlib import Path
        from vcfnb import parallel

        def slow(i):
            Path({str(tmp_path)!r}, f"worker-{{i}}.pid").write_text(str(os.getpid()))
            time.sleep(300)
            return i

        parallel.pmap(slow, [0, 1], n_jobs=2)
    """))
    proc = subprocess.Popen([sys.executable, str(script)], cwd=ROOT)
    try:
        deadline = time.monotonic() + 120
        while len(list(tmp_path.glob("worker-*.pid"))) < 2:
            assert proc.poll() is None, "the owner process ended before its workers started"
            assert time.monotonic() < deadline, "workers did not start"
            time.sleep(0.2)
        pids = [int(p.read_text()) for p in tmp_path.glob("worker-*.pid")]
        assert all(_running(p) for p in pids)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        deadline = time.monotonic() + 30  # the check runs every OWNER_CHECK_INTERVAL (1 s)
        while any(_running(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(_running(p) for p in pids), "orphaned workers still running"
    finally:
        if proc.poll() is None:
            proc.kill()
        for p in tmp_path.glob("worker-*.pid"):
            try:
                os.kill(int(p.read_text()), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
