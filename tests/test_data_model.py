"""The Dialogue type: canonical splits, immutability, consistency."""
from __future__ import annotations

import pydantic
import pytest

from selfemo.data import Dialogue, Utterance, canonical_split
from selfemo.data.model import split_from_filename


def utterance(**overrides) -> Utterance:
    return Utterance(**{"id": "d_u000", "speaker": "A", "text": "Hi.", "labels": ("joy",), "split": "train",
                        "source": "meld", **overrides})


def test_splits_are_canonical():
    assert [canonical_split(s) for s in ("train", "Valid", "dev", "validation", "TEST")] == ["train", "dev", "dev", "dev", "test"]
    assert utterance(split="valid").split == "dev"
    with pytest.raises(ValueError, match="unknown split"):
        canonical_split("holdout")
    with pytest.raises(pydantic.ValidationError):
        utterance(split="holdout")


@pytest.mark.parametrize(
    ("name", "split"),
    [("train_sent_emo.csv", "train"), ("emorynlp_dev_final.csv", "dev"), ("emotion-detection-test.json", "test"),
     ("valid.jsonl", "dev"), ("contest.csv", None), ("train-test.csv", None), ("iemocap_cosmic.pkl", None)],
)
def test_split_from_filename(name, split):
    assert split_from_filename(name) == split


def test_dialogues_are_frozen_and_consistent():
    dialogue = Dialogue(id="d", split="train", source="meld", utterances=(utterance(),))
    with pytest.raises(pydantic.ValidationError):
        dialogue.id = "e"
    assert dialogue == Dialogue.model_validate_json(dialogue.model_dump_json())
    with pytest.raises(pydantic.ValidationError, match="inside dialogue d"):
        Dialogue(id="d", split="dev", source="meld", utterances=(utterance(),))
