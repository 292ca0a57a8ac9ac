"""Real-data cohort sources: contract cohorts built from public scans (next to :mod:`vcfnb.synth`).

- :func:`lumbar_mri_cohort` / :func:`ensure_lumbar_cohort` -- L1-L4 of the public lumbar MRI
  sets VB3 and VB1 (``../shared/data/lumbar_mri``) with a simulated second reader
  (:func:`perturbed_reader`), for the osteoporosis notebook's feature and reliability steps;
- :func:`real_ct_cohort` -- real CT vertebrae (TPTBox sample CT with its own cortical/cancellous
  compartments, TotalSegmentator example CT as whole vertebral bodies) for the OVF notebook.

None of these scans has outcome labels: ``cases.csv`` has no ``outcome`` column and
``cohort.json`` says ``"simulated": false``.

Where the output goes
---------------------
A builder **never writes into an input or into a user's folder**. By default it writes into a
new folder under the project's ``data/cohorts/`` (``$VCFNB_DATA_DIR/cohorts/`` when that
variable is set: :func:`data_root`) named ``<kind>-<key>``, where ``key`` hashes the
builder, its options and the source files (names and sizes) -- a changed source or option gives
a new folder, an unchanged one is reused without rebuilding. A builder writes only into a
folder that does not exist, is empty, or carries its own marker file :data:`MARKER` (written
last, so a half-built folder never counts as built); anything else -- a user's cohort folder,
another builder's output -- is refused with :class:`OutputFolderError` and left byte-identical.
An output folder inside a source folder (or a source inside the output) is refused as well.
The cohort is built in a temporary sibling folder and moved into place when complete.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import SimpleITK as sitk
from scipy import ndimage

from vcfnb import io
from vcfnb.synth import perturb_mask

__all__ = [
    "DATA_DIR_ENV", "MARKER", "OutputFolderError", "data_root", "lumbar_mri_cohort", "ensure_lumbar_cohort",
    "perturbed_reader", "real_ct_cohort", "LUMBAR_LEVELS", "VB1_EXAMS",
]

#: marker file a builder writes (last) into its own output folder
MARKER = ".vcfnb-source.json"
#: bump when a builder's output changes for the same inputs (gives a new folder key)
_VERSION = 1

#: the osteoporosis study's vertebral levels
LUMBAR_LEVELS = ("L1", "L2", "L3", "L4")
#: VB1 exam → (subject, sequence), from the data's README (exam names AKa3, AKa4, AKs6, ...)
VB1_EXAMS = {"02": ("AKa", "T1"), "03": ("AKa", "STIR"), "06": ("AKs", "T1"),
             "07": ("AKs", "STIR"), "08": ("AKs", "T1"), "10": ("DzZ", "T1"),
             "11": ("DzZ", "T2"), "12": ("F02", "T2"), "15": ("S15", "T2"),
             "16": ("S16", "T2"), "17": ("S17", "T2")}
_TOTALSEG_LEVELS = {33: "T11", 32: "T12", 31: "L1", 30: "L2", 29: "L3", 28: "L4", 27: "L5"}
_TPTBOX_LEVELS = {21: "L2", 22: "L3", 23: "L4"}


class OutputFolderError(FileExistsError):
    """The output folder is not a builder's own (or lies inside an input): nothing was written."""


# ---------------------------------------------------------------------------------------------
# output folders
# ---------------------------------------------------------------------------------------------
#: environment variable that moves the data folder (generated cohorts, feature cache) out of
#: the project, e.g. to a temporary folder (the test suite does so)
DATA_DIR_ENV = "VCFNB_DATA_DIR"


def data_root(root: str | os.PathLike | None = None) -> Path:
    """The project's data folder: built-in and built cohorts (``cohorts/``) and the feature
    cache (``cache/``). ``$VCFNB_DATA_DIR`` when set, else ``<root>/data`` (``root`` = project
    root; default: found from the cwd). Every default location of vcfnb's generated data is
    taken from here (tests/test_sources.py checks that the variable moves them).
    """
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return Path(env).expanduser().resolve()
    if root is None:
        from vcfnb.report import project_root

        root = project_root()
    return Path(root).resolve() / "data"


