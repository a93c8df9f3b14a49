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

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Literal

from selfemo.spec import SelfEmoRun
from selfemo.status import Condition, Phase, RoundStatus, RunStatus
from selfemo.store.layout import RunLayout

from .observed import (NO_SIGNAL_FILE, ChildKind, ChildState, Observed, checkpoint_prefix, eval_prefix, no_signal_prefix,
                       selected_prefix)

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


# --------------------------------------------------------------------------- constants

# Condition types and reasons side by side (API conventions: CamelCase, stable).
READY = "Ready"
PROGRESSING = "Progressing"
FAILED = "Failed"
SUSPENDED = "Suspended"
REASON_CHILD_FAILED = "ChildFailed"
REASON_COMPLETED = "RoundsCompleted"
REASON_EARLY_STOPPED = "EarlyStopped"
REASON_NO_SIGNAL = "NoLearningSignal"
REASON_SUSPENDED = "Suspended"
REASON_RUNNING = "Running"
REASON_BACKOFF = "BackOff"

BACKOFF_BASE = 10.0
"""Seconds before the first retry of a failed child: long enough for a node or
the store to recover from a blip, short enough not to waste a GPU slot."""
BACKOFF_CAP = 300.0
"""Retries never wait longer than 5 minutes: beyond that a failure is not
transient and `maxRetries` should end the run instead of stretching it."""

_ACTIVE = (Phase.generating, Phase.training, Phase.evaluating)


def backoff(failures: int) -> float:
    """Seconds to wait before recreating a child that failed ``failures`` times:
    10 s · 2^(n-1), capped at 5 minutes (10, 20, 40, 80, 160, 300, 300, …)."""
    if failures < 1:
        return 0.0
    return min(BACKOFF_CAP, BACKOFF_BASE * 2.0 ** min(failures - 1, 30))


def rfc3339(t: datetime) -> str:
    """UTC, second precision, `Z` suffix: what Kubernetes itself writes."""
    if t.tzinfo is None:
        t = t.replace(tzinfo=timezone.utc)
    return t.astimezone(timezone.utc).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str) -> datetime | None:
    if not text:
        return None
    t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


def rounds_without_gain(means: list[float], min_delta: float) -> int:
    """Rounds since the mean weighted-F1 last rose by at least ``min_delta``.

    ``means[0]`` is the base model, then rounds 1, 2, …. Like Keras'
    EarlyStopping the reference only moves on a real gain, so many tiny gains
    below ``min_delta`` cannot keep a run going forever.
    """
    if not means:
        return 0
    ref, wait = means[0], 0
    for value in means[1:]:
        if value > ref and value - ref >= min_delta:
            ref, wait = value, 0
        else:
            wait += 1
    return wait


def mean_weighted_f1(metrics: dict) -> float | None:
    """`mean.weighted_f1` of an eval `metrics.json`; the plain mean over
    datasets if an older file lacks it; None when there is no score at all
    (the run then waits instead of judging a round without its score)."""
    value = (metrics.get("mean") or {}).get("weighted_f1")
    if value is not None:
        return float(value)
    scores = [float(d["weighted_f1"]) for d in (metrics.get("datasets") or {}).values() if "weighted_f1" in d]
    return sum(scores) / len(scores) if scores else None


def eval_scores(metrics: dict) -> dict[str, float]:
    """Weighted-F1 per dataset plus `mean`, as `rounds[].eval` holds them."""
    scores = {name: float(d["weighted_f1"]) for name, d in (metrics.get("datasets") or {}).items() if "weighted_f1" in d}
    mean = mean_weighted_f1(metrics)
    if mean is not None:
        scores["mean"] = mean
    return scores


def expression_scores(metrics: dict) -> dict[str, float]:
    """Expression consistency (mean sIoU, 0–1) per dataset plus `mean`, as
    `rounds[].expressionConsistency` holds them; unscored datasets left out."""
    scores = {}
    for name, value in (metrics.get("expression_consistency") or {}).items():
        value = value.get("mean_siou") if isinstance(value, dict) else value
        if value is not None:
            scores[name] = float(value)
    return scores


