"""Safe configuration: YAML is loaded safely and nothing from a cohort file is ever executed.

* params files (``vcfnb.io.load_yaml``, the runner) and pyradiomics settings files
  (``vcfnb.features.load_settings``) reject Python tags (``!!python/object/apply`` ...) with a
  clear error naming the file, and the tagged code does not run;
* a params string that looks like code reaches the notebook as a string literal (papermill's
  parameter injection quotes it);
* cells of ``cases.csv``/``rois.csv`` that look like code (or like YAML tags) are plain strings
  through validation and into report tables;
* the package source calls no unsafe loader (``yaml.load`` without the safe loader, ``eval``,
  ``exec``, ``pickle``, ``torch.load`` without ``weights_only=True``, ``shell=True``).
"""
from __future__ import annotations

import ast
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
import yaml

from vcfnb import features, io, report, runner

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "metastasis_lytic_blastic.ipynb"


def _payloads(marker: Path) -> list[str]:
    """YAML documents that would create ``marker`` if they were loaded unsafely."""
    return [
        f"seed: !!python/object/apply:os.system ['touch {marker}']\n",
        f"seed: !!python/object/apply:subprocess.check_call [['touch', '{marker}']]\n",
        "!!python/object/new:type\nargs: ['X', !!python/tuple [], {}]\n",
        "setting: !!python/name:os.system\n",
        "x: !!python/object:pathlib.Path {}\n",
    ]


@pytest.mark.parametrize("i", range(5))
def test_load_yaml_rejects_python_tags(tmp_path, i):
    marker = tmp_path / "pwned"
    p = tmp_path / "params.yaml"
    p.write_text(_payloads(marker)[i])
    with pytest.raises(ValueError, match=r"params\.yaml.*invalid YAML"):
        io.load_yaml(p)
    assert not marker.exists()


def test_runner_rejects_a_tagged_params_file_before_running(tmp_path):
    marker = tmp_path / "pwned"
    pf = tmp_path / "evil.yaml"
    pf.write_text(_payloads(marker)[0])
    with pytest.raises(ValueError, match=r"evil\.yaml.*invalid YAML"):
        runner.run_notebook(NOTEBOOK, pf, tmp_path)
    assert not marker.exists() and not (tmp_path / "reports").exists()


def test_check_params_reports_a_tagged_params_file(tmp_path):
    marker = tmp_path / "pwned"
    (tmp_path / "notebooks").mkdir()
    shutil.copy(NOTEBOOK, tmp_path / "notebooks" / NOTEBOOK.name)
    pdir = tmp_path / "params" / NOTEBOOK.stem
    pdir.mkdir(parents=True)
    (pdir / "evil.yaml").write_text(_payloads(marker)[1])
    (pdir / "fine.yaml").write_text("seed: 3\n")
    errors = runner.check_all(tmp_path)
    assert len(errors) == 1 and "evil.yaml" in errors[0] and "invalid YAML" in errors[0]
    assert not marker.exists()


@pytest.mark.parametrize("i", range(5))
def test_load_settings_rejects_python_tags(tmp_path, i):
    marker = tmp_path / "pwned"
    p = tmp_path / "radiomics.yaml"
    p.write_text(_payloads(marker)[i])
    with pytest.raises((ValueError, yaml.YAMLError), match=r"radiomics\.yaml") as err:
        features.load_settings(p)
    assert "python/" in str(err.value)
    assert not marker.exists()


def test_params_string_is_injected_as_a_literal(tmp_path):
    """papermill writes parameters as Python source: a code-like string must stay a string."""
    from papermill.translators import PythonTranslator

    marker = tmp_path / "pwned"
    evil = f"x\"\"\"'''; import os\nos.system('touch {marker}')  # \\\" "
    code = PythonTranslator.codify({"cohort_dir": evil, "paper_numbers": {"a'": evil}})
    tree = ast.parse(code)
    assert all(isinstance(node, ast.Assign) for node in tree.body)
    ns: dict = {}
    exec(compile(tree, "<parameters>", "exec"), {"__builtins__": {}}, ns)  # literals only
    assert ns == {"cohort_dir": evil, "paper_numbers": {"a'": evil}}
    assert not marker.exists()


# ---------------------------------------------------------------------------------------------
# cohort files
# ---------------------------------------------------------------------------------------------

