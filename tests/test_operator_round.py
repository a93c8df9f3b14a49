"""The round state machine (`selfemo.operator.round.reconcile`), table-driven.

Each case starts from a status and an observed world and checks one decision;
the scenario tests at the bottom drive several reconciles through a tiny
simulated executor (create/delete applied to a dict of children).
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from selfemo.operator.observed import (
    ChildState,
    Observed,
    aggregate_summaries,
    checkpoint_prefix,
    eval_prefix,
    markers,
    no_signal_prefix,
    selected_prefix,
)
from selfemo.operator.round import (
    BACKOFF_CAP,
    ChildIntent,
    Decision,
    backoff,
    child_name,
    reconcile,
    rounds_without_gain,
)
from selfemo.spec import SelfEmoRun
from selfemo.status import Phase, RoundStatus, RunStatus

T0 = datetime(2025, 3, 1, 12, 0, 0, tzinfo=timezone.utc)
RUN = "erc"


def make_run(shards=2, rounds=2, patience=0, min_delta=0.2, max_retries=2, suspend=False, generation=None) -> SelfEmoRun:
    meta = {"name": RUN, "namespace": "ns"}
    if generation is not None:
        meta["generation"] = generation
    return SelfEmoRun.model_validate(
        {
            "apiVersion": "selfemo.dev/v1alpha1",
            "kind": "SelfEmoRun",
            "metadata": meta,
            "spec": {
                "model": {"base": "smollm2-135m-instruct"},
                "flywheel": {"rounds": rounds, "earlyStop": {"patience": patience, "minDelta": min_delta}},
                "resources": {"generator": {"shards": shards}},
                "storage": {"uri": "s3://bucket/prefix"},
                "maxRetries": max_retries,
                "suspend": suspend,
            },
        }
    )


def metrics(mean: float) -> dict:
    return {"datasets": {"meld": {"weighted_f1": mean - 1}, "iemocap": {"weighted_f1": mean + 1}}, "mean": {"weighted_f1": mean}}


def committed_through(r: int, step: str, shards: int = 2) -> set[str]:
    """Every marker up to and including ``step`` of round ``r``."""
    out = {eval_prefix(0)}
    for q in range(1, r + 1):
        steps = ["gen", "train", "eval"] if q < r else ["gen", "train", "eval"][: ["gen", "train", "eval"].index(step) + 1]
        if "gen" in steps:
            out |= {selected_prefix(q, i, shards) for i in range(shards)}
        if "train" in steps:
            out.add(checkpoint_prefix(q))
        if "eval" in steps:
            out.add(eval_prefix(q))
    return out


def status(phase: Phase, round_: int, **kw) -> RunStatus:
    rounds = [RoundStatus(round=q, started_at="2025-03-01T11:00:00Z") for q in range(round_ + 1)]
    for q in range(round_):
        rounds[q].eval = {"mean": 50.0 + q}
    best = {"best_round": round_ - 1, "best_weighted_f1": 50.0 + round_ - 1} if round_ else {}
    fields = {"phase_started_at": "2025-03-01T11:59:00Z", **best, **kw}
    return RunStatus(phase=phase, round=round_, rounds=rounds, **fields)


def gen(r, i, state="Running", message=""):
    return ChildState(child_name(RUN, "generator", r, i), "generator", r, i, state, message)


def job(kind, r, state="Running", message=""):
    return ChildState(child_name(RUN, kind, r), kind, r, None, state, message)


def observed(*children, committed=(), eval_metrics=None, flywheel=None) -> Observed:
    return Observed(
        children={c.name: c for c in children},
        committed=frozenset(committed),
        eval_metrics=eval_metrics if eval_metrics is not None else {q: metrics(50.0 + q) for q in range(10)},
        flywheel=flywheel or {},
    )


# --------------------------------------------------------------------------- single transitions

CASES = [
    # id, run kwargs, status, observed, expected phase, round, created names, deleted names, event reasons
    ("fresh run starts the baseline evaluation", {}, RunStatus(), observed(eval_metrics={}),
     Phase.evaluating, 0, ["erc-r0-eval"], [], ["Evaluating"]),
    ("baseline running: wait", {}, status(Phase.evaluating, 0), observed(job("evaluator", 0)),
     Phase.evaluating, 0, [], [], []),
    ("baseline child missing: recreate it", {}, status(Phase.evaluating, 0), observed(),
     Phase.evaluating, 0, ["erc-r0-eval"], [], []),
    ("baseline committed: round 1 generates one child per shard", {}, status(Phase.evaluating, 0),
     observed(job("evaluator", 0, "Succeeded"), committed={eval_prefix(0)}),
     Phase.generating, 1, ["erc-r1-gen-0", "erc-r1-gen-1"], [], ["Generating"]),
    ("one of two shards committed: its generator is deleted", {}, status(Phase.generating, 1),
     observed(gen(1, 0), gen(1, 1), committed={eval_prefix(0), selected_prefix(1, 0, 2)}),
     Phase.generating, 1, [], ["erc-r1-gen-0"], []),
    ("committed shard, generator already gone: only the other is recreated", {}, status(Phase.generating, 1),
     observed(committed={eval_prefix(0), selected_prefix(1, 0, 2)}),
     Phase.generating, 1, ["erc-r1-gen-1"], [], []),
    ("all shards committed: training starts, generators deleted", {}, status(Phase.generating, 1),
     observed(gen(1, 0), gen(1, 1), committed=committed_through(1, "gen")),
     Phase.training, 1, ["erc-r1-train"], ["erc-r1-gen-0", "erc-r1-gen-1"], ["Training"]),
    ("training running: wait", {}, status(Phase.training, 1),
     observed(job("trainer", 1), committed=committed_through(1, "gen")),
     Phase.training, 1, [], [], []),
    ("checkpoint committed: evaluation starts", {}, status(Phase.training, 1),
     observed(job("trainer", 1, "Succeeded"), committed=committed_through(1, "train")),
     Phase.evaluating, 1, ["erc-r1-eval"], [], ["Evaluating"]),
    ("round evaluated: next round", {}, status(Phase.evaluating, 1),
     observed(job("evaluator", 1, "Succeeded"), committed=committed_through(1, "eval")),
     Phase.generating, 2, ["erc-r2-gen-0", "erc-r2-gen-1"], [], ["Generating"]),
    ("last round evaluated: succeeded", {}, status(Phase.evaluating, 2),
     observed(job("evaluator", 2, "Succeeded"), committed=committed_through(2, "eval")),
     Phase.succeeded, 2, [], [], ["RoundsCompleted"]),
    ("early stop: no gain of minDelta for patience rounds", {"rounds": 5, "patience": 1, "min_delta": 2.0},
     status(Phase.evaluating, 1), observed(committed=committed_through(1, "eval")),
     Phase.succeeded, 1, [], [], ["EarlyStopped"]),
    ("patience 0 disables early stopping", {"rounds": 5, "patience": 0, "min_delta": 2.0},
     status(Phase.evaluating, 1), observed(committed=committed_through(1, "eval")),
     Phase.generating, 2, ["erc-r2-gen-0", "erc-r2-gen-1"], [], ["Generating"]),
    ("enough gain: early stop does not fire", {"rounds": 5, "patience": 1, "min_delta": 0.5},
     status(Phase.evaluating, 1), observed(committed=committed_through(1, "eval")),
     Phase.generating, 2, ["erc-r2-gen-0", "erc-r2-gen-1"], [], ["Generating"]),
    ("eval committed but metrics not read yet: wait", {}, status(Phase.evaluating, 1),
     observed(committed=committed_through(1, "eval"), eval_metrics={0: metrics(50)}),
     Phase.evaluating, 1, [], [], []),
    ("restart: children missing, markers through round 1 present", {"rounds": 3}, status(Phase.generating, 1),
     observed(committed=committed_through(1, "eval")),
     Phase.generating, 2, ["erc-r2-gen-0", "erc-r2-gen-1"], [], ["Evaluating", "Generating"]),
    ("restart from scratch with everything committed: succeeded", {"rounds": 2}, RunStatus(),
     observed(committed=committed_through(2, "eval")),
     Phase.succeeded, 2, [], [], ["Evaluating", "Evaluating", "Evaluating", "RoundsCompleted"]),
    ("restart: training Job gone, checkpoint committed: evaluate", {}, status(Phase.training, 1),
     observed(committed=committed_through(1, "train")),
     Phase.evaluating, 1, ["erc-r1-eval"], [], ["Evaluating"]),
    ("checkpoint lost before its evaluation: the evaluator goes, the round retrains", {}, status(Phase.evaluating, 1),
     observed(job("evaluator", 1, "Failed", "no checkpoint"), committed=committed_through(1, "gen")),
     Phase.training, 1, ["erc-r1-train"], ["erc-r1-eval"], ["CheckpointMissing", "Training"]),
    ("checkpoint and shards lost before the evaluation: the round regenerates", {}, status(Phase.evaluating, 1),
     observed(committed={eval_prefix(0)}),
     Phase.generating, 1, ["erc-r1-gen-0", "erc-r1-gen-1"], [], ["CheckpointMissing", "Generating"]),
    ("stale generator of an earlier round is deleted", {}, status(Phase.training, 2),
     observed(gen(1, 1), job("trainer", 2), committed=committed_through(2, "gen") - {selected_prefix(1, 1, 2)}),
     Phase.training, 2, [], ["erc-r1-gen-1"], []),
    ("suspend while generating: generators deleted, nothing launched", {"suspend": True}, status(Phase.generating, 1),
     observed(gen(1, 0), gen(1, 1), committed={eval_prefix(0)}),
     Phase.suspended, 1, [], ["erc-r1-gen-0", "erc-r1-gen-1"], ["Suspended"]),
    ("suspend while training: the Job is left to finish", {"suspend": True}, status(Phase.training, 1),
     observed(job("trainer", 1), committed=committed_through(1, "gen")),
     Phase.suspended, 1, [], [], ["Suspended"]),
    ("suspended stays suspended, no event", {"suspend": True}, status(Phase.suspended, 1),
     observed(committed=committed_through(1, "gen")),
     Phase.suspended, 1, [], [], []),
    ("suspend a fresh run", {"suspend": True}, RunStatus(), observed(),
     Phase.suspended, 0, [], [], ["Suspended"]),
    ("resume where it was: shard 1 still missing", {}, status(Phase.suspended, 1),
     observed(committed={eval_prefix(0), selected_prefix(1, 0, 2)}),
     Phase.generating, 1, ["erc-r1-gen-1"], [], ["Generating"]),
    ("resume after the training Job finished while suspended", {}, status(Phase.suspended, 1),
     observed(job("trainer", 1, "Succeeded"), committed=committed_through(1, "train")),
     Phase.evaluating, 1, ["erc-r1-eval"], [], ["Evaluating"]),
    ("succeeded stays succeeded", {"rounds": 5, "suspend": True}, status(Phase.succeeded, 2),
     observed(committed=committed_through(2, "eval")),
     Phase.succeeded, 2, [], [], []),
    ("no learning signal: the run ends, the trainer's failed Job stays for its logs", {}, status(Phase.training, 1),
     observed(job("trainer", 1, "Failed", "BackoffLimitExceeded"), committed=committed_through(1, "gen") | {no_signal_prefix(1)}),
     Phase.succeeded, 1, [], [], ["NoLearningSignal"]),
    ("restart from scratch after no learning signal: ends at once", {"rounds": 3}, RunStatus(),
     observed(committed=committed_through(1, "eval") | committed_through(2, "gen") | {no_signal_prefix(2)}),
     Phase.succeeded, 2, [], [], ["Evaluating", "Evaluating", "Training", "NoLearningSignal"]),
    ("failed stays failed; running leftovers are stopped", {}, status(Phase.failed, 1),
     observed(gen(1, 0), committed=committed_through(2, "eval")),
     Phase.failed, 1, [], ["erc-r1-gen-0"], []),
]


@pytest.mark.parametrize(
    "run_kw, before, obs, phase, round_, created, deleted, reasons",
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_transition(run_kw, before, obs, phase, round_, created, deleted, reasons):
    d = reconcile(make_run(**run_kw), obs, before, T0)
    assert isinstance(d, Decision)
    assert d.status.phase == phase
    assert d.status.round == round_
    assert [c.name for c in d.create] == created
    assert sorted(d.delete) == sorted(deleted)
    assert [e.reason for e in d.events] == reasons
    # Pure: the input status is never mutated.
    assert before.model_dump() == before.model_copy(deep=True).model_dump()
    # Never create what is observed or deleted in the same decision.
    assert not {c.name for c in d.create} & (set(obs.children) | set(d.delete))


def test_generator_intents_carry_shard_and_count():
    d = reconcile(make_run(shards=3), observed(committed={eval_prefix(0)}), status(Phase.evaluating, 0), T0)
    assert d.create == [ChildIntent(f"erc-r1-gen-{i}", "generator", 1, i, 3) for i in range(3)]


def test_child_names():
    assert child_name("run", "generator", 3, 7) == "run-r3-gen-7"
    assert child_name("run", "trainer", 3) == "run-r3-train"
    assert child_name("run", "evaluator", 0) == "run-r0-eval"
    with pytest.raises(ValueError):
        child_name("run", "generator", 1)


def test_input_status_is_not_mutated():
    before = status(Phase.generating, 1)
    snapshot = before.model_dump()
    reconcile(make_run(), observed(gen(1, 0, "Failed", "OOM"), committed=committed_through(1, "gen")), before, T0)
    assert before.model_dump() == snapshot


# --------------------------------------------------------------------------- status contents


def test_round_records_flywheel_eval_checkpoint_and_best():
    obs = observed(
        committed=committed_through(1, "eval"),
        eval_metrics={0: metrics(50), 1: metrics(53.5)},
        flywheel={1: {"groups": 10, "candidates": 80, "kept": 17, "mean_reward": 0.75}},
    )
    d = reconcile(make_run(rounds=3), obs, status(Phase.generating, 1), T0)
    r1 = next(e for e in d.status.rounds if e.round == 1)
    assert (r1.samples_generated, r1.samples_kept, r1.mean_reward) == (80, 17, 0.75)
    assert r1.eval == {"meld": 52.5, "iemocap": 54.5, "mean": 53.5}
    assert r1.checkpoint == "s3://bucket/prefix/ns/erc/round-001/checkpoint"
    assert r1.finished_at == "2025-03-01T12:00:00Z"
    assert (d.status.best_round, d.status.best_weighted_f1) == (1, 53.5)


def test_baseline_is_best_when_rounds_do_not_improve():
    obs = observed(committed=committed_through(2, "eval"), eval_metrics={0: metrics(50), 1: metrics(49), 2: metrics(48)})
    d = reconcile(make_run(rounds=2), obs, RunStatus(), T0)
    assert d.status.phase == Phase.succeeded
    assert (d.status.best_round, d.status.best_weighted_f1) == (0, 50.0)
    assert "best round 0" in d.status.message


def test_phase_durations_accumulate_per_round():
    run = make_run()
    st = reconcile(run, observed(committed={eval_prefix(0)}), status(Phase.evaluating, 0), T0).status
    st = reconcile(run, observed(committed=committed_through(1, "gen")), st, T0 + timedelta(seconds=100)).status
    st = reconcile(run, observed(committed=committed_through(1, "train")), st, T0 + timedelta(seconds=160)).status
    r1 = next(e for e in st.rounds if e.round == 1)
    assert r1.durations == {"Generating": 100.0, "Training": 60.0}
    assert r1.started_at == "2025-03-01T12:00:00Z"


@pytest.mark.parametrize(
    "means, min_delta, wait",
    [
        ([50], 0.2, 0),
        ([50, 51], 0.2, 0),
        ([50, 50.1], 0.2, 1),
        ([50, 50.1, 50.2], 0.2, 0),  # 50.2 - 50 >= 0.2: the reference stayed at 50
        ([50, 49, 48], 0.0, 2),
        ([50, 52, 51, 51.5], 1.0, 2),
    ],
)
def test_rounds_without_gain(means, min_delta, wait):
    assert rounds_without_gain(means, min_delta) == wait


def test_early_stop_uses_patience_rounds():
    run = make_run(rounds=5, patience=2, min_delta=1.0)
    flat = {q: metrics(50.0) for q in range(5)}
    d = reconcile(run, observed(committed=committed_through(1, "eval"), eval_metrics=flat), RunStatus(), T0)
    assert (d.status.phase, d.status.round) == (Phase.generating, 2)
    d = reconcile(run, observed(committed=committed_through(2, "eval"), eval_metrics=flat), d.status, T0)
    assert (d.status.phase, d.status.round) == (Phase.succeeded, 2)
    assert d.events[-1].reason == "EarlyStopped"
    ready = {c.type: c for c in d.status.conditions}["Ready"]
    assert (ready.status, ready.reason) == ("True", "EarlyStopped")


# --------------------------------------------------------------------------- retries


@pytest.mark.parametrize("n, seconds", [(0, 0), (1, 10), (2, 20), (3, 40), (4, 80), (5, 160), (6, 300), (50, 300)])
def test_backoff(n, seconds):
    assert backoff(n) == seconds
    assert backoff(n) <= BACKOFF_CAP


def test_failed_child_is_deleted_and_recreated_after_backoff():
    run = make_run(max_retries=2)
    markers_ = committed_through(1, "gen")
    st = status(Phase.training, 1)
    d = reconcile(run, observed(job("trainer", 1, "Failed", "NCCL timeout"), committed=markers_), st, T0)
    assert d.delete == ["erc-r1-train"] and d.create == []
    assert d.status.retries == {"erc-r1-train": 1}
    assert d.status.retry_after == {"erc-r1-train": "2025-03-01T12:00:10Z"}
    assert [(e.type, e.reason) for e in d.events] == [("Warning", "ChildFailed")]
    assert "NCCL timeout" in d.events[0].message and "retry 1/2 in 10s" in d.events[0].message
    assert d.requeue_after == 10

    # Still visible (deletion in flight): not counted twice.
    d = reconcile(run, observed(job("trainer", 1, "Failed", "NCCL timeout"), committed=markers_), d.status, T0 + timedelta(seconds=1))
    assert d.status.retries == {"erc-r1-train": 1} and d.delete == ["erc-r1-train"] and not d.events

    # Gone, back-off not over: wait, and say when to come back.
    d = reconcile(run, observed(committed=markers_), d.status, T0 + timedelta(seconds=4))
    assert d.create == [] and d.requeue_after == 6
    assert {c.type: c.reason for c in d.status.conditions}["Progressing"] == "BackOff"

    # Back-off over: recreated, the deadline is dropped.
    d = reconcile(run, observed(committed=markers_), d.status, T0 + timedelta(seconds=10))
    assert [c.name for c in d.create] == ["erc-r1-train"] and d.status.retry_after == {}

    # Second failure: 20 s.
    d = reconcile(run, observed(job("trainer", 1, "Failed", "OOM"), committed=markers_), d.status, T0 + timedelta(seconds=30))
    assert d.status.retries == {"erc-r1-train": 2}
    assert d.status.retry_after == {"erc-r1-train": "2025-03-01T12:00:50Z"}

    # Third failure > maxRetries 2: Failed, reason ChildFailed, naming the child and its last error.
    st = d.status
    st.retry_after = {}
    d = reconcile(
        run,
        observed(job("trainer", 1, "Failed", "CUDA error: out of memory"), gen(1, 1), committed=markers_),
        st,
        T0 + timedelta(seconds=90),
    )
    assert d.status.phase == Phase.failed
    assert d.create == [] and d.delete == ["erc-r1-gen-1"]  # the failed Job stays for its logs
    assert "erc-r1-train" in d.status.message and "CUDA error: out of memory" in d.status.message
    cond = {c.type: c for c in d.status.conditions}
    assert (cond["Failed"].status, cond["Failed"].reason) == ("True", "ChildFailed")
    assert "erc-r1-train" in cond["Failed"].message
    assert cond["Progressing"].status == "False" and cond["Ready"].status == "False"
    assert [(e.type, e.reason) for e in d.events] == [("Warning", "ChildFailed")]
    assert d.requeue_after is None


def test_max_retries_zero_fails_on_first_failure():
    d = reconcile(make_run(max_retries=0), observed(gen(1, 0, "Failed", "boom"), committed={eval_prefix(0)}), status(Phase.generating, 1), T0)
    assert d.status.phase == Phase.failed
    assert "erc-r1-gen-0" in d.status.message and "boom" in d.status.message


def test_clean_exit_without_output_counts_as_failure():
    d = reconcile(make_run(), observed(job("evaluator", 0, "Succeeded"), committed=()), status(Phase.evaluating, 0), T0)
    assert d.status.retries == {"erc-r0-eval": 1} and d.delete == ["erc-r0-eval"]
    assert "without committing" in d.events[0].message


def test_failed_child_whose_output_is_committed_is_not_a_failure():
    d = reconcile(
        make_run(), observed(gen(1, 0, "Failed", "killed"), gen(1, 1), committed={eval_prefix(0), selected_prefix(1, 0, 2)}),
        status(Phase.generating, 1), T0,
    )
    assert d.status.retries == {} and d.delete == ["erc-r1-gen-0"] and d.create == []


def test_retries_are_per_child():
    run = make_run(max_retries=1)
    st = status(Phase.generating, 1)
    d = reconcile(run, observed(gen(1, 0, "Failed", "a"), gen(1, 1, "Failed", "b"), committed={eval_prefix(0)}), st, T0)
    assert d.status.retries == {"erc-r1-gen-0": 1, "erc-r1-gen-1": 1}
    assert d.status.phase == Phase.generating


def test_no_learning_signal_ends_the_run_without_a_retry_and_says_what_to_change():
    run = make_run(rounds=3, max_retries=2)
    obs = observed(job("trainer", 2, "Failed", "BackoffLimitExceeded"), gen(2, 1),
                   committed=committed_through(2, "gen") | {no_signal_prefix(2)},
                   flywheel={2: {"groups": 40, "candidates": 320, "kept": 0, "mean_reward": 0.1}})
    before = status(Phase.training, 2)  # best so far: round 1, mean W-F1 51
    d = reconcile(run, obs, before, T0)
    assert d.status.phase == Phase.succeeded and d.status.round == 2
    assert d.status.retries == {} and d.create == [] and d.requeue_after is None
    assert d.delete == ["erc-r2-gen-1"]  # a running leftover goes; the failed Job stays for its logs
    assert (d.status.best_round, d.status.best_weighted_f1) == (1, 51.0)
    cond = {c.type: c for c in d.status.conditions}
    assert (cond["Ready"].status, cond["Ready"].reason) == ("True", "NoLearningSignal")
    assert (cond["Failed"].status, cond["Progressing"].status) == ("False", "False")
    r2 = next(e for e in d.status.rounds if e.round == 2)
    assert (r2.samples_generated, r2.samples_kept, r2.finished_at) == (320, 0, "2025-03-01T12:00:00Z")
    assert r2.checkpoint == "" and r2.eval == {}
    [event] = d.events
    assert (event.type, event.reason) == ("Warning", "NoLearningSignal")
    for text in ("round 2", "0 of 320 samples kept", "best round 1, mean W-F1 51.00", "flywheel.rewardThreshold (now 0.6)",
                 "selfPlay.promptsPerRound", "s3://bucket/prefix/ns/erc/round-002/no-signal/reason.json"):
        assert text in event.message and text in d.status.message, text
    # Terminal: nothing is retried later either.
    again = reconcile(run, obs, d.status, T0 + timedelta(minutes=10))
    assert again.status.model_dump() == d.status.model_dump() and not again.create and not again.events


def test_a_trainer_failure_without_the_marker_is_still_retried():
    d = reconcile(make_run(max_retries=2), observed(job("trainer", 1, "Failed", "OOM"), committed=committed_through(1, "gen")),
                  status(Phase.training, 1), T0)
    assert d.status.phase == Phase.training and d.status.retries == {"erc-r1-train": 1}


# --------------------------------------------------------------------------- conditions, generation


def test_conditions_follow_api_conventions():
    run = make_run(generation=7)
    d = reconcile(run, observed(), RunStatus(), T0)
    cond = {c.type: c for c in d.status.conditions}
    assert set(cond) == {"Ready", "Progressing", "Failed", "Suspended"}
    assert cond["Progressing"].status == "True" and cond["Ready"].status == "False"
    assert all(c.observed_generation == 7 for c in cond.values())
    assert d.status.observed_generation == 7
    # Progressing stays True across phases: its lastTransitionTime does not move.
    later = T0 + timedelta(minutes=5)
    d2 = reconcile(run, observed(committed={eval_prefix(0)}), d.status, later)
    cond2 = {c.type: c for c in d2.status.conditions}
    assert cond2["Progressing"].last_transition_time == "2025-03-01T12:00:00Z"
    assert cond2["Progressing"].reason == "Generating"
    # Suspending flips Progressing and Suspended: both move.
    d3 = reconcile(make_run(suspend=True, generation=8), observed(committed={eval_prefix(0)}), d2.status, later + timedelta(minutes=1))
    cond3 = {c.type: c for c in d3.status.conditions}
    assert cond3["Suspended"].status == "True" and cond3["Suspended"].last_transition_time == "2025-03-01T12:06:00Z"
    assert cond3["Progressing"].status == "False" and cond3["Progressing"].last_transition_time == "2025-03-01T12:06:00Z"
    assert cond3["Ready"].last_transition_time == "2025-03-01T12:00:00Z"
    assert d3.status.observed_generation == 8


def test_terminal_status_is_returned_unchanged():
    st = status(Phase.succeeded, 2, message="done")
    d = reconcile(make_run(generation=9), observed(committed=committed_through(2, "eval")), st, T0)
    assert d.status.model_dump() == st.model_dump() and not d.events and not d.create


def test_suspend_resume_keeps_durations():
    run = make_run()
    st = status(Phase.generating, 1, phase_started_at="2025-03-01T12:00:00Z")
    d = reconcile(make_run(suspend=True), observed(gen(1, 0), committed={eval_prefix(0)}), st, T0 + timedelta(seconds=30))
    assert d.status.phase == Phase.suspended and d.delete == ["erc-r1-gen-0"]
    d = reconcile(run, observed(committed={eval_prefix(0)}), d.status, T0 + timedelta(seconds=90))
    assert d.status.phase == Phase.generating
    assert [c.name for c in d.create] == ["erc-r1-gen-0", "erc-r1-gen-1"]
    r1 = next(e for e in d.status.rounds if e.round == 1)
    assert r1.durations == {"Generating": 30.0, "Suspended": 60.0}


# --------------------------------------------------------------------------- whole runs through a fake executor


class FakeExecutor:
    """Applies decisions to a dict of children; `finish` commits a child's output."""

    def __init__(self, run: SelfEmoRun, means: dict[int, float]):
        self.run, self.means = run, means
        self.children: dict[str, ChildState] = {}
        self.committed: set[str] = set()
        self.created: list[str] = []
        self.status = RunStatus()
        self.events: list[str] = []
        self.now = T0

    def observe(self) -> Observed:
        evals = {q: metrics(m) for q, m in self.means.items() if eval_prefix(q) in self.committed}
        return Observed(dict(self.children), frozenset(self.committed), evals, {})

    def step(self) -> Decision:
        self.now += timedelta(seconds=60)
        d = reconcile(self.run, self.observe(), self.status, self.now)
        for name in d.delete:
            self.children.pop(name, None)
        for c in d.create:
            assert c.name not in self.children
            self.children[c.name] = ChildState(c.name, c.kind, c.round, c.shard, "Running", "")
            self.created.append(c.name)
        self.status = d.status
        self.events += [e.reason for e in d.events]
        return d

    def run_to_end(self, max_steps: int) -> None:
        """Reconcile, then let every running child finish, until the run is terminal."""
        for _ in range(max_steps):
            self.step()
            if self.status.phase.is_terminal():
                return
            self.finish_all()

    def finish_all(self) -> None:
        shards = self.run.spec.resources.generator.shards
        for c in list(self.children.values()):
            if c.state != "Running":
                continue
            if c.kind == "generator":
                self.committed.add(selected_prefix(c.round, c.shard, shards))
            elif c.kind == "trainer":
                self.committed.add(checkpoint_prefix(c.round))
            else:
                self.committed.add(eval_prefix(c.round))
            self.children[c.name] = ChildState(c.name, c.kind, c.round, c.shard, "Succeeded", "")


