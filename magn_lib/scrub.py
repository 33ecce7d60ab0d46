"""The one scrubber for every text the study writes that came from a DICOM header, a file or
folder name, or a library warning.

The study's outputs may carry study ids (``P001``, ``P001-L1``), views and scrubbed relative
paths, never what a hospital export puts in names and headers. A :class:`Scrubber` turns a text
into that form, in this order:

1. undecodable file-name bytes (Python's surrogate escapes, e.g. a Latin-1 ``\\xe9``) are shown
   escaped (``\\udce9`` becomes the four characters ``\\xe9``), so the text can always be encoded;
2. every known folder or file is replaced by its label: a series folder by
   ``"P001 sagittal series"``, a mask file by ``"P001 mask"``, the manifest folder by
   ``"manifest"`` (longest path first, so a series folder inside the manifest wins);
3. every identifying value (the headers' names, ids, dates, institutions, descriptions; see
   :data:`magn_lib.dicom.IDENTITY_KEYWORDS`) and each word of it is replaced by ``[redacted]``
   where it stands as a whole word, case-insensitively;
4. every UID-like run of digits and dots (four components or more, malformed ones included) is
   replaced by ``[UID]``.

:func:`captured_warnings` runs a block with Python warnings and the ``pydicom`` logger captured,
and re-issues each message once, scrubbed, when the block ends.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import warnings
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path

from magn_lib.errors import InputError

__all__ = [
    "REDACTED",
    "UID_PATTERN",
    "Scrubber",
    "captured_warnings",
    "escape_name",
    "name_sort_key",
]

REDACTED = "[redacted]"
#: A DICOM UID or anything that looks like one: digit groups joined by dots, four or more
#: components; a malformed component (letters, leading zeros) is included, so no part leaks.
UID_PATTERN = re.compile(r"(?<![\w.])\d+(?:\.[0-9A-Za-z]+){3,}\.?(?![\w])")
# Words shorter than this are not redacted on their own (they would blank out common words).
_MIN_SECRET_WORD = 3
_WORD_SPLIT = re.compile(r"[^0-9A-Za-zÀ-ÖØ-öø-ÿ]+")


def escape_name(text: str | bytes | PathLike[str]) -> str:
    """``text`` with undecodable file-name bytes shown escaped (``\\xe9``), always encodable.

    File names on POSIX are bytes; Python keeps bytes that are not valid UTF-8 as surrogate
    escapes, which cannot be written to a UTF-8 file or terminal. ``bytes`` are decoded as
    UTF-8 with the same escaping.
    """
    if isinstance(text, bytes):
        return text.decode("utf-8", "backslashreplace")
    text = os.fspath(text) if isinstance(text, PathLike) else str(text)
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a lone surrogate that is not an escaped byte
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return raw.decode("utf-8", "backslashreplace")


def name_sort_key(path: str | PathLike[str]) -> bytes:
    """Sort key of a file by the bytes of its name: total, whatever the names' encoding."""
    return os.fsencode(Path(path).name)


def _secret_words(values: Iterable[str], *, words: bool) -> set[str]:
    """Each value (three characters or more) and, with ``words``, each of its words: a word of
    letters of three or more, or a number of six digits or more (an id, a date)."""
    found: set[str] = set()
    for value in values:
        value = str(value).strip()
        if len(value) >= _MIN_SECRET_WORD:
            found.add(value)
        if words:
            for word in _WORD_SPLIT.split(value):
                if len(word) >= _MIN_SECRET_WORD and (not word.isdigit() or len(word) >= 6):
                    found.add(word)
    return found


