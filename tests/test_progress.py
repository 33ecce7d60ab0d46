"""Progress bars: tqdm.auto outside the runner, JSON events to the runner's file inside it."""

from __future__ import annotations

import io
import json

import pytest

from magn_lib import progress
from magn_lib.progress import PROGRESS_ENV, ProgressTail, format_duration, format_event


def _events(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_outside_the_runner_bars_are_tqdm_auto(monkeypatch):
    from tqdm.auto import tqdm as auto

    monkeypatch.delenv(PROGRESS_ENV, raising=False)
    stream = io.StringIO()
    bar = progress.tqdm(range(3), desc="ingest", file=stream)
    assert isinstance(bar, auto)
    assert list(bar) == [0, 1, 2]
    assert "ingest" in stream.getvalue()


def test_under_the_runner_bars_write_events_and_draw_nothing(tmp_path, monkeypatch, capsys):
    channel = tmp_path / "progress.jsonl"
    monkeypatch.setenv(PROGRESS_ENV, str(channel))
    # a grid-like pair: the outer bar over folds, an inner bar over epochs with the loss
    folds = progress.tqdm(total=2, desc="MAGN grid", unit="fold", mininterval=0)
    for fold in range(2):
        epochs = progress.tqdm(total=3, desc=f"multi-view fold {fold}", unit="epoch",
                               leave=False, mininterval=0)
        for _ in range(3):
            epochs.update(1)
            epochs.set_postfix(loss="0.412")
        epochs.close()
        folds.update(1)
    folds.close()
    assert capsys.readouterr() == ("", "")  # no bar text anywhere
    events = _events(channel)
    closes = [e for e in events if e["event"] == "close"]
    assert [e["desc"] for e in closes] == ["multi-view fold 0", "multi-view fold 1",
                                          "MAGN grid"]
    assert closes[0]["n"] == 3 and closes[0]["total"] == 3 and closes[0]["unit"] == "epoch"
    assert closes[0]["postfix"] == "loss=0.412"
    assert all(e["elapsed"] >= 0 for e in events)
    assert closes[-1]["n"] == 2 and closes[-1]["unit"] == "fold"
    # disabled bars stay silent
    before = len(events)
    for _ in progress.tqdm(range(5), disable=True):
        pass
    assert len(_events(channel)) == before


def test_event_lines_say_elapsed_and_left():
    event = {"event": "update", "desc": "multi-view fold 2", "unit": "epoch", "n": 3,
             "total": 10, "elapsed": 31.0, "remaining": 72.4, "postfix": "loss=0.412"}
    assert format_event(event) == (
        "multi-view fold 2: 3/10 epoch, loss=0.412 (0:31 elapsed, ~1:12 left)")
    done = {**event, "event": "close", "n": 10, "remaining": 0}
    assert format_event(done) == "multi-view fold 2: 10/10 epoch, loss=0.412 (0:31 elapsed)"
    assert format_duration(3725) == "1:02:05" and format_duration(None) == "?"


@pytest.mark.parametrize("chunks", [["a"], ["partial-", "line"]])
def test_tail_hands_over_complete_lines_only(tmp_path, chunks):
    path = tmp_path / "p.jsonl"
    seen = []
    with ProgressTail(path, seen.append, poll_s=0.01):
        path.write_text("")
        with open(path, "a") as stream:
            stream.write(json.dumps({"n": 1}) + "\n")
            for chunk in chunks:
                stream.write(chunk)
                stream.flush()
            stream.write("\n" + json.dumps({"n": 2}) + "\n")
    assert seen == [{"n": 1}, {"n": 2}]  # the broken line is skipped, never half-read
