"""Notebook conventions and the papermill runner (params validation, skip-unchanged, HTML export)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import nbformat
import pytest

from vcfnb import io, runner

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
STUDIES = ["vcf_benign_malignant", "osteoporosis_mri", "ovf_prediction_ct",
           "metastasis_lytic_blastic"]
COMMON = {"cohort_dir": "str", "synthetic_size": "str", "synthetic_signal": "float",
          "seed": "int", "out_dir": "str", "cache_dir": "str", "outcome": "str",
          "require_outcome": "bool", "mask_grid": "str", "geometry_tol": "float", "n_jobs": "int"}


def test_all_study_notebooks_exist():
    names = {p.stem for p in NOTEBOOKS}
    assert set(STUDIES) <= names


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_without_outputs(nb_path):
    nb = json.loads(nb_path.read_text(encoding="utf-8"))
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] == "code":
            assert not cell.get("outputs"), f"{nb_path.name} cell {i} has outputs"
            assert cell.get("execution_count") is None, f"{nb_path.name} cell {i} was executed"
        assert "papermill" not in cell.get("metadata", {}), f"{nb_path.name} cell {i} papermill metadata"
    assert "papermill" not in nb["metadata"]
    assert nb["metadata"]["kernelspec"]["name"] == "vcfnb"


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_shape(nb_path):
    """Title → parameters → imports → resolve → steps → provenance; no def/class in cells."""
    nb = nbformat.read(str(nb_path), as_version=4)
    cells = nb.cells
    assert cells[0].cell_type == "markdown" and cells[0].source.startswith("# ")
    assert "parameters" in cells[1].metadata.get("tags", []), "2nd cell must be the parameters cell"
    assert cells[2].source.strip().startswith("import vcfnb as vc")
    resolve = next(c for c in cells[3:6] if c.cell_type == "code")
    assert "vc.report.start_run(" in resolve.source
    code = [c for c in cells if c.cell_type == "code"]
    assert "provenance()" in code[-1].source
    for c in code:
        for line in c.source.splitlines():
            assert not line.lstrip().startswith(("def ", "class ")), \
                f"{nb_path.name}: functions belong in vcfnb, not in a notebook cell: {line}"
    # parameters: typed literals, one per line, with a comment; the one untyped exception is
    # `n_permutations = "auto"` (int or "auto": papermill cannot read a union annotation, and
    # `run.n_permutations` validates the value)
    for line in cells[1].source.splitlines():
        if line.strip().startswith('n_permutations = "auto"'):
            assert "#" in line, f"undocumented: {line}"
            assert "run.n_permutations(n_permutations" in "".join(c.source for c in code), \
                f"{nb_path.name}: n_permutations = 'auto' must be resolved by run.n_permutations"
            continue
        if line.strip():
            assert ":" in line.split("=")[0] and "#" in line, f"untyped/undocumented: {line}"


def _calls(source: str, name: str) -> list[str]:
    """The full text of every ``name(...)`` call in ``source`` (balanced parentheses)."""
    out = []
    for m in re.finditer(re.escape(name) + r"\(", source):
        k, depth = m.end(), 1
        while depth:
            depth += {"(": 1, ")": -1}.get(source[k], 0)
            k += 1
        out.append(source[m.start():k])
    return out


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=lambda p: p.stem)
def test_calibration_calls_state_the_hosmer_lemeshow_choices(nb_path):
    """Methods choices are visible in the notebook: every ``stats.calibration`` call names its
    groups rule, degrees of freedom, smallest expected count and whether groups are reduced
    (defaults exist, but a reader of the report must not need to know them)."""
    nb = nbformat.read(str(nb_path), as_version=4)
    calls = [c for cell in nb.cells if cell.cell_type == "code"
             for c in _calls(cell.source, "stats.calibration")]
    for call in calls:
        for arg in ("hl_groups=", "hl_dof=", "min_expected=", "reduce_groups="):
            assert arg in call, f"{nb_path.name}: {arg[:-1]} not stated in {call!r}"


@pytest.mark.parametrize("study", STUDIES)
def test_common_parameters(study):
    params = runner.notebook_parameters(ROOT / "notebooks" / f"{study}.ipynb")
    for name, tname in COMMON.items():
        assert name in params, f"{study} lacks parameter {name}"
        assert params[name][0] == tname
    assert params["synthetic_size"][1].strip("'\"") == "smoke"  # defaults run small


def test_documented_common_parameters_exist_in_every_notebook():
    """docs/cohorts.md's table of common parameters is true of every study notebook."""
    text = (ROOT / "docs" / "cohorts.md").read_text(encoding="utf-8")
    table = text.split("## Parameters every study notebook has", 1)[1].split("\n## ", 1)[0]
    documented = re.findall(r"^\| `(\w+)` \|", table, flags=re.M)
    assert set(documented) == set(COMMON)
    for study in STUDIES:
        params = runner.notebook_parameters(ROOT / "notebooks" / f"{study}.ipynb")
        missing = [p for p in documented if p not in params]
        assert not missing, f"{study} lacks documented parameter(s) {missing}"