def _key(builder: str, options: dict, files: Sequence[Path]) -> str:
    """Hash of the builder, its options and its input files (resolved path, name, size)."""
    h = hashlib.sha256()
    h.update(json.dumps({"builder": builder, "version": _VERSION, "options": options},
                        sort_keys=True, default=str).encode())
    for f in sorted(Path(p).resolve() for p in files):
        h.update(f"{f}\0{f.stat().st_size}\n".encode())
    return h.hexdigest()[:12]


def _inside(a: Path, b: Path) -> bool:
    """Whether ``a`` is ``b`` or lies inside it."""
    try:
        a.relative_to(b)
        return True
    except ValueError:
        return False


def _read_marker(folder: Path) -> dict | None:
    m = folder / MARKER
    if not m.is_file():
        return None
    try:
        data = json.loads(m.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _claim(out: Path, builder: str, key: str, inputs: Sequence[Path]) -> bool:
    """Check that ``builder`` may write ``out``; True when ``out`` already holds its output for
    ``key`` (reuse). Raises :class:`OutputFolderError` otherwise (nothing is touched)."""
    for src in inputs:
        src = Path(src).resolve()
        if _inside(out, src) or _inside(src, out):
            raise OutputFolderError(
                f"refusing to build into {out}: it overlaps the input folder {src} "
                "(a source builder never writes into its inputs)")
    if not out.exists():
        return False
    if not out.is_dir():
        raise OutputFolderError(f"refusing to build into {out}: it exists and is not a folder")
    marker = _read_marker(out)
    if marker is None:
        if any(out.iterdir()):
            raise OutputFolderError(
                f"refusing to write into {out}: the folder exists and was not built by "
                f"vcfnb.sources (no {MARKER} marker) -- it may be your own cohort. Leave the "
                "output folder unset (a new folder under data/cohorts/ is used) or name an "
                "empty or new folder.")
        return False
    if marker.get("builder") != builder:
        raise OutputFolderError(
            f"refusing to write into {out}: it holds the output of {marker.get('builder')!r}, "
            f"not of {builder!r}")
    return marker.get("key") == key


def _build(out: Path, builder: str, key: str, inputs: Sequence[Path], options: dict,
           write: Callable[[Path], None]) -> Path:
    """Build with ``write(tmp)`` into a temporary sibling, write the marker, move into place."""
    if _claim(out, builder, key, inputs):
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.building-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        write(tmp)
        io.write_json({"builder": builder, "key": key, "version": _VERSION,
                       "inputs": [str(Path(p).resolve()) for p in inputs],
                       "options": options}, tmp / MARKER)
        if _claim(out, builder, key, inputs):  # built meanwhile by another process
            shutil.rmtree(tmp)
            return out
        if out.exists():  # empty, or our own older output (checked just above)
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old)
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _output(out_dir: str | os.PathLike | None, kind: str, key: str,
            root: str | os.PathLike | None) -> Path:
    if out_dir is None or str(out_dir) == "":
        return data_root(root) / "cohorts" / f"{kind}-{key}"
    out = Path(out_dir)
    if not out.is_absolute() and root is not None:
        out = Path(root) / out
    return out.resolve()


# ---------------------------------------------------------------------------------------------
# the real lumbar MRI cohort (../shared/data/lumbar_mri)
# ---------------------------------------------------------------------------------------------
def perturbed_reader(mask: np.ndarray, rng: Any = None, *, p_erode: float = 1 / 3,
                     p_dilate: float = 1 / 3, jitter: float = 0.3, sigma: float = 1.5,
                     axis: int = 0) -> np.ndarray:
    """A simulated second reader's outline: ±1-voxel erosion/dilation plus a boundary jitter.

    Per connected slice (2D along ``axis``, how sagittal ROIs are drawn) the outline is eroded
    (probability ``p_erode``), dilated (``p_dilate``) or kept by one voxel, then shifted by a
    smooth random field of about ``jitter`` voxels (:func:`vcfnb.synth.perturb_mask`, the
    simulated cohorts' second reader: the same algorithm and random stream).
    Never returns an empty slice where the input had one.

    Examples
    --------
    >>> m = np.zeros((3, 20, 20), bool); m[:, 5:15, 5:15] = True
    >>> r = perturbed_reader(m, 0)
    >>> bool(r.any()) and r.shape == m.shape
    True
    """
    g = np.random.default_rng(rng)
    m = np.asarray(mask, bool)
    out = np.zeros_like(m)
    for k in range(m.shape[axis]):
        sl = np.take(m, k, axis=axis)
        if not sl.any():
            continue
        u = g.random()
        if u < p_erode:
            new = ndimage.binary_erosion(sl)
            new = new if new.sum() >= 0.5 * sl.sum() else sl
        elif u < p_erode + p_dilate:
            new = ndimage.binary_dilation(sl)
        else:
            new = sl
        new = perturb_mask(new, g, jitter=jitter, sigma=sigma)
        idx: list[Any] = [slice(None)] * m.ndim
        idx[axis] = k
        out[tuple(idx)] = new if new.any() else sl
    return out