@dataclass(frozen=True)
class Scrubber:
    """Turns any text into study ids and labelled, scrubbed paths (see the module docstring).

    Args:
        labels: ``{folder or file: label}``, e.g. ``{series_folder: "P001 sagittal series",
            manifest_root: "manifest"}``; a path inside a labelled folder is shown as
            ``label/rest``.
        secrets: identifying text to redact, each as a whole word (see :meth:`build`).
    """

    labels: Mapping[str, str] = field(default_factory=dict)
    secrets: frozenset[str] = frozenset()

    @classmethod
    def build(cls, *, labels: Mapping[str | PathLike[str], str] | None = None,
              secrets: Iterable[str] = (), names: Iterable[str] = ()) -> Scrubber:
        """A scrubber from paths (any form; resolved and raw spellings both replaced) and
        identifying values: ``secrets`` are redacted as whole values (ids, dates, addresses,
        descriptions: their single words, such as "series" or "post", are common words),
        ``names`` (person names, ``WANG^XIUYING``) also word by word, as a folder named
        ``WANG_XIUYING`` or ``Xiuying Wang`` spells them."""
        table: dict[str, str] = {}
        for path, label in (labels or {}).items():
            for spelling in {str(path), str(Path(path).absolute()), _resolved(path)}:
                if spelling and spelling != ".":
                    table[spelling.rstrip(os.sep) or os.sep] = label
        return cls(labels=table, secrets=frozenset(_secret_words(secrets, words=False)
                                                   | _secret_words(names, words=True)))

    def with_secrets(self, secrets: Iterable[str] = (), names: Iterable[str] = ()) -> Scrubber:
        """The same scrubber, redacting ``secrets`` and ``names`` as well (see :meth:`build`)."""
        more = _secret_words(secrets, words=False) | _secret_words(names, words=True)
        return Scrubber(labels=self.labels, secrets=self.secrets | more)

    def __call__(self, text: object) -> str:
        """The scrubbed text."""
        out = escape_name(str(text))
        for path in sorted(self.labels, key=len, reverse=True):
            label = self.labels[path]
            shown = escape_name(path)
            out = out.replace(shown + os.sep, label + "/").replace(shown, label)
        for secret in sorted(self.secrets, key=len, reverse=True):
            # whole words only: the word "sag" of a series description is not "sagittal"
            pattern = rf"(?<![0-9A-Za-z]){re.escape(escape_name(secret))}(?![0-9A-Za-z])"
            out = re.sub(pattern, REDACTED, out, flags=re.IGNORECASE)
        return UID_PATTERN.sub("[UID]", out)

    def path(self, path: str | PathLike[str]) -> str:
        """A path as the outputs may show it: labelled, scrubbed, never absolute."""
        text = self(os.fspath(path))
        if Path(text).is_absolute():  # outside every labelled folder: its name only
            text = self(Path(path).name)
        return text

    def error(self, err: InputError) -> InputError:
        """``err`` (and every problem combined in it) with each part scrubbed."""
        parts = [
            InputError(self(e.problem), patient=e.patient,
                       file=None if e.file is None else self.path(e.file),
                       hint=None if e.hint is None else self(e.hint))
            for e in err.errors
        ]
        return InputError.combine(parts)


def _resolved(path: str | PathLike[str]) -> str:
    try:
        return str(Path(path).resolve())
    except (OSError, RuntimeError):
        return str(path)


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextlib.contextmanager
def captured_warnings(scrubber: Scrubber | None = None) -> Iterator[list[str]]:
    """Capture Python warnings and ``pydicom`` log records inside the block; when it ends,
    re-issue each distinct message once as a ``UserWarning``, scrubbed.

    pydicom reports the same problem twice (a warning and a log record) with the raw value in
    it (e.g. ``Invalid value for VR UI: '1.2.3.A4'``); both are caught here, so neither reaches
    a notebook's output, a log or the terminal unscrubbed.

    Yields:
        the list that receives the scrubbed messages (filled when the block ends).
    """
    scrub = scrubber or Scrubber()
    logger = logging.getLogger("pydicom")
    handler = _Records()
    saved = (logger.handlers[:], logger.propagate)
    logger.handlers = [handler]
    logger.propagate = False
    out: list[str] = []
    caught: list[warnings.WarningMessage] = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield out
    finally:
        logger.handlers, logger.propagate = saved
        seen: set[str] = set()
        for message in [str(w.message) for w in caught] + handler.messages:
            text = scrub(message)
            if text not in seen:
                seen.add(text)
                out.append(text)
        for text in out:
            warnings.warn(text, UserWarning, stacklevel=3)
