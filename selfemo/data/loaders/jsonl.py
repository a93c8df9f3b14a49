"""The project's own corpus format: JSON lines, one dialogue a line (docs/data-formats.md).

    {"labels": ["joy", "anger"], "synonyms": {"happy": "joy"}, "name": "mycorpus"}   (optional header)
    {"id": "d1", "split": "train", "utterances": [{"speaker": "A", "text": "Hi!", "labels": ["joy"]}]}

The label set comes from the caller (`labels=`) or from the header line; when
both are given they must name the same labels, so a file cannot be checked
against a vocabulary it was not written for. Utterances may carry several
labels or none (`[]`, "no emotion").
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from selfemo.data.errors import DataError
from selfemo.data.loaders.common import Context, json_lines, text
from selfemo.data.model import Dialogue, Turn, canonical_split, make_dialogue
from selfemo.data.vocab import vocab_from_labels

VOCAB = None  # given by the caller or the header
FILES = {split: f"{split}.jsonl" for split in ("train", "dev", "test")}


def load_file(path: Path, split: str | None, ctx: Context) -> Iterator[Dialogue]:
    for n, (line, record) in enumerate(json_lines(path, ctx)):
        if n == 0 and isinstance(record, dict) and "labels" in record and "utterances" not in record:
            _adopt_header(record, path, line, ctx)
            continue
        if ctx.vocab is None:
            raise DataError(path, line, "no label set: pass labels (--labels a,b,c) or start the file "
                                        'with a header line {"labels": [...]}')
        try:
            yield _dialogue(record, split, ctx, path, line)
        except DataError as error:
            ctx.reject(error)


def default_name(path: Path) -> str:
    """A corpus without a declared name is called after its folder."""
    return (path if path.is_dir() else path.parent).resolve().name or "jsonl"


def _adopt_header(header: dict, path: Path, line: int, ctx: Context) -> None:
    labels, synonyms = header.get("labels"), header.get("synonyms") or {}
    if not isinstance(labels, list) or not labels or not all(isinstance(x, str) for x in labels):
        raise DataError(path, line, "header: labels must be a non-empty list of strings")
    if not isinstance(synonyms, dict) or not all(isinstance(v, str) for v in synonyms.values()):
        raise DataError(path, line, "header: synonyms must map strings to labels")
    try:
        vocab = vocab_from_labels(str(header.get("name") or default_name(path)), labels, synonyms)
    except ValueError as exc:
        raise DataError(path, line, f"header: {exc}") from None
    if ctx.vocab is not None and ctx.vocab.labels != vocab.labels:
        raise DataError(path, line, f"header labels {', '.join(vocab.labels)} differ from the label set in use "
                                 f"({', '.join(ctx.vocab.labels)})")
    if ctx.vocab is None:
        ctx.vocab = vocab


def _dialogue(record: Any, file_split: str | None, ctx: Context, path: Path, line: int) -> Dialogue:
    if not isinstance(record, dict):
        raise DataError(path, line, "expected a JSON object")
    dialogue_id = record.get("id")
    if not isinstance(dialogue_id, str) or not dialogue_id:
        raise DataError(path, line, f"id must be a non-empty string, got {dialogue_id!r}")
    split = _split(record.get("split"), file_split, path, line)
    utterances = record.get("utterances")
    if not isinstance(utterances, list) or not utterances:
        raise DataError(path, line, "utterances must be a non-empty list")
    return make_dialogue(dialogue_id, split, ctx.vocab.name, (
        _turn(u, f"{dialogue_id}_u{i:03d}", ctx, path, line, f"utterance {i}: ") for i, u in enumerate(utterances)
    ))


def _split(value: Any, file_split: str | None, path: Path, line: int) -> str:
    """The record's split; the file name's when the record has none; they must agree."""
    if value is None:
        if file_split is None:
            raise DataError(path, line, "no split: give \"split\" or name the file train/dev/test.jsonl")
        return file_split
    try:
        split = canonical_split(value)
    except ValueError as exc:
        raise DataError(path, line, str(exc)) from None
    if file_split is not None and split != file_split:
        raise DataError(path, line, f"split {value!r} in a {file_split} file")
    return split


def _turn(raw: Any, default_id: str, ctx: Context, path: Path, line: int, where: str) -> Turn:
    if not isinstance(raw, dict):
        raise DataError(path, line, f"{where}expected a JSON object")
    speaker, labels, utterance_id = raw.get("speaker"), raw.get("labels"), raw.get("id", default_id)
    if not isinstance(speaker, str):
        raise DataError(path, line, f"{where}speaker must be a string")
    if not isinstance(utterance_id, str):
        raise DataError(path, line, f"{where}id must be a string")
    if not isinstance(labels, list):
        raise DataError(path, line, f"{where}labels must be a list (empty for no emotion)")
    canonical = {ctx.label(label, path, line, where) for label in labels}
    # Several labels come out in vocabulary order, each once.
    return utterance_id, speaker, text(raw.get("text"), path, line, where), tuple(
        label for label in ctx.vocab.labels if label in canonical
    )
