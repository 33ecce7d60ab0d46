"""Progress bars a person can follow: in JupyterLab, in a terminal, and during ``magn study``.

:func:`tqdm` is the project's progress bar; the library's long loops (ingest per patient,
transfer and crops per lesion, the grid per configuration × fold, training per epoch,
radiomics per lesion) use it. Where it draws depends on where the code runs:

- in JupyterLab or a terminal: :mod:`tqdm.auto` (a widget in JupyterLab, text in a terminal);
- inside a notebook executed by the study runner, which sets ``$MAGN_PROGRESS_FILE``: nothing
  is drawn into the notebook (its executed copy and HTML views carry no bar text); every bar
  appends its state as one JSON line to that file instead, at most about once a second, and
  the runner follows the file and prints the bars in its own terminal (:class:`ProgressTail`).

An event is ``{"bar": id, "event": "update" | "close", "desc", "unit", "n", "total",
"elapsed" (s), "remaining" (s or null), "postfix"}``.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tqdm.std import tqdm as _std_tqdm

__all__ = [
    "PROGRESS_ENV",
    "ProgressTail",
    "format_duration",
    "format_event",
    "tqdm",
]

# set by the study runner for the kernels it starts: the file the bars write their events to
PROGRESS_ENV = "MAGN_PROGRESS_FILE"
# seconds between two events of one bar (tqdm's `mininterval` under the runner)
EVENT_INTERVAL_S = 1.0


def tqdm(*args: Any, **kwargs: Any) -> _std_tqdm:
    """A progress bar with tqdm's arguments (``iterable``, ``total``, ``desc``, ``unit``,
    ``disable``, ``leave``...): :class:`tqdm.auto.tqdm`, or under the study runner a bar that
    reports to the runner's progress file instead of the notebook."""
    channel = os.environ.get(PROGRESS_ENV)
    if channel:
        return _ChannelBar(*args, channel=channel, **kwargs)
    from tqdm.auto import tqdm as auto_tqdm

    return auto_tqdm(*args, **kwargs)


class _Discard:
    """A text stream that drops what tqdm writes (the bar text)."""

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass


class _ChannelBar(_std_tqdm):
    """A tqdm bar that appends its state to a JSON-lines file instead of drawing itself."""

    def __init__(self, *args: Any, channel: str, **kwargs: Any) -> None:
        self._channel = channel
        self._closing = False
        kwargs["file"] = _Discard()
        kwargs.setdefault("mininterval", EVENT_INTERVAL_S)
        kwargs.pop("dynamic_ncols", None)
        kwargs.pop("position", None)
        super().__init__(*args, **kwargs)

    def display(self, msg: str | None = None, pos: int | None = None) -> bool:
        if not self._closing:
            self._emit("update")
        return True

    def close(self) -> None:
        if not self.disable and not self._closing:
            self._closing = True
            self._emit("close")
        super().close()

    def _emit(self, event: str) -> None:
        info = self.format_dict
        n, total, elapsed = info["n"], info["total"], info["elapsed"]
        done = n - info.get("initial", 0)
        rate = info["rate"] or (done / elapsed if done > 0 and elapsed > 0 else None)
        remaining = (total - n) / rate if total is not None and rate else None
        record = {
            "bar": f"{os.getpid()}-{id(self)}",
            "event": event,
            "desc": info["prefix"] or "",
            "unit": info["unit"],
            "n": n,
            "total": total,
            "elapsed": round(elapsed, 2),
            "remaining": None if remaining is None else round(remaining, 1),
            "postfix": info["postfix"] or "",
        }
        line = json.dumps(record) + "\n"
        try:
            # one write of one line in append mode: lines of several bars never interleave
            with open(self._channel, "a", encoding="utf-8") as stream:
                stream.write(line)
        except OSError:
            pass  # progress is a courtesy: a vanished run folder must not fail the computation


def format_duration(seconds: float | None) -> str:
    """``m:ss`` (or ``h:mm:ss``) of a duration in seconds; ``?`` when unknown."""
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def format_event(event: dict[str, Any]) -> str:
    """One line for a bar's event, e.g.
    ``multi-view fold 2: 3/10 epoch, loss=0.412 (0:31 elapsed, ~1:12 left)``."""
    count = f"{event['n']}/{event['total']}" if event.get("total") else f"{event['n']}"
    text = f"{event['desc'] or 'progress'}: {count} {event['unit']}"
    if event.get("postfix"):
        text += f", {event['postfix']}"
    timing = f"{format_duration(event['elapsed'])} elapsed"
    unfinished = event.get("total") is None or event["n"] < event["total"]
    if event["event"] != "close" and unfinished and event.get("remaining") is not None:
        timing += f", ~{format_duration(event['remaining'])} left"
    return f"{text} ({timing})"


class ProgressTail:
    """Follow a progress file in a background thread and hand each event to ``on_event``.

    Used as a context manager around the execution of one notebook: the file is read from its
    start, every complete line becomes one call, and leaving the context reads what is left.
    """

    def __init__(self, path: str | Path, on_event: Callable[[dict[str, Any]], None], *,
                 poll_s: float = 0.2) -> None:
        self.path = Path(path)
        self.on_event = on_event
        self.poll_s = poll_s
        self._offset = 0
        self._buffer = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="magn-progress", daemon=True)

    def __enter__(self) -> ProgressTail:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._read()

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            self._read()

    def _read(self) -> None:
        try:
            with open(self.path, encoding="utf-8") as stream:
                stream.seek(self._offset)
                chunk = stream.read()
                self._offset = stream.tell()
        except FileNotFoundError:
            return
        self._buffer += chunk
        *lines, self._buffer = self._buffer.split("\n")
        for line in lines:
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            self.on_event(event)
