"""Kubernetes objects → the `ChildState`s the round state machine reads.

The kopf operator lists a run's Jobs and Deployments (label
`selfemo.dev/run=<run>`) and hands the raw dicts here; everything else about
the cluster stays out of :func:`selfemo.operator.round.reconcile`. Pure
functions over plain dicts (what the API returns), so they are tested
without a cluster and the operator's I/O stays a thin shell.

Judgement calls, kept coarse on purpose (the state machine only needs
Running / Succeeded / Failed and a message a user can act on):

- A Job is `Succeeded` once its `Complete` (or `SuccessCriteriaMet`)
  condition is True, `Failed` once `Failed` (or `FailureTarget`: the Job
  controller has decided and is only cleaning up) is True, else `Running`.
  Children's Jobs have `backoffLimit: 0`, so one failed pod fails the Job and
  the operator's own retry (with back-off and `maxRetries`) takes over.
- A Deployment (a generator shard) is `Running` while it exists: its pod
  restarts in place and resumes its shard from the last committed chunk. Only
  a Deployment whose rollout passed `progressDeadlineSeconds`
  (`Progressing` False, reason `ProgressDeadlineExceeded`: image pull errors,
  unschedulable on every GPU node, crash loops that never become ready) is
  `Failed`, so a stuck shard ends in a retry and, past `maxRetries`, a reason.
"""
from __future__ import annotations

from collections.abc import Iterable

from .labels import LABEL_COMPONENT, LABEL_ROUND, LABEL_RUN, LABEL_SHARD
from .observed import KINDS, ChildState

_JOB_DONE = ("Complete", "SuccessCriteriaMet")
_JOB_FAILED = ("Failed", "FailureTarget")


def _labels(obj: dict) -> dict[str, str]:
    return (obj.get("metadata") or {}).get("labels") or {}


def _true_condition(obj: dict, types: tuple[str, ...]) -> dict | None:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") in types and str(cond.get("status")) == "True":
            return cond
    return None


def _describe(cond: dict) -> str:
    """`Reason: message`, or whichever of the two is set."""
    reason, message = cond.get("reason") or "", cond.get("message") or ""
    return f"{reason}: {message}" if reason and message else reason or message


def _identity(obj: dict) -> tuple[str, str, int, int | None] | None:
    """(name, kind, round, shard) from the labels the builders stamp; None
    for objects that are not a run's child (the ConfigMap, foreign objects)."""
    labels = _labels(obj)
    kind = labels.get(LABEL_COMPONENT)
    name = (obj.get("metadata") or {}).get("name")
    if kind not in KINDS or not name:
        return None
    try:
        round_ = int(labels.get(LABEL_ROUND, ""))
        shard = int(labels[LABEL_SHARD]) if LABEL_SHARD in labels else None
    except ValueError:
        return None
    return name, kind, round_, shard


def job_state(job: dict) -> ChildState | None:
    """The state of one child Job (trainer or evaluator)."""
    ident = _identity(job)
    if ident is None:
        return None
    name, kind, round_, shard = ident
    if _true_condition(job, _JOB_DONE):
        return ChildState(name, kind, round_, shard, "Succeeded")
    failed = _true_condition(job, _JOB_FAILED)
    if failed is not None:
        return ChildState(name, kind, round_, shard, "Failed", _describe(failed) or "Job failed")
    return ChildState(name, kind, round_, shard, "Running")


def deployment_state(deployment: dict) -> ChildState | None:
    """The state of one generator Deployment."""
    ident = _identity(deployment)
    if ident is None:
        return None
    name, kind, round_, shard = ident
    for cond in (deployment.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Progressing" and str(cond.get("status")) == "False" \
                and cond.get("reason") == "ProgressDeadlineExceeded":
            return ChildState(name, kind, round_, shard, "Failed", _describe(cond))
    return ChildState(name, kind, round_, shard, "Running")


def observe_children(run: str, jobs: Iterable[dict], deployments: Iterable[dict]) -> dict[str, ChildState]:
    """Child name → state for the children of ``run`` among the listed objects.

    Objects labelled for another run are skipped even if the list returned
    them, so a too-wide selector cannot make one run adopt another's children.
    """
    out: dict[str, ChildState] = {}
    for objs, state_of in ((jobs, job_state), (deployments, deployment_state)):
        for obj in objs:
            if _labels(obj).get(LABEL_RUN) != run:
                continue
            state = state_of(obj)
            if state is not None:
                out[state.name] = state
    return out
