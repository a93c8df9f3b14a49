"""Corpus formats: one small module per published format, all yielding `Dialogue`s.

A format module declares `VOCAB` (its built-in label vocabulary, or None when
the file or the caller names the labels), `FILES` (official file name per
split, or None with a `GLOB` for a single file holding every split) and
`load_file(path, split, ctx)`. This module finds the files and streams them.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from types import ModuleType

from selfemo.data.errors import DataError, LoadReport
from selfemo.data.loaders import emorynlp, emorynlp_json, iemocap, iemocap_pickle, jsonl, meld
from selfemo.data.loaders.common import Context
from selfemo.data.model import SPLITS, Dialogue, canonical_split, split_from_filename
from selfemo.data.vocab import LabelVocab, get_vocab, vocab_from_labels

_MODULES: dict[str, ModuleType] = {
    "meld": meld,
    "emorynlp": emorynlp,
    "emorynlp-json": emorynlp_json,
    "iemocap": iemocap,
    "iemocap-pickle": iemocap_pickle,
    "jsonl": jsonl,
}
FORMATS: tuple[str, ...] = tuple(_MODULES)


def load_dialogues(
    format: str,
    path: str | Path,
    *,
    splits: Iterable[str] | None = None,
    skip_bad_rows: bool = False,
    labels: LabelVocab | Sequence[str] | str | None = None,
    report: LoadReport | None = None,
) -> Iterator[Dialogue]:
    """Stream the dialogues of a corpus, split by split (train, dev, test).

    `path` is a folder holding the official file names, or one file whose
    split is read from its name (or is the only one in `splits`). `labels`
    names the label set of a `jsonl` corpus (a vocabulary, names, or
    `"a,b,c"`); the other formats have their own. Bad input raises
    `DataError` (`file:line: ...`); with `skip_bad_rows` bad rows are left
    out and listed in `report`, which also gives the vocabulary used.
    Arguments and file names are checked now; file contents while iterating.
    """
    module = _MODULES.get(format)
    if module is None:
        raise ValueError(f"unknown format {format!r} (known: {', '.join(FORMATS)})")
    path = Path(path)
    wanted = frozenset(canonical_split(s) for s in splits) if splits is not None else frozenset(SPLITS)
    ctx = Context(report if report is not None else LoadReport(), skip_bad_rows, wanted)
    ctx.vocab = _vocabulary(format, module, labels, path)
    files = _files(format, module, path, wanted, explicit=splits is not None)
    return _stream(module, files, ctx)


def _stream(module: ModuleType, files: list[tuple[Path, str | None]], ctx: Context) -> Iterator[Dialogue]:
    for path, split in files:
        ctx.report.files.append(path)
        for dialogue in module.load_file(path, split, ctx):
            if dialogue.split in ctx.splits:
                yield dialogue


def _vocabulary(format: str, module: ModuleType, labels, path: Path) -> LabelVocab | None:
    if module.VOCAB is not None:
        if labels is not None:
            raise ValueError(f"labels apply to the jsonl format only; {format} has the {module.VOCAB} label set")
        return get_vocab(module.VOCAB)
    if labels is None or isinstance(labels, LabelVocab):
        return labels
    names = labels.split(",") if isinstance(labels, str) else list(labels)
    return vocab_from_labels(jsonl.default_name(path), [n.strip() for n in names if n.strip()])


def _files(
    format: str, module: ModuleType, path: Path, wanted: frozenset[str], explicit: bool
) -> list[tuple[Path, str | None]]:
    """(file, its split or None) to read, in split order; a missing file is a DataError now."""
    if path.is_file():
        split = split_from_filename(path.name)
        if split is None and explicit and len(wanted) == 1:
            split = next(iter(wanted))
        return [(path, split)] if split is None or split in wanted else []
    if not path.is_dir():
        raise DataError(path, None, "no such file or folder")
    if module.FILES is None:
        found = sorted(path.glob(module.GLOB))
        if len(found) != 1:
            raise DataError(path, None, f"expected exactly one {module.GLOB} file for {format}, found {len(found)}")
        return [(found[0], None)]
    files = [(path / name, split) for split, name in module.FILES.items() if split in wanted]
    missing = [str(file.name) for file, _ in files if not file.is_file()]
    if missing and (explicit or len(missing) == len(files)):
        raise DataError(path, None, f"no {format} file {' or '.join(missing)} here")
    return [(file, split) for file, split in files if file.is_file()]
