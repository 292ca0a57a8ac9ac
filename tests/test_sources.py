"""vcfnb.sources: real-data cohorts are valid contract cohorts, built only into their own folders.

The refusal tests need no real data (a fake source folder is enough: the output folder is
checked before anything is read); the build tests use ../shared/data (``realdata``). Every
output goes under ``tmp_path`` (``root=tmp_path`` stands in for the project root; the tests of
the default location unset ``VCFNB_DATA_DIR``, which the test session sets, and one test checks
that the variable moves every default location of generated data).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from vcfnb import io, sources
from vcfnb.sources import MARKER, OutputFolderError


def _snapshot(folder: Path) -> dict[str, str]:
    """Every file and folder under ``folder`` with a hash of its bytes."""
    out = {}
    for p in sorted(folder.rglob("*")):
        rel = str(p.relative_to(folder))
        out[rel] = "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _listing(folder: Path) -> dict[str, tuple[int, int]]:
    """Names, sizes and modification times (for large read-only inputs)."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*"))}


@pytest.fixture
def user_cohort(tmp_path: Path) -> Path:
    """A user's own cohort folder (no marker)."""
    d = tmp_path / "my_cohort"
    (d / "images").mkdir(parents=True)
    (d / "cases.csv").write_text("patient_id,outcome\np1,1\np2,0\n")
    (d / "rois.csv").write_text("patient_id,roi,image,mask,label\n")
    (d / "images" / "p1.nii.gz").write_bytes(bytes(range(256)))
    (d / "cohort.json").write_text(json.dumps({"simulated": False}))
    return d


@pytest.fixture
def fake_sources(tmp_path: Path) -> tuple[Path, Path]:
    """A lumbar_mri folder and a shared-data folder with the expected (empty) files."""
    lumbar = tmp_path / "lumbar_mri"
    (lumbar / "VB3").mkdir(parents=True)
    shared = tmp_path / "shared"
    for p in sources._real_ct_files(shared).values():
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"")
    return lumbar, shared


def test_refuses_a_user_folder(tmp_path, user_cohort, fake_sources):
    lumbar, shared = fake_sources
    before = _snapshot(user_cohort)
    with pytest.raises(OutputFolderError, match="refusing to write into .* not built by "
                                                "vcfnb.sources"):
        sources.lumbar_mri_cohort(lumbar, user_cohort, root=tmp_path)
    with pytest.raises(OutputFolderError, match="may be your own cohort"):
        sources.real_ct_cohort(shared, user_cohort, root=tmp_path)
    assert _snapshot(user_cohort) == before
    assert not list(tmp_path.glob(".my_cohort.*"))  # no temporary folder left behind


def test_refuses_another_builders_output_and_inputs(tmp_path, fake_sources):
    lumbar, shared = fake_sources
    other = tmp_path / "other"
    other.mkdir()
    (other / MARKER).write_text(json.dumps({"builder": "real_ct_cohort", "key": "x"}))
    before = _snapshot(other)
    with pytest.raises(OutputFolderError, match="output of 'real_ct_cohort'"):
        sources.lumbar_mri_cohort(lumbar, other, root=tmp_path)
    assert _snapshot(other) == before
    for src, build in ((lumbar, sources.lumbar_mri_cohort), (shared, sources.real_ct_cohort)):
        inside = src / "cohort"
        with pytest.raises(OutputFolderError, match="overlaps the input"):
            build(src, inside, root=tmp_path)
        assert not inside.exists()


def test_ensure_lumbar_cohort_never_takes_a_cohort_dir(tmp_path, fake_sources, monkeypatch):
    monkeypatch.delenv(sources.DATA_DIR_ENV, raising=False)
    lumbar, _ = fake_sources
    assert sources.ensure_lumbar_cohort("", "my/cohort", root=tmp_path) == "my/cohort"
    with pytest.raises(ValueError, match="not both"):
        sources.ensure_lumbar_cohort(str(lumbar), "data/cohorts/mine", root=tmp_path)
    assert not (tmp_path / "data").exists()


@pytest.mark.realdata
@pytest.mark.slow
def test_real_lumbar_cohort(shared_data, tmp_path, user_cohort, monkeypatch):
    monkeypatch.delenv(sources.DATA_DIR_ENV, raising=False)
    src = shared_data / "lumbar_mri"
    if not src.is_dir():
        pytest.skip(f"{src} is absent")
    src_before = _listing(src)
    rel = sources.ensure_lumbar_cohort(str(src), "", seed=0, root=tmp_path)
    assert rel.startswith("data/cohorts/real-lumbar-")
    out = tmp_path / rel
    cohort = io.load_cohort(out, require_outcome=False)
    assert cohort.problems.empty, cohort.problems
    assert not cohort.simulated and "outcome" not in cohort.cases
    assert len(cohort.cases) == 23 and (cohort.rois.groupby("patient_id").size() == 8).all()
    marker = json.loads((out / MARKER).read_text(encoding="utf-8"))
    assert marker["builder"] == "lumbar_mri_cohort" and out.name.endswith(marker["key"])
    # reused, not rebuilt; another seed gives another folder
    stamp = (out / MARKER).stat().st_mtime_ns
    assert sources.ensure_lumbar_cohort(str(src), "", seed=0, root=tmp_path) == rel
    assert (out / MARKER).stat().st_mtime_ns == stamp
    # a user's folder is refused even with real data, and stays byte-identical
    before = _snapshot(user_cohort)
    with pytest.raises(OutputFolderError, match="not built by vcfnb.sources"):
        sources.lumbar_mri_cohort(src, user_cohort, seed=0, root=tmp_path)
    assert _snapshot(user_cohort) == before
    assert _listing(src) == src_before  # the input was only read


