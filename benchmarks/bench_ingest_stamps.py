"""What keying the ingest's resume on file content costs: BLAKE2b of every DICOM and mask file
of the demo cohort against the ingest itself.

Three times on the embedded demo cohort (60 patients): a first ingest (reads every series,
writes NIfTI), a second ingest with nothing changed (every patient skipped: what a resume
costs, hashing included), and the hashing of every source file alone.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

from benchmarks.common import Result

__all__ = ["measure", "run"]

DEMO = {"n_patients": 60, "seed": 2022, "separability": 1.0}


def measure(manifest_dir: Path, work_dir: Path) -> dict[str, float]:
    """Seconds of a first ingest, of an unchanged re-ingest and of hashing every source file
    (one worker each), and the megabytes hashed."""
    from magn_lib.ingest import ingest_cohort
    from magn_lib.manifest import load_manifest
    from magn_lib.repro import file_blake2b

    manifest = load_manifest(manifest_dir)
    start = time.perf_counter()
    first = ingest_cohort(manifest, work_dir, n_jobs=1, progress=False)
    ingest_s = time.perf_counter() - start
    start = time.perf_counter()
    again = ingest_cohort(manifest, work_dir, n_jobs=1, progress=False)
    resume_s = time.perf_counter() - start
    if again.n_skipped != first.n_read:
        raise RuntimeError(f"the unchanged re-ingest read {again.n_read} patients again")
    sources = [manifest.path(f) for f in manifest.series["folder"]]
    files = [f for folder in sources for f in sorted(folder.rglob("*")) if f.is_file()]
    files += [manifest.path(m) for m in manifest.lesions["mask"]]
    start = time.perf_counter()
    for f in files:
        file_blake2b(f)
    hash_s = time.perf_counter() - start
    return {"ingest_s": ingest_s, "resume_s": resume_s, "hash_s": hash_s,
            "hashed_mb": sum(f.stat().st_size for f in files) / 1e6, "files": len(files)}


def run() -> list[Result]:
    from magn_lib.synthetic import make_cohort

    tmp = Path(tempfile.mkdtemp(prefix="magn-bench-stamps-"))
    try:
        manifest = make_cohort(tmp / "demo", **DEMO, n_jobs=1, progress=False)
        m = measure(manifest, tmp / "work")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    note = f"{m['files']} files, {m['hashed_mb']:.0f} MB, one worker"
    return [
        Result("BLAKE2b of every source file", m["hash_s"], "first ingest", m["ingest_s"],
               target=0.1, note=note),
        Result("unchanged re-ingest (all skipped)", m["resume_s"], "first ingest",
               m["ingest_s"], target=0.2, note="what a resume costs, hashing included"),
    ]
