"""Bad input fails with `file:line: what is wrong`, or is skipped and counted.

Every corpus here is written by the test into tmp_path.
"""
from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest

from selfemo.data import DataError, LoadReport, load_dialogues

MELD_HEADER = "Sr No.,Utterance,Speaker,Emotion,Sentiment,Dialogue_ID,Utterance_ID,Season,Episode,StartTime,EndTime"
EMORY_HEADER = "Utterance,Speaker,Emotion,Scene_ID,Utterance_ID,Season,Episode,Start_Time,End_Time"


def meld_row(text="Hi.", emotion="joy", dialogue="0", turn="0", speaker="Ross") -> str:
    return f'1,"{text}",{speaker},{emotion},positive,{dialogue},{turn},1,1,"00:00:01,000","00:00:02,000"'


def emory_row(speaker="['Ross Geller']", emotion="Joyful", scene="1", turn="1") -> str:
    return f'"Hi.","{speaker}",{emotion},{scene},{turn},1,1,00:00:01.000,00:00:02.000'


def write(path: Path, *lines: str, data: bytes | None = None) -> Path:
    path.write_bytes(data if data is not None else ("\n".join(lines) + "\n").encode())
    return path


def error_of(fmt: str, path: Path, **kwargs) -> str:
    with pytest.raises(DataError) as caught:
        list(load_dialogues(fmt, path, **kwargs))
    return str(caught.value)


def iemocap_line(dialogue_id="Ses01", speakers=("F", "M"), texts=("Hi.", "Hello."), labels=("hap", "neu")) -> str:
    return json.dumps({"dialogue_id": dialogue_id, "speakers": list(speakers), "utterances": list(texts), "labels": list(labels)})


# --- MELD / CSV -------------------------------------------------------------------------------


def test_missing_column_is_reported_at_the_header_even_when_skipping(tmp_path):
    path = write(tmp_path / "train_sent_emo.csv", MELD_HEADER.replace("Emotion,", ""), "1,Hi.,Ross,positive,0,0,1,1,a,b")
    for skip in (False, True):
        assert error_of("meld", path, skip_bad_rows=skip).startswith(f"{path}:1: missing column(s) Emotion;")


@pytest.mark.parametrize(
    ("bad_row", "message"),
    [
        (meld_row(emotion="happyish"), "unknown label 'happyish'; meld labels are neutral, joy"),
        (meld_row(dialogue="x"), "Dialogue_ID must be a non-negative integer, got 'x'"),
        (meld_row(turn="1.5"), "Utterance_ID must be a non-negative integer, got '1.5'"),
        (meld_row(text=" "), "empty text"),
        (meld_row(turn="0"), "Utterance_ID 0 repeats in dialogue dia0"),
        ("1,Hi.,Ross,joy", "expected 11 fields, found 4"),
    ],
    ids=["label", "dialogue-id", "turn-id", "empty-text", "repeated-turn", "short-row"],
)
def test_bad_meld_row_names_its_line(tmp_path, bad_row, message):
    path = write(tmp_path / "dev_sent_emo.csv", MELD_HEADER, meld_row(), bad_row, meld_row(turn="2"))
    assert error_of("meld", path).startswith(f"{path}:3: {message}")


def test_line_numbers_count_physical_lines_of_quoted_newlines(tmp_path):
    path = write(tmp_path / "test_sent_emo.csv", MELD_HEADER, meld_row(text="one\nmore\nline"), meld_row(turn="x"))
    assert error_of("meld", path).startswith(f"{path}:5: Utterance_ID")


def test_rows_of_a_dialogue_must_be_contiguous(tmp_path):
    path = write(tmp_path / "train_sent_emo.csv", MELD_HEADER, meld_row(), meld_row(dialogue="1"), meld_row(turn="1"))
    assert error_of("meld", path) == f"{path}:4: dialogue dia0 appears again after other dialogues; " \
                                     "the rows of a dialogue must be contiguous"


def test_skip_bad_rows_keeps_the_good_ones_and_counts_the_rest(tmp_path):
    path = write(
        tmp_path / "train_sent_emo.csv", MELD_HEADER,
        meld_row(turn="1"), meld_row(emotion="??"), meld_row(turn="0", emotion="sad"),
        meld_row(dialogue="1", turn="zero"), meld_row(dialogue="2", text=""),
    )
    report = LoadReport()
    dialogues = list(load_dialogues("meld", path, skip_bad_rows=True, report=report))
    assert [(u.id, u.labels) for d in dialogues for u in d.utterances] == [("dia0_utt0", ("sadness",)), ("dia0_utt1", ("joy",))]
    assert [(e.line, e.message.split(";")[0]) for e in report.skipped] == [
        (3, "unknown label '??'"), (5, "Utterance_ID must be a non-negative integer, got 'zero'"), (6, "empty text"),
    ]
    assert report.summary()[0] == "skipped 3 bad row(s); the first 3:"


