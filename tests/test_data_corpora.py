"""Every format loads the shared ERC corpora with the published counts."""
from __future__ import annotations

import re

import pytest

from selfemo.data import Dialogue, LoadReport, compute_stats, format_table, load_dialogues

# format, folder, {split: (dialogues, utterances)}
EXPECTED = [
    ("meld", "meld", {"train": (1038, 9989), "dev": (114, 1109), "test": (280, 2610)}),
    ("emorynlp", "emorynlp", {"train": (659, 7551), "dev": (89, 954), "test": (79, 984)}),
    ("emorynlp-json", "emorynlp", {"dev": (99, 1344)}),
    ("iemocap", "iemocap", {"train": (108, 5163), "dev": (12, 647), "test": (31, 1623)}),
    ("iemocap-pickle", "iemocap", {"train": (108, 5163), "dev": (12, 647), "test": (31, 1623)}),
]
_CACHE: dict[str, tuple[list[Dialogue], LoadReport]] = {}


def load(erc_dir, fmt: str, folder: str) -> tuple[list[Dialogue], LoadReport]:
    """Each corpus is read once per session; the tests only look at it."""
    if fmt not in _CACHE:
        report = LoadReport()
        _CACHE[fmt] = list(load_dialogues(fmt, erc_dir / folder, report=report)), report
    return _CACHE[fmt]


@pytest.mark.parametrize(("fmt", "folder", "expected"), EXPECTED, ids=[e[0] for e in EXPECTED])
def test_counts_and_distributions(erc_dir, fmt, folder, expected):
    dialogues, report = load(erc_dir, fmt, folder)
    stats = compute_stats(dialogues, report.vocab)
    assert {split: (s["dialogues"], s["utterances"]) for split, s in stats.items()} == expected
    for split in stats.values():
        assert sum(split["labels"].values()) == split["utterances"]
        assert list(split["labels"]) == list(report.vocab.labels)
    assert report.skipped == [] and report.replaced == []
    assert all(u.source == report.vocab.name for d in dialogues for u in d.utterances)
    assert "dialogues" in format_table(stats)


def test_pickle_and_jsonl_iemocap_are_identical(erc_dir):
    from_jsonl, _ = load(erc_dir, "iemocap", "iemocap")
    from_pickle, _ = load(erc_dir, "iemocap-pickle", "iemocap")
    assert from_pickle == from_jsonl


def test_dialogue_content(erc_dir):
    meld, _ = load(erc_dir, "meld", "meld")
    first = meld[0].utterances[0]
    assert (meld[0].id, first.id, first.speaker, first.labels, first.split) == ("dia0", "dia0_utt0", "Chandler", ("neutral",), "train")
    assert "company’s" in first.text  # curly quotes kept as published
    emory, _ = load(erc_dir, "emorynlp", "emorynlp")
    assert emory[0].utterances[0].id == "s01_e02_c01_u001"
    assert emory[0].utterances[0].speaker == "Monica Geller" and emory[0].utterances[0].labels == ("joyful",)
    assert any(", " in u.speaker for d in emory for u in d.utterances)  # several speakers at once
    emory_json, _ = load(erc_dir, "emorynlp-json", "emorynlp")
    assert emory_json[0].id == "s01_e15_c01" and emory_json[0].utterances[0].id == "s01_e15_c01_u001"
    iemocap, _ = load(erc_dir, "iemocap", "iemocap")
    assert iemocap[0].id == "Ses01F_impro01" and iemocap[0].utterances[1].labels == ("frustrated",)


def test_turns_are_in_order(erc_dir):
    for fmt, folder, _ in EXPECTED[:2]:
        for dialogue in load(erc_dir, fmt, folder)[0]:
            turns = [int(re.search(r"[0-9]+$", u.id).group()) for u in dialogue.utterances]
            assert turns == sorted(turns)


def test_one_file_and_split_filter(erc_dir):
    dev = list(load_dialogues("meld", erc_dir / "meld" / "dev_sent_emo.csv"))
    assert len(dev) == 114 and {d.split for d in dev} == {"dev"}
    valid = list(load_dialogues("iemocap", erc_dir / "iemocap" / "valid.jsonl"))
    assert len(valid) == 12 and valid[0].split == "dev"
    test_only = list(load_dialogues("iemocap-pickle", erc_dir / "iemocap", splits=["test"]))
    assert len(test_only) == 31
    assert [d.split for d in load_dialogues("emorynlp", erc_dir / "emorynlp", splits=["valid"])][:1] == ["dev"]
