"""Label vocabularies: canonical names, tolerant parsing, label vectors."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from selfemo.data import BUILTIN_VOCABS, LabelVocab, get_vocab, vocab_from_labels


def test_builtin_label_orders():
    assert get_vocab("meld").labels == ("neutral", "joy", "sadness", "anger", "surprise", "fear", "disgust")
    assert get_vocab("emorynlp").labels == ("joyful", "neutral", "powerful", "mad", "sad", "scared", "peaceful")
    assert get_vocab("iemocap").labels == ("happy", "sad", "neutral", "angry", "excited", "frustrated")
    assert [len(get_vocab(n)) for n in BUILTIN_VOCABS] == [7, 7, 6]


@pytest.mark.parametrize(
    ("vocab", "text", "expected"),
    [
        ("meld", "Joy", "joy"),
        ("meld", "  happy. ", "joy"),
        ("meld", "'Sad'", "sadness"),
        ("meld", "MAD!", "anger"),
        ("meld", "afraid", "fear"),
        ("meld", "disgusted", "disgust"),
        ("emorynlp", "Joyful", "joyful"),
        ("emorynlp", "anger", "mad"),
        ("emorynlp", "calm", "peaceful"),
        ("emorynlp", "confident", "powerful"),
        ("emorynlp", "fear", "scared"),
        ("iemocap", "hap", "happy"),
        ("iemocap", "fru", "frustrated"),
        ("iemocap", "Exc", "excited"),
        ("iemocap", "neu", "neutral"),
        ("meld", "a sandwich", None),
        ("meld", "", None),
        ("iemocap", "joy joy", None),
    ],
)
def test_canonical_is_tolerant(vocab, text, expected):
    assert get_vocab(vocab).canonical(text) == expected


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(), st.binary(), st.integers(), st.none(), st.lists(st.text())))
def test_canonical_never_raises(value):
    for name in BUILTIN_VOCABS:
        result = get_vocab(name).canonical(value)
        assert result is None or result in get_vocab(name).labels


def test_index_and_vector():
    meld = get_vocab("meld")
    assert meld.index("joy") == 1 and meld.index("Happy") == 1
    np.testing.assert_array_equal(meld.to_vector(["anger", "joy"]), [0, 1, 0, 1, 0, 0, 0])
    assert meld.to_vector([]).dtype == np.float32
    with pytest.raises(KeyError, match="not a meld label"):
        meld.index("hungry")


def test_user_vocabulary_keeps_spelling_for_display():
    vocab = vocab_from_labels("mine", ["Happy", "Grumpy"], {"glad": "Happy", "cross": "grumpy"})
    assert vocab.labels == ("happy", "grumpy")
    assert vocab.display == ("Happy", "Grumpy")
    assert vocab.canonical("GLAD") == "happy" and vocab.canonical("cross") == "grumpy"
    with pytest.raises(ValueError, match="repeat"):
        vocab_from_labels("bad", ["Joy", "joy"])
    with pytest.raises(ValueError, match="not a label"):
        vocab_from_labels("bad", ["joy"], {"sad": "sadness"})


def test_vocabularies_are_immutable_and_hashable():
    vocab = get_vocab("meld")
    with pytest.raises(AttributeError):
        vocab.name = "other"
    assert hash(vocab) == hash(get_vocab("meld"))
    with pytest.raises(ValueError, match="lower-case"):
        LabelVocab("x", ("Joy",))
    with pytest.raises(KeyError, match="known: meld"):
        get_vocab("goemotions")
