"""Runner infrastructure of issue 17, on a tiny notebook in a temporary project root.

* defect 0: figures are inline PNG in the executed notebook and its HTML, each shown once,
  although the tests (and the runner) run under ``MPLBACKEND=Agg``;
* defect 2: the run stamp includes the cohort (tables and image/mask contents);
* defect 9: one invalid params file fails its own run only;
* defect 11: report files are 0644; the runner prints progress lines while a notebook runs.
"""
from __future__ import annotations

import contextlib
import io as _io
import json
import os
import re
import shutil
import stat
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from vcfnb import runner

pytestmark = pytest.mark.slow

STUDY = "tiny"
CELLS = [
    ("markdown", "# Tiny study\nA notebook for the runner's tests."),
    ("code", 'cohort_dir: str = ""  # cohort folder\nout_dir: str = ""  # report folder\n'
             "wait: float = 0.0  # seconds to sleep in the last section\n"
             "slope: int = 1  # slope of the line"),
    ("markdown", "## Figures\nOne figure as the cell's value, two made in a loop."),
    ("code", "from pathlib import Path\nimport matplotlib.pyplot as plt\n"
             "from vcfnb.report import Run\n"
             'run = Run(study="tiny", params={}, root=Path("."), out_dir=Path(out_dir), '
             "cache_dir=Path(out_dir))"),
    ("code", "fig, ax = plt.subplots(figsize=(2, 2))\nax.plot([0, 1], [0, slope])\n"
             'run.figure("line", fig)'),
    ("code", "for k in range(2):\n    f, a = plt.subplots(figsize=(2, 2))\n"
             '    a.bar([0], [k + 1])\n    run.figure(f"bar{k}", f)'),
    ("markdown", "## Waiting for the heartbeat"),
    ("code", "import sys, time\n"  # a progress bar (kept), one that clears itself (dropped)
             "for k in range(3):\n    sys.stderr.write(f'\\rbar {k}/3'); sys.stderr.flush()\n"
             "    time.sleep(0.25)\nsys.stderr.write('\\rbar 3/3\\n')\n"
             "sys.stderr.write('\\rgone 1/2'); sys.stderr.flush(); time.sleep(0.25)\n"
             "sys.stderr.write('\\r        \\r')\ntime.sleep(wait)\nprint('done')"),
]


def _notebook(path: Path) -> Path:
    nb = nbformat.v4.new_notebook()
    for kind, src in CELLS:
        cell = (nbformat.v4.new_markdown_cell(src) if kind == "markdown"
                else nbformat.v4.new_code_cell(src))
        if "cohort_dir: str" in src:
            cell.metadata["tags"] = ["parameters"]
        nb.cells.append(cell)
    kernel = {"name": "vcfnb", "display_name": "vcfnb (Python 3)", "language": "python"}
    nb.metadata["kernelspec"] = kernel
    nbformat.write(nb, str(path))
    return path


def _cohort(folder: Path) -> Path:
    rng = np.random.default_rng(1)
    folder.mkdir(parents=True)
    (folder / "images").mkdir()
    (folder / "masks").mkdir()
    rois = []
    for pid in ("A", "B"):
        img = sitk.GetImageFromArray(rng.normal(0, 1, (4, 6, 6)).astype(np.float32))
        m = np.zeros((4, 6, 6), np.uint8)
        m[1:3, 1:4, 1:4] = 1
        sitk.WriteImage(img, str(folder / "images" / f"{pid}.nii.gz"))
        sitk.WriteImage(sitk.GetImageFromArray(m), str(folder / "masks" / f"{pid}.nii.gz"))
        rois.append({"patient_id": pid, "roi": "L1", "image": f"images/{pid}.nii.gz",
                     "mask": f"masks/{pid}.nii.gz", "label": 1})
    pd.DataFrame({"patient_id": ["A", "B"], "outcome": [0, 1]}).to_csv(folder / "cases.csv",
                                                                     index=False)
    pd.DataFrame(rois).to_csv(folder / "rois.csv", index=False)
    return folder


