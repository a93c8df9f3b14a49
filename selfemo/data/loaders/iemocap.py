"""IEMOCAP transcripts, COSMIC split, as JSON lines (`{train,valid,test}.jsonl`).

One dialogue a line: `{dialogue_id, speakers: [..], utterances: [..], labels: [..]}`,
three parallel lists. The same dialogues also ship as the COSMIC pickle
(`iemocap_pickle.py`); both go through `build_dialogue`, so the two formats
cannot drift apart. Labels are the corpus abbreviations (`hap`, `fru`, ...)
or COSMIC's integers 0..5, both mapped to the full-word vocabulary.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from selfemo.data.errors import DataError
from selfemo.data.loaders.common import Context, json_lines, string_list, text
from selfemo.data.model import Dialogue, make_dialogue

VOCAB = "iemocap"
FILES = {"train": "train.jsonl", "dev": "valid.jsonl", "test": "test.jsonl"}
# COSMIC's integer coding of the six classes.
INTEGER_LABELS = ("hap", "sad", "neu", "ang", "exc", "fru")


def load_file(path: Path, split: str | None, ctx: Context) -> Iterator[Dialogue]:
    split = ctx.need_split(path, split)
    for line, record in json_lines(path, ctx):
        try:
            if not isinstance(record, dict):
                raise DataError(path, line, "expected a JSON object")
            yield build_dialogue(record.get("dialogue_id"), record.get("speakers"), record.get("utterances"),
                                 record.get("labels"), split, ctx, path, line)
        except DataError as error:
            ctx.reject(error)


def build_dialogue(dialogue_id: object, speakers: object, texts: object, labels: object,
                   split: str, ctx: Context, path: Path, line: int | None) -> Dialogue:
    """A Dialogue from IEMOCAP's three parallel lists, checking they line up."""
    if not isinstance(dialogue_id, str) or not dialogue_id:
        raise DataError(path, line, f"dialogue_id must be a non-empty string, got {dialogue_id!r}")
    where = f"dialogue {dialogue_id}: "
    speakers = string_list(speakers, "speakers", path, line, where)
    texts = string_list(texts, "utterances", path, line, where)
    if not isinstance(labels, list):
        raise DataError(path, line, f"{where}labels must be a list")
    if not len(speakers) == len(texts) == len(labels):
        raise DataError(path, line, f"{where}{len(speakers)} speakers, {len(texts)} utterances and "
                                    f"{len(labels)} labels: the lists must have the same length")
    if not texts:
        raise DataError(path, line, f"{where}no utterances")
    return make_dialogue(dialogue_id, split, ctx.vocab.name, (
        (f"{dialogue_id}_u{i:03d}", speaker, text(utterance, path, line, f"{where}utterance {i}: "),
         (_label(label, ctx, path, line, f"{where}utterance {i}: "),))
        for i, (speaker, utterance, label) in enumerate(zip(speakers, texts, labels))
    ))


def _label(value: object, ctx: Context, path: Path, line: int | None, where: str) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(INTEGER_LABELS):
        value = INTEGER_LABELS[value]
    return ctx.label(value, path, line, where)
