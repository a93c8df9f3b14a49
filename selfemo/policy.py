"""Which weights a round starts from: π₀ (the spec's base model) for round 1,
the committed checkpoint of round r-1 afterwards (DESIGN.md, "The round")."""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from selfemo.models import cache_root as cache_dir
from selfemo.spec import SelfEmoRun
from selfemo.store import RetryPolicy, RunLayout

COMPLETE = ".selfemo-complete"


def run_layout(run: SelfEmoRun) -> RunLayout:
    return RunLayout(run.spec.storage.uri, run.metadata.namespace, run.metadata.name)


CHILD_STORE_OUTAGE_SECONDS = 60.0
"""How long a child (generator, trainer, evaluator) keeps retrying one store
operation before it fails. An S3 gateway restarting or a network blip of half
a minute must not crash a generator (its pod restarts and reloads the model:
minutes in vLLM) or fail a Job (one of `maxRetries`, and a trainer's steps
since its last state). Bad credentials and missing keys still fail at once:
only unreachable/transient errors are retried."""


def _retry_options(outage_seconds: float) -> dict:
    if outage_seconds <= 0:
        return {}
    retry = RetryPolicy.outlasting(outage_seconds)
    return {"retries": retry.attempts, "backoff": retry.base_delay, "max_backoff": retry.max_delay}


def open_run_store(run: SelfEmoRun, *, outage_seconds: float = CHILD_STORE_OUTAGE_SECONDS):
    """The run's store (rooted at `{uri}/{namespace}/{run}`); an S3 store
    retries each operation for at least ``outage_seconds``. The Kubernetes
    operator passes 0 (the store's short default): a pass must not block, it
    reports `StoreUnavailable` and looks again on the next one."""
    return run_layout(run).open(endpoint_url=run.spec.storage.endpoint or None, **_retry_options(outage_seconds))


def open_shared_store(run: SelfEmoRun, area: str):
    """A store beside the runs, `{storage.uri}/{area}`, for content-addressed
    artefacts every run in the same storage may reuse (baseline evaluations)."""
    from selfemo.store import open_store
    from selfemo.store.keys import parse_store_uri

    uri = parse_store_uri(run.spec.storage.uri).child(area).uri
    return open_store(uri, endpoint_url=run.spec.storage.endpoint or None, **_retry_options(CHILD_STORE_OUTAGE_SECONDS))


def checkpoint_cache_dir(manifest_json: bytes) -> Path:
    """Where a committed checkpoint lives locally: named by its manifest's digest.

    Content-addressed on purpose. Keying by run name and round let a test run,
    a deleted-and-recreated run or another store with the same run name hand
    back a different model than the one committed (it happened: a quickstart
    round was evaluated on a tiny test model). The manifest lists every file's
    sha256, so equal digests mean equal weights.
    """
    return cache_dir() / "checkpoints" / hashlib.sha256(manifest_json).hexdigest()[:32]


def policy_path(run: SelfEmoRun, round_: int) -> str:
    """A local path (or hub id) of π_{round-1}; each committed checkpoint is downloaded once."""
    from selfemo.models import resolve_model

    if round_ <= 1:
        return resolve_model(run.spec.model.base)
    layout = run_layout(run)
    prefix = layout.checkpoint(round_ - 1)
    committed = open_run_store(run).open_committed(prefix)
    target = checkpoint_cache_dir(committed.manifest.to_json())
    if (target / COMPLETE).exists():
        return str(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".download-", dir=target.parent))
    try:
        committed.download(staging)  # every file verified against the manifest
        (staging / COMPLETE).write_text(layout.uri + "/" + prefix + "\n")
        try:
            os.rename(staging, target)
        except OSError:  # another process (a second rank) finished first: same content
            if not (target / COMPLETE).exists():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return str(target)