def _levels_vb3(arr: np.ndarray) -> dict[str, int]:
    present = {int(v) for v in np.unique(arr) if v}
    return {lev: i + 1 for i, lev in enumerate(LUMBAR_LEVELS) if i + 1 in present}


def _levels_by_position(arr: np.ndarray, lowest: str, si_axis: int = 1) -> dict[str, int]:
    """Map L1-L4 to label values: bodies ordered by centroid, most caudal first."""
    labels = [int(v) for v in np.unique(arr) if v]
    cent = ndimage.center_of_mass(np.ones_like(arr), arr, labels)
    order = [lab for _, lab in sorted(((c[si_axis], lab) for c, lab in zip(cent, labels)),
                                      reverse=True)]  # rows run superior->inferior
    names = ["S1", "L5", "L4", "L3", "L2", "L1", "T12", "T11", "T10", "T9", "T8"]
    start = names.index(lowest)
    assigned = {names[start + i]: lab for i, lab in enumerate(order) if start + i < len(names)}
    return {lev: assigned[lev] for lev in LUMBAR_LEVELS if lev in assigned}


def _lumbar_exams(src: Path) -> list[tuple[str, str, str, str, str]]:
    exams = []
    for f in sorted((src / "VB3").glob("*_image.nii.gz")):
        exams.append(("VB3", f.name[:2], f"VB3-{f.name[:2]}", "WATER", f"VB3-{f.name[:2]}"))
    for f in sorted((src / "VB1").glob("*_image.nii.gz")):
        subj, seq = VB1_EXAMS.get(f.name[:2], (f"VB1-{f.name[:2]}", "MR"))
        exams.append(("VB1", f.name[:2], f"VB1-{f.name[:2]}", seq, subj))
    return exams


