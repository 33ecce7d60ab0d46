"""Run every benchmark (or those named on the command line) and print its ratios.

    python -m benchmarks            # all
    python -m benchmarks transfer   # bench_transfer.py only
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
import time
from pathlib import Path


def main(argv: list[str]) -> int:
    here = Path(__file__).parent
    names = sorted(m.name for m in pkgutil.iter_modules([str(here)]) if m.name.startswith("bench_"))
    if argv:
        names = [n for n in names if n.removeprefix("bench_") in argv or n in argv]
    missed = 0
    for name in names:
        print(f"== {name}", flush=True)
        start = time.perf_counter()
        module = importlib.import_module(f"benchmarks.{name}")
        for result in module.run():
            print("  " + result.line(), flush=True)
            missed += result.passed is False
        print(f"   ({time.perf_counter() - start:.1f} s)", flush=True)
    print(f"{len(names)} benchmark modules, {missed} results missed their target")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
