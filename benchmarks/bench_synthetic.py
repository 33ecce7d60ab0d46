"""Embedded cohort: time and disk size of the ``demo`` cohort against the issue's budget
(60 s on 2 cores, 300 MB) and against writing the same pixel volume with plain numpy."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import Result, best_time

DEMO = {"n_patients": 60, "seed": 2022}


def _size_mb(root: Path) -> float:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) / 1e6


def _pixel_count(manifest: Path) -> int:
    import pydicom

    total = 0
    for path in (manifest / "dicom").rglob("*"):
        if path.is_file():
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["Rows", "Columns"])
            total += int(ds.Rows) * int(ds.Columns)
    return total


def run() -> list[Result]:
    from magn_lib.synthetic import make_cohort

    n_jobs = min(2, os.cpu_count() or 1)
    tmp = Path(tempfile.mkdtemp(prefix="magn-bench-synthetic-"))
    try:
        start = time.perf_counter()
        manifest = make_cohort(tmp / "demo", **DEMO, n_jobs=n_jobs, progress=False)
        seconds = time.perf_counter() - start
        size = _size_mb(tmp / "demo")
        voxels = _pixel_count(manifest)
        # reference: the same number of uint16 pixels written as one .npy file
        pixels = np.random.default_rng(0).integers(0, 4096, voxels, dtype=np.uint16)
        npy = tmp / "pixels.npy"
        numpy_s = best_time(lambda: np.save(npy, pixels), repeat=3)
        numpy_mb = npy.stat().st_size / 1e6
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    note = f"{n_jobs} worker(s), {voxels / 1e6:.1f} M pixels"
    return [
        Result("demo cohort generation time", seconds, "issue budget", 60.0, unit="s",
               target=1.0, note=note),
        Result("demo cohort on disk", size, "issue budget", 300.0, unit="MB", target=1.0),
        Result("demo cohort generation time", seconds, "np.save of the same pixels", numpy_s,
               unit="s", note="rendering + DICOM + masks vs a raw write"),
        Result("demo cohort on disk", size, "np.save of the same pixels", numpy_mb, unit="MB",
               note="DICOM headers, masks and truth over raw uint16 pixels"),
    ]
