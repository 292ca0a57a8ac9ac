"""Run study notebooks through papermill: ``python -m vcfnb.runner reproduce``.

For every ``notebooks/<study>.ipynb`` and every ``params/<study>/<run>.yaml`` the runner

1. loads the params file with the safe YAML loader and rejects unknown keys and wrong types
   **before** running (papermill itself only warns about an unknown parameter and runs on with
   the default, so a typo would silently change a study);
2. executes the notebook with the ``vcfnb`` kernel into ``reports/<study>/<run>/<study>.ipynb``,
   with figures inline (PNG) whatever ``MPLBACKEND`` the runner itself has, printing one line per
   section of the notebook (and every ``VCFNB_PROGRESS_INTERVAL`` seconds while a cell runs);
3. exports an HTML report without code cells next to it;
4. skips the run when neither the notebook, the params file, the vcfnb package nor the cohort
   (``cases.csv``, ``rois.csv`` and the content of every image and mask they name) changed since
   the last successful run (``--force`` re-runs).

A params file that is invalid fails its own run only; the other runs go on.
"""
from __future__ import annotations

import argparse
import contextlib
import difflib
import hashlib
import json
import os
import re
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

import pandas as pd

from vcfnb import __version__, io

KERNEL = "vcfnb"
#: environment of the kernels the runner starts: matplotlib's inline backend, so that figures
#: are PNG outputs of the executed notebook and its HTML (not ``<Figure size ...>`` text), even
#: when the runner itself runs under ``MPLBACKEND=Agg``
KERNEL_ENV = {"MPLBACKEND": "module://matplotlib_inline.backend_inline"}
_TYPES = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,),
          "list": (list,), "dict": (dict,)}


#: top-level key of a params file that needs the real scans of ``../shared/data``
#: (``VCFNB_SHARED_DATA`` overrides the folder): ``requires_shared_data: true``. It is not a
#: notebook parameter; where that folder, or the file's ``cohort_dir`` built from it, is
#: absent the run is skipped with a note (status ``skipped: ...``), not failed.
SHARED_DATA_MARKER = "requires_shared_data"


def shared_data_dir(root: Path) -> Path:
    """The real-data folder: ``$VCFNB_SHARED_DATA`` or ``<root>/../shared/data``."""
    return Path(os.environ.get("VCFNB_SHARED_DATA") or Path(root).resolve().parent / "shared"
                / "data")


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


def _stat_key(path: Path) -> list:
    """Size and modification time of a file, or of every file of a folder (DICOM series)."""
    st = path.stat()
    key: list = [st.st_size, st.st_mtime_ns]
    if path.is_dir():
        key.append(sorted([f.relative_to(path).as_posix(), f.stat().st_size, f.stat().st_mtime_ns]
                          for f in path.rglob("*") if f.is_file()))
    return key


def _content_digest(path: Path, name: str, known: dict, files: dict) -> str:
    """Content digest of ``path`` (:func:`vcfnb.features.file_digest`, the extraction cache's).

    ``known`` maps ``name`` to ``[stat key, digest]`` from an earlier run: an unchanged size and
    modification time reuse that digest without reading the file again (the extraction cache's
    own rule). The digest used is recorded in ``files``."""
    from vcfnb.features import file_digest

    try:
        key = _stat_key(path)
    except OSError:
        return "missing"
    prev = known.get(name)
    if isinstance(prev, list) and len(prev) == 2 and prev[0] == key:
        digest = prev[1]
    else:
        try:
            digest = file_digest(path)
        except OSError:
            return "unreadable"
    files[name] = [key, digest]
    return digest


def _input_path(value: str, notebook: Path) -> Path:
    p = Path(value).expanduser()
    return p if p.is_absolute() else notebook.parent / p  # notebooks run in notebooks/


def cohort_digest(folder: Path, *, known: dict | None = None, files: dict | None = None,
                  prefix: str = "") -> str:
    """Digest of a cohort: ``cases.csv``, ``rois.csv`` and the content of every image and mask
    file (or DICOM folder) ``rois.csv`` names.

    Parameters
    ----------
    folder : Path
        The cohort folder.
    known : dict, optional
        File digests from an earlier run (see :func:`run_stamp`).
    files : dict, optional
        Receives the file digests used (for the next run's ``known``).
    prefix : str
        Prefix of the keys in ``files`` (the parameter naming this cohort).

    Returns
    -------
    str
        SHA-256 hex digest; changes when a table, an image or a mask changes.
    """
    known = {} if known is None else known
    files = {} if files is None else files
    h = hashlib.sha256()
    names: set[str] = set()
    for table in ("cases.csv", "rois.csv"):
        path = folder / table
        h.update(f"{table}\0".encode())
        h.update(path.read_bytes() if path.is_file() else b"<missing>")
    if (folder / "rois.csv").is_file():
        try:
            rois = pd.read_csv(folder / "rois.csv", dtype=str, keep_default_na=False)
        except Exception:  # noqa: BLE001 - a malformed table: its bytes are hashed above
            rois = pd.DataFrame()
        for col in ("image", "mask"):
            if col in rois:
                names.update(v.strip() for v in rois[col] if v.strip())
    for name in sorted(names):
        h.update(f"\0{name}\0".encode())
        h.update(_content_digest(folder / name, f"{prefix}{name}", known, files).encode())
    return h.hexdigest()