@pytest.fixture(scope="module", autouse=True)
def _fixed_package_hash():
    """Others may edit vcfnb while these tests run: the package's part of the stamp is fixed."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(runner, "_package_hash", lambda: "vcfnb-under-test")
        yield


@pytest.fixture(scope="module")
def project(tmp_path_factory, _fixed_package_hash):
    """A project root with notebooks/tiny.ipynb, params/tiny/site.yaml (a user cohort) and
    params/tiny/broken.yaml (an unknown key); site has been run once, its output captured."""
    root = tmp_path_factory.mktemp("runner") / "project"
    (root / "notebooks").mkdir(parents=True)
    (root / "params" / STUDY).mkdir(parents=True)
    nb = _notebook(root / "notebooks" / f"{STUDY}.ipynb")
    cohort = _cohort(root.parent / "cohort")
    site = root / "params" / STUDY / "site.yaml"
    site.write_text(f"cohort_dir: {cohort}\nwait: 2.5\n", encoding="utf-8")
    (root / "params" / STUDY / "broken.yaml").write_text("slpoe: 2\n", encoding="utf-8")
    out = _io.StringIO()
    old_umask = os.umask(0o022)
    try:
        with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(out):
            mp.setenv("MPLBACKEND", "Agg")
            mp.setenv("VCFNB_PROGRESS_INTERVAL", "1")
            record = runner.run_notebook(nb, site, root)
            assert os.environ["MPLBACKEND"] == "Agg"  # the runner's own env is left alone
    finally:
        os.umask(old_umask)
    return {"root": root, "nb": nb, "site": site, "cohort": cohort, "record": record,
            "stdout": out.getvalue(), "report": root / "reports" / STUDY / "site"}


def test_tests_run_under_agg():
    import matplotlib

    assert matplotlib.get_backend().lower() == "agg"


def test_figures_are_inline_png_each_shown_once(project):
    assert project["record"]["status"] == "ok", project["record"]
    executed = nbformat.read(str(project["report"] / f"{STUDY}.ipynb"), as_version=4)
    pngs = [o for c in executed.cells if c.cell_type == "code" for o in c.get("outputs", [])
            if "image/png" in o.get("data", {})]
    assert len(pngs) == 3  # 1 as the cell's value + 2 from the loop, none twice
    by_cell = [sum("image/png" in o.get("data", {}) for o in c.get("outputs", []))
               for c in executed.cells if c.cell_type == "code" and "run.figure" in c.source]
    assert by_cell == [1, 2]
    text_only = [o for c in executed.cells for o in c.get("outputs", [])
                 if "<Figure size" in str(o.get("data", {}).get("text/plain", ""))
                 and "image/png" not in o.get("data", {})]
    assert not text_only
    html = (project["report"] / f"{STUDY}.html").read_text(encoding="utf-8")
    assert len(re.findall(r'<img[^>]+src="data:image/png;base64,', html)) == 3
    assert "&lt;Figure size" not in html
    assert sorted(p.name for p in (project["report"] / "figures").glob("*.png")) == \
        ["bar0.png", "bar1.png", "line.png"]


def test_report_files_are_group_readable(project):
    files = [p for p in project["report"].rglob("*") if p.is_file()]
    assert files
    for p in files:
        assert stat.S_IMODE(p.stat().st_mode) & 0o044 == 0o044, (p.name, oct(p.stat().st_mode))


def test_progress_lines_while_running(project):
    lines = [ln for ln in project["stdout"].splitlines() if "[tiny/site]" in ln]
    assert "\r" not in project["stdout"]
    assert any(re.search(r"\] 0:\d\d cell \d+/9: Figures$", ln) for ln in lines), \
        project["stdout"]
    assert any(ln.endswith(": Waiting for the heartbeat") for ln in lines)
    assert any("(this cell: 0:0" in ln for ln in lines), project["stdout"]  # heartbeat


def _stamp(project) -> str:
    params = {**runner.io.load_yaml(project["site"]),
              "out_dir": str(project["report"])}
    return runner.run_stamp(project["nb"], params)


def test_stamp_changes_with_every_cohort_file(project, tmp_path):
    cohort = project["cohort"]
    before = _stamp(project)
    assert _stamp(project) == before  # deterministic
    for rel, edit in [("cases.csv", lambda p: p.write_text(p.read_text(encoding="utf-8") + "C,1\n")),
                      ("masks/A.nii.gz", lambda p: _rewrite(p, lambda a: a * 0 + (a > 0))),
                      ("images/B.nii.gz", lambda p: _rewrite(p, lambda a: a + 1))]:
        path = cohort / rel
        saved = path.read_bytes()
        edit(path)
        assert _stamp(project) != before, rel
        path.write_bytes(saved)
        assert _stamp(project) == before, rel
    # a file rois.csv does not name is not part of the cohort
    (cohort / "notes.txt").write_text("unrelated")
    assert _stamp(project) == before


def _rewrite(path: Path, fn) -> None:
    img = sitk.ReadImage(str(path))
    arr = sitk.GetArrayFromImage(img)
    if arr.dtype == np.uint8:  # the mask: move the ROI by one voxel
        arr = np.roll(arr, 1, axis=2)
    else:
        arr = fn(arr)
    out = sitk.GetImageFromArray(arr.astype(sitk.GetArrayViewFromImage(img).dtype))
    out.CopyInformation(img)
    sitk.WriteImage(out, str(path))


def test_builtin_cohort_stamp_is_params_only(project):
    params = {"cohort_dir": "", "out_dir": str(project["report"])}
    a = runner.run_stamp(project["nb"], params)
    assert runner.run_stamp(project["nb"], {**params, "slope": 2}) != a
    assert runner.run_stamp(project["nb"], params) == a


def test_edited_cohort_reruns_instead_of_skipping(project):
    root, nb, site = project["root"], project["nb"], project["site"]
    again = runner.run_notebook(nb, site, root, progress=False)
    assert again["status"] == "unchanged (skipped)"
    stamp = json.loads((project["report"] / ".run-stamp.json").read_text(encoding="utf-8"))
    assert set(stamp["files"]) == {"cohort_dir:images/A.nii.gz", "cohort_dir:images/B.nii.gz",
                                   "cohort_dir:masks/A.nii.gz", "cohort_dir:masks/B.nii.gz"}
    assert str(project["cohort"]) not in json.dumps(stamp)  # no absolute path of this machine
    cases = project["cohort"] / "cases.csv"
    cases.write_text(cases.read_text(encoding="utf-8").replace("B,1", "B,0"))
    rerun = runner.run_notebook(nb, site, root, progress=False)
    assert rerun["status"] == "ok"
    assert runner.run_notebook(nb, site, root, progress=False)["status"] == \
        "unchanged (skipped)"


def test_bad_params_file_fails_only_its_own_run(project, monkeypatch, capsys):
    root = project["root"]
    monkeypatch.chdir(root)
    code = runner.main(["reproduce", "--study", STUDY])
    out, err = capsys.readouterr()
    assert code == 1
    runs = pd.read_csv(root / "reports" / "runs.csv").set_index("run")
    assert runs.loc["broken", "status"].startswith("failed: invalid params")
    assert "unknown parameter 'slpoe'" in runs.loc["broken", "status"]
    assert "did you mean 'slope'" in err
    assert runs.loc["site", "status"] in ("ok", "unchanged (skipped)")
    # check-params still checks every file
    assert runner.main(["check-params"]) == 1
    assert "slpoe" in capsys.readouterr().err


def test_invalid_yaml_is_a_params_error(project, tmp_path):
    root = tmp_path / "p"
    shutil.copytree(project["root"] / "notebooks", root / "notebooks")
    bad = root / "params" / STUDY / "bad.yaml"
    bad.parent.mkdir(parents=True)
    bad.write_text("cohort_dir: [unclosed\n")
    with pytest.raises(runner.ParamsError, match="invalid YAML"):
        runner.run_notebook(root / "notebooks" / f"{STUDY}.ipynb", bad, root)
    assert not (root / "reports").exists()


def _stopping_notebook(path: Path) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("crash: bool = False  # a real error instead of a stop"),
                nbformat.v4.new_code_cell("from vcfnb.report import StopRun\nprint('features saved')"),
                nbformat.v4.new_markdown_cell("## The model"),
                nbformat.v4.new_code_cell(
                    "if crash:\n    raise ValueError('boom: a real bug')\n"
                    "raise StopRun('no outcome labels: add an outcome column to cases.csv')"),
                nbformat.v4.new_markdown_cell("## Later section"),
                nbformat.v4.new_code_cell("print('never')")]
    nb.cells[0].metadata["tags"] = ["parameters"]
    nb.metadata["kernelspec"] = {"name": "vcfnb", "display_name": "vcfnb (Python 3)",
                                 "language": "python"}
    nbformat.write(nb, str(path))
    return path


@pytest.mark.parametrize("crash", [False, True], ids=["deliberate-stop", "crash"])
def test_html_of_a_deliberate_stop_has_no_papermill_banner(tmp_path, crash):
    """issue 20: a run stopped on purpose (Run.stop -> StopRun) reads as a stop in the HTML:
    the study's reason, no "An Exception was encountered" banner, no traceback, one line for
    the cells that did not run. A real crash keeps papermill's banner and its error."""
    import papermill as pm

    src = _stopping_notebook(tmp_path / "stop.ipynb")
    executed = tmp_path / "out" / "stop.ipynb"
    executed.parent.mkdir()
    with pytest.raises(pm.PapermillExecutionError) as err:
        pm.execute_notebook(str(src), str(executed), parameters={"crash": crash},
                            kernel_name=runner.KERNEL, progress_bar=False, log_output=False)
    assert err.value.ename == ("ValueError" if crash else "StopRun")
    html = runner.export_html(executed).read_text(encoding="utf-8")
    text = re.sub(r"<[^>]+>", " ", html)
    assert "features saved" in text
    if crash:
        assert "An Exception was encountered" in text
        assert "encountered an exception here and stopped" in text
        assert "boom: a real bug" in text and "ValueError" in text
        assert "Later section" in text and "stopped here on purpose" not in text
    else:
        assert "An Exception was encountered" not in text
        assert "encountered an exception here" not in text
        assert "papermill-error-cell" not in html
        assert ("The study stopped here on purpose (not an error): no outcome labels: add an "
                "outcome column to cases.csv") in " ".join(text.split())
        assert "Later section" not in text and "never" not in text
        assert "The remaining 2 cell(s) of the notebook did not run" in text
        assert "Traceback" not in text and "output_error" not in html
    # the executed notebook itself keeps papermill's record either way
    kept = nbformat.read(str(executed), as_version=4)
    assert any(runner.PAPERMILL_ERROR_TAG in c.metadata.get("tags", []) for c in kept.cells)