def test_bom_and_invalid_utf8_are_survived_and_counted(tmp_path):
    good = meld_row(text="caf\u00e9 \u2019s").encode()
    bad = meld_row(text="caf\xe9", turn="1").encode("latin-1")
    path = write(tmp_path / "dev_sent_emo.csv", data=b"\xef\xbb\xbf" + MELD_HEADER.encode() + b"\r\n" + good + b"\r\n" + bad + b"\r\n")
    report = LoadReport()
    (dialogue,) = load_dialogues("meld", path, report=report)
    assert [u.text for u in dialogue.utterances] == ["caf\u00e9 \u2019s", "caf\ufffd"]
    assert report.replaced == [f"{path}:3"] and report.skipped == []
    assert "not valid UTF-8" in report.summary()[0]


# --- EmoryNLP -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "speaker",
    ["Ross Geller", "'Ross Geller'", "['Ross', 3]", "[['Ross']]", "__import__('os').system('true')", "['Ross'] + ['Joey']"],
)
def test_speaker_must_be_a_literal_list_of_strings(tmp_path, speaker):
    path = write(tmp_path / "emorynlp_train_final.csv", EMORY_HEADER, emory_row(), emory_row(speaker=speaker, turn="2"))
    message = error_of("emorynlp", path)
    assert message.startswith(f"{path}:3: Speaker: not a") and "list" in message


def test_emorynlp_several_speakers_and_scene_ids(tmp_path):
    path = write(tmp_path / "emorynlp_dev_final.csv", EMORY_HEADER,
                 emory_row(speaker="['Ross Geller', 'Joey Tribbiani']"), emory_row(scene="2", emotion="mad"))
    first, second = load_dialogues("emorynlp", path)
    assert first.utterances[0].speaker == "Ross Geller, Joey Tribbiani"
    assert (second.id, second.utterances[0].id, second.utterances[0].labels) == ("s01_e01_c02", "s01_e01_c02_u001", ("mad",))


def test_emorynlp_json_bad_utterance_is_located(tmp_path):
    utterance = {"utterance_id": "s01_e01_c01_u001", "speakers": ["Ross"], "transcript": "Hi.", "emotion": "Joyful"}
    scene = {"scene_id": "s01_e01_c01", "utterances": [utterance, {**utterance, "utterance_id": "s01_e01_c01_u002", "emotion": "Glum"}]}
    path = tmp_path / "emotion-detection-dev.json"
    path.write_text(json.dumps({"season_id": "dev", "episodes": [{"episode_id": "e", "scenes": [scene]}]}, indent=2))
    line = next(n for n, text in enumerate(path.read_text().splitlines(), 1) if "c01_u002" in text)
    assert error_of("emorynlp-json", path) == f"{path}:{line}: s01_e01_c01_u002: unknown label 'Glum'; " \
                                              "emorynlp labels are joyful, neutral, powerful, mad, sad, scared, peaceful"
    report = LoadReport()
    (dialogue,) = load_dialogues("emorynlp-json", path, skip_bad_rows=True, report=report)
    assert len(dialogue.utterances) == 1 and len(report.skipped) == 1
    path.write_text('{"season_id": "dev",\n "episodes": [')
    assert error_of("emorynlp-json", path).startswith(f"{path}:2: invalid JSON")


# --- IEMOCAP --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bad_line", "message"),
    [
        (iemocap_line()[:40], "invalid JSON"),
        (iemocap_line(labels=("hap",)), "dialogue Ses01: 2 speakers, 2 utterances and 1 labels"),
        (iemocap_line(labels=("hap", 9)), "dialogue Ses01: utterance 1: unknown label 9"),
        (iemocap_line(texts=("Hi.", "")), "dialogue Ses01: utterance 1: empty text"),
        (json.dumps({"dialogue_id": 7}), "dialogue_id must be a non-empty string, got 7"),
    ],
    ids=["truncated", "length-mismatch", "label", "empty-text", "dialogue-id"],
)
def test_bad_iemocap_line(tmp_path, bad_line, message):
    path = write(tmp_path / "valid.jsonl", iemocap_line(), bad_line, iemocap_line("Ses02"))
    assert error_of("iemocap", path).startswith(f"{path}:2: {message}")
    report = LoadReport()
    assert [d.id for d in load_dialogues("iemocap", path, skip_bad_rows=True, report=report)] == ["Ses01", "Ses02"]
    assert [e.line for e in report.skipped] == [2]


def test_integer_labels_follow_cosmic(tmp_path):
    path = write(tmp_path / "test.jsonl", iemocap_line(labels=(0, 5)))
    (dialogue,) = load_dialogues("iemocap", path)
    assert [u.labels for u in dialogue.utterances] == [("happy",), ("frustrated",)]


class _RunsACommand:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("protocol", [0, 2, pickle.HIGHEST_PROTOCOL])
def test_malicious_pickle_is_refused_without_running_anything(tmp_path, protocol):
    marker = tmp_path / "pwned"
    path = write(tmp_path / "evil.pkl", data=pickle.dumps([{}, {}, {}, [_RunsACommand(marker)], [], []], protocol=protocol))
    for skip in (False, True):
        message = error_of("iemocap-pickle", path, skip_bad_rows=skip)
        assert message.startswith(f"{path}: refused: the pickle asks for the global ") and "system" in message
    assert not marker.exists()


