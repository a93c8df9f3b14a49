"""Children wait out a store outage; the Kubernetes operator does not.

A generator that crashes on a half-minute S3 blip loses its loaded model (a
restart reloads it: minutes in vLLM) and a Job that fails costs one of
`maxRetries`, so children retry each store operation for at least
`CHILD_STORE_OUTAGE_SECONDS`. The operator's pass must not block on the
store (it warns `StoreUnavailable` and looks again), so it keeps the
store's short default. The end-to-end outage is in test_operator_real_run.py.
"""
from __future__ import annotations

import threading
import time

import pytest

from selfemo.operator.children import BuilderSettings
from selfemo.operator.collector import RunRegistry
from selfemo.operator.kube_executor import KubeExecutor
from selfemo.policy import CHILD_STORE_OUTAGE_SECONDS, open_run_store
from selfemo.store import RetryPolicy
from support.kubelet import parse_run, run_doc


def s3_run(tmp_path, server=None):
    doc = run_doc("patient", tmp_path)
    doc["spec"]["storage"] = {"uri": f"s3://{server.bucket if server else 'bucket'}/runs",
                              "endpoint": server.endpoint if server else "http://127.0.0.1:9"}
    return parse_run(doc)


def test_outlasting_is_the_fewest_attempts_whose_shortest_waits_cover_the_outage():
    policy = RetryPolicy.outlasting(60)
    assert policy.min_total_delay() >= 60
    assert RetryPolicy(policy.attempts - 1, policy.base_delay, policy.max_delay).min_total_delay() < 60
    assert policy.max_total_delay() <= 2 * policy.min_total_delay() + 1  # bounded: a dead endpoint still fails
    assert RetryPolicy.outlasting(0).attempts == 1
    with pytest.raises(ValueError):
        RetryPolicy.outlasting(1, base_delay=0)


def test_children_bridge_an_outage_and_the_operator_fails_fast(tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    run = s3_run(tmp_path)
    child = open_run_store(run)
    assert child.policy.min_total_delay() >= CHILD_STORE_OUTAGE_SECONDS >= 30
    operator = KubeExecutor(None, RunRegistry(), BuilderSettings(), lambda body, event: None).open_store(run)
    assert operator.policy == RetryPolicy()  # the store's own default: ~2 s, then StoreUnavailable
    assert operator.policy.max_total_delay() < 5


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_a_child_store_call_waits_for_seaweedfs_to_come_back(seaweedfs_s3, tmp_path):
    run = s3_run(tmp_path, seaweedfs_s3)
    store = open_run_store(run)
    with store.commit("round-001/eval") as out:
        out.put_bytes("metrics.json", b"{}")
    seaweedfs_s3.stop()
    restart = threading.Timer(4.0, seaweedfs_s3.start)
    restart.start()
    t0 = time.monotonic()
    try:
        assert store.is_committed("round-001/eval")  # retried through the outage, not raised
    finally:
        restart.join()
    assert time.monotonic() - t0 >= 4.0