def _write_lumbar(src: Path, out: Path, seed: int, vb1_lowest: str, mid_neighbours: int,
                  exclude_cortex_mm: float, margin: int) -> None:
    g = np.random.default_rng(seed)
    cases, rois, problems = [], [], []
    (out / "masks").mkdir(exist_ok=True)
    (out / "images").mkdir(exist_ok=True)
    for dataset, code, pid, seq, subject in _lumbar_exams(src):
        img = io.read_image(src / dataset / f"{code}_image.nii.gz")
        msk = io.read_image(src / dataset / f"{code}_mask.nii.gz")
        arr = sitk.GetArrayFromImage(msk)
        levels = _levels_vb3(arr) if dataset == "VB3" else _levels_by_position(arr, vb1_lowest)
        if not levels:
            problems.append(f"{dataset}/{code}: no L1-L4 bodies found")
            continue
        spacing = np.asarray(img.GetSpacing())[::-1]  # array order
        r1 = np.zeros(arr.shape, np.uint8)
        r2 = np.zeros(arr.shape, np.uint8)
        ero = [max(0, int(round(exclude_cortex_mm / s))) for s in spacing]
        for i, lev in enumerate(LUMBAR_LEVELS):
            if lev not in levels:
                continue
            body = arr == levels[lev]
            mid = int(np.argmax(body.sum(axis=(1, 2))))
            lo, hi = max(mid - mid_neighbours, 0), min(mid + mid_neighbours, arr.shape[0] - 1)
            for k in range(lo, hi + 1):
                sl = body[k]
                if ero[1] or ero[2]:
                    st = np.ones((2 * ero[1] + 1, 2 * ero[2] + 1), bool)
                    inner = ndimage.binary_erosion(sl, st)
                    sl = inner if inner.sum() >= 20 else sl
                r1[k][sl] = i + 1
            other = perturbed_reader(r1 == i + 1, g)
            r2[other & (r2 == 0)] = i + 1
        box = np.argwhere(r1 > 0)
        lo_ = np.maximum(box.min(0) - margin, 0)
        hi_ = np.minimum(box.max(0) + margin + 1, arr.shape)
        crop = tuple(slice(a, b) for a, b in zip(lo_, hi_))
        img_c = sitk.RegionOfInterest(img, [int(v) for v in (hi_ - lo_)[::-1]],
                                      [int(v) for v in lo_[::-1]])
        files = {}
        for reader, m in ((1, r1), (2, r2)):
            mk = sitk.GetImageFromArray(m[crop])
            mk.CopyInformation(img_c)
            files[reader] = f"masks/{pid}_reader{reader}.nii.gz"
            sitk.WriteImage(mk, str(out / files[reader]), useCompression=True)
        img_rel = f"images/{pid}_{seq}.nii.gz"
        sitk.WriteImage(sitk.Cast(img_c, sitk.sitkFloat32), str(out / img_rel),
                        useCompression=True)
        cases.append({"patient_id": pid, "subject": subject, "dataset": dataset,
                      "exam": code, "sequence": seq, "levels": len(levels), "split": "",
                      "center": dataset})
        for i, lev in enumerate(LUMBAR_LEVELS):
            if lev not in levels:
                continue
            for reader in (1, 2):
                rois.append({"patient_id": pid, "roi": lev, "sequence": seq, "reader": reader,
                             "image": img_rel, "mask": files[reader], "label": i + 1})
    readme = (
        "# Real lumbar MRI cohort (no outcome labels)\n\n"
        "Built by vcfnb.sources.lumbar_mri_cohort from the public lumbar_mri data "
        "(VB3: MyoSegmenTUM water images, L1-L4 = labels 1-4; VB1: SpineWeb exams, levels by "
        f"position with the most caudal body = {vb1_lowest}). Reader 1 = the published "
        f"outline on the mid-sagittal slice +/- {mid_neighbours}, cortex excluded "
        f"({exclude_cortex_mm} mm); reader 2 is SIMULATED (+/-1 voxel erosion/dilation and a "
        "smooth boundary jitter). No DXA results exist.\n")
    io.write_cohort(out, pd.DataFrame(cases), pd.DataFrame(rois),
                    meta={"simulated": False, "source": "lumbar_mri (VB1, VB3)",
                          "second_reader": "simulated by mask perturbation",
                          "vb1_lowest": vb1_lowest, "problems": problems, "source_seed": seed,
                          "builder": "vcfnb.sources.lumbar_mri_cohort"},
                    readme=readme)


def lumbar_mri_cohort(src: str | os.PathLike, out_dir: str | os.PathLike | None = None, *,
                      seed: int = 0, vb1_lowest: str = "S1", mid_neighbours: int = 1,
                      exclude_cortex_mm: float = 1.0, margin: int = 8,
                      root: str | os.PathLike | None = None) -> Path:
    """Build a contract cohort from the public lumbar MRI sets VB3 and VB1.

    For each exam and each of L1-L4 (VB3: labels 1-4; VB1: levels assigned by position, the most
    caudal segmented body being ``vb1_lowest``, S1 by inspection of the mid-sagittal slices):
    the vertebral body's largest-area sagittal slice and ``mid_neighbours`` slices on each side,
    cortex excluded by an in-plane erosion of ``exclude_cortex_mm``; reader 1 = that outline,
    reader 2 = :func:`perturbed_reader` of it. Images are cropped to the L1-L4 box plus
    ``margin`` voxels (geometry kept). No outcome exists: ``cases.csv`` has no ``outcome``
    column.

    Parameters
    ----------
    src : path
        The ``lumbar_mri`` folder (with ``VB1/`` and/or ``VB3/``); only read.
    out_dir : path, optional
        Output folder; default ``<root>/data/cohorts/real-lumbar-<key>``. It must be new, empty
        or this builder's own output (see the module docstring); else
        :class:`OutputFolderError` and nothing is written.
    seed : int
        Seeds the simulated second reader.
    root : path, optional
        Project root for the default output folder and a relative ``out_dir`` (default: found
        from the working directory).

    Returns
    -------
    Path
        The cohort folder (``cases.csv``, ``rois.csv``, ``images/``, ``masks/``,
        ``cohort.json`` with ``"simulated": false``, ``README.md``, :data:`MARKER`). An
        existing output for the same source, options and seed is returned as is.
    """
    src = Path(src).resolve()
    if not (src / "VB3").is_dir() and not (src / "VB1").is_dir():
        raise FileNotFoundError(f"{src}: no VB1/ or VB3/ folder (the lumbar_mri data set)")
    options = {"seed": int(seed), "vb1_lowest": vb1_lowest, "mid_neighbours": mid_neighbours,
               "exclude_cortex_mm": exclude_cortex_mm, "margin": margin}
    files = [src / d / f"{c}_{kind}.nii.gz" for d, c, *_ in _lumbar_exams(src)
             for kind in ("image", "mask")]
    key = _key("lumbar_mri_cohort", options, files)
    out = _output(out_dir, "real-lumbar", key, root)
    return _build(out, "lumbar_mri_cohort", key, [src], options,
                  lambda tmp: _write_lumbar(src, tmp, int(seed), vb1_lowest, mid_neighbours,
                                            exclude_cortex_mm, margin))