def run_stamp(notebook: Path, params: dict, *, known: dict | None = None,
              files: dict | None = None) -> str:
    """What a run's results depend on: the notebook, the params, the vcfnb package and the data.

    The data are every cohort folder among the params (``cohort_dir`` and any ``*_cohort_dir``;
    see :func:`cohort_digest`) and every other string parameter naming an existing file (e.g.
    ``settings_file``). The built-in cohort (empty ``cohort_dir``) is generated from the params,
    so the params stand for it. ``known`` carries the file digests of the previous run's stamp
    so that unchanged images are not read again; ``files`` receives the digests used.
    """
    known = {} if known is None else known
    files = {} if files is None else files
    h = hashlib.sha256()
    h.update(notebook.read_bytes())
    h.update(json.dumps(params, sort_keys=True).encode())
    h.update(_package_hash().encode())
    for key in sorted(params):
        value = params[key]
        if not isinstance(value, str) or not value or key in ("out_dir", "cache_dir"):
            continue
        path = _input_path(value, notebook)
        if key == "cohort_dir" or key.endswith("_cohort_dir"):
            h.update(f"\0{key}\0".encode())
            h.update(cohort_digest(path, known=known, files=files, prefix=f"{key}:").encode()
                     if path.is_dir() else b"<no folder>")
        elif path.is_file():
            h.update(f"\0{key}\0".encode())
            h.update(_content_digest(path, f"{key}:", known, files).encode())
    return h.hexdigest()


_ENV_LOCK = threading.Lock()
_ENV_STATE: dict[str, Any] = {"depth": 0, "saved": {}}


@contextlib.contextmanager
def _environ(env: dict[str, str]) -> Iterator[None]:
    """Set environment variables for what starts in the block (the kernel), then restore.

    Safe for runs in parallel lanes (threads): the first block to enter saves and sets the
    variables, the last to leave restores them (every caller passes :data:`KERNEL_ENV`)."""
    with _ENV_LOCK:
        if _ENV_STATE["depth"] == 0:
            _ENV_STATE["saved"] = {k: os.environ.get(k) for k in env}
        _ENV_STATE["depth"] += 1
        os.environ.update(env)
    try:
        yield
    finally:
        with _ENV_LOCK:
            _ENV_STATE["depth"] -= 1
            if _ENV_STATE["depth"] == 0:
                for k, v in _ENV_STATE["saved"].items():
                    if v is None:
                        os.environ.pop(k, None)
                    else:
                        os.environ[k] = v