def _executed(path: Path, cells: list[tuple[str, str, float | None]], total: float) -> None:
    """An executed notebook as papermill leaves it: per-cell and whole-run durations."""
    nb = nbformat.v4.new_notebook()
    for kind, src, dur in cells:
        c = nbformat.v4.new_markdown_cell(src) if kind == "md" else nbformat.v4.new_code_cell(src)
        if dur is not None:
            c.metadata["papermill"] = {"duration": dur}
        nb.cells.append(c)
    nb.metadata["papermill"] = {"duration": total, "start_time": "2026-12-01T07:36:08+00:00"}
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)


def test_timings_per_run_and_section(tmp_path, capsys):
    reports = tmp_path / "reports"
    _executed(reports / "alpha" / "paper" / "alpha.ipynb",
              [("code", "x = 1", 2.0), ("md", "## Extract\ntext", 0.01), ("code", "a", 30.0),
               ("code", "b", 10.0), ("md", "no heading here", None), ("code", "c", 5.0),
               ("md", "## Permutation test", None), ("code", "p", 100.0)], total=150.0)
    _executed(reports / "beta" / "smoke" / "beta.ipynb", [("code", "y", 3.0)], total=4.0)
    nbformat.write(nbformat.v4.new_notebook(), reports / "beta" / "smoke" / "scratch.ipynb")
    _executed(reports / "gamma" / "x" / "gamma.ipynb", [], total=None)  # not executed
    runs, steps = runner.timings(reports)
    assert runs[["study", "run", "seconds"]].values.tolist() == [["alpha", "paper", 150.0],
                                                                ["beta", "smoke", 4.0]]
    a = steps[steps.study == "alpha"]
    assert a[["step", "cells", "seconds"]].values.tolist() == [
        ["Permutation test", 1, 100.0], ["Extract", 3, 45.0],
        ["(before the first heading)", 1, 2.0]]
    assert a.share.iloc[0] == pytest.approx(100 / 150)
    assert runner.main(["timings", "--reports", str(reports), "--top", "2"]) == 0
    out = capsys.readouterr().out
    assert "| alpha/paper | 2:30 | 97% |" in out and "| **all 2 runs** | **2:34** | |" in out
    alpha = out.split("alpha/paper, largest steps:\n")[1].split("\n\n")[0].splitlines()
    assert alpha == ["      1:40   67%  Permutation test", "      0:45   30%  Extract"]  # top 2
    assert runner.main(["timings", "--reports", str(tmp_path / "none")]) == 1


