"""The ``vcfnb`` command line: ``vcfnb --help`` and ``vcfnb <command> --help`` are the reference.

``reproduce``, ``check-params`` and ``check-cohort`` hand over to :mod:`vcfnb.runner` (the same
code ``make reproduce`` runs); ``cohort from-folders`` / ``cohort from-totalseg`` call
:mod:`vcfnb.builders`; ``extract`` writes a cached feature table with
:func:`vcfnb.features.extract`; ``predict`` applies a run's saved models
(:func:`vcfnb.bundle.predict`).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from vcfnb import __version__

_SETTINGS = Path(__file__).with_name("settings")  # the packaged pyradiomics settings

_EXAMPLES = """\
examples:
  vcfnb reproduce --study osteoporosis_mri --params smoke
  vcfnb check-cohort --study ovf_prediction_ct --params my_site --features-only
  vcfnb cohort from-folders my_cohort --clinical clinical.xlsx \\
      --column patient_id=ID --column outcome="Malignant (y/n)" --outcome-value y=1 \\
      --outcome-value n=0 --images "scans/{patient_id}_T2.nii.gz" --sequence T2 \\
      --masks "segs/{patient_id}_seg.nii.gz" --roi fractured_body=1
  vcfnb cohort from-totalseg ct_cohort --study ovf \\
      --scan P001 ct/P001.nii.gz totalseg/P001.nii.gz --body P001 totalseg/P001_body.nii.gz
  vcfnb extract --cohort my_cohort --settings ovf_ct --out features.csv
  vcfnb predict --run reports/osteoporosis_mri/smoke --cohort new_patients --out scores.csv
"""

_FOLDERS_EXAMPLE = """\
example (two sequences, one mask file with L1-L4 = labels 1-4):
  vcfnb cohort from-folders my_cohort --clinical clinical.xlsx \\
      --column patient_id=ID --column age=Age \\
      --images T1="mri/{patient_id}_T1.nii.gz" --images T2="mri/{patient_id}_T2.nii.gz" \\
      --masks "seg/{patient_id}.nii.gz" --roi L1=1 --roi L2=2 --roi L3=3 --roi L4=4
