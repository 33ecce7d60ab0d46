"""The exception types for bad input and bad configuration.

``InputError`` is the one exception for problems in the user's data: its message names the
patient, the file and what is wrong, and says what to do where that is known.
"""

from __future__ import annotations

from collections.abc import Iterable
from os import PathLike

__all__ = ["ConfigError", "InputError", "UpstreamError"]


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
