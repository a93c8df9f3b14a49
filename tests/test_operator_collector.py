"""The run-state metrics collector: series from the registry at scrape time."""
from __future__ import annotations

from datetime import datetime, timezone

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from selfemo.operator.collector import RunCollector, RunRegistry, child_kind
from selfemo.status import Phase, RoundStatus, RunStatus

NOW = datetime(2025, 3, 1, 12, 0, 0, tzinfo=timezone.utc).timestamp()


def status() -> RunStatus:
    return RunStatus(
        phase=Phase.training,
        round=2,
        phase_started_at="2025-03-01T11:59:00Z",
        rounds=[
            RoundStatus(round=0, eval={"meld": 40.0, "mean": 40.0}, durations={"Evaluating": 30.0}),
            RoundStatus(
                round=1, eval={"meld": 44.0, "mean": 44.0}, samples_generated=800, samples_kept=120, mean_reward=0.9,
                durations={"Generating": 100.0, "Training": 50.0, "Evaluating": 20.0},
            ),
            RoundStatus(round=2, samples_generated=900, samples_kept=150, mean_reward=1.1, durations={"Generating": 90.0}),
        ],
        retries={"erc-r1-gen-0": 2, "erc-r2-gen-1": 1, "erc-r1-train": 1},
    )


def scrape(runs: RunRegistry) -> dict[tuple[str, tuple], float]:
    registry = CollectorRegistry()
    registry.register(RunCollector(runs, clock=lambda: NOW))
    text = generate_latest(registry).decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def lbl(**kw):
    return tuple(sorted({"namespace": "ns", "run": "erc", **kw}.items()))


def test_series_from_status():
    runs = RunRegistry()
    runs.update("ns", "erc", None, status())
    runs.reconcile_error("ns", "erc")
    m = scrape(runs)
    assert m[("selfemo_run_round", lbl())] == 2
    assert m[("selfemo_run_phase", lbl(phase="Training"))] == 1
    assert m[("selfemo_run_phase", lbl(phase="Generating"))] == 0
    assert sum(v for (n, _), v in m.items() if n == "selfemo_run_phase") == 1
    # Latest evaluated round is 1 (round 2 not evaluated yet).
    assert m[("selfemo_eval_weighted_f1", lbl(dataset="meld"))] == 44.0
    assert m[("selfemo_eval_weighted_f1", lbl(dataset="mean"))] == 44.0
    assert m[("selfemo_flywheel_samples", lbl(stage="generated"))] == 900
    assert m[("selfemo_flywheel_samples", lbl(stage="kept"))] == 150
    assert m[("selfemo_flywheel_mean_reward", lbl())] == 1.1
    assert m[("selfemo_phase_duration_seconds", lbl(phase="Generating"))] == 190.0
    assert m[("selfemo_phase_duration_seconds", lbl(phase="Training"))] == 50.0 + 60.0  # current phase: 60 s so far
    assert m[("selfemo_child_failures_total", lbl(kind="generator"))] == 3
    assert m[("selfemo_child_failures_total", lbl(kind="trainer"))] == 1
    assert m[("selfemo_child_failures_total", lbl(kind="evaluator"))] == 0
    assert m[("selfemo_reconcile_errors_total", lbl())] == 1


def test_deleted_run_series_disappear():
    runs = RunRegistry()
    runs.update("ns", "erc", None, status())
    runs.update("ns", "other", None, RunStatus())
    assert any(("run", "erc") in labels for (_, labels) in scrape(runs))
    runs.remove("ns", "erc")
    m = scrape(runs)
    assert not any(("run", "erc") in labels for (_, labels) in m)
    assert m[("selfemo_run_phase", (("namespace", "ns"), ("phase", "Pending"), ("run", "other")))] == 1


def test_update_replaces_and_copies_status():
    runs = RunRegistry()
    st = status()
    runs.update("ns", "erc", None, st)
    st.round = 7  # the caller's object changing later must not leak in
    assert scrape(runs)[("selfemo_run_round", lbl())] == 2
    runs.update("ns", "erc", None, RunStatus(phase=Phase.succeeded, round=3))
    m = scrape(runs)
    assert m[("selfemo_run_round", lbl())] == 3 and m[("selfemo_run_phase", lbl(phase="Succeeded"))] == 1
    assert ("selfemo_phase_duration_seconds", lbl(phase="Succeeded")) not in m


def test_empty_registry_exports_no_run_series():
    assert not scrape(RunRegistry())


def test_child_kind():
    assert child_kind("a-b-r3-gen-12") == "generator"
    assert child_kind("run-r1-train") == "trainer"
    assert child_kind("run-r0-eval") == "evaluator"
    assert child_kind("unrelated") is None


def test_best_score_and_per_round_quality_series():
    """What the dashboard's overview and per-round rows and the no-improvement alert read."""
    st = status()
    st.best_round, st.best_weighted_f1 = 1, 44.0
    st.rounds[0].expression_consistency = {"meld": 0.25, "mean": 0.25}
    st.rounds[1].expression_consistency = {"meld": 0.5, "mean": 0.5}
    runs = RunRegistry()
    runs.update("ns", "erc", None, st)
    m = scrape(runs)
    assert m[("selfemo_run_best_weighted_f1", lbl())] == 44.0
    assert m[("selfemo_run_best_round", lbl())] == 1
    assert m[("selfemo_run_rounds_since_best", lbl())] == 0
    assert m[("selfemo_round_weighted_f1", lbl(round="0", dataset="meld"))] == 40.0
    assert m[("selfemo_round_weighted_f1", lbl(round="1", dataset="mean"))] == 44.0
    assert not any(n == "selfemo_round_weighted_f1" and ("round", "2") in k for n, k in m)  # not evaluated yet
    assert m[("selfemo_round_expression_consistency", lbl(round="1", dataset="meld"))] == 0.5

    # Two more flat rounds after the best: the alert's counter reads 2.
    st.rounds[2].eval = {"meld": 43.0, "mean": 43.0}
    st.rounds.append(RoundStatus(round=3, eval={"meld": 44.0, "mean": 44.0}))
    runs.update("ns", "erc", None, st)
    assert scrape(runs)[("selfemo_run_rounds_since_best", lbl())] == 2


def test_a_run_without_scores_exports_no_best():
    runs = RunRegistry()
    runs.update("ns", "new", None, RunStatus())
    names = {n for n, _ in scrape(runs)}
    assert "selfemo_run_round" in names
    assert not names & {"selfemo_run_best_weighted_f1", "selfemo_run_best_round", "selfemo_run_rounds_since_best",
                        "selfemo_round_weighted_f1", "selfemo_round_expression_consistency"}


def test_expression_scores_from_metrics_json():
    from selfemo.operator.round import expression_scores

    metrics = {"expression_consistency": {"meld": {"mean_siou": 0.4, "n": 10}, "iemocap": {"mean_siou": None}, "mean": 0.4}}
    assert expression_scores(metrics) == {"meld": 0.4, "mean": 0.4}
    assert expression_scores({"datasets": {}}) == {}
