"""Kubernetes objects → the `ChildState`s the round state machine reads.

The kopf operator lists a run's Jobs, Deployments and Pods (label
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
  the operator's own retry (with back-off and `maxRetries`) takes over. The
  Job's condition only says "backoff limit reached"; the message adds its
  pod's last exit (reason, exit code and, as containers use
  `terminationMessagePolicy: FallbackToLogsOnError`, the tail of its log).
- A Deployment (a generator shard) never fails by itself: its pod restarts
  in place and resumes its shard from the last committed chunk, forever. It
  is `Failed` when
  - its rollout passed `progressDeadlineSeconds` (`Progressing` False,
    reason `ProgressDeadlineExceeded`): never became ready — unschedulable
    on every GPU node, an image that cannot be pulled, a missing Secret, a
    crash before the first readiness; the message adds what its pod is
    waiting for; or
  - a container of its pod restarted `CRASH_LOOP_RESTARTS` times: a crash
    loop after readiness, which the progress deadline no longer watches
    (Kubernetes only checks it during a rollout); the message carries the
    last exit.
  Either way the attempt counts as a child failure, so the retry back-off
  and `maxRetries` apply, and the recreated Deployment resumes the shard.

Pods are matched to a child by its labels (run, round, component, shard)
and must be created no earlier than the child and not be terminating, so the
leftover pods of a deleted attempt (same name, same labels) are not blamed
on the next one.
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


def job_state(job: dict, pods: Iterable[dict] = ()) -> ChildState | None:
    """The state of one child Job (trainer or evaluator); a failure's message
    adds its failed pod's last exit when the pods are given."""
    ident = _identity(job)
    if ident is None:
        return None
    name, kind, round_, shard = ident
    if _true_condition(job, _JOB_DONE):
        return ChildState(name, kind, round_, shard, "Succeeded")
    failed = _true_condition(job, _JOB_FAILED)
    if failed is not None:
        notes = (pod_trouble(p) for p in pods_of(job, pods))
        return ChildState(name, kind, round_, shard, "Failed", _with_pods(_describe(failed) or "Job failed", notes))
    return ChildState(name, kind, round_, shard, "Running")


CRASH_LOOP_RESTARTS = 5
"""Restarts of one generator container that make the attempt a failure. A
restart or two is normal (a node blip, a transient OOM: the pod resumes its
shard); five under the kubelet's growing back-off (10 s, 20 s, … 5 min) is
at least five minutes of getting nowhere. The Deployment is then deleted and,
after the operator's back-off, recreated (resuming from the committed
chunks), so a retry costs little and `maxRetries` bounds the loop."""

_NOT_A_PROBLEM = ("ContainerCreating", "PodInitializing")
_TAIL_LINES, _TAIL_WIDTH = 3, 300


def _tail(text: str) -> str:
    """The last lines of a termination message (the log tail), on one line."""
    lines = [ln.strip()[-_TAIL_WIDTH:] for ln in (text or "").splitlines() if ln.strip()]
    return " | ".join(lines[-_TAIL_LINES:])


def _containers(pod: dict) -> list[dict]:
    status = pod.get("status") or {}
    return list(status.get("initContainerStatuses") or []) + list(status.get("containerStatuses") or [])


def _exit(terminated: dict) -> str:
    """`OOMKilled, exit code 137: <log tail>` from a container's terminated state."""
    text = terminated.get("reason") or "terminated"
    if terminated.get("exitCode") is not None:
        text += f", exit code {terminated['exitCode']}"
    tail = _tail(terminated.get("message") or "")
    return f"{text}: {tail}" if tail else text


def _pod_name(pod: dict) -> str:
    return (pod.get("metadata") or {}).get("name") or "?"