def _tiny_cohort(folder: Path, cells: dict[str, str], roi_cells: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    arr = np.zeros((4, 12, 12), np.float32)
    arr[1:3, 3:9, 3:9] = 100
    msk = sitk.GetImageFromArray((arr > 0).astype(np.uint8))
    rows = []
    for i, y in enumerate([0, 1]):
        pid = f"P{i}"
        # two different scans (a byte-identical scan under two ids is itself a problem)
        sitk.WriteImage(sitk.GetImageFromArray(arr + i), str(folder / f"{pid}.nrrd"))
        sitk.WriteImage(msk, str(folder / f"{pid}_mask.nrrd"))
        rows.append({"patient_id": pid, "outcome": y, **cells})
    pd.DataFrame(rows).to_csv(folder / "cases.csv", index=False)
    pd.DataFrame([{"patient_id": r["patient_id"], "image": f"{r['patient_id']}.nrrd",
                   "mask": f"{r['patient_id']}_mask.nrrd", "label": 1, **roi_cells}
                  for r in rows]).to_csv(folder / "rois.csv", index=False)
    return folder


def test_cohort_cells_are_never_executed(tmp_path):
    marker = tmp_path / "pwned"
    code = f"__import__('os').system('touch {marker}')"
    cells = {"primary_tumor": code, "note": f"!!python/object/apply:os.system ['touch {marker}']",
             "formula": f"=cmd|' /C touch {marker}'!A0", "age": "eval('1+1')"}
    roi_cells = {"roi": code, "sequence": "{{ " + code + " }}"}
    folder = _tiny_cohort(tmp_path / "cohort", cells, roi_cells)
    c = io.load_cohort(folder)
    assert c.problems.empty, c.problems.to_string()
    for col, value in cells.items():
        assert c.cases[col].tolist() == [value, value], col
    assert c.rois.roi.tolist() == [code, code]
    assert c.rois.sequence.tolist() == [roi_cells["sequence"]] * 2
    # through a report table: written verbatim, nothing evaluated
    run = report.Run(study="x", params={}, root=tmp_path / "project", out_dir=tmp_path / "out",
                     cache_dir=tmp_path / "cache", cohort=c)
    run.table("cases", c.cases)
    back = pd.read_csv(tmp_path / "out" / "tables" / "cases.csv", dtype=str)
    assert back.primary_tumor.tolist() == [code, code]
    assert not marker.exists()


def test_code_in_an_outcome_cell_is_a_problem_not_a_value(tmp_path):
    marker = tmp_path / "pwned"
    folder = _tiny_cohort(tmp_path / "cohort", {}, {})
    cases = pd.read_csv(folder / "cases.csv")
    cases["outcome"] = cases["outcome"].astype(object)
    cases.loc[0, "outcome"] = f"__import__('os').system('touch {marker}') or 1"
    cases.to_csv(folder / "cases.csv", index=False)
    c = io.load_cohort(folder)
    assert c.problems.patient_id.tolist() == ["P0"]
    assert "outcome" in c.problems.problem.iloc[0]
    assert not marker.exists()


# ---------------------------------------------------------------------------------------------
# the package source
# ---------------------------------------------------------------------------------------------

def _unsafe_calls(source: str) -> list[str]:
    bad = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        kw = {k.arg: k.value for k in node.keywords}
        name = f.id if isinstance(f, ast.Name) else (f.attr if isinstance(f, ast.Attribute)
                                                      else "")
        owner = f.value.id if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) \
            else ""
        line = f"line {node.lineno}: {name}"
        if isinstance(f, ast.Name) and name in ("eval", "exec", "compile", "__import__"):
            bad.append(line)
        elif owner == "yaml" and name in ("load", "load_all", "unsafe_load", "full_load",
                                          "unsafe_load_all", "full_load_all"):
            loader = kw.get("Loader") or (node.args[1] if len(node.args) > 1 else None)
            if not (loader is not None and "Safe" in ast.unparse(loader)):
                bad.append(line)
        elif owner in ("pickle", "cPickle", "dill", "joblib", "marshal", "shelve") and \
                name in ("load", "loads", "open"):
            bad.append(line)
        elif name == "read_pickle":
            bad.append(line)
        elif owner == "torch" and name == "load":
            wo = kw.get("weights_only")
            if not (isinstance(wo, ast.Constant) and wo.value is True):
                bad.append(line + " without weights_only=True")
        elif name in ("eval", "query") and isinstance(f, ast.Attribute) and node.args:
            bad.append(line + " (DataFrame.eval/query on a string)")
        elif "shell" in kw and not (isinstance(kw["shell"], ast.Constant) and
                                    kw["shell"].value is False):
            bad.append(line + " shell=True")
        elif owner == "os" and name in ("system", "popen"):
            bad.append(line)
        elif owner == "np" and name == "load" and not (
                isinstance(kw.get("allow_pickle"), ast.Constant)
                and kw["allow_pickle"].value is False):
            bad.append(line + " without allow_pickle=False")
    return bad


#: the one unpickling vcfnb does: a pool worker reading the (function, items) its own parent
#: process pickled a moment ago and sent over the pool's pipe (what ProcessPoolExecutor does
#: internally too) -- in-memory IPC, never a file or anything a user supplies
IPC_UNPICKLE = {("vcfnb/parallel.py", "_run_chunk")}


def _enclosing_function(source: str, lineno: int) -> str:
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef) and node.lineno <= lineno <= node.end_lineno:
            return node.name
    return ""


def test_package_calls_no_unsafe_loader():
    found = []
    for p in sorted((ROOT / "vcfnb").rglob("*.py")):
        src = p.read_text(encoding="utf-8")
        rel = p.relative_to(ROOT).as_posix()
        for b in _unsafe_calls(src):
            lineno = int(b.split(":")[0].split()[1])
            if b.endswith(": loads") and (rel, _enclosing_function(src, lineno)) in IPC_UNPICKLE:
                continue
            found.append(f"{rel} {b}")
    assert not found, "unsafe calls in vcfnb:\n" + "\n".join(found)


def test_the_scanner_finds_unsafe_calls():
    src = ("import yaml, pickle, torch\nyaml.load(s)\nyaml.load(s, Loader=yaml.SafeLoader)\n"
           "pickle.loads(b)\neval('1')\ntorch.load(p)\ntorch.load(p, weights_only=True)\n"
           "df.query('a > 1')\nmodel.eval()\n")
    found = _unsafe_calls(src)
    assert [f.split(":")[0] for f in found] == ["line 2", "line 4", "line 5", "line 6", "line 8"]
