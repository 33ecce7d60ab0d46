"""Shared pieces of the benchmarks: the result record and a robust timer."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Result", "best_time"]


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
