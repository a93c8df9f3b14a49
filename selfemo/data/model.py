"""The one conversation type every corpus is loaded into.

Loaders for MELD, EmoryNLP, IEMOCAP and user JSONL all produce `Dialogue`s, so
self-play, training and evaluation never see a publisher's format. The types
are frozen: a loaded corpus is shared by many prompts and must not change
under them.
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Literal

from pydantic import BaseModel, ConfigDict, field_validator, model_validator

Split = Literal["train", "dev", "test"]
SPLITS: tuple[str, ...] = ("train", "dev", "test")

# Publishers name the held-out split differently (IEMOCAP/COSMIC says `valid`).
_SPLIT_ALIASES = {
    "train": "train",
    "dev": "dev",
    "valid": "dev",
    "validation": "dev",
    "val": "dev",
    "test": "test",
}


def canonical_split(name: str) -> str:
    """`train`, `dev` or `test` for any of their usual spellings; ValueError otherwise."""
    split = _SPLIT_ALIASES.get(str(name).strip().lower())
    if split is None:
        raise ValueError(f"unknown split {name!r}: expected one of train, dev (valid), test")
    return split


def split_from_filename(name: str) -> str | None:
    """The split a file name states (`emorynlp_dev_final.csv` → dev), or None.

    Only whole words count, so `contest.csv` is not a test file; a name that
    mentions two different splits is ambiguous and gives None.
    """
    found = {_SPLIT_ALIASES[w] for w in re.split(r"[^a-z]+", name.lower()) if w in _SPLIT_ALIASES}
    return found.pop() if len(found) == 1 else None


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    @field_validator("split", mode="before", check_fields=False)
    @classmethod
    def _canonical_split(cls, value: object) -> object:
        return canonical_split(value) if isinstance(value, str) else value


class Utterance(_Frozen):
    """One turn: who said what, and the emotions it carries.

    `labels` are canonical names of the corpus vocabulary (see `vocab.py`);
    an empty tuple means "no emotion" (allowed in multi-label corpora).
    `source` is that vocabulary's name, so mixed corpora stay scorable.
    """

    id: str
    speaker: str
    text: str
    labels: tuple[str, ...]
    split: Split
    source: str


class Dialogue(_Frozen):
    """A conversation in order; every utterance shares its split and source."""

    id: str
    split: Split
    source: str
    utterances: tuple[Utterance, ...]

    @model_validator(mode="after")
    def _consistent(self) -> Dialogue:
        for u in self.utterances:
            if (u.split, u.source) != (self.split, self.source):
                raise ValueError(
                    f"utterance {u.id} is {u.source}/{u.split} inside dialogue {self.id} ({self.source}/{self.split})"
                )
        return self


Turn = tuple[str, str, str, tuple[str, ...]]  # (utterance id, speaker, text, labels)


def make_dialogue(dialogue_id: str, split: str, source: str, turns: Iterable[Turn]) -> Dialogue:
    """A Dialogue from its turns, each utterance taking the dialogue's split and source."""
    return Dialogue(id=dialogue_id, split=split, source=source, utterances=tuple(
        Utterance(id=i, speaker=speaker, text=text, labels=labels, split=split, source=source)
        for i, speaker, text, labels in turns
    ))