# --------------------------------------------------------------------------- the machine


class _Step:
    """Mutable working state of one reconcile call (never escapes it)."""

    def __init__(self, run: SelfEmoRun, observed: Observed, status: RunStatus, now: datetime):
        self.run = run
        self.spec = run.spec
        self.name = run.metadata.name
        self.obs = observed
        self.st = status.model_copy(deep=True)
        self.now = now if now.tzinfo else now.replace(tzinfo=timezone.utc)
        self.create: list[ChildIntent] = []
        self.delete: list[str] = []
        self.events: list[Event] = []
        self.requeue: float | None = None
        self.waiting = ""  # why the current phase cannot move on, for the message

    # ----------------------------------------------------------------- helpers

    @property
    def shards(self) -> int:
        return self.spec.resources.generator.shards

    def committed(self, prefix: str) -> bool:
        return prefix in self.obs.committed

    def shards_committed(self, r: int) -> list[bool]:
        return [self.committed(selected_prefix(r, i, self.shards)) for i in range(self.shards)]

    def round_entry(self, r: int) -> RoundStatus:
        for entry in self.st.rounds:
            if entry.round == r:
                return entry
        entry = RoundStatus(round=r, started_at=rfc3339(self.now))
        self.st.rounds.append(entry)
        self.st.rounds.sort(key=lambda e: e.round)
        return entry

    def event(self, type_: EventType, reason: str, message: str) -> None:
        self.events.append(Event(type_, reason, message))

    def close_phase(self) -> None:
        """Add the time spent in the current phase to its round's durations."""
        phase = Phase(self.st.phase)
        started = parse_time(self.st.phase_started_at)
        if phase == Phase.pending or started is None or phase.is_terminal():
            return
        entry = self.round_entry(self.st.round)
        seconds = max(0.0, (self.now - started).total_seconds())
        entry.durations[phase.value] = round(entry.durations.get(phase.value, 0.0) + seconds, 3)

    def enter(self, phase: Phase, reason: str, message: str, type_: EventType = "Normal") -> None:
        """Transition to ``phase`` (an Event on every transition)."""
        if Phase(self.st.phase) == phase:
            return
        self.close_phase()
        self.st.phase = phase
        self.st.phase_started_at = rfc3339(self.now)
        if phase in _ACTIVE:
            self.round_entry(self.st.round).phase = phase.value
        self.event(type_, reason, message)

    def step_of(self, r: int) -> Phase:
        """The first step of round ``r`` whose output is not committed."""
        if r == 0 or self.committed(checkpoint_prefix(r)) or self.committed(eval_prefix(r)):
            return Phase.evaluating
        if all(self.shards_committed(r)):
            return Phase.training
        return Phase.generating

    def start(self, phase: Phase) -> None:
        r = self.st.round
        rounds = self.spec.flywheel.rounds
        if phase == Phase.generating:
            self.enter(phase, "Generating", f"round {r}/{rounds}: generating {self.shards} shard(s) with π{r - 1}")
        elif phase == Phase.training:
            self.enter(phase, "Training", f"round {r}/{rounds}: training π{r}")
        elif r == 0:
            self.enter(phase, "Evaluating", "round 0: evaluating the base model π0 (baseline)")
        else:
            self.enter(phase, "Evaluating", f"round {r}/{rounds}: evaluating π{r}")

    # ----------------------------------------------------------------- advancing

    def advance(self) -> None:
        """Move through every step whose output is committed (several at once
        when an operator restarts after children finished unobserved)."""
        limit = 4 * (self.spec.flywheel.rounds + 2)  # a bound, not a tuning value
        for _ in range(limit):
            phase, r = Phase(self.st.phase), self.st.round
            if phase in (Phase.pending, Phase.suspended):
                self.start(self.step_of(r))
                continue
            if phase == Phase.generating:
                if self.step_of(r) == Phase.generating:
                    done = sum(self.shards_committed(r))
                    self.waiting = f"{done}/{self.shards} shards committed"
                    return
                self.record_flywheel(r)
                self.start(self.step_of(r))
                continue
            if phase == Phase.training:
                if not (self.committed(checkpoint_prefix(r)) or self.committed(eval_prefix(r))):
                    if self.committed(no_signal_prefix(r)):
                        self.stop_without_signal(r)
                    return
                self.start(Phase.evaluating)
                continue
            if phase == Phase.evaluating:
                if not self.committed(eval_prefix(r)):
                    if r > 0 and not self.committed(checkpoint_prefix(r)):
                        self.redo_lost_checkpoint(r)
                        continue
                    return
                metrics = self.obs.eval_metrics.get(r)
                if metrics is None or mean_weighted_f1(metrics) is None:
                    # Committed but not yet read by the executor: wait rather
                    # than decide best round and early stop without the score.
                    self.waiting = "waiting for the evaluation metrics"
                    return
                self.finish_round(r, metrics)
                if Phase(self.st.phase).is_terminal():
                    return
                continue
            return

    def redo_lost_checkpoint(self, r: int) -> None:
        """π_r's checkpoint vanished before its evaluation was committed (nothing
        of ours deletes checkpoints, so someone removed it from the store): the
        evaluation can never succeed, so go back to the first step of round r
        whose output is missing (training, or generating if the shards went
        too) instead of failing the evaluator until the retries run out."""
        step = self.step_of(r)
        self.event("Warning", "CheckpointMissing",
                   f"round {r}: π{r}'s checkpoint {self.checkpoint_uri(r)} is not committed any more and its evaluation "
                   f"never was; redoing round {r} from {step.value.lower()}")
        self.start(step)

    def record_flywheel(self, r: int) -> None:
        summary = self.obs.flywheel.get(r)
        if summary:
            entry = self.round_entry(r)
            entry.samples_generated = int(summary.get("candidates", 0))
            entry.samples_kept = int(summary.get("kept", 0))
            if summary.get("mean_reward") is not None:
                entry.mean_reward = float(summary["mean_reward"])

    def finish_round(self, r: int, metrics: dict) -> None:
        entry = self.round_entry(r)
        entry.eval = eval_scores(metrics)
        entry.expression_consistency = expression_scores(metrics)
        if r > 0:
            self.record_flywheel(r)
            entry.checkpoint = self.checkpoint_uri(r)
        mean = entry.eval["mean"]
        if self.st.best_weighted_f1 is None or mean > self.st.best_weighted_f1:
            self.st.best_weighted_f1 = mean
            self.st.best_round = r
        self.close_phase()
        self.st.phase_started_at = rfc3339(self.now)
        entry.finished_at = rfc3339(self.now)

        rounds = self.spec.flywheel.rounds
        stop = self.spec.flywheel.early_stop
        means = [e.eval["mean"] for e in sorted(self.st.rounds, key=lambda e: e.round) if "mean" in e.eval and e.round <= r]
        best = f"best round {self.st.best_round} (mean W-F1 {self.st.best_weighted_f1:.2f})"
        if r >= rounds:
            done = f"completed {rounds} round(s)" if rounds else "evaluated the base model only (flywheel.rounds: 0)"
            self.succeed(REASON_COMPLETED, f"{done}; {best}")
        elif r > 0 and stop.patience > 0 and rounds_without_gain(means, stop.min_delta) >= stop.patience:
            self.succeed(
                REASON_EARLY_STOPPED,
                f"early stop after round {r}: no gain of {stop.min_delta:g} in mean W-F1 for {stop.patience} round(s); {best}",
            )
        else:
            self.st.round = r + 1
            self.st.phase = Phase.pending  # transient: start() below emits the transition
            self.st.phase_started_at = ""
            self.start(self.step_of(r + 1))

    def stop_without_signal(self, r: int) -> None:
        """The trainer committed `no-signal` for round ``r``: nothing in the
        round's groups can move the policy, so there is no π_r to evaluate and
        a retry would read the same groups again. The run ends `Succeeded`
        (reason `NoLearningSignal`) with the best round so far as its result;
        the Warning tells the user which knobs give the flywheel more to keep."""
        self.record_flywheel(r)
        entry = self.round_entry(r)
        entry.finished_at = rfc3339(self.now)
        fw, sp = self.spec.flywheel, self.spec.self_play
        counts = f" ({entry.samples_kept} of {entry.samples_generated} samples kept)" if self.obs.flywheel.get(r) else ""
        best = f"best round {self.st.best_round}" + (" (the base model)" if not self.st.best_round else "")
        if self.st.best_weighted_f1 is not None:
            best += f", mean W-F1 {self.st.best_weighted_f1:.2f}"
        self.end(
            Phase.succeeded, "Warning", REASON_NO_SIGNAL,
            f"round {r}: the trainer found no learning signal in the flywheel's groups{counts}; no checkpoint; "
            f"the result is the {best}. For a run that keeps more, lower "
            f"flywheel.rewardThreshold (now {fw.reward_threshold:g}) or raise selfPlay.promptsPerRound "
            f"(now {sp.prompts_per_round}) or selfPlay.groupSize (now {sp.group_size}); the trainer's reason: "
            f"{self.store_uri(no_signal_prefix(r))}/{NO_SIGNAL_FILE}",
        )

    def checkpoint_uri(self, r: int) -> str:
        return self.store_uri(checkpoint_prefix(r))

    def store_uri(self, prefix: str) -> str:
        try:
            root = RunLayout(self.spec.storage.uri, self.run.metadata.namespace, self.name).uri
        except Exception:  # an odd store URI must not break status keeping
            root = f"{self.spec.storage.uri.rstrip('/')}/{self.run.metadata.namespace}/{self.name}"
        return f"{root}/{prefix}"

    def succeed(self, reason: str, message: str) -> None:
        self.end(Phase.succeeded, "Normal", reason, message)

    def fail(self, reason: str, message: str) -> None:
        self.end(Phase.failed, "Warning", reason, message)

    def end(self, phase: Phase, type_: EventType, reason: str, message: str) -> None:
        """Enter a terminal phase; its reason goes to the conditions."""
        self.close_phase()
        self.st.phase = phase
        self.st.phase_started_at = rfc3339(self.now)
        self.st.message = message
        self.terminal_reason = reason
        self.event(type_, reason, message)

    # ----------------------------------------------------------------- children

    def desired(self) -> list[ChildIntent]:
        """Children the current step needs whose output is not committed."""
        phase, r = Phase(self.st.phase), self.st.round
        if phase == Phase.generating:
            return [
                ChildIntent(child_name(self.name, "generator", r, i), "generator", r, i, self.shards)
                for i, done in enumerate(self.shards_committed(r))
                if not done
            ]
        if phase == Phase.training and not (self.committed(checkpoint_prefix(r)) or self.committed(no_signal_prefix(r))):
            return [ChildIntent(child_name(self.name, "trainer", r), "trainer", r)]
        if phase == Phase.evaluating and not self.committed(eval_prefix(r)):
            return [ChildIntent(child_name(self.name, "evaluator", r), "evaluator", r)]
        return []

    def output_committed(self, child: ChildState) -> bool:
        r = child.round
        if child.kind == "generator":
            return child.shard is not None and (
                self.committed(selected_prefix(r, child.shard, self.shards))
                or self.committed(checkpoint_prefix(r))
                or self.committed(eval_prefix(r))
            )
        if child.kind == "trainer":  # no-signal is the trainer's output too: it exits 3 after committing it
            return any(self.committed(p) for p in (checkpoint_prefix(r), no_signal_prefix(r), eval_prefix(r)))
        return self.committed(eval_prefix(r))

    def handle_children(self) -> None:
        """Delete what is done or failed, count failures, create what is missing."""
        want = {c.name: c for c in self.desired()}
        max_retries = self.spec.max_retries
        for name, child in sorted(self.obs.children.items()):
            if child.state != "Running" and not self.output_committed(child) and name not in want:
                self.delete.append(name)  # not needed any more (e.g. fewer shards now): no retry
                continue
            if self.output_committed(child):
                # Done: free generator GPUs at once; finished Jobs stay for logs.
                if child.kind == "generator" or child.state == "Failed":
                    self.delete.append(name)
                continue
            if child.state == "Running":
                if child.kind == "generator" and name not in want:
                    self.delete.append(name)  # a stale shard of another round
                continue
            # Failed, or exited cleanly without committing its output.
            message = child.message or ("exited without committing its output" if child.state == "Succeeded" else "failed")
            if name in self.st.retry_after:
                self.delete.append(name)  # this failure is already counted
                not_before = parse_time(self.st.retry_after[name])
                if not_before is not None:
                    self.requeue_in((not_before - self.now).total_seconds())
                continue
            failures = self.st.retries.get(name, 0) + 1
            self.st.retries[name] = failures
            if failures > max_retries:
                self.fail(
                    REASON_CHILD_FAILED,
                    f"{child.kind} {name} failed {failures} time(s), more than maxRetries {max_retries}; last error: {message}",
                )
                return
            delay = backoff(failures)
            self.st.retry_after[name] = rfc3339(self.now + timedelta(seconds=delay))
            self.requeue_in(delay)
            self.delete.append(name)
            self.event(
                "Warning",
                REASON_CHILD_FAILED,
                f"{child.kind} {name} failed ({message}); retry {failures}/{max_retries} in {delay:g}s",
            )
        for name, intent in want.items():
            if name in self.obs.children:
                continue
            not_before = parse_time(self.st.retry_after.get(name, ""))
            if not_before is not None and self.now < not_before:
                wait = (not_before - self.now).total_seconds()
                self.requeue_in(wait)
                self.waiting = f"{name} backing off {wait:.0f}s"
                continue
            self.st.retry_after.pop(name, None)
            self.create.append(intent)
        # Back-off deadlines only matter for children still wanted.
        self.st.retry_after = {n: t for n, t in self.st.retry_after.items() if n in want}

    def requeue_in(self, seconds: float) -> None:
        seconds = max(0.0, seconds)
        self.requeue = seconds if self.requeue is None else min(self.requeue, seconds)

    def stop_running(self) -> None:
        for name, child in sorted(self.obs.children.items()):
            if child.state == "Running" and name not in self.delete:
                self.delete.append(name)

    # ----------------------------------------------------------------- status

    def conditions(self) -> None:
        phase = Phase(self.st.phase)
        reason = getattr(self, "terminal_reason", "")
        if phase.is_terminal() and not reason:
            reason = _condition(self.st.conditions, FAILED if phase == Phase.failed else READY).reason or phase.value
        gen = self.st.observed_generation
        msg = self.st.message
        if phase == Phase.succeeded:
            self.set(READY, "True", reason, msg, gen)
            self.set(PROGRESSING, "False", reason, msg, gen)
            self.set(FAILED, "False", reason, "", gen)
            self.set(SUSPENDED, "False", reason, "", gen)
        elif phase == Phase.failed:
            self.set(READY, "False", reason, msg, gen)
            self.set(PROGRESSING, "False", reason, msg, gen)
            self.set(FAILED, "True", reason, msg, gen)
            self.set(SUSPENDED, "False", reason, "", gen)
        elif phase == Phase.suspended:
            self.set(READY, "False", REASON_SUSPENDED, msg, gen)
            self.set(PROGRESSING, "False", REASON_SUSPENDED, msg, gen)
            self.set(FAILED, "False", REASON_SUSPENDED, "", gen)
            self.set(SUSPENDED, "True", REASON_SUSPENDED, msg, gen)
        else:
            running = REASON_BACKOFF if "backing off" in self.waiting else phase.value
            self.set(READY, "False", running, msg, gen)
            self.set(PROGRESSING, "True", running, msg, gen)
            self.set(FAILED, "False", running, "", gen)
            self.set(SUSPENDED, "False", running, "", gen)

    def set(self, type_: str, status: str, reason: str, message: str, generation: int) -> None:
        """Set a condition; lastTransitionTime moves only when `status` changes."""
        old = _condition(self.st.conditions, type_)
        when = old.last_transition_time if old.type and old.status == status else rfc3339(self.now)
        new = Condition(
            type=type_, status=status, reason=reason, message=message,
            last_transition_time=when, observed_generation=generation,
        )
        self.st.conditions = [c for c in self.st.conditions if c.type != type_] + [new]
        self.st.conditions.sort(key=lambda c: _CONDITION_ORDER.get(c.type, 99))

    def summary(self) -> str:
        phase, r = Phase(self.st.phase), self.st.round
        if phase.is_terminal():
            return self.st.message
        rounds = self.spec.flywheel.rounds
        if phase == Phase.suspended:
            return f"suspended in round {r}/{rounds}"
        where = "round 0: baseline evaluation" if r == 0 else f"round {r}/{rounds}: {phase.value.lower()}"
        return f"{where} ({self.waiting})" if self.waiting else where


