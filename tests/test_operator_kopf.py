"""The real kopf operator (our handlers) against the Kubernetes API emulator.

One operator runs for the module in a background thread, talking to kmock on
loopback through a kubeconfig, exactly as it would to a cluster. The tests
play kubectl (create/patch/delete SelfEmoRuns) and the kubelet (mark Jobs
Complete/Failed) and commit store markers the way the components do, then
watch what the operator creates, deletes and reports. Each test uses its own
run name, so they share the operator without interfering.
"""
from __future__ import annotations

import threading
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml

from selfemo.operator.children import BuilderSettings
from selfemo.operator.kopf_app import OperatorApp, OperatorConfig, load_kube_configuration
from support.kube import KubeServer, wait_for
from support.kubelet import commit, finish_job, metrics_json, run_doc

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

NS = "default"
RUNS = f"/apis/selfemo.dev/v1alpha1/namespaces/{NS}/selfemoruns"
JOBS = f"/apis/batch/v1/namespaces/{NS}/jobs"
DEPLOYMENTS = f"/apis/apps/v1/namespaces/{NS}/deployments"
CONFIGMAPS = f"/api/v1/namespaces/{NS}/configmaps"
EVENTS = f"/api/v1/namespaces/{NS}/events"


class Clock:
    """Wall time plus an offset the test can move forward (to skip retry back-offs)."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def __call__(self) -> datetime:
        return datetime.now(timezone.utc) + self.offset


class Operator:
    def __init__(self, server: KubeServer, app: OperatorApp, clock: Clock):
        self.server, self.app, self.clock = server, app, clock
        self.kube = server.client()

    def metrics(self, path: str = "/metrics") -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.app.metrics.port}{path}", timeout=5) as resp:
            return resp.read().decode()

    def run(self, name: str) -> dict | None:
        return self.kube.get(f"{RUNS}/{name}")

    def status(self, name: str) -> dict:
        return (self.run(name) or {}).get("status") or {}

    def wait_phase(self, name: str, phase: str, timeout: float = 15.0) -> dict:
        return wait_for(lambda: (st := self.status(name)).get("phase") == phase and st, timeout,
                        what=f"{name} phase {phase} (status: {self.status(name)})")

    def children(self, path: str, name: str) -> dict[str, dict]:
        return {o["metadata"]["name"]: o for o in self.kube.list(path, f"selfemo.dev/run={name}")}

    def kubelet_finish(self, job: str, ok: bool, message: str = "") -> None:
        finish_job(self.kube, job, ok, message, NS)

    def events(self, name: str) -> list[dict]:
        return [e for e in self.kube.list(EVENTS) if e.get("involvedObject", {}).get("name") == name]


@pytest.fixture(scope="module")
def operator(tmp_path_factory) -> Operator:
    from selfemo.crd import crd

    server = KubeServer([crd()]).start()
    kubeconfig = server.kubeconfig(tmp_path_factory.mktemp("kube") / "config")
    clock = Clock()
    config = OperatorConfig(builder=BuilderSettings(), namespaces=(NS,), metrics_port=0, metrics_host="127.0.0.1",
                            interval=1.0)
    app = OperatorApp(config, load_kube_configuration(str(kubeconfig)), clock=clock)
    stop, ready = threading.Event(), threading.Event()
    thread = threading.Thread(target=app.run, kwargs={"stop_flag": stop, "ready_flag": ready}, name="operator", daemon=True)
    thread.start()
    assert ready.wait(30), "the operator did not start"
    try:
        yield Operator(server, app, clock)
    finally:
        stop.set()
        thread.join(30)
        server.stop()


def condition(status: dict, type_: str) -> dict:
    return next(c for c in status["conditions"] if c["type"] == type_)


def test_a_run_goes_round_by_round_through_the_api(operator: Operator, tmp_path: Path):
    kube, name = operator.kube, "flow"
    doc = run_doc(name, tmp_path / "store", maxRetries=1,
                  resources={"generator": {"shards": 2, "gpus": 0}, "trainer": {"nodes": 1, "gpusPerNode": 0}, "evaluator": {"gpus": 0}})
    created = kube.create(RUNS, doc)
    uid = created["metadata"]["uid"]

    # Round 0: the run's ConfigMap and the baseline evaluation Job, owned by the run.
    cm = wait_for(lambda: kube.get(f"{CONFIGMAPS}/{name}-config"), what="the run ConfigMap")
    job = wait_for(lambda: kube.get(f"{JOBS}/{name}-r0-eval"), what="the round-0 eval Job")
    for obj in (cm, job):
        (owner,) = obj["metadata"]["ownerReferences"]
        assert owner == {"apiVersion": "selfemo.dev/v1alpha1", "kind": "SelfEmoRun", "name": name, "uid": uid,
                         "controller": True, "blockOwnerDeletion": True}
        assert obj["metadata"]["labels"]["selfemo.dev/run"] == name
    assert job["metadata"]["labels"]["selfemo.dev/round"] == "0"
    assert job["metadata"]["labels"]["app.kubernetes.io/component"] == "evaluator"
    assert yaml.safe_load(cm["data"]["run.yaml"])["spec"]["resources"]["generator"]["shards"] == 2
    status = operator.wait_phase(name, "Evaluating")
    assert status["round"] == 0
    assert condition(status, "Progressing")["status"] == "True"
    # kopf's bookkeeping on the run carries our names, not kopf's defaults.
    meta = operator.run(name)["metadata"]
    assert meta["finalizers"] == ["selfemo.dev/finalizer"]
    kopf_keys = [k for k in meta.get("annotations", {}) if "kopf" in k or k.startswith("selfemo.dev/")]
    assert kopf_keys and all(k.startswith("selfemo.dev/") for k in kopf_keys), kopf_keys

    # The kubelet finishes the Job; the evaluator committed its metrics → round 1 generates.
    commit(doc, "round-000/eval", {"metrics.json": metrics_json(40.0)})
    operator.kubelet_finish(f"{name}-r0-eval", ok=True)
    status = operator.wait_phase(name, "Generating")
    assert status["round"] == 1 and status["rounds"][0]["eval"]["mean"] == 40.0
    gens = wait_for(lambda: len(g := operator.children(DEPLOYMENTS, name)) == 2 and g, what="two generator Deployments")
    assert sorted(gens) == [f"{name}-r1-gen-0", f"{name}-r1-gen-1"]
    assert gens[f"{name}-r1-gen-1"]["metadata"]["labels"]["selfemo.dev/shard"] == "1"

    # Shard 0 committed → its Deployment goes at once (its GPU is free for training).
    summary = {"groups": 2, "candidates": 8, "kept": 3, "mean_reward": 0.5}
    commit(doc, "round-001/selected/shard-00000-of-00002", {"summary.json": summary})
    wait_for(lambda: list(operator.children(DEPLOYMENTS, name)) == [f"{name}-r1-gen-1"], what="gen-0 deleted")

    # Suspend: generators go, phase Suspended; resume brings shard 1 back.
    kube.patch(f"{RUNS}/{name}", {"spec": {"suspend": True}})
    status = operator.wait_phase(name, "Suspended")
    assert condition(status, "Suspended")["status"] == "True"
    wait_for(lambda: not operator.children(DEPLOYMENTS, name), what="generators deleted on suspend")
    kube.patch(f"{RUNS}/{name}", {"spec": {"suspend": False}})
    operator.wait_phase(name, "Generating")
    wait_for(lambda: list(operator.children(DEPLOYMENTS, name)) == [f"{name}-r1-gen-1"], what="gen-1 back after resume")

    # All shards committed → Training, and no generator left.
    commit(doc, "round-001/selected/shard-00001-of-00002", {"summary.json": summary})
    status = operator.wait_phase(name, "Training")
    assert status["rounds"][1]["samplesGenerated"] == 16 and status["rounds"][1]["samplesKept"] == 6
    wait_for(lambda: not operator.children(DEPLOYMENTS, name), what="generators deleted for training")
    first = wait_for(lambda: kube.get(f"{JOBS}/{name}-r1-train"), what="the training Job")

    # The training Job fails once → deleted, counted, recreated after the back-off.
    operator.kubelet_finish(f"{name}-r1-train", ok=False, message="rank 0 OOM")
    wait_for(lambda: operator.status(name).get("retries", {}).get(f"{name}-r1-train") == 1, what="failure counted")
    wait_for(lambda: kube.get(f"{JOBS}/{name}-r1-train") is None, what="failed Job deleted")
    # kopf posts Events from a queue after the status patch: wait for it.
    warnings = wait_for(lambda: [e for e in operator.events(name) if e["reason"] == "ChildFailed"], what="ChildFailed event")
    assert warnings[0]["type"] == "Warning" and "rank 0 OOM" in warnings[0]["message"]
    operator.clock.offset += timedelta(seconds=60)  # past the 10 s back-off
    second = wait_for(lambda: kube.get(f"{JOBS}/{name}-r1-train"), what="the Job recreated")
    assert second["metadata"]["uid"] != first["metadata"]["uid"]

    # Fails again: past maxRetries=1 the run is Failed with a reason naming the child.
    operator.kubelet_finish(f"{name}-r1-train", ok=False, message="rank 0 OOM again")
    status = operator.wait_phase(name, "Failed")
    failed = condition(status, "Failed")
    assert failed["status"] == "True" and failed["reason"] == "ChildFailed"
    assert f"{name}-r1-train" in status["message"] and "rank 0 OOM again" in status["message"]
    assert status["observedGeneration"] >= 1

    # Transitions became Events on the run.
    wanted = {"Evaluating", "Generating", "Suspended", "Training", "ChildFailed"}
    wait_for(lambda: wanted <= {e["reason"] for e in operator.events(name)}, what="transition events")

    # Metrics: the run's phase while it exists, nothing once it is deleted.
    assert operator.metrics("/healthz") == "ok\n"
    text = operator.metrics()
    assert f'selfemo_run_phase{{namespace="{NS}",phase="Failed",run="{name}"}} 1.0' in text
    assert f'selfemo_child_failures_total{{kind="trainer",namespace="{NS}",run="{name}"}} 2.0' in text
    kube.delete(f"{RUNS}/{name}")
    wait_for(lambda: operator.run(name) is None, what="the run deleted (finalizer released)")
    wait_for(lambda: f'run="{name}"' not in operator.metrics(), what="the run's series dropped")


def test_an_invalid_spec_fails_with_the_field_named(operator: Operator, tmp_path: Path):
    doc = run_doc("bad", tmp_path / "store", flywheel={"rounds": -1})
    del doc["spec"]["model"]["base"]
    operator.kube.create(RUNS, doc)
    status = operator.wait_phase("bad", "Failed")
    assert "spec.flywheel.rounds" in status["message"] and "spec.model.base" in status["message"]
    failed = condition(status, "Failed")
    assert failed["status"] == "True" and failed["reason"] == "ValidationFailed"
    assert not operator.children(JOBS, "bad") and operator.kube.get(f"{CONFIGMAPS}/bad-config") is None
    assert any(e["reason"] == "ValidationFailed" for e in operator.events("bad"))

    # Fixing the spec starts the run afresh.
    fixed = run_doc("bad", tmp_path / "store")
    operator.kube.patch(f"{RUNS}/bad", {"spec": fixed["spec"]})
    operator.wait_phase("bad", "Evaluating")
    wait_for(lambda: operator.kube.get(f"{JOBS}/bad-r0-eval"), what="the eval Job after the fix")
    operator.kube.delete(f"{RUNS}/bad")
    wait_for(lambda: operator.run("bad") is None, what="the run deleted")


def test_an_unreachable_store_warns_counts_and_keeps_the_status(operator: Operator, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    doc = run_doc("dark", Path("/unused"))
    doc["spec"]["storage"] = {"uri": "s3://nowhere/runs", "endpoint": "http://127.0.0.1:9"}  # discard port: refused
    operator.kube.create(RUNS, doc)
    wait_for(lambda: any(e["reason"] == "StoreUnavailable" for e in operator.events("dark")), timeout=30,
             what="a StoreUnavailable Warning")
    wait_for(lambda: 'selfemo_reconcile_errors_total{namespace="default",run="dark"}' in operator.metrics(),
             what="the reconcile error counted")
    line = next(ln for ln in operator.metrics().splitlines() if ln.startswith('selfemo_reconcile_errors_total{namespace="default",run="dark"}'))
    assert float(line.split()[-1]) >= 1
    assert not operator.status("dark")  # nothing decided without the store
    assert not operator.children(JOBS, "dark")
    assert len([e for e in operator.events("dark") if e["reason"] == "StoreUnavailable"]) == 1  # once per outage
    operator.kube.delete(f"{RUNS}/dark")
    wait_for(lambda: operator.run("dark") is None, what="the run deleted")