def test_progress_bars_keep_their_last_state(project):
    """A cold run's progress bars (one stderr output per refresh) used to fill the report with
    one line per refresh (59 in the metastasis paper HTML); now each keeps its last state."""
    nb = nbformat.read(project["report"] / f"{STUDY}.ipynb", as_version=4)
    cell = next(c for c in nb.cells if c.cell_type == "code" and "bar {k}/3" in c.source)
    err = [o for o in cell.outputs if o.get("name") == "stderr"]
    assert [o.text for o in err] == ["bar 3/3\n"]
    html = (project["report"] / f"{STUDY}.html").read_text(encoding="utf-8")
    assert "bar 3/3" in html and "bar 1/3" not in html and "gone 1/2" not in html
    assert "done" in html


def test_tidy_streams_merges_and_applies_carriage_returns():
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("x")
    out = nbformat.v4.new_output
    cell.outputs = [out("stream", name="stderr", text="\rp 1"), out("stream", name="stderr",
                    text="\rp 2\n"), out("stream", name="stdout", text="kept\n"),
                    out("stream", name="stderr", text="\rq 5%\r     \r")]
    nb.cells.append(cell)
    assert runner.tidy_streams(nb) == 2
    assert [(o.name, o.text) for o in cell.outputs] == [("stderr", "p 2\n"), ("stdout", "kept\n")]


