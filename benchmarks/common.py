"""Shared pieces of the benchmarks: the result record and a robust timer."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Result", "best_time", "embedded_crop_cache"]


@dataclass
class Result:
    """One measurement against a reference measured in the same run.

    ``ratio`` = value / reference_value; ``target`` is the ratio the issue asks for, and
    ``higher_is_better`` says on which side of it a pass lies.
    """

    name: str
    value: float
    reference: str
    reference_value: float
    unit: str = "s"
    target: float | None = None
    higher_is_better: bool = False
    note: str = ""

    @property
    def ratio(self) -> float:
        return self.value / self.reference_value if self.reference_value else float("nan")

    @property
    def passed(self) -> bool | None:
        if self.target is None:
            return None
        return self.ratio >= self.target if self.higher_is_better else self.ratio <= self.target

    def line(self) -> str:
        verdict = {None: "", True: "  [meets target]", False: "  [MISSES target]"}[self.passed]
        op = ">=" if self.higher_is_better else "<="
        target = f" (target {op} {self.target:g})" if self.target is not None else ""
        note = f"  {self.note}" if self.note else ""
        return (
            f"{self.name}: {self.value:.4g} {self.unit} vs {self.reference} "
            f"{self.reference_value:.4g} {self.unit} -> ratio {self.ratio:.3f}"
            f"{target}{verdict}{note}"
        )


def best_time(fn: Callable[[], object], *, repeat: int = 5, number: int = 1) -> float:
    """Best-of-``repeat`` wall time of ``number`` calls of ``fn``, per call, in seconds."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        best = min(best, (time.perf_counter() - start) / number)
    return best


def embedded_crop_cache(cfg, folder):
    """The crop cache of the embedded cohort of profile ``cfg`` (a :class:`Profile`), built
    under ``folder`` (ingest, transfer, crops: the study's own stages); the cohort itself is
    generated into the embedded-cohort folder like any run's. Returns the cache's path."""
    from pathlib import Path

    from magn_lib.ingest import ingest_cohort
    from magn_lib.layout import RunPaths
    from magn_lib.manifest import load_manifest
    from magn_lib.pipeline import resolve_manifest
    from magn_lib.stages import build_crop_cache, transfer_cohort

    folder = Path(folder)
    paths = RunPaths(report_dir=folder / "reports", work_dir=folder / "work")
    manifest = load_manifest(resolve_manifest(None, cfg, progress=False), views=cfg.views)
    ingest = ingest_cohort(manifest, paths.work_dir, n_jobs=cfg.n_jobs, progress=False)
    transfer = transfer_cohort(ingest, progress=False)
    build_crop_cache(ingest, transfer, paths.crop_cache, views=cfg.views,
                     crop_size=cfg.crop_size, progress=False)
    return paths.crop_cache