def test_every_params_file_matches_its_notebook():
    assert runner.check_all(ROOT) == []
    for study in STUDIES:
        files = {p.stem for p in (ROOT / "params" / study).glob("*.yaml")}
        assert {"smoke", "paper"} <= files, f"{study}: smoke.yaml and paper.yaml required"


def test_unknown_params_key_rejected():
    nb = ROOT / "notebooks" / "metastasis_lytic_blastic.ipynb"
    with pytest.raises(runner.ParamsError, match="unknown parameter 'sede'.*did you mean 'seed'"):
        runner.validate_params(nb, {"sede": 3}, source="params/x.yaml")
    with pytest.raises(runner.ParamsError, match="'seed' must be int"):
        runner.validate_params(nb, {"seed": "three"})
    with pytest.raises(runner.ParamsError, match="'synthetic_signal' must be float"):
        runner.validate_params(nb, {"synthetic_signal": True})
    assert runner.validate_params(nb, {"seed": 3, "synthetic_signal": 0}) == {
        "seed": 3, "synthetic_signal": 0}


TINY = '''{"cells": [
 {"cell_type": "markdown", "id": "t0", "metadata": {}, "source": ["# Tiny"]},
 {"cell_type": "code", "execution_count": null, "id": "t1", "metadata": {"tags": ["parameters"]},
  "outputs": [],
  "source": ["seed: int = 0  # seed\\n", "out_dir: str = \\"\\"  # out\\n", "stop: bool = False  # stop early"]},
 {"cell_type": "code", "execution_count": null, "id": "t2", "metadata": {}, "outputs": [],
  "source": ["import vcfnb as vc"]},
 {"cell_type": "code", "execution_count": null, "id": "t3", "metadata": {}, "outputs": [],
  "source": ["run = vc.report.start_run(\\"tiny\\", globals())\\n", "if stop:\\n",
             "    run.stop(\\"no outcome labels\\")"]},
 {"cell_type": "code", "execution_count": null, "id": "t4", "metadata": {}, "outputs": [],
  "source": ["run.metric(\\"m\\", \\"test\\", auc=0.5 + seed / 10, ci_low=0.4, ci_high=0.6, n=10)\\n",
             "run.provenance()"]}
 ],
 "metadata": {"kernelspec": {"name": "vcfnb", "display_name": "vcfnb", "language": "python"}},
 "nbformat": 4, "nbformat_minor": 5}'''


