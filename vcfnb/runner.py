"""Run study notebooks through papermill: ``python -m vcfnb.runner reproduce``.

For every ``notebooks/<study>.ipynb`` and every ``params/<study>/<run>.yaml`` the runner

1. loads the params file with the safe YAML loader and rejects unknown keys and wrong types
   **before** running (papermill itself only warns about an unknown parameter and runs on with
   the default, so a typo would silently change a study);
2. executes the notebook with the ``vcfnb`` kernel into ``reports/<study>/<run>/<study>.ipynb``;
3. exports an HTML report without code cells next to it;
4. skips the run when neither the notebook, the params file nor the vcfnb package changed since
   the last successful run (``--force`` re-runs).
"""
from __future__ import annotations

import argparse
import difflib
import hashlib
import json
import sys
import time
from pathlib import Path

import pandas as pd

from vcfnb import __version__, io

KERNEL = "vcfnb"
_TYPES = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,),
          "list": (list,), "dict": (dict,)}


class ParamsError(ValueError):
    """A params file does not match its notebook's parameters."""


def notebook_parameters(notebook: Path) -> dict:
    """Parameters declared in a notebook's ``parameters`` cell: name → (type name, default)."""
    import papermill as pm

    found = pm.inspect_notebook(str(notebook))
    return {k: (v["inferred_type_name"], v["default"]) for k, v in found.items()}


