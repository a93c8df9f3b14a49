"""MELD, the official CSV release (`{train,dev,test}_sent_emo.csv`).

A dialogue is a `Dialogue_ID`, its turns ordered by `Utterance_ID`; ids follow
the clip names of the release (`dia12_utt3`) so a row can be traced back.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from selfemo.data.loaders.common import Context
from selfemo.data.loaders.csv_table import CsvLayout, load_csv
from selfemo.data.model import Dialogue

VOCAB = "meld"
FILES = {split: f"{split}_sent_emo.csv" for split in ("train", "dev", "test")}


def _speaker(value: str) -> str:
    if not value.strip():
        raise ValueError("empty speaker")
    return value.strip()


LAYOUT = CsvLayout(
    key_columns=("Dialogue_ID",),
    dialogue_id=lambda key: f"dia{key[0]}",
    utterance_id=lambda dialogue, turn: f"{dialogue}_utt{turn}",
    speaker=_speaker,
)


def load_file(path: Path, split: str | None, ctx: Context) -> Iterator[Dialogue]:
    return load_csv(path, ctx.need_split(path, split), ctx, LAYOUT)
