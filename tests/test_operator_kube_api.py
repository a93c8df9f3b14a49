"""The operator's small pure helpers around the API: merge patches, the CLI edge, invalid status."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest

from selfemo.operator.__main__ import main
from selfemo.operator.kopf_app import OperatorConfig, parse_priority
from selfemo.operator.kube_api import collection_path, merge_patch
from selfemo.operator.kube_executor import invalid_status
from selfemo.status import Phase, RunStatus


def test_merge_patch_names_removed_keys_and_only_changes():
    old = {"phase": "Training", "retries": {"a": 1, "b": 2}, "retryAfter": {"a": "T"}, "rounds": [{"round": 0}]}
    new = {"phase": "Training", "retries": {"a": 1, "b": 3}, "retryAfter": {}, "rounds": [{"round": 0}, {"round": 1}]}
    assert merge_patch(old, new) == {"retries": {"b": 3}, "retryAfter": {"a": None}, "rounds": [{"round": 0}, {"round": 1}]}
    assert merge_patch(new, new) is None
    assert merge_patch({}, {"phase": "Pending"}) == {"phase": "Pending"}
    assert merge_patch({"message": "x"}, {}) == {"message": None}


def test_collection_paths_of_the_kinds_the_operator_touches():
    assert collection_path("batch/v1", "Job", "ns") == "/apis/batch/v1/namespaces/ns/jobs"
    assert collection_path("v1", "ConfigMap", "ns") == "/api/v1/namespaces/ns/configmaps"
    with pytest.raises(ValueError):
        collection_path("v1", "Secret", "ns")  # never touched: children get credentials via envFrom


def test_invalid_status_keeps_transition_times_when_nothing_changes():
    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    first = invalid_status(RunStatus(), "invalid spec: spec.model.base: required field is missing", 1, t0)
    assert first.phase == Phase.failed
    failed = next(c for c in first.conditions if c.type == "Failed")
    assert (failed.status, failed.reason) == ("True", "ValidationFailed")
    again = invalid_status(first, first.message, 1, datetime(2026, 1, 2, tzinfo=timezone.utc))
    assert again == first  # unchanged → the operator writes nothing


def test_cli_needs_a_namespace_choice(capsys, monkeypatch):
    monkeypatch.delenv("SELFEMO_WATCH_NAMESPACE", raising=False)
    assert main([]) == 2
    assert "--all-namespaces" in capsys.readouterr().err


def test_operator_config_from_env():
    env = {"SELFEMO_TRAINER_IMAGE": "reg/trainer:1", "SELFEMO_OPERATOR_METRICS_PORT": "9090", "SELFEMO_OPERATOR_INTERVAL": "5"}
    cfg = OperatorConfig.from_env(env, namespaces=("a",), metrics_port=None)
    assert cfg.builder.trainer_image == "reg/trainer:1"
    assert (cfg.metrics_port, cfg.interval, cfg.namespaces) == (9090, 5.0, ("a",))


def test_peering_priority_auto_is_stable_and_distinct_per_pod():
    a, b = parse_priority("auto", "selfemo-7d9f-abcde"), parse_priority("auto", "selfemo-7d9f-fghij")
    assert a == parse_priority("auto", "selfemo-7d9f-abcde")  # a restarted process keeps its rank
    assert a != b and 1 <= min(a, b) and max(a, b) <= 1_000_000
    # a fleet of replica names almost never ties (a tie would pause both)
    assert len({parse_priority("auto", f"selfemo-6c4b8-{i:05x}") for i in range(1000)}) >= 999
    assert parse_priority("7", "") == 7


@pytest.mark.parametrize("text, pod, message", [("high", "p", "integer or 'auto'"), ("auto", "", "POD_ID")])
def test_peering_priority_errors_say_what_to_give(text, pod, message):
    with pytest.raises(ValueError, match=message):
        parse_priority(text, pod)


def test_cli_rejects_a_bad_priority(capsys):
    assert main(["--namespace", "a", "--priority", "high"]) == 2
    assert "--priority must be an integer or 'auto'" in capsys.readouterr().err