def ensure_lumbar_cohort(source: str, cohort_dir: str = "", *, seed: int = 0,
                         root: str | os.PathLike | None = None) -> str:
    """The notebook's resolve step: the real lumbar cohort's folder when ``source`` is given.

    ``source`` empty: returns ``cohort_dir`` unchanged (the user's cohort or, empty, the
    built-in simulated one). ``source`` given: builds (or reuses) the cohort under
    ``data/cohorts/real-lumbar-<key>`` with :func:`lumbar_mri_cohort` and returns that folder,
    relative to the project root when it lies inside it. ``cohort_dir`` must then be empty:
    a user's cohort folder is never written into. Relative ``source`` paths are taken from
    the project root.
    """
    if not source:
        return cohort_dir
    if cohort_dir:
        raise ValueError(
            f"give either cohort_dir ({cohort_dir!r}, your own cohort, only read) or "
            f"lumbar_mri_source ({source!r}, built into data/cohorts/), not both: the real "
            "lumbar cohort is never written into a cohort folder you name")
    if root is None:
        from vcfnb.report import project_root

        root = project_root()
    root = Path(root).resolve()
    src = Path(source) if Path(source).is_absolute() else root / source
    if not src.is_dir():
        raise FileNotFoundError(f"lumbar MRI source {source!r} not found (looked in {src})")
    out = lumbar_mri_cohort(src, seed=seed, root=root)
    return str(out.relative_to(root)) if _inside(out, root) else str(out)


# ---------------------------------------------------------------------------------------------
# real CT vertebrae (../shared/data: TPTBox sample CT, TotalSegmentator example CT)
# ---------------------------------------------------------------------------------------------
def _real_ct_files(base: Path) -> dict[str, Path]:
    tp, ts = base / "tptbox" / "sample_ct", base / "totalseg"
    return {"tp_ct": tp / "sub-ct_label-22_ct.nii.gz",
            "tp_vert": tp / "sub-ct_seg-vert_label-22_msk.nii.gz",
            "tp_sub": tp / "sub-ct_seg-subreg_label-22_msk.nii.gz",
            "ts_ct": ts / "example_ct.nii.gz",
            "ts_seg": ts / "spine_report" / "totalseg.nii.gz",
            "ts_body": ts / "spine_report" / "totalseg_vertebrae_body.nii.gz"}