@pytest.mark.realdata
def test_real_ct_cohort(shared_data, tmp_path, user_cohort, monkeypatch):
    monkeypatch.delenv(sources.DATA_DIR_ENV, raising=False)
    if not (shared_data / "tptbox" / "sample_ct").is_dir():
        pytest.skip("tptbox/sample_ct is absent")
    src_before = {d: _listing(shared_data / d) for d in ("tptbox", "totalseg")}
    out = sources.real_ct_cohort(shared_data, root=tmp_path)
    assert out.parent == (tmp_path / "data" / "cohorts").resolve()
    assert out.name.startswith("real-ct-")
    cohort = io.load_cohort(out, require_outcome=False)
    assert cohort.problems.empty, cohort.problems
    assert not cohort.simulated
    assert set(cohort.cases.patient_id) == {"tptbox_sample_ct", "totalseg_example_ct"}
    assert set(cohort.rois.loc[cohort.rois.patient_id == "totalseg_example_ct", "roi"]) == {
        "T12", "L1", "L2"}
    # other options: a new folder by default; into an explicit folder of its own: rebuilt
    out2 = sources.real_ct_cohort(shared_data, totalseg_levels=("L1",), root=tmp_path)
    assert out2 != out and out.is_dir()
    out3 = sources.real_ct_cohort(shared_data, out, totalseg_levels=("L1",), root=tmp_path)
    assert out3 == out
    assert set(io.load_cohort(out, require_outcome=False).rois.roi) >= {"L1"}
    assert "T12" not in set(io.load_cohort(out, require_outcome=False).rois.roi)
    before = _snapshot(user_cohort)
    with pytest.raises(OutputFolderError):
        sources.real_ct_cohort(shared_data, user_cohort, root=tmp_path)
    assert _snapshot(user_cohort) == before
    assert {d: _listing(shared_data / d) for d in ("tptbox", "totalseg")} == src_before


def test_data_dir_env_moves_cohorts_and_cache(tmp_path, monkeypatch):
    """``VCFNB_DATA_DIR`` moves every default location of generated data out of the project:
    the built-in cohorts (notebooks, ``vcfnb cohorts``), the builders' output and the feature
    cache (notebooks, ``check-cohort``, ``vcfnb extract``/``predict``); unset, they are under
    ``<project>/data``."""
    import argparse

    from vcfnb import cli, report, runner, synth

    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    (project / "notebooks").mkdir(parents=True)
    (project / "params").mkdir()
    monkeypatch.chdir(project)
    made: list[Path] = []
    monkeypatch.setattr(synth, "make_cohort", lambda gen, folder, **kw: made.append(Path(folder)))
    monkeypatch.setattr(io, "load_cohort", lambda folder, **kw: Path(folder))
    no_flags = argparse.Namespace(no_cache=False, cache=None)

    def locations() -> dict[str, Path]:
        made.clear()
        run = report.start_run("metastasis_lytic_blastic",
                               {"out_dir": str(tmp_path / "out"), "seed": 3}, load=False)
        cohort = report.resolve_cohort(run)
        assert runner.main(["cohorts", "--size", "smoke"]) == 0
        return {"data": sources.data_root(), "data_of_root": sources.data_root(project),
                "notebook_cache": run.cache_dir, "cohort": cohort.parent,
                "generated": made[0].parent, "cohorts_command": made[-1].parent,
                "builder": sources._output(None, "real-ct", "k", project).parent,
                "cli_cache": cli._cache_dir(no_flags)}

    monkeypatch.delenv(sources.DATA_DIR_ENV, raising=False)
    default = locations()
    data = (project / "data").resolve()
    assert default == {"data": data, "data_of_root": data, "notebook_cache": data / "cache",
                       "cohort": data / "cohorts", "generated": data / "cohorts",
                       "cohorts_command": data / "cohorts", "builder": data / "cohorts",
                       "cli_cache": data / "cache"}
    monkeypatch.setenv(sources.DATA_DIR_ENV, str(elsewhere))
    moved = locations()
    e = elsewhere.resolve()
    assert moved == {"data": e, "data_of_root": e, "notebook_cache": e / "cache",
                     "cohort": e / "cohorts", "generated": e / "cohorts",
                     "cohorts_command": e / "cohorts", "builder": e / "cohorts",
                     "cli_cache": e / "cache"}
    # the notebook's built-in cohort, then `vcfnb cohorts --size smoke`: one per study
    assert [f.name for f in made] == ["metastasis-smoke-seed3-signal1"] + [
        f"{g}-smoke-seed0-signal1" for g in synth.STUDIES]
    assert not (project / "data").exists()
