"""Which weights a round starts from: π₀ (the spec's base model) for round 1,
the committed checkpoint of round r-1 afterwards (DESIGN.md, "The round")."""
from __future__ import annotations

from selfemo.models import cache_root as cache_dir
from selfemo.spec import SelfEmoRun
from selfemo.store import RunLayout


def run_layout(run: SelfEmoRun) -> RunLayout:
    return RunLayout(run.spec.storage.uri, run.metadata.namespace, run.metadata.name)


def open_run_store(run: SelfEmoRun):
    """The run's store (rooted at `{uri}/{namespace}/{run}`)."""
    return run_layout(run).open(endpoint_url=run.spec.storage.endpoint or None)


def policy_path(run: SelfEmoRun, round_: int) -> str:
    """A local path (or hub id) of π_{round-1}; checkpoints are downloaded once."""
    from selfemo.models import resolve_model

    if round_ <= 1:
        return resolve_model(run.spec.model.base)
    layout = run_layout(run)
    prefix = layout.checkpoint(round_ - 1)
    target = cache_dir() / "checkpoints" / run.metadata.namespace / run.metadata.name / layout.round_prefix(round_ - 1)
    marker = target / ".selfemo-complete"
    if not marker.exists():
        open_run_store(run).open_committed(prefix).download(target)
        marker.write_text(layout.uri + "/" + prefix)
    return str(target)
