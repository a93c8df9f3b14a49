"""Label vocabularies: the emotion names a corpus uses and the model answers with.

Canonical names are lower-case full words because they are what the LLM is
asked to say; everything else a human or a model might write for the same
emotion (case, punctuation, `happy` for `joy`, IEMOCAP's `hap`) is a synonym
that `canonical` folds onto them without ever raising, so a free-form answer
becomes a label or None, and data files and model output share one parser.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

_NOT_WORD = re.compile(r"[\W_]+")


def _key(text: str) -> str:
    """Lookup key: case-folded words separated by single spaces, punctuation dropped."""
    return _NOT_WORD.sub(" ", text.casefold()).strip()


@dataclass(frozen=True)
class LabelVocab:
    """An ordered label set with display names and synonyms.

    The order is fixed: it is the axis of every label vector (`to_vector`,
    the rewards, the confusion matrix).
    """

    name: str
    labels: tuple[str, ...]
    display: tuple[str, ...] = ()
    synonyms: Mapping[str, str] = field(default_factory=dict, hash=False)
    _lookup: Mapping[str, str] = field(init=False, repr=False, compare=False)
    _index: Mapping[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        labels = tuple(self.labels)
        if not labels:
            raise ValueError(f"vocabulary {self.name!r} has no labels")
        for label in labels:
            if not _key(label) or label != label.strip().lower():
                raise ValueError(f"canonical label {label!r} must be non-empty, lower-case and trimmed")
        display = tuple(self.display) or tuple(label.capitalize() for label in labels)
        if len(display) != len(labels):
            raise ValueError(f"{len(display)} display names for {len(labels)} labels")
        lookup: dict[str, str] = {}
        for alias, target in [(label, label) for label in labels] + list(self.synonyms.items()):
            if target not in labels:
                raise ValueError(f"synonym {alias!r} points to {target!r}, which is not a label of {self.name}")
            if lookup.setdefault(_key(alias), target) != target:
                raise ValueError(f"{alias!r} would mean both {lookup[_key(alias)]!r} and {target!r}")
        object.__setattr__(self, "labels", labels)
        object.__setattr__(self, "display", display)
        object.__setattr__(self, "synonyms", {_key(k): v for k, v in self.synonyms.items()})
        object.__setattr__(self, "_lookup", lookup)
        object.__setattr__(self, "_index", {label: i for i, label in enumerate(labels)})

    def __len__(self) -> int:
        return len(self.labels)

    def canonical(self, text: object) -> str | None:
        """The canonical label `text` names, or None; never raises.

        >>> get_vocab("meld").canonical(" Happy! ")
        'joy'
        >>> get_vocab("meld").canonical("a sandwich") is None
        True
        """
        if not isinstance(text, str):
            return None
        return self._lookup.get(_key(text))

    def index(self, label: str) -> int:
        """Position of `label` (canonical name or synonym) on the label axis; KeyError if unknown."""
        canonical = self.canonical(label)
        if canonical is None:
            raise KeyError(f"{label!r} is not a {self.name} label (labels: {', '.join(self.labels)})")
        return self._index[canonical]

    def to_vector(self, labels: Iterable[str]) -> np.ndarray:
        """Multi-hot float32 vector of shape (len(self),), the input of the rewards."""
        vector = np.zeros(len(self.labels), dtype=np.float32)
        for label in labels:
            vector[self.index(label)] = 1.0
        return vector


def vocab_from_labels(
    name: str, labels: Sequence[str], synonyms: Mapping[str, str] | None = None
) -> LabelVocab:
    """A vocabulary for a user corpus: canonical names are the given ones, lower-cased.

    The spellings as given stay as display names; synonyms may point to either
    spelling (`{"glad": "Happy"}` with labels `["Happy"]`).
    """
    spellings = tuple(str(label).strip() for label in labels)
    canonical = tuple(label.lower() for label in spellings)
    if len(set(canonical)) != len(canonical):
        raise ValueError(f"labels repeat (case-insensitively): {list(labels)}")
    targets = {alias: str(target).strip().lower() for alias, target in (synonyms or {}).items()}
    return LabelVocab(name, canonical, spellings, targets)


_BUILTIN: dict[str, LabelVocab] = {
    v.name: v
    for v in (
        LabelVocab(
            "meld",
            ("neutral", "joy", "sadness", "anger", "surprise", "fear", "disgust"),
            synonyms={
                "happy": "joy", "happiness": "joy", "joyful": "joy", "sad": "sadness",
                "angry": "anger", "mad": "anger", "surprised": "surprise", "scared": "fear",
                "afraid": "fear", "fearful": "fear", "disgusted": "disgust",
            },
        ),
        LabelVocab(
            "emorynlp",
            ("joyful", "neutral", "powerful", "mad", "sad", "scared", "peaceful"),
            synonyms={
                "happy": "joyful", "joy": "joyful", "happiness": "joyful", "angry": "mad",
                "anger": "mad", "fear": "scared", "afraid": "scared", "fearful": "scared",
                "calm": "peaceful", "peace": "peaceful", "confident": "powerful",
                "power": "powerful", "sadness": "sad",
            },
        ),
        LabelVocab(
            "iemocap",
            ("happy", "sad", "neutral", "angry", "excited", "frustrated"),
            synonyms={
                # The abbreviations the corpus and COSMIC use.
                "hap": "happy", "neu": "neutral", "ang": "angry", "exc": "excited", "fru": "frustrated",
                "happiness": "happy", "joy": "happy", "sadness": "sad", "anger": "angry",
                "excitement": "excited", "frustration": "frustrated",
            },
        ),
    )
}

BUILTIN_VOCABS: tuple[str, ...] = tuple(_BUILTIN)


def get_vocab(name: str) -> LabelVocab:
    """A built-in vocabulary by corpus name (meld, emorynlp, iemocap)."""
    try:
        return _BUILTIN[name]
    except KeyError:
        raise KeyError(f"no built-in label vocabulary {name!r} (known: {', '.join(_BUILTIN)})") from None
