"""The artefact store: one interface over `file://` (or plain paths) and `s3://`.

    store = open_store("s3://selfemo-runs/prod")        # or "file:///data/runs", "runs/"
    with store.commit("ns/run/round-001/selected") as out:
        out.put_bytes("samples.jsonl", data)            # visible only after the block
    store.open_committed("ns/run/round-001/selected").get_bytes("samples.jsonl")

An output is visible only once its `_SUCCESS` manifest exists, and a commit of
an already committed prefix is a no-op: that is what makes every step of the
flywheel idempotent and resumable (DESIGN.md).
"""
from __future__ import annotations

import os

from .base import CommittedOutput, CommitWriter, Store
from .errors import (AccessDeniedError, IntegrityError, InvalidKeyError, InvalidURIError,
                     NotCommittedError, NotFoundError, StoreError, StoreUnavailableError)
from .keys import MARKER, parse_store_uri
from .layout import RunLayout
from .manifest import FileEntry, Manifest
from .retry import RetryPolicy

__all__ = [
    "open_store", "Store", "CommitWriter", "CommittedOutput", "RunLayout", "Manifest", "FileEntry",
    "RetryPolicy", "MARKER", "StoreError", "InvalidKeyError", "InvalidURIError", "NotFoundError",
    "NotCommittedError", "StoreUnavailableError", "AccessDeniedError", "IntegrityError",
]


def open_store(uri: str | os.PathLike[str], *, endpoint_url: str | None = None, **s3_options) -> Store:
    """Open the store at `uri`: `s3://bucket[/prefix]`, `file:///path` or a plain path.

    S3 only: `endpoint_url` (else `SELFEMO_S3_ENDPOINT` / `AWS_ENDPOINT_URL_S3` /
    `AWS_ENDPOINT_URL`; none = AWS) and the tuning options of `S3Store`
    (`retries`, `backoff`, `max_backoff`, `request_attempts`, timeouts,
    `multipart_threshold`, …).  A local store ignores them, so one spec works
    with either kind of URI.  Opening does no I/O.
    """
    location = parse_store_uri(uri)
    if location.scheme == "s3":
        from .s3 import S3Store  # boto3 only when needed

        return S3Store(location, endpoint_url=endpoint_url, **s3_options)
    from .local import FileStore

    return FileStore(location)
