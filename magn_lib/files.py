"""The one way the study writes a file: complete or not at all, readable as the umask allows.

Every writer in :mod:`magn_lib` goes through this module. A file is written under a hidden
temporary name in its target folder (so the rename never crosses a file system), flushed to
disk (``fsync``), given the permissions an ordinary ``open(path, "w")`` would give under the
process umask (``0o644`` at the usual umask ``022``; a temporary file from :mod:`tempfile` alone
would be ``0o600`` and a colleague could not open the report), and renamed over the target
(``os.replace``). A reader therefore sees either the old file or the new one, never half of
one, even if the process is killed; a failed write removes its temporary file and leaves the
old file untouched.

Libraries that write to a stream (``torch.save``, ``np.savez``, ``fig.savefig``, pydicom's
``save_as``, ``pickle.dump``) use :func:`atomic_open` or :func:`save`; libraries that insist on
a file name (``nib.save`` chooses compression from the extension) use :func:`atomic_path`.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

__all__ = [
    "atomic_open",
    "atomic_path",
    "default_dir_mode",
    "default_file_mode",
    "save",
    "write_bytes",
    "write_csv",
    "write_json",
    "write_text",
]

_STATUS = Path("/proc/self/status")


def _umask() -> int:
    """The process umask, read without changing it where the system allows (Linux)."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    current = os.umask(0o022)  # elsewhere: the only portable query sets it, then restores it
    os.umask(current)
    return current


def default_file_mode() -> int:
    """Permission bits a new file gets from ``open(path, "w")`` now: ``0o666 & ~umask``."""
    return 0o666 & ~_umask()


def default_dir_mode() -> int:
    """Permission bits a new folder gets from ``mkdir`` now: ``0o777 & ~umask``."""
    return 0o777 & ~_umask()


def _temporary(path: Path, suffix: str) -> tuple[int, Path]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    return fd, Path(name)


def _publish(fd: int, tmp: Path, path: Path, permissions: int | None) -> None:
    os.fsync(fd)
    os.fchmod(fd, default_file_mode() if permissions is None else permissions)
    os.replace(tmp, path)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "wb", *, encoding: str | None = None,
                newline: str | None = None, permissions: int | None = None) -> Iterator[IO[Any]]:
    """Open a stream whose content replaces ``path`` when the ``with`` block ends without error.

    Args:
        path: the target file; missing parent folders are created.
        mode: ``"wb"`` (bytes) or ``"w"`` (text).
        encoding: text encoding for ``"w"`` (default UTF-8).
        newline: as for :func:`open` (``""`` for the :mod:`csv` module).
        permissions: permission bits of the published file; default from the umask
            (:func:`default_file_mode`). Pass ``0o600`` for a file only its owner may read.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes a whole new file: mode 'w' or 'wb', not {mode!r}")
    path = Path(path)
    fd, tmp = _temporary(path, ".tmp")
    try:
        text = mode == "w"
        with os.fdopen(fd, mode, encoding=(encoding or "utf-8") if text else None,
                       newline=newline if text else None) as stream:
            yield stream
            stream.flush()
            _publish(stream.fileno(), tmp, path, permissions)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], *, suffix: str | None = None,
                permissions: int | None = None) -> Iterator[Path]:
    """A temporary file name in ``path``'s folder; renamed over ``path`` after the block.

    For libraries that write by file name only. The temporary name ends with the target's
    suffixes (``.tmp.nii.gz`` for ``x.nii.gz``) unless ``suffix`` is given, so a library that
    chooses its format from the extension writes the same bytes it would write to ``path``.
    """
    path = Path(path)
    fd, tmp = _temporary(path, ".tmp" + "".join(path.suffixes) if suffix is None else suffix)
    os.close(fd)
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDWR)
        try:
            _publish(fd, tmp, path, permissions)
        finally:
            os.close(fd)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def save(path: str | os.PathLike[str], writer: Callable[[IO[bytes]], object], *,
         permissions: int | None = None) -> Path:
    """Call ``writer(stream)`` on a binary stream that atomically becomes ``path``; return it.

    Example: ``save(path, lambda stream: torch.save(state, stream))``.
    """
    with atomic_open(path, "wb", permissions=permissions) as stream:
        writer(stream)
    return Path(path)


def write_bytes(path: str | os.PathLike[str], data: bytes, *,
                permissions: int | None = None) -> Path:
    """Atomically write ``data`` to ``path``; return the path."""
    with atomic_open(path, "wb", permissions=permissions) as stream:
        stream.write(data)
    return Path(path)


def write_text(path: str | os.PathLike[str], text: str, *, encoding: str = "utf-8",
               permissions: int | None = None) -> Path:
    """Atomically write ``text`` (``encoding``, newlines as given) to ``path``; return it."""
    return write_bytes(path, text.encode(encoding), permissions=permissions)


def write_json(path: str | os.PathLike[str], obj: Any, *, indent: int | None = 2,
               sort_keys: bool = False, default: Callable[[Any], Any] | None = None,
               permissions: int | None = None) -> Path:
    """Atomically write ``obj`` as JSON (UTF-8, ``indent`` spaces); return the path."""
    text = json.dumps(obj, indent=indent, sort_keys=sort_keys, default=default)
    return write_text(path, text, permissions=permissions)


def write_csv(frame: Any, path: str | os.PathLike[str], *, index: bool = False,
              permissions: int | None = None) -> Path:
    """Atomically write a pandas DataFrame as CSV (no index unless asked); return the path."""
    return write_text(path, frame.to_csv(index=index), permissions=permissions)
