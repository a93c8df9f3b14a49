"""What every loader shares: the load context, text decoding, and field checks.

Loaders stream: files are read a line at a time (the CSV module is fed the
decoded lines), so a corpus is never held twice in memory and every error
knows its line.
"""
from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from selfemo.data.errors import DataError, LoadReport
from selfemo.data.vocab import LabelVocab

_BOM = b"\xef\xbb\xbf"
_INTEGER = re.compile(r"\s*[0-9]+\s*")


@dataclass
class Context:
    """One load: the vocabulary rows are checked against, the splits wanted, and the report.

    The vocabulary lives in the report, so the caller learns it; it may start
    as None for formats whose label set is declared in the file (`jsonl`),
    and the loader sets it before yielding anything.
    """

    report: LoadReport
    skip_bad_rows: bool
    splits: frozenset[str]

    @property
    def vocab(self) -> LabelVocab | None:
        return self.report.vocab

    @vocab.setter
    def vocab(self, vocab: LabelVocab) -> None:
        self.report.vocab = vocab

    def reject(self, error: DataError) -> None:
        """A bad row: raise it, or with `skip_bad_rows` record it and let the caller go on."""
        if not self.skip_bad_rows:
            raise error
        self.report.skipped.append(error)

    def label(self, raw: object, path: Path, line: int | None, where: str = "") -> str:
        """The canonical label for `raw` (label name, any case, or synonym), or a DataError."""
        assert self.vocab is not None, "the loader must settle the vocabulary first"
        canonical = self.vocab.canonical(raw)
        if canonical is None:
            raise DataError(
                path, line, f"{where}unknown label {raw!r}; {self.vocab.name} labels are {', '.join(self.vocab.labels)}"
            )
        return canonical

    def need_split(self, path: Path, split: str | None) -> str:
        """The file's split, for formats with one split per file (it must be known)."""
        if split is None:
            raise DataError(path, None, "cannot tell the split from the file name; name the file "
                                        "after its split (train/dev/test) or ask for exactly one split")
        return split


def text_lines(path: Path, report: LoadReport) -> Iterator[str]:
    """Decoded lines of a UTF-8 file, line endings kept, a leading BOM dropped.

    A line that is not valid UTF-8 is decoded with U+FFFD and its place is
    recorded in `report.replaced`; anything else would either crash on one bad
    byte or silently change text that was fine.
    """
    with open_input(path) as handle:
        for number, raw in enumerate(handle, start=1):
            if number == 1 and raw.startswith(_BOM):
                raw = raw[len(_BOM):]
            try:
                yield raw.decode("utf-8")
            except UnicodeDecodeError:
                report.replaced.append(f"{path}:{number}")
                yield raw.decode("utf-8", errors="replace")


def open_input(path: Path):
    """Open a data file for binary reading; a missing or unreadable file is a DataError."""
    try:
        return open(path, "rb")
    except OSError as exc:
        raise DataError(path, None, f"cannot read: {exc.strerror or exc}") from None


def json_lines(path: Path, ctx: Context) -> Iterator[tuple[int, Any]]:
    """(line number, parsed value) for each non-blank line of a JSON-lines file.

    A line that is not JSON (a truncated write, say) is a bad row.
    """
    for number, text in enumerate(text_lines(path, ctx.report), start=1):
        if not text.strip():
            continue
        try:
            yield number, json.loads(text.rstrip("\r\n"))
        except json.JSONDecodeError as exc:
            ctx.reject(DataError(path, number, f"invalid JSON: {exc.msg} (column {exc.colno})"))


def integer(value: str, column: str, path: Path, line: int) -> int:
    """A non-negative integer id field; `1.5`, `x` or an empty cell is a DataError."""
    if not _INTEGER.fullmatch(value):
        raise DataError(path, line, f"{column} must be a non-negative integer, got {value!r}")
    return int(value)


def text(value: object, path: Path, line: int | None, where: str = "") -> str:
    """Utterance text: a non-blank string, kept exactly as published."""
    if value is None or isinstance(value, str) and not value.strip():
        raise DataError(path, line, f"{where}empty text")
    if not isinstance(value, str):
        raise DataError(path, line, f"{where}text must be a string, got {type(value).__name__}")
    return value


def string_list(value: object, what: str, path: Path, line: int | None, where: str = "") -> list[str]:
    """A JSON list of strings (speakers, texts, labels), or a DataError saying what it is instead."""
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise DataError(path, line, f"{where}{what} must be a list of strings")
    return value
