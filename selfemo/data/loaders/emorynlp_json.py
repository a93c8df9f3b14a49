"""EmoryNLP, the official JSON release (`emotion-detection-{train,dev,test}.json`).

`{season_id, episodes: [{episode_id, scenes: [{scene_id, utterances: [{utterance_id,
speakers, transcript, emotion, ...}]}]}]}`; a scene is a dialogue. The file is
one JSON document, so it is parsed whole; a bad utterance is reported at the
line where its `utterance_id` is written.
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from selfemo.data.errors import DataError
from selfemo.data.loaders.common import Context, string_list, text, text_lines
from selfemo.data.loaders.emorynlp import speaker_names
from selfemo.data.model import Dialogue, Turn, make_dialogue

VOCAB = "emorynlp"
FILES = {split: f"emotion-detection-{split}.json" for split in ("train", "dev", "test")}


def load_file(path: Path, split: str | None, ctx: Context) -> Iterator[Dialogue]:
    split = ctx.need_split(path, split)
    document = "".join(text_lines(path, ctx.report))
    try:
        season = json.loads(document)
    except json.JSONDecodeError as exc:
        raise DataError(path, exc.lineno, f"invalid JSON: {exc.msg} (column {exc.colno})") from None
    return _dialogues(season, document, path, split, ctx)


def _dialogues(season: Any, document: str, path: Path, split: str, ctx: Context) -> Iterator[Dialogue]:
    for episode in _items(season, "episodes", path):
        for scene in _items(episode, "scenes", path):
            scene_id = scene.get("scene_id")
            if not isinstance(scene_id, str):
                raise DataError(path, None, f"a scene has no string scene_id: {str(scene)[:80]}")
            turns = []
            for raw in _items(scene, "utterances", path):
                try:
                    turns.append(_turn(raw, scene_id, ctx, path))
                except DataError as error:
                    # Locating the line costs a scan of the document: only for bad rows.
                    ctx.reject(DataError(path, _line_of(document, raw.get("utterance_id")), error.message))
            if turns:
                yield make_dialogue(scene_id, split, ctx.vocab.name, turns)


def _items(parent: Any, key: str, path: Path) -> list[dict]:
    """The list of objects under `key`; the document's skeleton must be right, or nothing is."""
    items = parent.get(key) if isinstance(parent, dict) else None
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        raise DataError(path, None, f"expected a list of objects under {key!r}")
    return items


def _turn(raw: dict, scene_id: str, ctx: Context, path: Path) -> Turn:
    utterance_id = raw.get("utterance_id")
    if not isinstance(utterance_id, str):
        raise DataError(path, None, f"scene {scene_id}: an utterance has no string utterance_id")
    where = f"{utterance_id}: "  # the line is filled in by the caller, only if this fails
    return (
        utterance_id,
        speaker_names(string_list(raw.get("speakers"), "speakers", path, None, where)),
        text(raw.get("transcript"), path, None, where),
        (ctx.label(raw.get("emotion"), path, None, where),),
    )


def _line_of(document: str, utterance_id: object) -> int | None:
    """1-based line where `utterance_id` is first written, if it is a string that is."""
    if not isinstance(utterance_id, str):
        return None
    at = document.find(json.dumps(utterance_id, ensure_ascii=False))
    return None if at < 0 else document.count("\n", 0, at) + 1