def _clock(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _heading(cell: Any) -> str | None:
    """The first Markdown heading of a cell (text after the ``#``s, at most 80 characters), or
    None; the section name :class:`RunProgress` prints and :func:`timings` groups by."""
    for line in str(cell.get("source", "")).splitlines():
        if line.lstrip().startswith("#"):
            return line.lstrip().lstrip("#").strip()[:80] or None
    return None


class RunProgress:
    """Where a running notebook is, as plain log lines (no carriage returns: readable in CI).

    One line when the first code cell of a new section (markdown heading) starts, and one line
    after ``interval`` seconds without one (while the kernel starts or a long cell runs)::

          [osteoporosis_mri/smoke] 0:41 cell 23/88: Feature extraction
          [osteoporosis_mri/smoke] 1:41 cell 23/88: Feature extraction (this cell: 1:00)

    Parameters
    ----------
    label : str
        Run name shown in every line (``study/run``).
    n_cells : int
        Cells of the notebook.
    interval : float, optional
        Seconds between lines while a cell runs; default ``$VCFNB_PROGRESS_INTERVAL`` or 60.
    stream : file, optional
        Where to print (default ``sys.stdout``).
    """

    def __init__(self, label: str, n_cells: int, *, interval: float | None = None,
                 stream: TextIO | None = None):
        self.label, self.n_cells = label, int(n_cells)
        self.interval = float(os.environ.get("VCFNB_PROGRESS_INTERVAL", 60)
                              if interval is None else interval)
        self.stream = stream
        self.section = ""
        self.index: int | None = None
        self._new_section = True
        self._finishing = False
        self._t0 = self._cell_t0 = self._last = time.monotonic()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def _emit(self, suffix: str = "") -> None:
        self._last = now = time.monotonic()
        where = ("starting the kernel" if self.index is None else
                 "all cells run, saving" if self._finishing else
                 f"cell {self.index + 1}/{self.n_cells}"
                 f"{': ' + self.section if self.section else ''}{suffix}")
        print(f"  [{self.label}] {_clock(now - self._t0)} {where}",
              file=self.stream or sys.stdout, flush=True)

    def cell(self, index: int | None, cell: Any) -> None:
        """Called when the executor reaches a cell (markdown cells included)."""
        with self._lock:
            if cell.get("cell_type") == "markdown":
                heading = _heading(cell)
                if heading:
                    self.section, self._new_section = heading, True
                return
            if cell.get("cell_type") != "code" or not str(cell.get("source", "")).strip():
                return
            self.index, self._cell_t0 = index, time.monotonic()
            if self._new_section:
                self._new_section = False
                self._emit()

    def done(self, index: int | None) -> None:
        """Called when the executor has finished a cell."""
        if index is not None and index + 1 >= self.n_cells:
            self._finishing = True

    def _beat(self) -> None:
        wait = self.interval
        while not self._stop.wait(wait):
            with self._lock:
                wait = self.interval - (time.monotonic() - self._last)
                if wait <= 0.05:
                    self._emit(f" (this cell: {_clock(time.monotonic() - self._cell_t0)})")
                    wait = self.interval

    def __enter__(self) -> RunProgress:
        if self.interval > 0:
            self._thread = threading.Thread(target=self._beat, daemon=True,
                                            name="vcfnb-progress")
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


_ENGINE = "vcfnb-progress"


def _register_engine() -> str:
    """Register (once) a papermill engine that reports each cell start to a :class:`RunProgress`
    passed as ``vcfnb_progress``; returns its name."""
    from papermill.engines import NBClientEngine, papermill_engines

    if _ENGINE in papermill_engines._engines:
        return _ENGINE

    class _ProgressEngine(NBClientEngine):
        @classmethod
        def execute_managed_notebook(cls, nb_man, kernel_name, vcfnb_progress=None, **kwargs):
            if vcfnb_progress is not None:
                vcfnb_progress.n_cells = len(nb_man.nb.cells)  # with the injected parameters
                start = nb_man.cell_start

                complete = nb_man.cell_complete

                def cell_start(cell, cell_index=None, **kw):
                    vcfnb_progress.cell(cell_index, cell)
                    return start(cell, cell_index, **kw)

                def cell_complete(cell, cell_index=None, **kw):
                    vcfnb_progress.done(cell_index)
                    return complete(cell, cell_index, **kw)

                nb_man.cell_start, nb_man.cell_complete = cell_start, cell_complete
            return super().execute_managed_notebook(nb_man, kernel_name, **kwargs)

    papermill_engines.register(_ENGINE, _ProgressEngine)
    return _ENGINE


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


def mark_failed(out_dir: Path, status: str) -> None:
    """A run that crashed says so in its metrics.json (status ``failed`` and the error)."""
    from vcfnb import metrics

    f = out_dir / "metrics.json"
    if not f.is_file():
        return
    payload = json.loads(f.read_text(encoding="utf-8"))
    if not metrics.validate(payload) and payload.get("status") in ("running", "ok"):
        payload.update(status="failed", stopped_reason=status.removeprefix("failed: ")[:500])
        io.write_json(payload, f)


def _as_terminal(text: str) -> str:
    """Stream text as a terminal leaves it: within a line, each carriage return sends the
    cursor back to the start and later characters overwrite earlier ones; lines left blank by
    that (a progress bar that cleared itself) are dropped.

    >>> _as_terminal("\\rbar  10%\\rbar 100%\\ndone\\n")
    'bar 100%\\ndone\\n'
    >>> _as_terminal("\\rbar  50%\\r        \\r")
    ''
    """
    lines = []
    for line in re.findall(r"[^\n]*\n|[^\n]+$", text):
        body, end = (line[:-1], "\n") if line.endswith("\n") else (line, "")
        if "\r" in body:
            buf: list[str] = []
            for seg in body.split("\r"):
                buf[:len(seg)] = seg
            body = "".join(buf).rstrip()
            if not body:
                continue
        lines.append(body + end)
    return "".join(lines)


def tidy_streams(nb) -> int:
    """Merge consecutive stream outputs of each cell (same stream) and apply carriage returns
    (:func:`_as_terminal`), so a progress bar leaves its last state — as JupyterLab shows it —
    instead of one line per refresh in the saved notebook and its HTML report. Returns the
    number of stream outputs removed."""
    removed = 0
    for cell in nb.cells:
        outs = cell.get("outputs") or []
        if cell.get("cell_type") != "code" or not outs:
            continue
        merged: list = []
        for o in outs:
            if (o.get("output_type") == "stream" and merged
                    and merged[-1].get("output_type") == "stream"
                    and merged[-1].get("name") == o.get("name")):
                merged[-1]["text"] = str(merged[-1]["text"]) + str(o.get("text", ""))
            else:
                merged.append(o)
        kept = []
        for o in merged:
            if o.get("output_type") == "stream" and "\r" in str(o.get("text", "")):
                o["text"] = _as_terminal(str(o["text"]))
                if not o["text"].strip():
                    continue
            kept.append(o)
        removed += len(outs) - len(kept)
        cell["outputs"] = kept
    return removed


def insert_run_card(executed: Path, out_dir: Path) -> Path:
    """Put the run card (:func:`vcfnb.report.run_card_markdown`) on top of an executed notebook,
    so the report opens with what the run saw and did; progress bars keep only their last
    state (:func:`tidy_streams`)."""
    import nbformat

    from vcfnb.report import run_card_markdown

    nb = nbformat.read(str(executed), as_version=4)
    tidy_streams(nb)
    cell = nbformat.v4.new_markdown_cell(run_card_markdown(out_dir))
    cell.metadata["tags"] = ["vcfnb-run-card"]
    nb.cells = [c for c in nb.cells if "vcfnb-run-card" not in c.metadata.get("tags", [])]
    nb.cells.insert(0, cell)
    return io.write_text(nbformat.writes(nb), executed)


#: Tag of papermill's red "An Exception was encountered at ..." banner cells.
PAPERMILL_ERROR_TAG = "papermill-error-cell-tag"
#: Exceptions that end a run on purpose (:meth:`vcfnb.report.Run.stop`), not crashes.
DELIBERATE_STOPS = ("StopRun",)


def _clean_stop_for_readers(nb) -> bool:
    """A run the study stopped on purpose reads as a stop, not a crash (HTML report only).

    When the only error is a deliberate stop (:data:`DELIBERATE_STOPS`), papermill's banner
    cells are dropped, the stopping cell shows the study's own message instead of an error
    output, and the later (never executed) cells are replaced by one line saying they did not
    run. Any other error keeps papermill's banners and the traceback. Returns whether ``nb``
    was changed.
    """
    import nbformat

    errors = [(i, o) for i, c in enumerate(nb.cells) if c.cell_type == "code"
              for o in c.get("outputs", []) if o.get("output_type") == "error"]
    if not errors or any(o.get("ename") not in DELIBERATE_STOPS for _, o in errors):
        return False
    stop_at = errors[0][0]
    reason = str(errors[0][1].get("evalue") or "").strip()
    cell = nb.cells[stop_at]
    cell.outputs = [o for o in cell.outputs if o.get("output_type") != "error"] + [
        nbformat.v4.new_output("display_data", data={
            "text/markdown": f"**The study stopped here on purpose** (not an error): {reason}",
            "text/plain": f"Run stopped cleanly: {reason}"})]
    later = [c for c in nb.cells[stop_at + 1:] if PAPERMILL_ERROR_TAG not in
             c.metadata.get("tags", [])]
    kept = [c for c in nb.cells[:stop_at + 1] if PAPERMILL_ERROR_TAG not in
            c.metadata.get("tags", [])]
    if later:
        kept.append(nbformat.v4.new_markdown_cell(
            f"*The remaining {len(later)} cell(s) of the notebook did not run: the study "
            "stopped above, for the reason it gives.*"))
    nb.cells = kept
    return True


def export_html(executed: Path) -> Path:
    """HTML export of an executed notebook without code cells (for readers).

    A run stopped on purpose (:meth:`vcfnb.report.Run.stop`) shows the study's reason and no
    papermill exception banner; a crash keeps the banner and its traceback."""
    import nbformat
    from nbconvert import HTMLExporter

    nb = nbformat.read(str(executed), as_version=4)
    _clean_stop_for_readers(nb)
    exporter = HTMLExporter(exclude_input=True, exclude_input_prompt=True,
                            exclude_output_prompt=True)
    body, _ = exporter.from_notebook_node(nb)
    return io.write_text(body, executed.with_suffix(".html"))


def _previous_stamp(stamp_file: Path) -> dict:
    try:
        prev = json.loads(stamp_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return prev if isinstance(prev, dict) else {}


def run_notebook(notebook: Path, params_file: Path | None, root: Path, *, force: bool = False,
                 extra: dict | None = None, progress: bool = True) -> dict:
    """Execute one notebook with one params file; returns a status record.

    Raises :class:`ParamsError` (before anything runs) when the params file is unreadable or
    does not match the notebook's parameters. ``progress`` prints where the run is (see
    :class:`RunProgress`).
    """
    import papermill as pm

    study = notebook.stem
    run_name = params_file.stem if params_file else "default"
    source = str(params_file or notebook)
    try:
        params = io.load_yaml(params_file) if params_file else {}
    except (OSError, ValueError) as exc:
        raise ParamsError(f"{source}: {exc}") from None
    if params.pop(SHARED_DATA_MARKER, False):
        cohort = Path(str(params.get("cohort_dir") or "."))
        cohort = cohort if cohort.is_absolute() else root / cohort
        why = (f"the real-data folder {shared_data_dir(root)} is absent"
               if not shared_data_dir(root).is_dir() else
               f"its cohort {cohort} (built from the real data) does not exist yet"
               if not cohort.is_dir() else "")
        if why:
            return {"study": study, "run": run_name, "seconds": 0.0,
                    "status": f"skipped: {why} (`{SHARED_DATA_MARKER}: true`)"}
    params.update(extra or {})
    validate_params(notebook, params, source=source)
    out_dir = root / "reports" / study / run_name
    params = {**params, "out_dir": str(out_dir)}
    stamp_file = out_dir / ".run-stamp.json"
    prev = _previous_stamp(stamp_file)
    files: dict = {}
    stamp = run_stamp(notebook, params, known=prev.get("files") or {}, files=files)
    if not force and prev.get("stamp") == stamp and prev.get("status") in ("ok", "stopped"):
        return {"study": study, "run": run_name, "status": "unchanged (skipped)",
                "seconds": 0.0}
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp_file.unlink(missing_ok=True)
    executed = out_dir / f"{study}.ipynb"
    t0 = time.perf_counter()
    status = "ok"
    # cell count set by the engine (with papermill's injected parameters cell)
    reporter = RunProgress(f"{study}/{run_name}", 0) if progress else contextlib.nullcontext()
    try:
        with _environ(KERNEL_ENV), reporter:
            pm.execute_notebook(str(notebook), str(executed), parameters=params,
                                kernel_name=KERNEL, cwd=str(notebook.parent), progress_bar=False,
                                report_mode=False, log_output=False,
                                engine_name=_register_engine(),
                                vcfnb_progress=reporter if progress else None)
    except pm.PapermillExecutionError as exc:
        if exc.ename == "StopRun":
            status = "stopped"
        else:
            status = f"failed: {exc.ename}: {exc.evalue}"
    seconds = time.perf_counter() - t0
    if status.startswith("failed"):
        mark_failed(out_dir, status)
    if executed.is_file():
        insert_run_card(executed, out_dir)
        scrub_notebook(executed, params, root)
        export_html(executed)
    if status in ("ok", "stopped"):
        try:  # model card + CLEAR/METRICS checklist, from the files the run left
            from vcfnb import modelcard

            modelcard.write_reports(out_dir)
        except Exception as exc:  # noqa: BLE001 - a card problem must not stop other runs
            print(f"  [{study}/{run_name}] model card not written: {type(exc).__name__}: "
                  f"{exc}", file=sys.stderr, flush=True)
    if status in ("ok", "stopped"):
        io.write_json({"stamp": stamp, "status": status, "seconds": round(seconds, 1),
                       "files": files}, stamp_file)
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
            given = io.load_yaml(pf)
            given.pop(SHARED_DATA_MARKER, None)
            validate_params(nb, given, source=str(pf.relative_to(root)))
        except (ParamsError, ValueError) as exc:
            errors.append(str(exc))
    return errors


def check_cohort(root: Path, study: str, params_file: Path | None = None, *,
                 features_only: bool = False, extra: dict | None = None):
    """Pre-flight check of one study's cohort without running anything else.

    Resolves the run's parameters (notebook defaults, then the params file, then ``extra``),
    loads and validates the cohort (``cohort_dir``, or the built-in simulated one) and checks it
    against the study's declared requirements (:mod:`vcfnb.contract`). Nothing is extracted.

    Returns
    -------
    (unmet, problems) : tuple of DataFrame
        Unmet requirements (``requirement, where, problem, fix``) and the cohort's validation
        problems (rows excluded: ``row, patient_id, file, problem``).
    """
    import ast

    from vcfnb import contract
    from vcfnb.report import Run, resolve_cohort
    from vcfnb.sources import data_root

    notebook = root / "notebooks" / f"{study}.ipynb"
    if not notebook.is_file():
        raise ParamsError(f"no notebook {notebook.name} in {root / 'notebooks'}")
    given = io.load_yaml(params_file) if params_file else {}
    given.pop(SHARED_DATA_MARKER, None)
    given.update(extra or {})
    validate_params(notebook, given, source=str(params_file or notebook))
    params = {}
    for key, (_, default) in notebook_parameters(notebook).items():
        try:
            params[key] = ast.literal_eval(default)
        except (ValueError, SyntaxError):
            params[key] = default
    params.update(given)
    if features_only:
        params["require_outcome"] = False
    req = contract.for_study(study)
    if req is None and isinstance(params.get("requirements"), dict):
        req = contract.Requirements.from_dict(params["requirements"])  # declared in the params
    if req is None:
        raise ParamsError(f"{study} declares no cohort requirements")
    run = Run(study=study, params=params, root=root, out_dir=root / "reports" / study / "check",
              cache_dir=data_root(root) / "cache")
    cohort = resolve_cohort(run)
    unmet = contract.check(req, cohort.cases, cohort.rois, params,
                           features_only=not params.get("require_outcome", True))
    return unmet, cohort.problems


def timings(reports: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Where the time of the executed runs under ``reports`` went, from papermill's own records.

    Reads every ``reports/<study>/<run>/<study>.ipynb`` the runner wrote (papermill stores each
    cell's duration in the executed notebook) and returns ``(runs, steps)``: one row per run
    (``study, run, seconds``: the whole run as papermill timed it, kernel start included;
    ``start``: when it began) and one row per run and section (``step``: the markdown heading
    the code cells run under, as :class:`RunProgress` prints it; ``seconds``: the sum of their
    durations; ``share``: of the run), largest first within each run. A notebook without
    papermill metadata (never executed by the runner) is left out.

    >>> runs, steps = timings(Path("no/such/folder"))
    >>> len(runs), list(steps.columns)
    (0, ['study', 'run', 'step', 'cells', 'seconds', 'share'])
    """
    import nbformat

    runs, steps = [], []
    for nb_path in sorted(Path(reports).glob("*/*/*.ipynb")):
        if nb_path.stem != nb_path.parent.parent.name:
            continue
        nb = nbformat.read(nb_path, as_version=4)
        meta = nb.metadata.get("papermill") or {}
        if meta.get("duration") is None:
            continue
        study, run = nb_path.parent.parent.name, nb_path.parent.name
        runs.append({"study": study, "run": run, "seconds": float(meta["duration"]),
                     "start": meta.get("start_time")})
        section, acc = "(before the first heading)", {}
        for cell in nb.cells:
            if cell.cell_type == "markdown":
                section = _heading(cell) or section
                continue
            d = (cell.metadata.get("papermill") or {}).get("duration")
            if cell.cell_type != "code" or d is None:
                continue
            n, t = acc.get(section, (0, 0.0))
            acc[section] = (n + 1, t + float(d))
        for name, (n, t) in acc.items():
            steps.append({"study": study, "run": run, "step": name, "cells": n, "seconds": t,
                          "share": t / float(meta["duration"]) if meta["duration"] else 0.0})
    runs_df = pd.DataFrame(runs, columns=["study", "run", "seconds", "start"])
    steps_df = pd.DataFrame(steps, columns=["study", "run", "step", "cells", "seconds", "share"])
    if len(steps_df):
        steps_df = steps_df.sort_values(["study", "run", "seconds"],
                                        ascending=[True, True, False], ignore_index=True)
    return runs_df, steps_df


def print_timings(reports: Path, *, top: int = 5, stream: TextIO | None = None) -> int:
    """Print :func:`timings` as Markdown: the runs with their total, then each run's ``top``
    steps. Returns the number of runs found."""
    out = stream or sys.stdout
    runs, steps = timings(reports)
    if not len(runs):
        print(f"no executed runs under {reports}", file=out)
        return 0
    total = runs.seconds.sum()
    print("| run | time | share |\n|---|---:|---:|", file=out)
    for r in runs.sort_values("seconds", ascending=False).itertuples():
        print(f"| {r.study}/{r.run} | {_clock(r.seconds)} | {r.seconds / total:.0%} |", file=out)
    print(f"| **all {len(runs)} runs** | **{_clock(total)}** | |", file=out)
    for (study, run), g in steps.groupby(["study", "run"], sort=False) if top > 0 else ():
        print(f"\n{study}/{run}, largest steps:", file=out)
        for s in g.head(top).itertuples():
            print(f"  {_clock(s.seconds):>8s}  {s.share:4.0%}  {s.step}", file=out)
    return len(runs)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m vcfnb.runner", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    rp = sub.add_parser("reproduce", help="run every notebook with every params file")
    rp.add_argument("--study", action="append", help="only this notebook (repeatable)")
    rp.add_argument("--params", help="only this params file name (e.g. smoke)")
    rp.add_argument("--force", action="store_true", help="re-run unchanged runs too")
    rp.add_argument("--lanes", type=int, default=None,
                    help="notebooks run at a time, longest first (default: $VCFNB_LANES or 1)")
    sub.add_parser("check-params", help="validate every params file against its notebook")
    kp = sub.add_parser("check-cohort", help="check a study's cohort against its declared "
                        "requirements before any extraction (lists every unmet one)")
    kp.add_argument("--study", required=True, help="notebook name, e.g. osteoporosis_mri")
    kp.add_argument("--params", help="params file: a path, or a name under params/<study>/")
    kp.add_argument("--cohort", help="cohort folder (overrides the params' cohort_dir)")
    kp.add_argument("--features-only", action="store_true",
                    help="check everything but the outcome (a cohort without labels)")
    tp = sub.add_parser("timings", help="where the time of the executed runs went (per run and "
                        "per notebook section, from papermill's records)")
    tp.add_argument("--reports", help="reports folder (default: the project's reports/)")
    tp.add_argument("--top", type=int, default=5, help="steps listed per run (default 5)")
    cp = sub.add_parser("cohorts", help="generate the built-in simulated cohorts")
    cp.add_argument("--size", action="append", choices=["smoke", "paper"])
    args = ap.parse_args(argv)
    from vcfnb.report import project_root

    root = project_root()
    if args.cmd == "timings":
        return 0 if print_timings(Path(args.reports) if args.reports else root / "reports",
                                  top=args.top) else 1
    if args.cmd == "check-params":
        errors = check_all(root)
        for e in errors:
            print(e, file=sys.stderr)
        print(f"{len(errors)} params problem(s)")
        return 1 if errors else 0
    if args.cmd == "check-cohort":
        pf = None
        if args.params:
            pf = Path(args.params)
            if not pf.is_file():
                pf = root / "params" / args.study / f"{args.params}.yaml"
        extra = {"cohort_dir": str(Path(args.cohort).resolve())} if args.cohort else None
        try:
            unmet, problems = check_cohort(root, args.study, pf,
                                           features_only=args.features_only, extra=extra)
        except (ParamsError, ValueError, OSError) as exc:
            print(f"cannot check: {exc}", file=sys.stderr)
            return 2
        if len(problems):
            print(f"{len(problems)} validation problem(s) (rows excluded):")
            print(problems.to_string(index=False))
        if len(unmet):
            print(f"{len(unmet)} unmet requirement(s) of {args.study}:")
            for i, r in enumerate(unmet.itertuples(), 1):
                print(f"  {i}. {r.problem}\n     fix: {r.fix}")
            return 1
        print(f"the cohort meets every requirement of {args.study}"
              + (" (features-only: the outcome was not checked)" if args.features_only else ""))
        return 0
    if args.cmd == "cohorts":
        from vcfnb import synth
        from vcfnb.sources import data_root

        for study in synth.STUDIES:
            for size in args.size or ["smoke", "paper"]:
                out = data_root(root) / "cohorts" / f"{study}-{size}-seed0-signal1"
                t0 = time.perf_counter()
                synth.make_cohort(study, out, size=size)
                print(f"{study:14s} {size:6s} {time.perf_counter() - t0:6.1f} s  {out}")
        return 0
    pairs = [(nb, pf) for nb, pf in discover(root, args.study)
             if args.params is None or (pf is not None and pf.stem == args.params)]
    lanes = args.lanes if args.lanes is not None else int(os.environ.get("VCFNB_LANES", "1") or 1)
    records = reproduce(pairs, root, force=args.force, lanes=lanes)
    if records:
        print(pd.DataFrame(records).to_string(index=False))
    failed = [r for r in records if r["status"].startswith("failed")]
    interrupted = len(records) < len(pairs)
    return 130 if interrupted else 1 if failed else 0


def _log_runs(root: Path, records: list[dict]) -> None:
    """Merge ``records`` into ``reports/runs.csv`` (earlier runs of other notebooks/params kept,
    re-run ones replaced)."""
    if not records:
        return
    table = pd.DataFrame(records)
    log = root / "reports" / "runs.csv"
    if log.is_file():
        old = pd.read_csv(log, dtype=str)
        keep = ~old.set_index(["study", "run"]).index.isin(
            table.set_index(["study", "run"]).index)
        table = pd.concat([old[keep], table.astype({"seconds": float})], ignore_index=True)
    io.write_table(table, log)


#: seconds of the shipped paper runs in a cold ``make reproduce`` (commit 69f8bc1, 2 idle
#: cores, one lane): the lane order before this machine has recorded times of its own
PAPER_RUN_SECONDS = {("vcf_benign_malignant", "paper"): 1224.0,
                     ("ovf_prediction_ct", "paper"): 476.0,
                     ("metastasis_lytic_blastic", "paper"): 368.0,
                     ("osteoporosis_mri", "paper"): 200.0}


def _expected_seconds(root: Path, pairs: list[tuple[Path, Path | None]]) -> list[float]:
    """Expected cost of each run for lane scheduling: its last time in ``reports/runs.csv``,
    else :data:`PAPER_RUN_SECONDS`, else a guess (another ``paper`` params file: 600 s;
    anything else: 60 s)."""
    known: dict[tuple[str, str], float] = {}
    log = root / "reports" / "runs.csv"
    if log.is_file():
        try:
            old = pd.read_csv(log, dtype={"study": str, "run": str})
            for r in old.itertuples():
                if str(r.status) == "ok" and float(r.seconds) > 0:
                    known[(r.study, r.run)] = float(r.seconds)
        except (OSError, ValueError, AttributeError, KeyError, pd.errors.ParserError):
            known = {}
    out = []
    for nb, pf in pairs:
        run = pf.stem if pf else "default"
        out.append(known.get((nb.stem, run), PAPER_RUN_SECONDS.get(
            (nb.stem, run), 600.0 if run == "paper" else 60.0)))
    return out


def reproduce(pairs: list[tuple[Path, Path | None]], root: Path, *, force: bool = False,
              lanes: int = 1) -> list[dict]:
    """Run every (notebook, params file) pair; returns their status records (in ``pairs``
    order). Each finished run is logged to ``reports/runs.csv`` at once, so an interrupt loses
    no finished run; an invalid params file, or an error of the runner around a notebook (a
    kernel that cannot start, a full disk), fails its own run only.

    ``lanes`` > 1 runs that many notebooks at a time (threads, each driving its own kernel),
    longest first by the last recorded times: the worker processes of one run use the cores
    another run leaves idle (its serial cells, kernel start, HTML export). Results do not
    depend on it (every run has its own seed, kernel and report folder; the synthetic cohorts
    are generated under a lock and the feature cache writes whole entries atomically: a
    two-lane ``make reproduce`` wrote every ``metrics.json`` byte for byte as one lane); the
    per-run seconds then include time shared with the other lane.
    """
    lanes = max(1, int(lanes))
    records: dict[int, dict] = {}
    lock = threading.Lock()

    def one(i: int) -> None:
        nb, pf = pairs[i]
        label = f"{nb.stem}/{pf.stem if pf else 'default'}"
        print(f"running {label} ...", flush=True)
        def failed(status: str) -> dict:
            return {"study": nb.stem, "run": pf.stem if pf else "default",
                    "status": f"failed: {status}", "seconds": 0.0}

        try:
            rec = run_notebook(nb, pf, root, force=force)
        except ParamsError as exc:  # fails this run only; the others go on
            print(f"  invalid params, not run: {exc}", file=sys.stderr, flush=True)
            rec = failed(f"invalid params: {exc}")
        except Exception as exc:  # noqa: BLE001 - e.g. no kernel, disk full: this run only
            import traceback

            traceback.print_exc(file=sys.stderr)
            print(f"  [{label}] failed before or after its cells ran: {type(exc).__name__}: "
                  f"{exc}", file=sys.stderr, flush=True)
            rec = failed(f"{type(exc).__name__}: {exc}")
        else:
            print(f"  [{label}] {rec['status']} in {rec['seconds']:.1f} s -> "
                  f"reports/{nb.stem}/{rec['run']}/", flush=True)
        with lock:
            records[i] = rec
            _log_runs(root, [rec])

    if lanes == 1 or len(pairs) <= 1:
        for i in range(len(pairs)):
            one(i)
        return [records[i] for i in range(len(pairs))]
    cost = _expected_seconds(root, pairs)
    queue = sorted(range(len(pairs)), key=lambda i: (-cost[i], i))
    print(f"{len(pairs)} runs in {lanes} lanes (longest first)", flush=True)

    def lane() -> None:
        while True:
            with lock:
                if not queue:
                    return
                i = queue.pop(0)
            one(i)

    threads = [threading.Thread(target=lane, name=f"vcfnb-lane-{k}", daemon=True)
               for k in range(min(lanes, len(pairs)))]
    for t in threads:
        t.start()
    try:
        while any(t.is_alive() for t in threads):
            for t in threads:
                t.join(timeout=0.5)
    except KeyboardInterrupt:  # finished runs are logged; the kernels exit with this process
        with lock:
            queue.clear()
        print(f"interrupted: {len(pairs) - len(records)} run(s) not finished", file=sys.stderr,
              flush=True)
    return [records[i] for i in range(len(pairs)) if i in records]

if __name__ == "__main__":
    sys.exit(main())