def pods_of(child: dict, pods: Iterable[dict]) -> list[dict]:
    """The pods of this attempt of ``child``: its run/round/component/shard
    labels, created no earlier than it, not terminating."""
    ident = _identity(child)
    if ident is None:
        return []
    want = {k: v for k, v in _labels(child).items() if k in (LABEL_RUN, LABEL_ROUND, LABEL_COMPONENT, LABEL_SHARD)}
    born = (child.get("metadata") or {}).get("creationTimestamp") or ""
    out = []
    for pod in pods:
        meta = pod.get("metadata") or {}
        labels = meta.get("labels") or {}
        if meta.get("deletionTimestamp") or any(labels.get(k) != v for k, v in want.items()):
            continue
        if LABEL_SHARD not in want and LABEL_SHARD in labels:
            continue
        if born and (meta.get("creationTimestamp") or "") < born:  # RFC 3339 UTC strings sort by time
            continue
        out.append(pod)
    return sorted(out, key=lambda p: ((p.get("metadata") or {}).get("creationTimestamp") or "", _pod_name(p)))


def crash_loop(pod: dict) -> str | None:
    """Why ``pod`` is crash-looping (a container restarted `CRASH_LOOP_RESTARTS`
    times, with its last exit), or None."""
    for cs in _containers(pod):
        restarts = int(cs.get("restartCount") or 0)
        if restarts >= CRASH_LOOP_RESTARTS:
            last = (cs.get("lastState") or {}).get("terminated") or (cs.get("state") or {}).get("terminated") or {}
            where = f"pod {_pod_name(pod)} container {cs.get('name') or '?'} restarted {restarts} times"
            return f"{where}; last exit: {_exit(last)}" if last else where
    return None


def pod_trouble(pod: dict) -> str:
    """What a pod that is not running waits for (`ImagePullBackOff: …`,
    `Unschedulable: …`), or its failed container's exit; "" if nothing."""
    for cs in _containers(pod):
        state = cs.get("state") or {}
        waiting = state.get("waiting") or {}
        if waiting.get("reason") and waiting["reason"] not in _NOT_A_PROBLEM:
            return f"pod {_pod_name(pod)}: {_describe(waiting)}"
        terminated = state.get("terminated") or {}
        if terminated and terminated.get("exitCode") not in (None, 0):
            return f"pod {_pod_name(pod)}: {_exit(terminated)}"
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "PodScheduled" and str(cond.get("status")) == "False":
            return f"pod {_pod_name(pod)}: {_describe(cond) or 'not scheduled'}"
    return ""


def _with_pods(message: str, notes: Iterable[str]) -> str:
    notes = [n for n in notes if n]
    return "; ".join([message, *notes[:1]]) if message else "; ".join(notes[:1])


def past_progress_deadline(deployment: dict) -> dict | None:
    """The `Progressing` condition of a Deployment whose rollout passed
    `progressDeadlineSeconds` (reason `ProgressDeadlineExceeded`), else None."""
    for cond in (deployment.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Progressing" and str(cond.get("status")) == "False" \
                and cond.get("reason") == "ProgressDeadlineExceeded":
            return cond
    return None


def deployment_state(deployment: dict, pods: Iterable[dict] = ()) -> ChildState | None:
    """The state of one generator Deployment, given the listed pods (any;
    its own are picked by :func:`pods_of`)."""
    ident = _identity(deployment)
    if ident is None:
        return None
    name, kind, round_, shard = ident
    mine = pods_of(deployment, pods)
    cond = past_progress_deadline(deployment)
    if cond is not None:
        return ChildState(name, kind, round_, shard, "Failed",
                          _with_pods(_describe(cond), (crash_loop(p) or pod_trouble(p) for p in mine)))
    for pod in mine:
        looping = crash_loop(pod)
        if looping:
            return ChildState(name, kind, round_, shard, "Failed", f"CrashLoopBackOff: {looping}")
    return ChildState(name, kind, round_, shard, "Running")


def observe_children(run: str, jobs: Iterable[dict], deployments: Iterable[dict],
                     pods: Iterable[dict] = ()) -> dict[str, ChildState]:
    """Child name → state for the children of ``run`` among the listed objects
    (``pods``: the run's pods, for crash loops and failure messages).

    Objects labelled for another run are skipped even if the list returned
    them, so a too-wide selector cannot make one run adopt another's children.
    """
    pods = [p for p in pods if _labels(p).get(LABEL_RUN) == run]
    out: dict[str, ChildState] = {}
    for objs, state_of in ((jobs, job_state), (deployments, deployment_state)):
        for obj in objs:
            if _labels(obj).get(LABEL_RUN) != run:
                continue
            state = state_of(obj, pods)
            if state is not None:
                out[state.name] = state
    return out