def _write_real_ct(f: dict[str, Path], out: Path, totalseg_levels: Sequence[str]) -> None:
    (out / "masks").mkdir(exist_ok=True)
    cases, rois = [], []
    # TPTBox: already split compartments
    vert = sitk.GetArrayFromImage(io.read_image(f["tp_vert"]))
    sub_img = io.read_image(f["tp_sub"])
    sub = sitk.GetArrayFromImage(sub_img)
    lab = np.zeros(vert.shape, np.uint8)
    k = 0
    for v, level in _TPTBOX_LEVELS.items():
        for compartment, s in (("cortical", 49), ("cancellous", 50)):
            m = (vert == v) & (sub == s)
            if not m.any():
                continue
            k += 1
            lab[m] = k
            rois.append({"patient_id": "tptbox_sample_ct", "roi": f"{level}_{compartment}",
                         "sequence": "CT", "reader": "1", "image": str(f["tp_ct"].resolve()),
                         "mask": "masks/tptbox_sample_ct_compartments.nii.gz", "label": k})
    img = sitk.GetImageFromArray(lab)
    img.CopyInformation(sub_img)
    sitk.WriteImage(img, str(out / "masks" / "tptbox_sample_ct_compartments.nii.gz"), True)
    cases.append({"patient_id": "tptbox_sample_ct", "source": "TPTBox sample_ct (1.5 mm)",
                  "masks": "given compartments (49 cortical shell, 50 interior)"})
    # TotalSegmentator example CT: whole vertebral bodies
    seg_img = io.read_image(f["ts_seg"])
    seg = sitk.GetArrayFromImage(seg_img)
    body = sitk.GetArrayFromImage(io.read_image(f["ts_body"])) == 1
    lab = np.zeros(seg.shape, np.uint8)
    names = {v: k for k, v in _TOTALSEG_LEVELS.items()}
    for level in totalseg_levels:
        m = (seg == names[level]) & body
        if not m.any():
            continue
        lab[m] = names[level]
        rois.append({"patient_id": "totalseg_example_ct", "roi": level, "sequence": "CT",
                     "reader": "1", "image": str(f["ts_ct"].resolve()),
                     "mask": "masks/totalseg_example_ct_bodies.nii.gz", "label": names[level]})
    img = sitk.GetImageFromArray(lab)
    img.CopyInformation(seg_img)
    sitk.WriteImage(img, str(out / "masks" / "totalseg_example_ct_bodies.nii.gz"), True)
    cases.append({"patient_id": "totalseg_example_ct",
                  "source": "TotalSegmentator example CT (3 mm)",
                  "masks": "whole vertebral bodies (vertebra label ∩ body mask)"})
    readme = ("# Real CT vertebrae (no outcome labels)\n\nBuilt by "
              "vcfnb.sources.real_ct_cohort from ../shared/data (TPTBox sample CT, "
              "TotalSegmentator example CT). Images are referenced in place; only derived "
              "label maps are stored here. There is no outcome: these scans test the "
              "compartment split, extraction and density read-out on real bone.\n")
    io.write_cohort(out, pd.DataFrame(cases), pd.DataFrame(rois),
                    meta={"simulated": False, "source": "tptbox/sample_ct, totalseg",
                          "builder": "vcfnb.sources.real_ct_cohort"}, readme=readme)


def real_ct_cohort(shared_data: str | os.PathLike, out_dir: str | os.PathLike | None = None, *,
                   totalseg_levels: Sequence[str] = ("T12", "L1", "L2"),
                   root: str | os.PathLike | None = None) -> Path:
    """Build a contract cohort of real vertebrae (no outcome) from ``../shared/data``.

    - ``tptbox/sample_ct``: L2-L4 of a 1.5 mm CT with TPTBox's own compartments -- vertebral
      body cortical shell (subregion 49) and interior (50) within each vertebra label -- written
      as ``<level>_cortical`` / ``<level>_cancellous`` rows, i.e. **already split**;
    - ``totalseg/example_ct.nii.gz``: ``totalseg_levels`` of a 3 mm abdominal CT as
      **whole vertebral-body** masks (TotalSegmentator vertebra label ∩ vertebral-body mask),
      to be split by erosion.

    The CT files are referenced where they are (absolute paths; nothing is copied or written
    there); only the derived label maps are written. Levels outside T11-L2 (L3, L4 of the
    TPTBox crop) are kept; the study's level filter decides what is used.

    Parameters
    ----------
    shared_data : path
        Folder with ``tptbox/sample_ct`` and ``totalseg``; only read.
    out_dir : path, optional
        Default ``<root>/data/cohorts/real-ct-<key>``; must be new, empty or this builder's own
        output, else :class:`OutputFolderError` (nothing written).
    root : path, optional
        Project root (default: found from the working directory).

    Returns
    -------
    Path
        The cohort folder (``cases.csv``, ``rois.csv``, ``masks/``, ``cohort.json``,
        ``README.md``, :data:`MARKER`); reused when already built from the same inputs.
    """
    base = Path(shared_data).resolve()
    f = _real_ct_files(base)
    missing = [str(p) for p in f.values() if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"real CT source files missing: {missing}")
    unknown = [lev for lev in totalseg_levels if lev not in _TOTALSEG_LEVELS.values()]
    if unknown:
        raise ValueError(f"unknown TotalSegmentator levels {unknown}")
    options = {"totalseg_levels": list(totalseg_levels)}
    key = _key("real_ct_cohort", options, list(f.values()))
    out = _output(out_dir, "real-ct", key, root)
    return _build(out, "real_ct_cohort", key, [base], options,
                  lambda tmp: _write_real_ct(f, tmp, totalseg_levels))
