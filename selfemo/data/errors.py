"""How loaders say what is wrong with an input, and what they passed over.

Every problem is a `DataError` whose text is `file:line: what is wrong`, the
form editors and CI logs link to, so a user can fix the row instead of
reading a traceback. With `skip_bad_rows` the same errors are collected in a
`LoadReport` instead of raised, so a large corpus with a few broken rows can
still be used, and the user is told exactly what was dropped.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from selfemo.data.vocab import LabelVocab


class DataError(ValueError):
    """A problem in an input file. `line` is None for whole-file problems (`file: message`)."""

    def __init__(self, path: str | Path, line: int | None, message: str) -> None:
        self.path = str(path)
        self.line = line
        self.message = message
        where = self.path if line is None else f"{self.path}:{line}"
        super().__init__(f"{where}: {message}")


@dataclass
class LoadReport:
    """What one `load_dialogues` call read, skipped and repaired.

    `vocab` is the label set rows were checked against (for `jsonl` it may come
    from a file header, so the caller learns it here). `replaced` lists the
    `file:line` places that were not valid UTF-8 and were decoded with U+FFFD.
    """

    vocab: LabelVocab | None = None
    files: list[Path] = field(default_factory=list)
    skipped: list[DataError] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)

    def summary(self, first: int = 5) -> list[str]:
        """Human-readable lines about skipped rows and repaired text (empty if all was clean)."""
        lines: list[str] = []
        if self.skipped:
            lines.append(f"skipped {len(self.skipped)} bad row(s); the first {min(first, len(self.skipped))}:")
            lines += [f"  {error}" for error in self.skipped[:first]]
        if self.replaced:
            lines.append(
                f"{len(self.replaced)} line(s) were not valid UTF-8 and were decoded with replacement "
                f"characters: {', '.join(self.replaced[:first])}{' ...' if len(self.replaced) > first else ''}"
            )
        return lines