def test_full_run_reaches_succeeded_and_creates_each_child_once():
    ex = FakeExecutor(make_run(shards=2, rounds=3), {0: 40, 1: 45, 2: 47, 3: 46})
    ex.run_to_end(30)
    assert ex.status.phase == Phase.succeeded and ex.status.round == 3
    assert (ex.status.best_round, ex.status.best_weighted_f1) == (2, 47.0)
    assert len(ex.created) == len(set(ex.created)) == 1 + 3 * 4
    assert [e.round for e in ex.status.rounds] == [0, 1, 2, 3]
    assert not [c for c in ex.children.values() if c.kind == "generator"]
    assert ex.events.count("Generating") == 3 and ex.events[-1] == "RoundsCompleted"


def test_zero_rounds_evaluates_the_base_model_and_succeeds():
    """`flywheel.rounds: 0`: the zero-shot baseline is a run file like any other."""
    ex = FakeExecutor(make_run(shards=2, rounds=0), {0: 40})
    ex.run_to_end(5)
    assert ex.status.phase == Phase.succeeded and ex.status.round == 0
    assert ex.created == [child_name(RUN, "evaluator", 0)]
    assert not [c for c in ex.children.values() if c.kind in ("generator", "trainer")]
    assert (ex.status.best_round, ex.status.best_weighted_f1) == (0, 40.0)
    assert "evaluated the base model only" in ex.status.message


