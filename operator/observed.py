"""What an executor observes about one run, handed to the round state machine.

The state machine (:func:`selfemo.operator.round.reconcile`) is pure, so every
fact it depends on arrives here as plain frozen data: the children the
executor can see (Kubernetes Jobs/Deployments, or local subprocesses) and the
store prefixes that are committed (their `_SUCCESS` marker exists). The store
is the truth: a child may be gone (operator restart, node loss) while its
output is committed, and then the step is done. The kopf operator and the
local executor fill these in from their own worlds; nothing here does I/O.

The helpers at the bottom spell the prefixes the state machine looks for, so
executors know exactly which markers to check (they match
:class:`selfemo.generator.rollout.ShardKeys` and
:class:`selfemo.store.layout.RunLayout`; a test keeps them in step).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

ChildKind = Literal["generator", "trainer", "evaluator"]
ChildPhase = Literal["Running", "Succeeded", "Failed"]
KINDS: tuple[ChildKind, ...] = ("generator", "trainer", "evaluator")


@dataclass(frozen=True)
class ChildState:
    """One child as the executor sees it.

    ``state`` is coarse on purpose: ``Running`` covers pending and starting
    pods too (the state machine only needs to know whether to wait),
    ``Failed`` is the executor's judgement that this attempt is over (Job
    failed, pod crash-looping past the executor's patience, subprocess exit
    code ≠ 0) and ``Succeeded`` a clean exit. ``message`` carries the last
    error a user should see when the run fails because of this child.
    """

    name: str
    kind: ChildKind
    round: int
    shard: int | None = None
    state: ChildPhase = "Running"
    message: str = ""


@dataclass(frozen=True)
class Observed:
    """Everything the state machine knows about the world for one reconcile.

    - ``children``: child name → state, for the run's children that exist.
    - ``committed``: committed store prefixes relative to the run root, e.g.
      ``round-001/selected/shard-00000-of-00002``, ``round-001/checkpoint``,
      ``round-001/eval``. Only prefixes the state machine asks about matter
      (see :func:`markers`); extra ones are ignored.
    - ``eval_metrics``: round → parsed ``round-RRR/eval/metrics.json`` for
      committed evaluations (round 0 is the base model).
    - ``flywheel``: round → the round's ``selected/*/summary.json`` summed
      over shards: ``groups``, ``candidates``, ``kept`` and ``mean_reward``
      (candidate-weighted).
    """

    children: dict[str, ChildState] = field(default_factory=dict)
    committed: frozenset[str] = frozenset()
    eval_metrics: dict[int, dict] = field(default_factory=dict)
    flywheel: dict[int, dict] = field(default_factory=dict)


# --------------------------------------------------------------------------- store prefixes


def round_prefix(r: int) -> str:
    return f"round-{r:03d}"


def shard_name(i: int, n: int) -> str:
    return f"shard-{i:05d}-of-{n:05d}"


def selected_prefix(r: int, i: int, n: int) -> str:
    """A shard is done when this prefix is committed (it is written last)."""
    return f"{round_prefix(r)}/selected/{shard_name(i, n)}"


def checkpoint_prefix(r: int) -> str:
    return f"{round_prefix(r)}/checkpoint"


def eval_prefix(r: int) -> str:
    return f"{round_prefix(r)}/eval"


NO_SIGNAL_FILE = "reason.json"
"""Inside `no_signal_prefix(r)`: `{"round": r, "message": <the trainer's error>}`."""


def no_signal_prefix(r: int) -> str:
    """The trainer commits this instead of a checkpoint when the round's groups
    hold no learning signal (exit status 3): retrying cannot change that."""
    return f"{round_prefix(r)}/no-signal"


def markers(r: int, shards: int) -> list[str]:
    """Every prefix whose commit the state machine looks at for round ``r``
    (round 0 only has the baseline evaluation)."""
    if r == 0:
        return [eval_prefix(0)]
    return [selected_prefix(r, i, shards) for i in range(shards)] + [checkpoint_prefix(r), no_signal_prefix(r), eval_prefix(r)]


def aggregate_summaries(summaries: list[dict]) -> dict:
    """Sum the shards' ``selected/…/summary.json`` into one ``Observed.flywheel`` entry.

    ``mean_reward`` is weighted by each shard's candidates so it equals the
    mean over all candidates of the round, whatever the shard sizes.
    """
    groups = sum(int(s.get("groups", 0)) for s in summaries)
    candidates = sum(int(s.get("candidates", 0)) for s in summaries)
    kept = sum(int(s.get("kept", 0)) for s in summaries)
    weighted = [(s.get("mean_reward"), int(s.get("candidates", 0))) for s in summaries]
    weighted = [(m, c) for m, c in weighted if m is not None and c > 0]
    total = sum(c for _, c in weighted)
    mean = sum(m * c for m, c in weighted) / total if total else None
    return {"groups": groups, "candidates": candidates, "kept": kept, "mean_reward": mean}