_CONDITION_ORDER = {READY: 0, PROGRESSING: 1, FAILED: 2, SUSPENDED: 3}


def _condition(conditions: list[Condition], type_: str) -> Condition:
    for c in conditions:
        if c.type == type_:
            return c
    return Condition(type="", status="Unknown")


def _generation(run: SelfEmoRun) -> int:
    extra = run.metadata.model_extra or {}
    try:
        return int(extra.get("generation") or 0)
    except (TypeError, ValueError):
        return 0


def reconcile(run: SelfEmoRun, observed: Observed, status: RunStatus, now: datetime) -> Decision:
    """One step of the run: from (spec, observed world, last status, time) to
    (children to create/delete, new status, events).

    Flow: Pending → Evaluating round 0 (the base model, so every round is
    compared with π₀) → for r = 1..R: Generating (one generator per shard,
    each deleted as soon as its shard is committed) → Training → Evaluating →
    next round, or Succeeded after R rounds, on early stop, or when the
    trainer committed `no-signal` (nothing to learn from). Committed store
    prefixes are the truth: a step whose output exists is skipped even if its
    child is gone. Failed children are deleted and recreated after a back-off
    until ``maxRetries``, then the run fails with reason ``ChildFailed``.
    ``suspend`` deletes generators and launches nothing; terminal phases
    never change.
    """
    s = _Step(run, observed, status, now)
    phase = Phase(s.st.phase)
    if phase.is_terminal():
        s.stop_running()
        return Decision([], s.delete, s.st, [])
    s.st.observed_generation = _generation(run)

    if run.spec.suspend:
        if phase != Phase.suspended:
            s.close_phase()
            s.st.phase = Phase.suspended
            s.st.phase_started_at = rfc3339(s.now)
            s.event("Normal", REASON_SUSPENDED, f"suspended in round {s.st.round}: generators stopped, nothing new starts")
        s.delete = sorted(n for n, c in observed.children.items() if c.kind == "generator")
    else:
        s.advance()  # from Suspended: resumes at the first uncommitted step
        if Phase(s.st.phase).is_terminal():
            s.stop_running()
        else:
            s.handle_children()
            if Phase(s.st.phase).is_terminal():
                s.create = []
                s.stop_running()
    if not Phase(s.st.phase).is_terminal():
        s.st.message = s.summary()
    s.conditions()
    return Decision(s.create, s.delete, s.st, s.events, s.requeue if not Phase(s.st.phase).is_terminal() else None)
