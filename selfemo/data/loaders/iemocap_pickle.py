"""IEMOCAP as the community COSMIC pickle (`iemocap_cosmic.pkl`).

A list of six items: `speakers{id: [..]}, labels{id: [int]}, sentences{id: [str]},
train_ids, test_ids, valid_ids`. Unpickling can run arbitrary code, and this
file holds only builtin containers, so it is read with an unpickler that
refuses every global: a pickle that asks for one (a class, or a function such
as `os.system` to call) fails before anything runs. Dialogues come out per
split in sorted id order, which is the order of the JSONL release.
"""
from __future__ import annotations

import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from selfemo.data.errors import DataError
from selfemo.data.loaders.common import Context, open_input
from selfemo.data.loaders.iemocap import build_dialogue
from selfemo.data.model import SPLITS, Dialogue

VOCAB = "iemocap"
FILES = None  # one file holds every split: the single *.pkl of the folder
GLOB = "*.pkl"
_ITEMS = ("speakers", "labels", "sentences", "train_ids", "test_ids", "valid_ids")


class _NoGlobals(pickle.Unpickler):
    """An unpickler for builtin containers only: it resolves no global whatsoever."""

    def __init__(self, handle, path: Path) -> None:
        super().__init__(handle)
        self.path = path

    def find_class(self, module: str, name: str) -> Any:
        raise DataError(self.path, None, f"refused: the pickle asks for the global {module}.{name}; "
                                         "only plain lists, dicts, strings and numbers are allowed")


def read_restricted(path: Path) -> Any:
    """The object in a pickle made of builtin containers, or a DataError naming the file."""
    with open_input(path) as handle:
        try:
            return _NoGlobals(handle, path).load()
        except DataError:
            raise
        except Exception as exc:  # a damaged pickle can fail in many ways; all mean "not loadable"
            raise DataError(path, None, f"not a readable pickle: {type(exc).__name__}: {exc}") from None


def load_file(path: Path, split: str | None, ctx: Context) -> Iterator[Dialogue]:
    parts = _parts(read_restricted(path), path)
    ids = {"train": parts["train_ids"], "dev": parts["valid_ids"], "test": parts["test_ids"]}
    for name in SPLITS:  # the file holds every split, whatever its name says
        for dialogue_id in sorted(ids[name]):
            try:
                lists = (_list(parts[key].get(dialogue_id)) for key in ("speakers", "sentences", "labels"))
                yield build_dialogue(dialogue_id, *lists, name, ctx, path, None)
            except DataError as error:
                ctx.reject(error)


def _parts(data: Any, path: Path) -> dict[str, Any]:
    """Name the six items and check their shapes; anything else is not the COSMIC layout."""
    if not isinstance(data, (list, tuple)) or len(data) < len(_ITEMS):
        raise DataError(path, None, f"expected a list of {len(_ITEMS)} items ({', '.join(_ITEMS)}), "
                                    f"got {type(data).__name__}")
    parts = dict(zip(_ITEMS, data))
    for key in _ITEMS[:3]:
        if not isinstance(parts[key], dict):
            raise DataError(path, None, f"item {key} must be a dict keyed by dialogue id")
    for key in _ITEMS[3:]:
        if not isinstance(parts[key], (list, tuple, set, frozenset)) or not all(isinstance(i, str) for i in parts[key]):
            raise DataError(path, None, f"item {key} must be a list of dialogue ids")
    return parts


def _list(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value
