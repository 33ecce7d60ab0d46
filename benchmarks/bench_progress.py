"""Cost of the progress channel: a bar reporting to the runner's file vs tqdm drawing text.

Under ``magn study`` every library bar writes JSON events to a file (at most one a second)
instead of drawing itself into the notebook's output. Two measurements, each against tqdm's
own text bar on a stream (what a bar costs when it draws; in a kernel it also travels as
output messages, which this reference leaves out, in its favour):

- a loop of the grain the library's bars have (steps of milliseconds: patients, lesions,
  epochs): the target is "no slower";
- many empty updates, the worst case for the per-update bookkeeping (no target; the
  channel refreshes once a second where the text bar refreshes ten times, so tqdm's miniters
  adapt later and each update reads the clock).
"""

from __future__ import annotations

import io
import os
import tempfile
import time
from pathlib import Path

from benchmarks.common import Result

STEPS, STEP_S = 400, 0.0025
UPDATES = 200_000


def _loop(make_bar, steps: int, step_s: float) -> float:
    start = time.perf_counter()
    bar = make_bar(steps)
    for _ in range(steps):
        if step_s:
            time.sleep(step_s)
        bar.update(1)
    bar.close()
    return time.perf_counter() - start


def run() -> list[Result]:
    from tqdm.std import tqdm as text_tqdm

    from magn_lib import progress

    def text(total):
        return text_tqdm(total=total, desc="grid", unit="fold", file=io.StringIO())

    def channel(total):
        return progress.tqdm(total=total, desc="grid", unit="fold")

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        old = os.environ.get(progress.PROGRESS_ENV)
        os.environ[progress.PROGRESS_ENV] = str(Path(tmp) / "progress.jsonl")
        try:
            for name, steps, step_s, target in (
                    (f"progress channel, {STEPS} steps of {STEP_S * 1e3:g} ms", STEPS, STEP_S,
                     1.05),
                    (f"progress channel, {UPDATES} empty updates", UPDATES, 0.0, None)):
                # interleaved, best of 5 each: the machine's load drifts while measuring
                drawn = events = float("inf")
                for _ in range(5):
                    drawn = min(drawn, _loop(text, steps, step_s))
                    events = min(events, _loop(channel, steps, step_s))
                results.append(Result(name, events, "tqdm text bar on a stream", drawn,
                                      target=target))
        finally:
            if old is None:
                os.environ.pop(progress.PROGRESS_ENV, None)
            else:
                os.environ[progress.PROGRESS_ENV] = old
    return results
