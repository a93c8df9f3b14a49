"""What the store says about a run: which outputs are committed, and the
numbers the status reports (eval scores, flywheel counts).

Markers in the store are the truth of a round (DESIGN.md, "The round"): a
step whose `_SUCCESS` exists is done whatever happened to the pod or process
that wrote it. Both executors (the kopf operator and `selfemo run`) read the
store through this one module, so they cannot disagree on what is done.
"""
from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from selfemo.operator.observed import aggregate_summaries

log = logging.getLogger(__name__)

MARKER_SUFFIX = "/_SUCCESS"
_SELECTED_SHARD = re.compile(r"^round-(\d{3,})/selected/(shard-\d{5}-of-\d{5})$")
_EVAL = re.compile(r"^round-(\d{3,})/eval$")


@dataclass(frozen=True)
class StoreState:
    """Committed prefixes (relative to the run root) and what was read from them.

    ``docs`` keeps each report JSON by prefix, so the next read can reuse it:
    a committed output never changes (the store refuses to re-commit a
    prefix), so its `metrics.json` / `summary.json` is read once.
    """

    committed: frozenset[str] = frozenset()
    eval_metrics: dict[int, dict] = field(default_factory=dict)
    flywheel: dict[int, dict] = field(default_factory=dict)
    docs: dict[str, dict] = field(default_factory=dict)


def committed_prefixes(keys: Iterable[str]) -> frozenset[str]:
    """The prefixes whose `_SUCCESS` marker is among ``keys``."""
    return frozenset(k[: -len(MARKER_SUFFIX)] for k in keys if k.endswith(MARKER_SUFFIX))


def read_store_state(store, previous: StoreState | None = None) -> StoreState:
    """List the run root once and read the small JSON files the status needs,
    except those already in ``previous`` (the last state read of this store).

    A committed output whose JSON cannot be read is logged and left out: the
    status then lacks a number, but the run is not blocked by a report (and
    the next read tries it again).
    """
    committed = committed_prefixes(store.list(""))
    known = previous.docs if previous is not None else {}
    docs: dict[str, dict] = {}
    for prefix in sorted(committed):
        name = "metrics.json" if _EVAL.match(prefix) else "summary.json" if _SELECTED_SHARD.match(prefix) else None
        if name is None:
            continue
        doc = known[prefix] if prefix in known else _read_json(store, prefix, name)
        if doc is not None:
            docs[prefix] = doc
    return state_of(committed, docs)


def state_of(committed: frozenset[str], docs: dict[str, dict]) -> StoreState:
    """Eval metrics by round and flywheel counts summed over shards, from the docs by prefix."""
    evals: dict[int, dict] = {}
    shards: dict[int, list[dict]] = {}
    for prefix in sorted(docs):
        if m := _EVAL.match(prefix):
            evals[int(m.group(1))] = docs[prefix]
        elif m := _SELECTED_SHARD.match(prefix):
            shards.setdefault(int(m.group(1)), []).append(docs[prefix])
    return StoreState(committed, evals, {r: aggregate_summaries(s) for r, s in shards.items()}, docs)


def _read_json(store, prefix: str, name: str) -> dict | None:
    try:
        return json.loads(store.open_committed(prefix).get_bytes(name))
    except Exception as exc:  # corrupt or partial report: say so, keep going
        log.warning("%s/%s: cannot read (%s); status will lack its numbers", prefix, name, exc)
        return None