def test_lanes_run_notebooks_side_by_side_and_log_each_run(tmp_path, monkeypatch, capsys):
    """``reproduce --lanes 2``: two runs start before either ends, every run is logged to
    runs.csv, an invalid params file still fails only itself, the runner's env is restored."""
    root = tmp_path / "project"
    (root / "notebooks").mkdir(parents=True)
    (root / "params" / STUDY).mkdir(parents=True)
    _notebook(root / "notebooks" / f"{STUDY}.ipynb")
    cohort = _cohort(tmp_path / "cohort")
    for name, slope in (("a", 1), ("b", 2)):
        (root / "params" / STUDY / f"{name}.yaml").write_text(
            f"cohort_dir: {cohort}\nwait: 1.0\nslope: {slope}\n", encoding="utf-8")
    (root / "params" / STUDY / "broken.yaml").write_text("slpoe: 2\n", encoding="utf-8")
    monkeypatch.chdir(root)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setattr(runner, "_package_hash", lambda: "vcfnb-under-test")
    code = runner.main(["reproduce", "--study", STUDY, "--lanes", "2"])
    out, err = capsys.readouterr()
    assert code == 1  # the broken params file
    assert os.environ["MPLBACKEND"] == "Agg"
    assert "3 runs in 2 lanes" in out
    lines = out.splitlines()
    started = [i for i, ln in enumerate(lines) if ln.startswith("running tiny/")]
    ended = [i for i, ln in enumerate(lines) if re.search(r"\[tiny/[ab]\] ok in", ln)]
    assert len(started) == 3 and len(ended) == 2, out
    assert sorted(started)[1] < min(ended), out  # the second run began before the first ended
    runs = pd.read_csv(root / "reports" / "runs.csv").set_index("run")
    assert runs.loc[["a", "b"], "status"].tolist() == ["ok", "ok"]
    assert runs.loc["broken", "status"].startswith("failed: invalid params")
    for name in ("a", "b"):
        assert (root / "reports" / STUDY / name / f"{STUDY}.html").is_file()