def test_pickle_of_the_wrong_shape_or_damaged(tmp_path):
    path = write(tmp_path / "a.pkl", data=pickle.dumps({"not": "a list"}))
    assert error_of("iemocap-pickle", tmp_path) == f"{path}: expected a list of 6 items " \
        "(speakers, labels, sentences, train_ids, test_ids, valid_ids), got dict"
    path.write_bytes(pickle.dumps([1, 2, 3, 4, 5, 6])[:-3])
    assert error_of("iemocap-pickle", path).startswith(f"{path}: not a readable pickle")


def test_pickle_dialogue_with_mismatched_lists_is_skippable(tmp_path):
    data = [{"a": ["F"], "b": ["F", "M"]}, {"a": [0], "b": [1]}, {"a": ["Hi."], "b": ["Hi.", "Yo."]}, ["a", "b"], [], []]
    path = write(tmp_path / "iemocap.pkl", data=pickle.dumps(data))
    assert error_of("iemocap-pickle", path) == f"{path}: dialogue b: 2 speakers, 2 utterances and 1 labels: " \
                                               "the lists must have the same length"
    report = LoadReport()
    assert [d.id for d in load_dialogues("iemocap-pickle", path, skip_bad_rows=True, report=report)] == ["a"]
    assert len(report.skipped) == 1


# --- generic JSONL --------------------------------------------------------------------------


def dialogue_line(dialogue_id="d1", split="train", labels=("joy",), **extra) -> str:
    return json.dumps({"id": dialogue_id, "split": split,
                       "utterances": [{"speaker": "A", "text": "Hi!", "labels": list(labels)}], **extra})


def test_jsonl_with_header_multilabel_and_no_label(tmp_path):
    path = write(tmp_path / "corpus.jsonl", json.dumps({"labels": ["Joy", "Anger"], "synonyms": {"happy": "Joy"}, "name": "toy"}),
                 dialogue_line(labels=["anger", "happy"]), dialogue_line("d2", "valid", labels=[]))
    report = LoadReport()
    first, second = load_dialogues("jsonl", path, report=report)
    assert first.utterances[0].labels == ("joy", "anger") and first.source == "toy"
    assert (second.split, second.utterances[0].labels) == ("dev", ())
    assert report.vocab.display == ("Joy", "Anger")


@pytest.mark.parametrize(
    ("bad_line", "message"),
    [
        (dialogue_line(labels=["fear"]), "utterance 0: unknown label 'fear'"),
        (dialogue_line(split="holdout"), "unknown split 'holdout'"),
        (dialogue_line()[:25], "invalid JSON"),
        (json.dumps({"id": "d", "split": "dev", "utterances": [{"speaker": "A", "text": "x", "labels": "joy"}]}),
         "utterance 0: labels must be a list"),
        (json.dumps({"id": "d", "split": "dev", "utterances": []}), "utterances must be a non-empty list"),
    ],
    ids=["label", "split", "truncated", "labels-not-list", "no-utterances"],
)
def test_bad_jsonl_line(tmp_path, bad_line, message):
    path = write(tmp_path / "c.jsonl", dialogue_line(), bad_line)
    assert error_of("jsonl", path, labels=["joy", "anger"]).startswith(f"{path}:2: {message}")


def test_jsonl_label_set_must_be_known_and_agree(tmp_path):
    path = write(tmp_path / "train.jsonl", dialogue_line(split="dev"))
    assert error_of("jsonl", path).startswith(f"{path}:1: no label set")
    assert error_of("jsonl", path, labels="joy").startswith(f"{path}:1: split 'dev' in a train file")
    write(path, json.dumps({"labels": ["joy"]}), dialogue_line())
    assert error_of("jsonl", path, labels="joy,anger").startswith(f"{path}:1: header labels joy differ")
    assert [d.source for d in load_dialogues("jsonl", tmp_path, labels="joy")] == [tmp_path.name]


# --- arguments and folders ------------------------------------------------------------------


def test_folders_and_arguments(tmp_path):
    assert error_of("meld", tmp_path / "nowhere") == f"{tmp_path / 'nowhere'}: no such file or folder"
    assert error_of("meld", tmp_path).startswith(f"{tmp_path}: no meld file train_sent_emo.csv or dev_sent_emo.csv")
    write(tmp_path / "dev_sent_emo.csv", MELD_HEADER, meld_row())
    assert len(list(load_dialogues("meld", tmp_path))) == 1
    assert error_of("meld", tmp_path, splits=["test"]) == f"{tmp_path}: no meld file test_sent_emo.csv here"
    write(tmp_path / "mine.csv", MELD_HEADER, meld_row())
    assert error_of("meld", tmp_path / "mine.csv").startswith(f"{tmp_path / 'mine.csv'}: cannot tell the split")
    assert [d.split for d in load_dialogues("meld", tmp_path / "mine.csv", splits=["test"])] == ["test"]
    with pytest.raises(ValueError, match="jsonl format only"):
        load_dialogues("meld", tmp_path, labels=["joy"])
    with pytest.raises(ValueError, match="unknown format"):
        load_dialogues("csv", tmp_path)