"""


def _pairs(items: list[str] | None, what: str) -> dict[str, str]:
    """``["a=1", "b=x"]`` → ``{"a": "1", "b": "x"}`` (argparse ``KEY=VALUE`` options)."""
    out: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise SystemExit(f"vcfnb: {what} must be KEY=VALUE, got {item!r}")
        out[key.strip()] = value.strip()
    return out


def _number_or_text(value: str) -> Any:
    try:
        return int(value)
    except ValueError:
        return value


def _outcome_values(items: list[str] | None) -> dict[str, int] | None:
    values = _pairs(items, "--outcome-value")
    bad = {k: v for k, v in values.items() if v not in ("0", "1")}
    if bad:
        raise SystemExit(f"vcfnb: --outcome-value maps a raw value to 0 or 1, got {bad}")
    return {k: int(v) for k, v in values.items()} or None


def _report_build(res) -> int:
    c = res.cohort
    print(f"wrote {res.folder}: {len(c.cases)} case(s), {len(c.rois)} valid ROI row(s)")
    if len(res.skipped):
        print(f"{len(res.skipped)} input(s) skipped:")
        print(res.skipped.to_string(index=False))
    if len(c.problems):
        print(f"{len(c.problems)} validation problem(s) in what was written:")
        print(c.problems.to_string(index=False))
        return 1
    print("validated: no problem")
    return 0


def _build(build, *args: Any, **kwargs: Any) -> int:
    """Run a :mod:`vcfnb.builders` function and report what it wrote (exit status 2 when the
    builder refuses its inputs or output folder)."""
    from vcfnb import builders

    try:
        res = build(*args, **kwargs)
    except builders.BuildError as exc:
        print(f"vcfnb: {exc}", file=sys.stderr)
        return 2
    return _report_build(res)


def _cache_dir(args: argparse.Namespace) -> Path | None:
    """``--cache``, else the feature cache under the data folder (``data/cache`` of the project,
    or ``$VCFNB_DATA_DIR/cache``: :func:`vcfnb.sources.data_root`); None with ``--no-cache``."""
    if args.no_cache:
        return None
    if args.cache:
        return Path(args.cache)
    from vcfnb.sources import data_root

    return data_root() / "cache"


# ---------------------------------------------------------------------------------------------
# commands
# ---------------------------------------------------------------------------------------------
def _runner(argv: list[str]) -> int:
    from vcfnb import runner

    return int(runner.main(argv) or 0)


def _cmd_reproduce(args: argparse.Namespace) -> int:
    argv = ["reproduce"]
    for s in args.study or []:
        argv += ["--study", s]
    if args.params:
        argv += ["--params", args.params]
    if args.force:
        argv.append("--force")
    if args.lanes is not None:
        argv += ["--lanes", str(args.lanes)]
    return _runner(argv)


def _cmd_check_params(args: argparse.Namespace) -> int:
    return _runner(["check-params"])


def _cmd_timings(args: argparse.Namespace) -> int:
    return _runner(["timings", "--top", str(args.top)]
                   + (["--reports", args.reports] if args.reports else []))


def _cmd_check_cohort(args: argparse.Namespace) -> int:
    argv = ["check-cohort", "--study", args.study]
    if args.params:
        argv += ["--params", args.params]
    if args.cohort:
        argv += ["--cohort", args.cohort]
    if args.features_only:
        argv.append("--features-only")
    return _runner(argv)


def _patterns(items: list[str], sequence: str | None, what: str) -> str | dict[str, str]:
    """``--images`` values: one plain pattern, or ``SEQ=pattern`` per sequence."""
    if len(items) == 1 and "=" not in items[0].split("{", 1)[0]:
        return {sequence or "": items[0]} if sequence is not None else items[0]
    if sequence is not None:
        raise SystemExit(f"vcfnb: --sequence goes with one {what} pattern; with several give "
                         f"SEQ=pattern")
    return _pairs(items, what)


def _cmd_from_folders(args: argparse.Namespace) -> int:
    from vcfnb import builders

    columns = _pairs(args.column, "--column")
    images = _patterns(args.images, args.sequence, "--images")
    masks: str | dict[str, str] = _patterns(args.masks, None, "--masks")
    if isinstance(masks, dict) and isinstance(images, dict) and set(masks) != set(images):
        raise SystemExit(f"vcfnb: --masks sequences {sorted(masks)} differ from --images "
                         f"sequences {sorted(images)}")
    rois = {k: _number_or_text(v) for k, v in _pairs(args.roi, "--roi").items()}
    return _build(builders.from_folders, args.out, clinical=args.clinical, columns=columns,
                  images=images, masks=masks, rois=rois,
                  outcome_values=_outcome_values(args.outcome_value), reader=args.reader)


def _cmd_from_totalseg(args: argparse.Namespace) -> int:
    from vcfnb import builders

    bodies = {pid: path for pid, path in (args.body or [])}
    scans = [{"patient_id": pid, "image": image, "segmentation": seg, "body": bodies.pop(pid, None)}
             for pid, image, seg in args.scan]
    if bodies:
        raise SystemExit(f"vcfnb: --body for patient(s) without --scan: {sorted(bodies)}")
    columns = _pairs(args.column, "--column") or None
    return _build(builders.from_totalseg, args.out, scans, study=args.study, levels=args.levels,
                  sequence=args.sequence, clinical=args.clinical, columns=columns,
                  outcome_values=_outcome_values(args.outcome_value))


def _cmd_extract(args: argparse.Namespace) -> int:
    from vcfnb import features, io

    settings: str | Path = args.settings
    packaged = features.packaged_settings()
    if not Path(settings).is_file():
        if settings not in packaged:
            print(f"vcfnb: settings {settings!r} is neither a file nor a packaged settings name "
                  f"({', '.join(packaged)})", file=sys.stderr)
            return 2
        settings = packaged[settings]
    try:
        cohort = io.load_cohort(args.cohort, require_outcome=False, mask_grid=args.mask_grid,
                                progress=not args.quiet)
    except io.CohortError as exc:
        print(f"vcfnb: {exc}", file=sys.stderr)
        return 2
    if len(cohort.problems):
        print(f"{len(cohort.problems)} validation problem(s); these rows are left out:",
              file=sys.stderr)
        print(cohort.problems.to_string(index=False), file=sys.stderr)
    if cohort.rois.empty:
        print("vcfnb: no valid ROI row to extract", file=sys.stderr)
        return 1
    cache = _cache_dir(args)
    feats = features.extract(cohort.rois, settings, n_jobs=args.jobs, cache_dir=cache,
                             progress=not args.quiet)
    out = Path(args.out)
    io.write_table(feats, out)
    fail = features.failures_table(feats)
    hits = feats.attrs.get("cache", {}).get("hits", 0)
    print(f"wrote {out}: {len(feats)} ROI(s) x {feats.shape[1]} columns "
          f"({hits} ROI(s) from the cache{'' if cache is None else f' in {cache}'})")
    if len(fail):
        fpath = out.with_name(out.name.removesuffix(".csv") + "_failures.csv")
        io.write_table(fail, fpath)
        print(f"{fail[['row']].drop_duplicates().shape[0]} ROI(s) failed (NaN features); "
              f"reasons in {fpath}", file=sys.stderr)
    return 1 if len(fail) or len(cohort.problems) else 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from vcfnb import bundle, io

    cache = _cache_dir(args)
    try:
        table = bundle.predict(args.run, args.cohort, args.out, cache_dir=cache,
                               n_jobs=args.jobs, models=args.model, progress=not args.quiet)
    except (FileNotFoundError, bundle.CohortMismatchError, bundle.UntrustedModelError,
            io.CohortError, ValueError) as exc:
        print(f"vcfnb: {exc}", file=sys.stderr)
        return 2
    flagged = int((table["out_of_range_features"] != "").sum())
    print(f"wrote {args.out}: {table['patient_id'].nunique()} patient(s) x "
          f"{table['model'].nunique()} model(s); {flagged} row(s) with features outside the "
          f"training range; {int(table['score'].isna().sum())} row(s) without a score")
    return 0


# ---------------------------------------------------------------------------------------------
# parser
# ---------------------------------------------------------------------------------------------
class _Formatter(argparse.HelpFormatter):
    """Wraps prose paragraphs; keeps paragraphs with indented lines (examples) as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        out = []
        for para in text.split("\n\n"):
            lines = para.splitlines(keepends=True)
            if any(ln.startswith(" ") for ln in lines):
                out.append("".join(indent + ln for ln in lines).rstrip("\n"))
            else:
                out.append(super()._fill_text(para, width, indent))
        return "\n\n".join(out) + ("\n" if text.endswith("\n") else "")