def test_environ_is_restored_after_the_last_of_overlapping_blocks(monkeypatch):
    monkeypatch.delenv("VCFNB_TEST_ENV", raising=False)
    env = {"VCFNB_TEST_ENV": "x"}
    outer = runner._environ(env)
    outer.__enter__()
    with runner._environ(env):
        assert os.environ["VCFNB_TEST_ENV"] == "x"
    assert os.environ["VCFNB_TEST_ENV"] == "x"  # the other lane's kernel may still start
    outer.__exit__(None, None, None)
    assert "VCFNB_TEST_ENV" not in os.environ


def test_lane_order_is_longest_first(tmp_path):
    """Without recorded times the shipped paper runs' measured times order the lanes (the vcf
    paper run first); a recorded time of this machine wins."""
    root = tmp_path / "p"
    nbs = {s: Path(f"{s}.ipynb") for s in ("metastasis_lytic_blastic", "vcf_benign_malignant")}
    pairs = [(nbs["metastasis_lytic_blastic"], Path("paper.yaml")),
             (nbs["metastasis_lytic_blastic"], Path("smoke.yaml")),
             (nbs["vcf_benign_malignant"], Path("paper.yaml"))]
    cost = runner._expected_seconds(root, pairs)
    assert cost[2] > cost[0] > cost[1]
    (root / "reports").mkdir(parents=True)
    pd.DataFrame({"study": ["metastasis_lytic_blastic"], "run": ["smoke"], "status": ["ok"],
                  "seconds": [5000.0]}).to_csv(root / "reports" / "runs.csv", index=False)
    assert runner._expected_seconds(root, pairs)[1] == 5000.0


@pytest.mark.parametrize("lanes", [1, 2])
def test_an_error_around_one_notebook_fails_that_run_only(tmp_path, monkeypatch, lanes):
    """A runner error outside the notebook's cells (here: no kernel) fails its run; the other
    runs go on and every run is in runs.csv (before: the whole reproduce stopped)."""
    pairs = [(Path(f"{s}.ipynb"), Path("smoke.yaml")) for s in ("a", "b", "c")]

    def fake(nb, pf, root, force=False):
        if nb.stem == "b":
            raise RuntimeError("No such kernel named vcfnb")
        return {"study": nb.stem, "run": pf.stem, "status": "ok", "seconds": 1.0}

    monkeypatch.setattr(runner, "run_notebook", fake)
    records = runner.reproduce(pairs, tmp_path, lanes=lanes)
    assert [r["status"] for r in records] == ["ok", "failed: RuntimeError: No such kernel named "
                                              "vcfnb", "ok"]
    logged = pd.read_csv(tmp_path / "reports" / "runs.csv").set_index("study")
    assert logged.loc["b", "status"].startswith("failed: RuntimeError")
    assert list(logged.loc[["a", "c"], "status"]) == ["ok", "ok"]


def test_a_report_shows_a_cells_warning_without_the_notebook_code(tmp_path, monkeypatch):
    """The HTML report has no code cells, so a warning raised from a cell must not print the
    kernel's temporary file name and the cell's code line under its message (it did: a
    permutation test's fallback notice showed ``perm_a = vc.models.permutation_test(...``);
    warnings from library files keep Python's format."""
    import warnings

    from vcfnb import report

    monkeypatch.setattr(warnings, "formatwarning", warnings.formatwarning)  # restored after
    report.start_run("radiomics_study", {"out_dir": str(tmp_path / "out")}, load=False)
    assert warnings.formatwarning is report.report_warning
    cell = warnings.formatwarning("refits fell back", UserWarning,
                                  "/tmp/ipykernel_30971/511650488.py", 1,
                                  "perm_a = vc.models.permutation_test(")
    assert cell == "UserWarning: refits fell back\n"
    lib = warnings.formatwarning("deprecated", FutureWarning, "/x/site-packages/lib.py", 7, "f()")
    assert "/x/site-packages/lib.py:7" in lib and "f()" in lib
