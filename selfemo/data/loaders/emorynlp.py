"""EmoryNLP, the community CSV (`emorynlp_{train,dev,test}_final.csv`, the COSMIC split).

A dialogue is a scene, keyed by (Season, Episode, Scene_ID), its turns ordered
by `Utterance_ID`. Ids are spelled as in the official JSON release
(`s01_e02_c03_u004`), so the two EmoryNLP formats name the same turn alike.
`Speaker` is a Python list literal such as `['Ross Geller']`: it is parsed as
a literal list of strings and nothing else, never evaluated.
"""
from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from selfemo.data.loaders.common import Context
from selfemo.data.loaders.csv_table import CsvLayout, load_csv
from selfemo.data.model import Dialogue

VOCAB = "emorynlp"
FILES = {split: f"emorynlp_{split}_final.csv" for split in ("train", "dev", "test")}
_MAX_LITERAL = 1000  # a speaker list is short; refuse to parse anything that is not


def speaker_names(names: list[str]) -> str:
    """Several speakers saying one line together become one speaker, `A, B`."""
    return ", ".join(name.strip() for name in names)


def parse_speaker_literal(value: str) -> str:
    """`['Ross Geller', 'Joey Tribbiani']` → `Ross Geller, Joey Tribbiani`; ValueError otherwise."""
    if len(value) > _MAX_LITERAL:
        raise ValueError(f"speaker literal longer than {_MAX_LITERAL} characters")
    try:
        node = ast.parse(value.strip(), mode="eval").body
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        raise ValueError(f"not a Python list literal: {value!r}") from None
    if not isinstance(node, ast.List) or not all(
        isinstance(e, ast.Constant) and isinstance(e.value, str) for e in node.elts
    ):
        raise ValueError(f"not a list of strings: {value!r}")
    return speaker_names(ast.literal_eval(node))


LAYOUT = CsvLayout(
    key_columns=("Season", "Episode", "Scene_ID"),
    dialogue_id=lambda key: "s{:02d}_e{:02d}_c{:02d}".format(*key),
    utterance_id=lambda scene, turn: f"{scene}_u{turn:03d}",
    speaker=parse_speaker_literal,
)


def load_file(path: Path, split: str | None, ctx: Context) -> Iterator[Dialogue]:
    return load_csv(path, ctx.need_split(path, split), ctx, LAYOUT)
