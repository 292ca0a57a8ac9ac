"""docs/new_study.md's worked example runs as written: its snippet builds a cohort from the real
lumbar MRI (outcome = a known rule on a real image property), its params file runs
radiomics_study on it, the rule is recovered on the held-out volunteers, and the same cohort with
shuffled outcomes gives no finding. Everything is written under tmp_path."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from vcfnb import io, metrics, runner

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "new_study.md"
NB = ROOT / "notebooks" / "radiomics_study.ipynb"
PARAMS = ROOT / "params" / "radiomics_study" / "real_lumbar_example.yaml"


def _snippet() -> str:
    text = DOC.read_text(encoding="utf-8")
    block = text.split("<!-- snippet: build-cohort -->", 1)[1]
    return re.search(r"```python\n(.*?)```", block, flags=re.S).group(1)


def _build(source: Path, out: Path, shuffle_seed) -> None:
    """Run the doc's snippet with its three settings pointed at ``source``/``out``."""
    code = _snippet()
    settings = {"source": f"Path({str(source)!r})", "out": f"Path({str(out)!r})",
                "shuffle_seed": repr(shuffle_seed)}
    for name, value in settings.items():
        code, n = re.subn(rf"^{name} = [^#\n]*", f"{name} = {value}  ", code, count=1,
                          flags=re.M)
        assert n == 1, f"the snippet no longer starts with a `{name} = ...` setting"
    exec(compile(code, str(DOC), "exec"), {"__name__": "new_study_snippet"})


def _params(cohort: Path, **extra) -> dict:
    """The shipped params file pointed at ``cohort`` (+ ``extra``)."""
    params = io.load_yaml(PARAMS)
    assert params.pop(runner.SHARED_DATA_MARKER) is True
    assert params["cohort_dir"] == "data/cohorts/lumbar_vb3_rule"  # where the snippet writes
    return {**params, "cohort_dir": str(cohort), **extra}


def test_snippet_settings_are_the_documented_paths():
    code = _snippet()
    assert 'source = Path("../shared/data/lumbar_mri/VB3")' in code
    assert 'out = Path("data/cohorts/lumbar_vb3_rule")' in code
    assert "shuffle_seed = None" in code


def test_runner_skips_the_example_without_its_data(tmp_path, monkeypatch):
    """Where the real data (or the cohort built from it) is absent, the runner skips the params
    file with a note instead of failing."""
    monkeypatch.setenv("VCFNB_SHARED_DATA", str(tmp_path / "absent"))
    rec = runner.run_notebook(NB, PARAMS, tmp_path)
    assert rec["status"].startswith("skipped:") and "absent" in rec["status"]
    monkeypatch.setenv("VCFNB_SHARED_DATA", str(tmp_path))
    rec = runner.run_notebook(NB, PARAMS, tmp_path)
    assert rec["status"].startswith("skipped:") and "does not exist yet" in rec["status"]
    assert not (tmp_path / "reports").exists()


@pytest.mark.realdata
@pytest.mark.slow
def test_worked_example_recovers_the_rule(tmp_path, shared_data, run_study_notebook):
    source = shared_data / "lumbar_mri" / "VB3"
    cache = tmp_path / "cache"
    rule, shuffled = tmp_path / "lumbar_vb3_rule", tmp_path / "lumbar_vb3_shuffled"
    _build(source, rule, None)
    with pytest.raises(FileExistsError):  # never writes into an existing folder
        _build(source, rule, None)
    _build(source, shuffled, 1)

    _, m = run_study_notebook(NB, tmp_path, cache, _params(rule), name="rule",
                              executed="rule.ipynb")
    assert metrics.validate(m) == [] and m["status"] == "ok" and m["simulated"] is False
    assert m["main_models"] == ["LR"]
    assert m["models"]["LR"]["test"]["n"] == 20  # volunteers 09-12: the given split
    assert m["models"]["LR"]["test"]["auc"] >= 0.8
    assert m["models"]["RandomForest"]["test"]["auc"] >= 0.8
    assert m["permutation"]["LR"]["p_value"] <= 0.05  # 19 permutations: the smallest p there is

    # 39 permutations, so that p could fall below 0.05 (with 19 it cannot: p >= 1/20)
    _, m0 = run_study_notebook(NB, tmp_path, cache, _params(shuffled, n_permutations=39),
                               name="shuffled", executed="shuffled.ipynb")
    assert metrics.validate(m0) == []
    assert m0["permutation"]["LR"]["n_permutations"] == 39
    assert m0["permutation"]["LR"]["p_value"] >= 0.05


def test_doc_shows_the_shipped_params_file():
    """The params file printed in docs/new_study.md is the shipped one, word for word."""
    text = DOC.read_text(encoding="utf-8")
    shown = re.search(r"declares everything:\n\n```yaml\n(.*?)```", text, flags=re.S).group(1)
    assert shown.strip() == PARAMS.read_text(encoding="utf-8").strip()
