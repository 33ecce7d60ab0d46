"""The exception types for bad input and bad configuration.

``InputError`` is the one exception for problems in the user's data: its message names the
patient, the file and what is wrong, and says what to do where that is known.
"""

from __future__ import annotations

import errno
import shutil
from collections.abc import Iterable
from os import PathLike
from pathlib import Path

__all__ = ["ConfigError", "InputError", "OutOfSpaceError", "UpstreamError", "free_bytes"]

# the errors of a full disk (ENOSPC) or an exhausted quota (EDQUOT)
_NO_SPACE = frozenset({errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)})


class InputError(ValueError):
    """A problem in the user's data (manifest, DICOM series, mask).

    Args:
        problem: what is wrong, in words a user can act on.
        patient: the study's (pseudonymous) patient id, when the problem belongs to one patient.
        file: the file or folder that holds the problem.
        hint: what to do about it.

    Attributes ``patient``, ``file``, ``problem`` and ``hint`` keep the parts; ``errors`` holds
    the individual errors when several were combined with :meth:`combine`.
    """

    def __init__(
        self,
        problem: str,
        *,
        patient: str | None = None,
        file: str | PathLike[str] | None = None,
        hint: str | None = None,
    ) -> None:
        self.problem = problem
        self.patient = patient
        self.file = None if file is None else str(file)
        self.hint = hint
        self.errors: list[InputError] = [self]
        super().__init__(self._format())

    def _format(self) -> str:
        where = []
        if self.patient is not None:
            where.append(f"patient {self.patient}")
        if self.file is not None:
            where.append(f"file {self.file}")
        message = f"{', '.join(where)}: {self.problem}" if where else self.problem
        if self.hint:
            message += f"; {self.hint}"
        # file names are bytes: show undecodable ones escaped, so the message can be written
        try:
            return message.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        except UnicodeEncodeError:
            return message.encode("utf-8", "backslashreplace").decode("utf-8")

    @classmethod
    def combine(cls, errors: Iterable[InputError]) -> InputError:
        """One error that reports every problem at once (one line each)."""
        errors = [e for err in errors for e in err.errors]
        if not errors:
            raise ValueError("combine() needs at least one InputError")
        if len(errors) == 1:
            return errors[0]
        lines = "\n".join(f"  - {e}" for e in errors)
        combined = cls(f"{len(errors)} problems in the input:\n{lines}")
        combined.errors = errors
        return combined


class ConfigError(ValueError):
    """A problem in a profile or parameter file; the message names the key."""


class UpstreamError(RuntimeError):
    """An earlier notebook's results are missing or out of date.

    Args:
        problem: what is missing, e.g. which file.
        notebook: the notebook that must run first (``"02_annotation_transfer"``).
        command: the command that runs it (``"magn study --profile demo --to 02"``).
    """

    def __init__(self, problem: str, *, notebook: str, command: str) -> None:
        self.problem = problem
        self.notebook = notebook
        self.command = command
        super().__init__(f"{problem}. Run notebook {notebook} first: `{command}`")


def _megabytes(n: float) -> str:
    return f"{n / 1e6:,.1f} MB" if n < 1e9 else f"{n / 1e9:,.2f} GB"


def free_bytes(path: str | PathLike[str]) -> int | None:
    """Free bytes on the disk holding ``path`` (its nearest existing folder), or ``None``."""
    folder = Path(path)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


class OutOfSpaceError(OSError):
    """The disk (or quota) holding a run folder is full.

    The message names the folder, the space the failed write needed (when known) and the space
    left, and says what to do; ``errno`` stays ``ENOSPC`` so that code catching ``OSError``
    still sees what happened.

    Args:
        folder: the folder being written.
        needed: bytes the failed write needed, when known.
        what: what was being written (``"the run record"``).
    """

    def __init__(self, folder: str | PathLike[str], *, needed: int | None = None,
                 what: str | None = None) -> None:
        self.folder = str(folder)
        self.needed = needed
        self.free = free_bytes(folder)
        parts = [f"out of disk space writing {what + ' in ' if what else ''}{self.folder}"]
        if needed is not None:
            parts.append(f"{_megabytes(needed)} needed")
        if self.free is not None:
            parts.append(f"{_megabytes(self.free)} free on that disk")
        self.message = (", ".join(parts) + "; free some space (or choose other --out/--work "
                        "folders) and run again: finished steps are kept")
        super().__init__(errno.ENOSPC, self.message)

    def __str__(self) -> str:
        return self.message

    @staticmethod
    def is_out_of_space(exc: BaseException) -> bool:
        """Whether ``exc`` is a full disk or quota (an ``OSError`` with ENOSPC or EDQUOT)."""
        return isinstance(exc, OSError) and exc.errno in _NO_SPACE
