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
    """Committed prefixes (relative to the run root) and what was read from them."""

    committed: frozenset[str] = frozenset()
    eval_metrics: dict[int, dict] = field(default_factory=dict)
    flywheel: dict[int, dict] = field(default_factory=dict)


def committed_prefixes(keys: Iterable[str]) -> frozenset[str]:
    """The prefixes whose `_SUCCESS` marker is among ``keys``."""
    return frozenset(k[: -len(MARKER_SUFFIX)] for k in keys if k.endswith(MARKER_SUFFIX))


def read_store_state(store) -> StoreState:
    """List the run root once and read the small JSON files the status needs.

    A committed output whose JSON cannot be read is logged and left out: the
    status then lacks a number, but the run is not blocked by a report.
    """
    committed = committed_prefixes(store.list(""))
    evals: dict[int, dict] = {}
    shards: dict[int, list[dict]] = {}
    for prefix in sorted(committed):
        if m := _EVAL.match(prefix):
            doc = _read_json(store, prefix, "metrics.json")
            if doc is not None:
                evals[int(m.group(1))] = doc
        elif m := _SELECTED_SHARD.match(prefix):
            doc = _read_json(store, prefix, "summary.json")
            if doc is not None:
                shards.setdefault(int(m.group(1)), []).append(doc)
    return StoreState(committed, evals, {r: aggregate_summaries(s) for r, s in shards.items()})


def _read_json(store, prefix: str, name: str) -> dict | None:
    try:
        return json.loads(store.open_committed(prefix).get_bytes(name))
    except Exception as exc:  # corrupt or partial report: say so, keep going
        log.warning("%s/%s: cannot read (%s); status will lack its numbers", prefix, name, exc)
        return None
