"""`selfemo data stats` through the real entry point, `selfemo.cli.main`."""
from __future__ import annotations

import json

import pytest

import selfemo.cli


@pytest.fixture(autouse=True)
def only_data_commands(monkeypatch):
    """Build the parser with the data commands alone, so these tests need no other component."""
    monkeypatch.setattr(selfemo.cli, "COMMAND_MODULES", ("selfemo.data.cli",))


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = selfemo.cli.main(["data", "stats", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_table_for_meld(capsys, erc_dir):
    code, out, err = run(capsys, "--format", "meld", str(erc_dir / "meld"))
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0].split() == ["train", "dev", "test"]
    assert lines[1].split() == ["dialogues", "1038", "114", "280"]
    assert lines[2].split() == ["utterances", "9989", "1109", "2610"]
    assert lines[3].split() == ["neutral", "4710", "470", "1256"]


@pytest.mark.parametrize(
    ("fmt", "folder", "utterances"),
    [
        ("emorynlp", "emorynlp", {"train": 7551, "dev": 954, "test": 984}),
        ("emorynlp-json", "emorynlp", {"dev": 1344}),
        ("iemocap", "iemocap", {"train": 5163, "dev": 647, "test": 1623}),
        ("iemocap-pickle", "iemocap", {"train": 5163, "dev": 647, "test": 1623}),
    ],
)
def test_json_output_parses_back(capsys, erc_dir, fmt, folder, utterances):
    code, out, _ = run(capsys, "--format", fmt, str(erc_dir / folder), "--json")
    assert code == 0
    stats = json.loads(out)["splits"]
    assert {split: s["utterances"] for split, s in stats.items()} == utterances
    assert all(sum(s["labels"].values()) == s["utterances"] for s in stats.values())


def test_bad_file_exits_2_with_file_and_line(capsys, tmp_path):
    path = tmp_path / "valid.jsonl"
    path.write_text('{"dialogue_id": "a", "speakers": ["F"], "utterances": ["Hi."], "labels": ["hap"]}\n{"dialogue_id": "b", "spea\n')
    code, out, err = run(capsys, "--format", "iemocap", str(path))
    assert (code, out) == (2, "")
    assert err.startswith(f"error: {path}:2: invalid JSON") and "Traceback" not in err

    code, out, err = run(capsys, "--format", "iemocap", str(path), "--skip-bad-rows", "--json")
    assert code == 0 and json.loads(out)["splits"]["dev"]["dialogues"] == 1
    assert err.splitlines() == ["skipped 1 bad row(s); the first 1:", f"  {path}:2: invalid JSON: Unterminated string "
                                "starting at (column 22)"]


def test_jsonl_labels_option(capsys, tmp_path):
    path = tmp_path / "test.jsonl"
    path.write_text(json.dumps({"id": "d", "utterances": [{"speaker": "A", "text": "Ugh.", "labels": ["anger", "sadness"]},
                                                          {"speaker": "B", "text": "Hm.", "labels": []}]}) + "\n")
    code, out, _ = run(capsys, "--format", "jsonl", str(path), "--labels", "joy,anger,sadness")
    assert code == 0
    assert "(no label)" in out
    code, out, _ = run(capsys, "--format", "jsonl", str(path), "--labels", "joy,anger,sadness", "--json")
    assert json.loads(out)["splits"]["test"] == {"dialogues": 1, "utterances": 2, "labels": {"joy": 0, "anger": 1, "sadness": 1},
                                                 "unlabelled": 1}
    code, _, err = run(capsys, "--format", "meld", str(path), "--labels", "joy")
    assert code == 2 and err.startswith("error: labels apply to the jsonl format only")


def test_missing_path_and_bad_format(capsys, tmp_path):
    code, _, err = run(capsys, "--format", "meld", str(tmp_path / "none"))
    assert (code, err) == (2, f"error: {tmp_path / 'none'}: no such file or folder\n")
    with pytest.raises(SystemExit) as exit_:
        run(capsys, "--format", "csv", str(tmp_path))
    assert exit_.value.code == 2
