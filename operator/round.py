"""The flywheel round as a pure state machine: the one piece of logic both
executors (the kopf operator and `selfemo run`) share.

``reconcile(run, observed, status, now) -> Decision`` reads the spec, what
the executor observed (:mod:`selfemo.operator.observed`) and the last status,
and says which children must be created or deleted, the new status and the
events to record. No I/O and no clock: ``now`` is passed in and everything
the next call needs (retry counts, back-off deadlines, phase start times)
lives in the status, so the same inputs always give the same decision and a
restarted operator picks up exactly where the last one stopped.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from selfemo.spec import SelfEmoRun
from selfemo.status import RunStatus

from .observed import ChildKind, Observed

EventType = Literal["Normal", "Warning"]


@dataclass(frozen=True)
class ChildIntent:
    """A child that must run now, abstractly: the executor turns it into a
    Deployment/Job (:mod:`selfemo.operator.children`) or a local subprocess.

    ``shard``/``shards`` are set for generators only (shard ``shard`` of
    ``shards``, 0-based); round 0 is the base model's baseline evaluation.
    """

    name: str
    kind: ChildKind
    round: int
    shard: int | None = None
    shards: int | None = None


@dataclass(frozen=True)
class Event:
    """A Kubernetes-style Event (the local executor prints them)."""

    type: EventType
    reason: str
    message: str


@dataclass
class Decision:
    """What to do after one reconcile.

    - ``create``: children that must exist and are not observed (creating an
      existing name is a no-op for the executor: names are deterministic).
    - ``delete``: names of observed children to delete (generators whose shard
      is committed, failed attempts, everything running once the run ends).
    - ``status``: the new status; executors write it only if it changed.
    - ``events``: to record, in order.
    - ``requeue_after``: seconds until the next reconcile is needed even if
      nothing changes (a retry back-off expiring); None when only a change in
      the world can move the run on.
    """

    create: list[ChildIntent]
    delete: list[str]
    status: RunStatus
    events: list[Event]
    requeue_after: float | None = None


def child_name(run: str, kind: ChildKind, round_: int, shard: int | None = None) -> str:
    """Deterministic child names (DESIGN.md "Children"): `{run}-r{r}-gen-{i}`,
    `{run}-r{r}-train`, `{run}-r{r}-eval` (`{run}-r0-eval` is the baseline)."""
    if kind == "generator":
        if shard is None:
            raise ValueError("a generator child needs a shard index")
        return f"{run}-r{round_}-gen-{shard}"
    if kind == "trainer":
        return f"{run}-r{round_}-train"
    if kind == "evaluator":
        return f"{run}-r{round_}-eval"
    raise ValueError(f"unknown child kind {kind!r}")


def reconcile(run: SelfEmoRun, observed: Observed, status: RunStatus, now: datetime) -> Decision:
    """One step of the run (being written; the types above are stable)."""
    raise NotImplementedError
