"""One-utterance-per-row CSV corpora (MELD, EmoryNLP): rows grouped into dialogues.

Both publishers write a row per utterance with integer columns naming the
dialogue and the turn; they differ only in which columns those are and how a
speaker is written, which is what `CsvLayout` says. Rows of one dialogue are
contiguous in the published files, which lets the loader stream: it holds
one dialogue at a time, and a dialogue that shows up again later is an error
rather than a silently split conversation.
"""
from __future__ import annotations

import csv
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from selfemo.data.errors import DataError
from selfemo.data.loaders.common import Context, integer, text, text_lines
from selfemo.data.model import Dialogue, make_dialogue


@dataclass(frozen=True)
class CsvLayout:
    """Which columns hold what, and how ids and speakers are spelled."""

    key_columns: tuple[str, ...]  # integer columns that together identify a dialogue
    dialogue_id: Callable[[tuple[int, ...]], str]
    utterance_id: Callable[[str, int], str]  # (dialogue id, turn number) -> id
    speaker: Callable[[str], str]  # raises ValueError saying what is wrong
    text_column: str = "Utterance"
    speaker_column: str = "Speaker"
    label_column: str = "Emotion"
    order_column: str = "Utterance_ID"

    @property
    def required(self) -> tuple[str, ...]:
        return (self.text_column, self.speaker_column, self.label_column, *self.key_columns, self.order_column)


@dataclass(frozen=True)
class _Row:
    line: int
    key: tuple[int, ...]
    order: int
    speaker: str
    text: str
    label: str


def load_csv(path: Path, split: str, ctx: Context, layout: CsvLayout) -> Iterator[Dialogue]:
    """Dialogues of one CSV file, each ordered by its turn column."""
    reader = csv.reader(text_lines(path, ctx.report))
    header = [name.strip() for name in next(reader, [])]
    missing = [name for name in layout.required if name not in header]
    if missing:
        found = ", ".join(header) or "nothing"
        raise DataError(path, 1, f"missing column(s) {', '.join(missing)}; the header has {found}")
    columns = {name: header.index(name) for name in layout.required}

    group: list[_Row] = []
    done: set[tuple[int, ...]] = set()
    end = reader.line_num
    for fields in reader:
        line, end = end + 1, reader.line_num
        if not fields:
            continue
        try:
            row = _parse(fields, len(header), columns, layout, ctx, path, line)
            _check_new(row, group, done, layout, path)
        except DataError as error:
            ctx.reject(error)
            continue
        if group and row.key != group[0].key:
            done.add(group[0].key)
            yield _dialogue(group, layout, split, ctx)
            group = []
        group.append(row)
    if group:
        yield _dialogue(group, layout, split, ctx)


def _parse(fields, width, columns, layout: CsvLayout, ctx: Context, path: Path, line: int) -> _Row:
    if len(fields) != width:
        raise DataError(path, line, f"expected {width} fields, found {len(fields)}")
    try:
        speaker = layout.speaker(fields[columns[layout.speaker_column]])
    except ValueError as exc:
        raise DataError(path, line, f"{layout.speaker_column}: {exc}") from None
    return _Row(
        line=line,
        key=tuple(integer(fields[columns[c]], c, path, line) for c in layout.key_columns),
        order=integer(fields[columns[layout.order_column]], layout.order_column, path, line),
        speaker=speaker,
        text=text(fields[columns[layout.text_column]], path, line),
        label=ctx.label(fields[columns[layout.label_column]], path, line),
    )


def _check_new(row: _Row, group: list[_Row], done: set, layout: CsvLayout, path: Path) -> None:
    """A row continues the current dialogue with a new turn, or starts a dialogue not seen before."""
    if group and row.key == group[0].key:
        if any(r.order == row.order for r in group):
            raise DataError(path, row.line, f"{layout.order_column} {row.order} repeats in dialogue "
                                            f"{layout.dialogue_id(row.key)}")
    elif row.key in done:
        raise DataError(path, row.line, f"dialogue {layout.dialogue_id(row.key)} appears again after other "
                                        "dialogues; the rows of a dialogue must be contiguous")


def _dialogue(rows: list[_Row], layout: CsvLayout, split: str, ctx: Context) -> Dialogue:
    dialogue_id = layout.dialogue_id(rows[0].key)
    return make_dialogue(dialogue_id, split, ctx.vocab.name, (
        (layout.utterance_id(dialogue_id, r.order), r.speaker, r.text, (r.label,))
        for r in sorted(rows, key=lambda r: r.order)
    ))
