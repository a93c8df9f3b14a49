"""The run's corpora as dialogues: resolve each `DatasetRef` (local path,
`file://` or `s3://`), load its split, and take the spec's fixed, seeded subset.

Shared by self-play (training splits) and evaluation (test splits), so both
read exactly the same data the same way.
"""
from __future__ import annotations

import hashlib
import random
from pathlib import Path

from selfemo.data import LoadReport, load_dialogues
from selfemo.data.model import Dialogue
from selfemo.data.vocab import LabelVocab
from selfemo.policy import cache_dir
from selfemo.spec import DatasetRef


def is_remote(uri: str) -> bool:
    """Whether a dataset URI names an S3 folder rather than a local one."""
    return uri.startswith("s3://")


def file_path(uri: str) -> Path:
    """The absolute path of a local dataset URI (`file://` or a plain path, relative to
    the working directory): `../shared/erc/meld` and `/work/shared/erc/meld` are the same data."""
    return Path(uri.removeprefix("file://")).resolve()


def local_path(uri: str, *, endpoint_url: str | None = None) -> Path:
    """A local path for a dataset URI; `s3://` folders are downloaded once into the cache."""
    if is_remote(uri):
        from selfemo.store import open_store

        target = cache_dir() / "data" / hashlib.sha256(uri.encode()).hexdigest()[:16]
        if not (target / ".complete").exists():
            open_store(uri, endpoint_url=endpoint_url).download_dir("", target)
            (target / ".complete").write_text(uri)
        return target
    return file_path(uri)


def load_ref(ref: DatasetRef, default_split: str, *, seed: int = 0, endpoint_url: str | None = None) -> tuple[list[Dialogue], LabelVocab]:
    """The dialogues of one dataset reference and its label vocabulary.

    ``maxDialogues`` takes a seeded sample (stable under the seed, in corpus
    order) so every shard and every round sees the same subset.
    """
    report = LoadReport()
    split = ref.split or default_split
    dialogues = list(
        load_dialogues(ref.format, local_path(ref.uri, endpoint_url=endpoint_url), splits=[split],
                       skip_bad_rows=ref.skip_bad_rows, labels=ref.labels or None, report=report)
    )
    if ref.max_dialogues and len(dialogues) > ref.max_dialogues:
        keep = set(random.Random(f"{seed}/{ref.name}").sample(range(len(dialogues)), ref.max_dialogues))
        dialogues = [d for i, d in enumerate(dialogues) if i in keep]
    assert report.vocab is not None, f"{ref.name}: loader gave no vocabulary"
    return dialogues, report.vocab
