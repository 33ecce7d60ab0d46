"""The write helper: atomic, permissions from the umask, and the only writer in the library."""

from __future__ import annotations

import ast
import os
import stat
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from magn_lib import files

LIBRARY = Path(files.__file__).resolve().parent


@pytest.fixture
def umask():
    """Set the process umask for one test and restore the one found."""
    found = os.umask(0o022)
    os.umask(found)

    def set_to(value: int) -> None:
        os.umask(value)

    yield set_to
    os.umask(found)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _reference_mode(tmp_path: Path) -> int:
    """What a plain ``open(path, "w")`` gives under the current umask (independent reference)."""
    probe = tmp_path / "probe-plain-open"
    with open(probe, "w"):
        pass
    mode = _mode(probe)
    probe.unlink()
    return mode


@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)])
def test_every_writer_gives_the_umask_mode(tmp_path, umask, mask, expected):
    umask(mask)
    assert files.default_file_mode() == expected == _reference_mode(tmp_path)
    written = [
        files.write_text(tmp_path / "a.html", "<p>é</p>"),
        files.write_bytes(tmp_path / "b.bin", b"\0\1"),
        files.write_json(tmp_path / "c.json", {"a": 1}),
        files.write_csv(pd.DataFrame({"x": [1]}), tmp_path / "d.csv"),
        files.save(tmp_path / "e.npz", lambda s: np.savez(s, x=np.arange(3))),
    ]
    with files.atomic_open(tmp_path / "f.txt", "w") as stream:
        stream.write("text")
    with files.atomic_path(tmp_path / "g.nii.gz") as tmp:
        nib.save(nib.Nifti1Image(np.zeros((2, 2, 2), np.uint8), np.eye(4)), tmp)
    written += [tmp_path / "f.txt", tmp_path / "g.nii.gz"]
    assert {p.name: oct(_mode(p)) for p in written} == {p.name: oct(expected) for p in written}


def test_folder_mode_follows_the_umask(tmp_path, umask):
    umask(0o027)
    (tmp_path / "plain").mkdir()
    assert files.default_dir_mode() == 0o750 == _mode(tmp_path / "plain")


def test_explicit_permissions_win(tmp_path, umask):
    umask(0o022)
    key = files.write_text(tmp_path / "key.csv", "a\n", permissions=0o600)
    assert _mode(key) == 0o600


def test_content_round_trips_and_no_temporary_file_is_left(tmp_path):
    files.write_text(tmp_path / "sub" / "a.txt", "line 1\nline 2 – ü\n")
    assert (tmp_path / "sub" / "a.txt").read_text(encoding="utf-8") == "line 1\nline 2 – ü\n"
    files.write_json(tmp_path / "b.json", {"k": [1, 2]}, indent=None)
    assert (tmp_path / "b.json").read_text() == '{"k": [1, 2]}'
    frame = pd.DataFrame({"id": ["P01", "P02"], "v": [1.5, 2.0]})
    files.write_csv(frame, tmp_path / "c.csv")
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "c.csv"), frame)
    with files.atomic_path(tmp_path / "m.nii.gz") as tmp:
        assert tmp.parent == tmp_path and tmp.name.endswith(".nii.gz")
        nib.save(nib.Nifti1Image(np.arange(8, dtype=np.uint8).reshape(2, 2, 2), np.eye(4)), tmp)
    assert np.array_equal(np.asanyarray(nib.load(tmp_path / "m.nii.gz").dataobj).ravel(),
                          np.arange(8))
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a.txt", "b.json", "c.csv",
                                                           "m.nii.gz", "sub"]


def test_a_failed_write_keeps_the_old_file_and_leaves_nothing(tmp_path):
    target = files.write_text(tmp_path / "a.txt", "old")

    def explode(stream):
        stream.write(b"half a ")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        files.save(target, explode)
    with pytest.raises(RuntimeError, match="disk on fire"), files.atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("disk on fire")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_atomic_open_refuses_append():
    with pytest.raises(ValueError, match="mode 'w' or 'wb'"), files.atomic_open("x", "a"):
        pass


# --------------------------------------------------------------------------------------------
# the library writes through the helper only

# calls that write a file when given a path or an open stream
_WRITER_ATTRIBUTES = {
    "to_csv", "to_json", "to_parquet", "to_excel", "to_pickle", "to_filename", "savefig",
    "save_as", "write_text", "write_bytes", "savez", "savez_compressed", "savetxt",
}
_WRITER_FUNCTIONS = {
    ("np", "save"), ("numpy", "save"), ("nib", "save"), ("nibabel", "save"),
    ("torch", "save"), ("pickle", "dump"), ("json", "dump"), ("os", "replace"),
    ("os", "rename"), ("tempfile", "mkstemp"), ("tempfile", "NamedTemporaryFile"),
    ("shutil", "copy"), ("shutil", "copyfile"), ("shutil", "copy2"), ("shutil", "move"),
    ("pydicom", "dcmwrite"), ("imageio", "imwrite"), ("sitk", "WriteImage"),
}
# writes that are not whole files; each with the reason it cannot go through the helper
EXEMPT = {
    ("progress.py", "open"): "the progress channel is an append-only log read while written",
    ("pipeline.py", "open"): "the run lock is an empty file held with flock, never published",
    ("executor.py", "open"): "a task's log and the relayed progress are append-only logs",
}
_HELPER_CONTEXTS = {"atomic_open", "atomic_path"}