@pytest.mark.slow
def test_runner_end_to_end(tmp_path):
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "params" / "tiny").mkdir(parents=True)
    nb = tmp_path / "notebooks" / "tiny.ipynb"
    nb.write_text(TINY)
    pf = tmp_path / "params" / "tiny" / "a.yaml"
    pf.write_text("seed: 2\n")
    rec = runner.run_notebook(nb, pf, tmp_path)
    assert rec["status"] == "ok", rec
    out = tmp_path / "reports" / "tiny" / "a"
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["models"]["m"]["test"]["auc"] == pytest.approx(0.7)
    assert metrics["study"] == "tiny"
    html = (out / "tiny.html").read_text(encoding="utf-8")
    assert "run.metric" not in html  # code cells hidden from readers
    assert (out / "tables" / "provenance.csv").is_file()
    # unchanged → skipped; changed params → re-run
    assert runner.run_notebook(nb, pf, tmp_path)["status"].startswith("unchanged")
    pf.write_text("seed: 3\n")
    assert runner.run_notebook(nb, pf, tmp_path)["status"] == "ok"
    # a clean stop is not a failure
    stop = tmp_path / "params" / "tiny" / "b.yaml"
    stop.write_text("stop: true\n")
    rec = runner.run_notebook(nb, stop, tmp_path)
    assert rec["status"] == "stopped"
    notes = json.loads((tmp_path / "reports" / "tiny" / "b" / "metrics.json").read_text(encoding="utf-8"))["notes"]
    assert any("no outcome labels" in n for n in notes)
    # unknown key → rejected before running
    bad = tmp_path / "params" / "tiny" / "c.yaml"
    bad.write_text("sed: 1\n")
    with pytest.raises(runner.ParamsError, match="c.yaml: unknown parameter 'sed'"):
        runner.run_notebook(nb, bad, tmp_path)
    assert not (tmp_path / "reports" / "tiny" / "c").exists()


def test_report_scrubs_absolute_paths(tmp_path, monkeypatch):
    from vcfnb import report

    monkeypatch.chdir(tmp_path)
    run = report.Run(study="x", params={}, root=tmp_path, out_dir=tmp_path / "out",
                     cache_dir=tmp_path / "cache")
    import pandas as pd

    run.table("t", pd.DataFrame({"file": [str(tmp_path / "data" / "a.nii.gz"),
                                          str(Path.home() / "scans" / "b.nii.gz")]}))
    text = (tmp_path / "out" / "tables" / "t.csv").read_text(encoding="utf-8")
    assert str(tmp_path) not in text and str(Path.home()) + "/" not in text
    assert "<project>/data/a.nii.gz" in text


def test_load_params_yaml_files_are_mappings():
    for pf in (ROOT / "params").rglob("*.yaml"):
        assert isinstance(io.load_yaml(pf), dict)


def test_lab_kernel_is_this_environment():
    """`make lab` and papermill use the same kernel: `vcfnb`, registered inside the environment
    the Makefile made and running that environment's Python (so an analyst in JupyterLab runs
    exactly what `make reproduce` runs)."""
    import subprocess
    import sys

    from jupyter_client.kernelspec import KernelSpecManager

    spec = KernelSpecManager().get_kernel_spec("vcfnb")
    assert Path(spec.argv[0]).resolve() == Path(sys.executable).resolve()
    assert Path(spec.resource_dir).resolve().is_relative_to(Path(sys.prefix).resolve())
    make = (ROOT / "Makefile").read_text(encoding="utf-8")
    lab = make[make.index("\nlab:"):].split("\n\n")[0]
    assert "$(VENV)/bin/jupyter lab" in lab
    out = subprocess.run([str(Path(sys.executable).parent / "jupyter"), "lab", "--version"],
                         capture_output=True, text=True, check=True).stdout
    assert out.strip()[0].isdigit()


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=lambda p: p.stem)
def test_papermill_reads_every_parameter(nb_path):
    # papermill skips a parameter line it cannot parse (e.g. an '=' inside the comment) with
    # only a printed warning: the runner then rejects that parameter in a params file
    nb = nbformat.read(nb_path, as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    declared = {m.group(1) for m in re.finditer(r"^([A-Za-z_]\w*)\s*(?::[^=]+)?=", cell.source,
                                                re.MULTILINE)}
    assert declared, nb_path
    assert set(runner.notebook_parameters(nb_path)) == declared