def test_markers_match_the_store_layout():
    from selfemo.generator.rollout import ShardKeys
    from selfemo.operator.observed import NO_SIGNAL_FILE
    from selfemo.store.layout import RunLayout

    layout = RunLayout("s3://b/p", "ns", "run")
    assert selected_prefix(2, 1, 4) == ShardKeys(2, 1, 4).selected
    assert checkpoint_prefix(2) == layout.checkpoint(2)
    assert eval_prefix(2) == layout.eval_prefix(2)
    assert no_signal_prefix(2) == layout.no_signal(2)
    assert layout.no_signal_reason(2) == f"{no_signal_prefix(2)}/{NO_SIGNAL_FILE}"
    assert markers(0, 4) == ["round-000/eval"]
    assert len(markers(1, 4)) == 7


def test_aggregate_summaries_weights_mean_reward_by_candidates():
    agg = aggregate_summaries(
        [{"groups": 2, "candidates": 16, "kept": 3, "mean_reward": 1.0}, {"groups": 1, "candidates": 8, "kept": 1, "mean_reward": 0.4}]
    )
    assert agg == {"groups": 3, "candidates": 24, "kept": 4, "mean_reward": pytest.approx(0.8)}
    assert aggregate_summaries([])["mean_reward"] is None


def test_mean_falls_back_to_the_dataset_average():
    obs = observed(committed={eval_prefix(0)}, eval_metrics={0: {"datasets": {"a": {"weighted_f1": 40.0}, "b": {"weighted_f1": 50.0}}}})
    d = reconcile(make_run(), obs, status(Phase.evaluating, 0), T0)
    assert d.status.phase == Phase.generating
    assert d.status.rounds[0].eval == {"a": 40.0, "b": 50.0, "mean": 45.0}