def _add_clinical_options(p: argparse.ArgumentParser, *, required: bool) -> None:
    """``--clinical``, ``--column``, ``--outcome-value`` of the cohort builders."""
    p.add_argument("--clinical", required=required, metavar="FILE",
                   help="clinical table, .csv or .xlsx, one row per patient"
                   + ("" if required else " (optional)"))
    p.add_argument("--column", action="append", required=required, metavar="COHORT=CLINICAL",
                   help="cohort column = clinical column (repeatable); patient_id is required, "
                   "outcome (0/1) and covariates optional")
    p.add_argument("--outcome-value", action="append", metavar="RAW=0|1",
                   help="map a raw outcome value to 0/1, e.g. y=1 (repeatable)")


def _add_extraction_options(p: argparse.ArgumentParser, *, jobs: int | None,
                            jobs_help: str) -> None:
    """``--cache``, ``--no-cache``, ``--jobs``, ``--quiet`` of the commands that extract."""
    p.add_argument("--cache", metavar="DIR",
                   help="feature cache folder (default: data/cache of the project folder, or "
                   "$VCFNB_DATA_DIR/cache)")
    p.add_argument("--no-cache", action="store_true", help="do not read or write a cache")
    p.add_argument("--jobs", type=int, default=jobs, metavar="N", help=jobs_help)
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    """The ``vcfnb`` argument parser (its help texts are the command-line reference)."""
    fmt = _Formatter
    ap = argparse.ArgumentParser(
        prog="vcfnb", epilog=_EXAMPLES, formatter_class=fmt,
        description="Spine radiomics studies as executable, leakage-free reports: run the "
                    "study notebooks, check and build cohorts, extract features.")
    ap.add_argument("--version", action="version", version=f"vcfnb {__version__}")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("reproduce", formatter_class=fmt,
                       help="run study notebooks with their params files into reports/",
                       description="Run every notebook x params/<study>/*.yaml (or a selection) "
                       "through papermill into reports/<study>/<run>/; unchanged runs are "
                       "skipped. Run it in the project folder (the one holding notebooks/ "
                       "and params/). Same as `make reproduce`.")
    p.add_argument("--study", action="append", metavar="NOTEBOOK",
                   help="only this notebook, e.g. osteoporosis_mri (repeatable)")
    p.add_argument("--params", metavar="NAME", help="only this params file name, e.g. smoke")
    p.add_argument("--force", action="store_true", help="re-run unchanged runs too")
    p.add_argument("--lanes", type=int, metavar="N",
                   help="notebooks run at a time, longest first (default: $VCFNB_LANES or 1)")
    p.set_defaults(func=_cmd_reproduce)

    p = sub.add_parser("check-params", help="validate every params file against its notebook",
                       description="Check every params/<study>/*.yaml against the parameters "
                       "its notebook declares (unknown keys, wrong types); runs nothing.")
    p.set_defaults(func=_cmd_check_params)

    p = sub.add_parser("timings", help="where the time of the executed runs went",
                       description="Per run and per notebook section, from the durations "
                       "papermill recorded in reports/<study>/<run>/<study>.ipynb: the runs with "
                       "their total, then each run's largest steps (Markdown). Exit status 1 "
                       "when no executed run is found.")
    p.add_argument("--reports", metavar="DIR", help="reports folder (default: ./reports)")
    p.add_argument("--top", type=int, default=5, help="steps listed per run (default 5)")
    p.set_defaults(func=_cmd_timings)

    p = sub.add_parser("check-cohort", formatter_class=fmt,
                       help="pre-flight check of a study's cohort (nothing is extracted)",
                       description="Load and validate a study's cohort and check it against "
                       "the study's declared requirements (levels, sequences, compartments, "
                       "outcome and class counts); every unmet requirement is listed with a "
                       "fix. Exit status 1 when something is unmet.")
    p.add_argument("--study", required=True, metavar="NOTEBOOK",
                   help="notebook name, e.g. ovf_prediction_ct")
    p.add_argument("--params", metavar="P",
                   help="params file: a path, or a name under params/<study>/")
    p.add_argument("--cohort", metavar="DIR", help="cohort folder (overrides cohort_dir)")
    p.add_argument("--features-only", action="store_true",
                   help="check everything but the outcome (a cohort without labels)")
    p.set_defaults(func=_cmd_check_cohort)

    cp = sub.add_parser("cohort", help="build a cohort folder from scans, masks and a table",
                        description="Build a new, self-contained cohort folder (cases.csv, "
                        "rois.csv, copies of the files they name) and validate it. The output "
                        "folder must not exist or be empty and must lie outside the inputs.")
    csub = cp.add_subparsers(dest="builder", required=True, metavar="BUILDER")
    p = csub.add_parser("from-folders", formatter_class=fmt,
                        help="image/mask file patterns + a clinical CSV/XLSX",
                        description="One image and one mask per patient (and sequence), found "
                        "by patterns with the placeholder {patient_id} (glob wildcards allowed, "
                        "exactly one match), for every patient of a clinical table.",
                        epilog=_FOLDERS_EXAMPLE)
    p.add_argument("out", help="new cohort folder")
    _add_clinical_options(p, required=True)
    p.add_argument("--images", action="append", required=True, metavar="[SEQ=]PATTERN",
                   help="image pattern, e.g. \"scans/{patient_id}_T2.nii.gz\" (a file or a "
                   "DICOM series folder); repeat as SEQ=PATTERN for several sequences")
    p.add_argument("--sequence", metavar="SEQ",
                   help="sequence name for a single --images pattern, e.g. T2")
    p.add_argument("--masks", action="append", required=True, metavar="[SEQ=]PATTERN",
                   help="mask pattern (label image, DICOM SEG or RTSTRUCT), one for all "
                   "sequences or SEQ=PATTERN per sequence")
    p.add_argument("--roi", action="append", required=True, metavar="NAME=LABEL",
                   help="ROI name = mask label (repeatable), e.g. L1=1; for SEG/RTSTRUCT the "
                   "segment label or ROI name")
    p.add_argument("--reader", default="1", help="reader id of the ROI rows (default 1)")
    p.set_defaults(func=_cmd_from_folders)

    p = csub.add_parser("from-totalseg", formatter_class=fmt,
                        help="TotalSegmentator output -> the vertebral levels a study needs",
                        description="ROIs named by level (T12, L1, ...) from TotalSegmentator's "
                        "'total' output: a multi-label NIfTI, or its folder with one file per "
                        "class (vertebrae_L1.nii.gz, ...). ovf: T11-L2 vertebral bodies (the "
                        "ovf notebook splits each into cortical shell and cancellous core); "
                        "osteoporosis: L1-L4. With a vertebral-body mask (the vertebrae_body "
                        "task, 1 = body; found automatically in a class folder) each level is "
                        "restricted to its body. Without --clinical, cases.csv has no outcome.")
    p.add_argument("out", help="new cohort folder")
    p.add_argument("--scan", action="append", nargs=3, required=True,
                   metavar=("PATIENT_ID", "IMAGE", "SEGMENTATION"),
                   help="one scan: id, the image TotalSegmentator ran on (file or DICOM "
                   "folder), its segmentation (file or class folder); repeatable")
    p.add_argument("--body", action="append", nargs=2, metavar=("PATIENT_ID", "BODY_MASK"),
                   help="vertebral-body mask of a scan (repeatable)")
    p.add_argument("--study", choices=["ovf", "osteoporosis"], default="ovf",
                   help="picks the levels and the default sequence (default: ovf)")
    p.add_argument("--levels", nargs="+", metavar="LEVEL",
                   help="levels to write instead of the study's, e.g. T12 L1 L2")
    p.add_argument("--sequence", help="sequence of the ROI rows (default: CT for ovf, T1 for "
                   "osteoporosis)")
    _add_clinical_options(p, required=False)
    p.set_defaults(func=_cmd_from_totalseg)

    p = sub.add_parser("extract", formatter_class=fmt,
                       help="cohort + pyradiomics settings -> feature table (cached)",
                       description="Validate a cohort and extract radiomics features of every "
                       "valid ROI row into a CSV (one row per ROI). Results are cached by file "
                       "content and settings, so a re-run extracts only what changed. Rows "
                       "with validation problems are listed and left out; ROIs that fail keep "
                       "NaN features and their reasons go to <out>_failures.csv. Exit status 1 "
                       "when anything was left out or failed.")
    p.add_argument("--cohort", required=True, metavar="DIR", help="cohort folder")
    p.add_argument("--settings", required=True, metavar="YAML",
                   help="pyradiomics parameter file, or a packaged name ("
                   + ", ".join(sorted(f.stem for f in _SETTINGS.glob("*.yaml"))) + ")")
    p.add_argument("--out", required=True, metavar="FILE.csv", help="feature table to write")
    p.add_argument("--mask-grid", choices=["strict", "resample"], default="strict",
                   help="masks on another grid of the same physical space: strict = a "
                   "problem (default), resample = resample them onto the image grid")
    _add_extraction_options(p, jobs=None, jobs_help="worker processes (default: all CPUs)")
    p.set_defaults(func=_cmd_extract)

    p = sub.add_parser("predict", formatter_class=fmt,
                       help="apply a run's saved models to a cohort -> one row per patient",
                       description="Load the models a study run saved (reports/<study>/<run>/"
                       "models/), refuse a cohort whose sequences, ROIs or readers do not "
                       "match their feature recipe, extract the features with the saved "
                       "pyradiomics settings (cached) and write patient_id, model, score, "
                       "predicted_class, out_of_range_features (score on the scale of the "
                       "run's predictions.csv; class = score >= the saved cut-off). Exit "
                       "status 2 when the cohort is refused.")
    p.add_argument("--run", required=True, metavar="DIR",
                   help="report folder of the run, e.g. reports/osteoporosis_mri/smoke")
    p.add_argument("--cohort", required=True, metavar="DIR", help="cohort folder to score")
    p.add_argument("--out", required=True, metavar="FILE.csv", help="predictions to write")
    p.add_argument("--model", action="append", metavar="NAME",
                   help="only this saved model (repeatable; default: all)")
    _add_extraction_options(p, jobs=1, jobs_help="worker processes")
    p.set_defaults(func=_cmd_predict)
    return ap


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``vcfnb`` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
