"""From a model's free-text answer to a label set, tolerantly and never raising.

Small models answer "Joy.", "The emotion is: happy", "anger, disgust",
"NEUTRAL\n\nExplanation: …" or garbage. `parse_labels` maps what it can onto
the vocabulary (case, punctuation, synonyms such as happy→joy) and reports
whether the answer was well-formed (the format reward). Unparseable output is
the empty set with ``ok=False``; an explicit "none" is the empty set with
``ok=True`` (multi-label corpora allow "no emotion").
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from selfemo.data.vocab import LabelVocab

# Only the head of an answer counts: labels come first, and scanning a long
# rambling completion for emotion words would reward rambling.
MAX_ANSWER_CHARS = 200
_PREFIX = re.compile(r"^\s*(?:the\s+)?(?:answer|emotions?|labels?|speaker\s+emotions?)\s*(?:is|are|:|=|-)+\s*", re.I)
_SEPARATORS = re.compile(r"\s*(?:,|;|/|\||\+|&|\band\b|\bor\b|\n)\s*", re.I)
_WORD = re.compile(r"[^\W\d_]+(?:[-'][^\W\d_]+)?")
_NONE = {"none", "no emotion", "nothing", "no emotions", "n/a", "na"}


@dataclass(frozen=True)
class Parsed:
    """A parsed answer: canonical labels in vocabulary order, and whether the
    answer was made of vocabulary labels at all."""

    labels: tuple[str, ...]
    ok: bool
    first: str | None = None  # the label mentioned first: the single-label prediction


def _to_text(answer: object) -> str:
    if isinstance(answer, bytes):
        return answer.decode("utf-8", errors="replace")
    return answer if isinstance(answer, str) else ""


def _head(text: str) -> str:
    text = text.replace("\x00", " ")[:MAX_ANSWER_CHARS]
    return re.split(r"\n\s*\n", text.strip(), maxsplit=1)[0]


def parse_labels(answer: object, vocab: LabelVocab) -> Parsed:
    """Labels named in ``answer``; ``Parsed((), False)`` when there are none.

    >>> from selfemo.data import get_vocab
    >>> parse_labels("Emotion: Happy, surprised!", get_vocab("meld"))
    Parsed(labels=('joy', 'surprise'), ok=True, first='joy')
    >>> parse_labels("🙂🙂", get_vocab("meld"))
    Parsed(labels=(), ok=False, first=None)
    """
    head = _PREFIX.sub("", _head(_to_text(answer)))
    if head.strip(" .!\"'").lower() in _NONE:
        return Parsed((), True)
    found: list[str] = []  # in order of mention
    for chunk in _SEPARATORS.split(head):
        label = vocab.canonical(chunk)
        if label is None:  # "I think it is joy." → look at the words
            found += [w for w in (vocab.canonical(word) for word in _WORD.findall(chunk)) if w]
        else:
            found.append(label)
    ordered = tuple(label for label in vocab.labels if label in found)
    return Parsed(ordered, bool(ordered), found[0] if found else None)