def validate_params(notebook: Path, params: dict, *, source: str = "params") -> dict:
    """Check ``params`` against the notebook's parameters; raise :class:`ParamsError` naming
    every unknown key and type mismatch. Returns ``params`` unchanged when valid."""
    declared = notebook_parameters(notebook)
    errors = []
    for key, value in params.items():
        if key not in declared:
            close = difflib.get_close_matches(key, list(declared), n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            errors.append(f"unknown parameter {key!r}{hint}")
            continue
        tname = declared[key][0].split("[")[0].strip().lower()
        ok = _TYPES.get(tname)
        if ok and not (isinstance(value, ok) and not (tname != "bool" and isinstance(value, bool)
                                                      and bool not in ok)):
            errors.append(f"parameter {key!r} must be {tname}, got {type(value).__name__} "
                          f"{value!r}")
    if errors:
        raise ParamsError(f"{source}: " + "; ".join(errors) +
                          f" — parameters of {notebook.name}: {sorted(declared)}")
    return params


def _package_hash() -> str:
    h = hashlib.sha256(__version__.encode())
    pkg = Path(__file__).resolve().parent
    for p in sorted(pkg.rglob("*")):
        if p.is_file() and p.suffix in (".py", ".yaml", ".json") and "__pycache__" not in p.parts:
            h.update(p.relative_to(pkg).as_posix().encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def run_stamp(notebook: Path, params: dict) -> str:
    h = hashlib.sha256()
    h.update(notebook.read_bytes())
    h.update(json.dumps(params, sort_keys=True).encode())
    h.update(_package_hash().encode())
    return h.hexdigest()


def scrub_notebook(executed: Path, params: dict, root: Path) -> Path:
    """Replace this machine's absolute paths in an executed notebook by placeholders.

    Papermill records the injected parameters (``out_dir``, ``cohort_dir``, ``cache_dir``) and
    the input/output paths; warnings quote library paths. Reports must not reveal the user's
    folders, so they become ``<report>``, ``<cohort>``, ``<cache>``, ``<project>``, ``<python>``
    and ``~``.
    """
    from vcfnb.report import scrub

    roots = [(root, "<project>"), (sys.prefix, "<python>")]
    for key, tag in (("out_dir", "<report>"), ("cohort_dir", "<cohort>"),
                     ("cache_dir", "<cache>")):
        value = params.get(key)
        if isinstance(value, str) and value and Path(value).is_absolute():
            roots.append((value, tag))
    text = executed.read_text(encoding="utf-8")
    return io.write_text(scrub(text, roots), executed)


def export_html(executed: Path) -> Path:
    """HTML export of an executed notebook without code cells (for readers)."""
    import nbformat
    from nbconvert import HTMLExporter

    nb = nbformat.read(str(executed), as_version=4)
    exporter = HTMLExporter(exclude_input=True, exclude_input_prompt=True,
                            exclude_output_prompt=True)
    body, _ = exporter.from_notebook_node(nb)
    return io.write_text(body, executed.with_suffix(".html"))


def run_notebook(notebook: Path, params_file: Path | None, root: Path, *, force: bool = False,
                 extra: dict | None = None) -> dict:
    """Execute one notebook with one params file; returns a status record."""
    import papermill as pm

    study = notebook.stem
    run_name = params_file.stem if params_file else "default"
    params = io.load_yaml(params_file) if params_file else {}
    params.update(extra or {})
    validate_params(notebook, params, source=str(params_file or notebook))
    out_dir = root / "reports" / study / run_name
    params = {**params, "out_dir": str(out_dir)}
    stamp = run_stamp(notebook, params)
    stamp_file = out_dir / ".run-stamp.json"
    if not force and stamp_file.is_file():
        prev = json.loads(stamp_file.read_text(encoding="utf-8"))
        if prev.get("stamp") == stamp and prev.get("status") in ("ok", "stopped"):
            return {"study": study, "run": run_name, "status": "unchanged (skipped)",
                    "seconds": 0.0}
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp_file.unlink(missing_ok=True)
    executed = out_dir / f"{study}.ipynb"
    t0 = time.perf_counter()
    status = "ok"
    try:
        pm.execute_notebook(str(notebook), str(executed), parameters=params, kernel_name=KERNEL,
                            cwd=str(notebook.parent), progress_bar=False,
                            report_mode=False, log_output=False)
    except pm.PapermillExecutionError as exc:
        if exc.ename == "StopRun":
            status = "stopped"
        else:
            status = f"failed: {exc.ename}: {exc.evalue}"
    seconds = time.perf_counter() - t0
    if executed.is_file():
        scrub_notebook(executed, params, root)
        export_html(executed)
    if status in ("ok", "stopped"):
        io.write_json({"stamp": stamp, "status": status, "seconds": round(seconds, 1)},
                      stamp_file)
    return {"study": study, "run": run_name, "status": status, "seconds": round(seconds, 1)}


def discover(root: Path, studies: list[str] | None = None) -> list[tuple[Path, Path | None]]:
    """(notebook, params file) pairs: every params/<study>/*.yaml of every notebook."""
    pairs = []
    for nb in sorted((root / "notebooks").glob("*.ipynb")):
        if studies and nb.stem not in studies:
            continue
        files = sorted((root / "params" / nb.stem).glob("*.yaml"))
        pairs.extend((nb, f) for f in files) if files else pairs.append((nb, None))
    return pairs


def check_all(root: Path) -> list[str]:
    """Validate every params file against its notebook; returns the error messages."""
    errors = []
    for nb, pf in discover(root):
        if pf is None:
            continue
        try:
            validate_params(nb, io.load_yaml(pf), source=str(pf.relative_to(root)))
        except (ParamsError, ValueError) as exc:
            errors.append(str(exc))
    return errors


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m vcfnb.runner", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    rp = sub.add_parser("reproduce", help="run every notebook with every params file")
    rp.add_argument("--study", action="append", help="only this notebook (repeatable)")
    rp.add_argument("--params", help="only this params file name (e.g. smoke)")
    rp.add_argument("--force", action="store_true", help="re-run unchanged runs too")
    sub.add_parser("check-params", help="validate every params file against its notebook")
    cp = sub.add_parser("cohorts", help="generate the built-in simulated cohorts")
    cp.add_argument("--size", action="append", choices=["smoke", "paper"])
    args = ap.parse_args(argv)
    from vcfnb.report import project_root

    root = project_root()
    if args.cmd == "check-params":
        errors = check_all(root)
        for e in errors:
            print(e, file=sys.stderr)
        print(f"{len(errors)} params problem(s)")
        return 1 if errors else 0
    if args.cmd == "cohorts":
        from vcfnb import synth

        for study in synth.STUDIES:
            for size in args.size or ["smoke", "paper"]:
                out = root / "data" / "cohorts" / f"{study}-{size}-seed0-signal1"
                t0 = time.perf_counter()
                synth.make_cohort(study, out, size=size)
                print(f"{study:14s} {size:6s} {time.perf_counter() - t0:6.1f} s  {out}")
        return 0
    errors = check_all(root)
    if errors:
        for e in errors:
            print(e, file=sys.stderr)
        return 2
    records = []
    pairs = [(nb, pf) for nb, pf in discover(root, args.study)
             if args.params is None or (pf is not None and pf.stem == args.params)]
    for nb, pf in pairs:
        label = f"{nb.stem}/{pf.stem if pf else 'default'}"
        print(f"running {label} ...", flush=True)
        rec = run_notebook(nb, pf, root, force=args.force)
        print(f"  {rec['status']} in {rec['seconds']:.1f} s -> reports/{nb.stem}/{rec['run']}/",
              flush=True)
        records.append(rec)
    if records:
        table = pd.DataFrame(records)
        log = root / "reports" / "runs.csv"
        if log.is_file():  # keep earlier runs of other notebooks/params; replace re-run ones
            old = pd.read_csv(log, dtype=str)
            keep = ~old.set_index(["study", "run"]).index.isin(
                table.set_index(["study", "run"]).index)
            table = pd.concat([old[keep], table.astype({"seconds": float})], ignore_index=True)
        io.write_table(table, log)
        print(pd.DataFrame(records).to_string(index=False))
    failed = [r for r in records if r["status"].startswith("failed")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