def _write_mode(call: ast.Call, position: int = 1) -> bool:
    mode = call.args[position] if len(call.args) > position else next(
        (k.value for k in call.keywords if k.arg == "mode"), None)
    return isinstance(mode, ast.Constant) and isinstance(mode.value, str) \
        and any(c in mode.value for c in "wax+")


def _streams_of_helper(tree: ast.AST) -> set[str]:
    """Names bound to a helper's stream or temporary path (``with atomic_open(...) as s``), to
    an in-memory buffer (``io.BytesIO()``) and the parameters of lambdas given to
    :func:`magn_lib.files.save`."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.With):
            for item in node.items:
                call = item.context_expr
                if isinstance(call, ast.Call) and _called_name(call) in _HELPER_CONTEXTS \
                        and isinstance(item.optional_vars, ast.Name):
                    names.add(item.optional_vars.id)
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call) \
                and _called_name(node.value) in ("BytesIO", "StringIO"):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))  # in memory
        if isinstance(node, ast.Call) and _called_name(node) == "save":
            for arg in node.args:
                if isinstance(arg, ast.Lambda):
                    names.update(a.arg for a in arg.args.args)
    return names


def _called_name(call: ast.Call) -> str | None:
    func = call.func
    return func.id if isinstance(func, ast.Name) else \
        func.attr if isinstance(func, ast.Attribute) else None


def direct_writes(source: str) -> list[tuple[int, str]]:
    """(line, what) for every call in ``source`` that writes a file around the helper."""
    tree = ast.parse(source)
    helper_streams = _streams_of_helper(tree)
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        targets = [*node.args, *(k.value for k in node.keywords)]
        into_helper = any(isinstance(a, ast.Name) and a.id in helper_streams for a in targets)
        if isinstance(func, ast.Name) and func.id == "open" and _write_mode(node):
            found.append((node.lineno, "open"))
        elif isinstance(func, ast.Attribute):
            owner = func.value.id if isinstance(func.value, ast.Name) else None
            if (owner, func.attr) == ("os", "open") and "O_CREAT" in ast.unparse(node) \
                    or (owner, func.attr) == ("os", "fdopen") and _write_mode(node):
                found.append((node.lineno, f"os.{func.attr}"))
            elif (owner, func.attr) in _WRITER_FUNCTIONS and not into_helper:
                found.append((node.lineno, f"{owner}.{func.attr}"))
            elif func.attr in _WRITER_ATTRIBUTES and (node.args or any(
                    k.arg in ("path_or_buf", "path", "fname", "filename") for k in node.keywords)) \
                    and not into_helper:
                found.append((node.lineno, f".{func.attr}"))
            elif func.attr == "open" and _write_mode(node, position=0):
                found.append((node.lineno, ".open"))
    return found


def test_the_scanner_finds_each_kind_of_direct_write():
    source = "\n".join([
        "open(p, 'w')", "open(p, mode='ab')", "frame.to_csv(p, index=False)",
        "np.save(p, x)", "np.savez(p, x=x)", "nib.save(img, p)", "torch.save(obj, p)",
        "fig.savefig(p)", "p.write_text('x')", "ds.save_as(p)", "json.dump(obj, f)",
        "os.replace(a, b)", "tempfile.mkstemp()", "os.fdopen(fd, 'w')", "p.open('w')",
        "pickle.dump(obj, f)", "os.open(p, os.O_WRONLY | os.O_CREAT, 0o600)",
    ])
    assert [line for line, _ in direct_writes(source)] == list(range(1, 18))
    allowed = "\n".join([
        "open(p)", "open(p, 'rb')", "os.open(os.devnull, os.O_WRONLY)",
        "text = frame.to_csv(index=False)", "json.dumps(obj)",
        "with atomic_open(p, 'wb') as s:\n    torch.save(obj, s)",
        "save(p, lambda stream: np.savez(stream, x=x))",
        "with atomic_path(p) as tmp:\n    nib.save(img, tmp)",
        "buffer = io.BytesIO()\nfig.savefig(buffer, format='png')",
    ])
    assert direct_writes(allowed) == []


def test_the_library_writes_files_only_through_the_helper():
    offenders, exempt_used = [], set()
    for path in sorted(LIBRARY.rglob("*.py")):
        if path.name == "files.py" and path.parent == LIBRARY:
            continue
        for line, what in direct_writes(path.read_text(encoding="utf-8")):
            key = (path.name, what)
            if key in EXEMPT:
                exempt_used.add(key)
            else:
                offenders.append(f"{path.relative_to(LIBRARY)}:{line}: {what}")
    assert offenders == [], "write through magn_lib.files instead:\n" + "\n".join(offenders)
    assert exempt_used == set(EXEMPT), "an exemption is no longer needed; remove it"
