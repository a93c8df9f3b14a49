"""A run's children from the watch indexes, corrected by what the operator did
(operator/child_view.py), and how a pass uses them (kube_executor.py)."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

from selfemo.operator.child_view import Children, slim, still_hidden, vanished, visible
from selfemo.operator.children import BuilderSettings
from selfemo.operator.collector import RunRegistry
from selfemo.operator.kube_executor import KubeExecutor

REPO = Path(__file__).resolve().parents[1]
RUN_LABELS = {"selfemo.dev/run": "r", "selfemo.dev/round": "1"}


def job(name: str, uid: str, *, failed: bool = False, component: str = "trainer") -> dict:
    conditions = [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "OOM"}] if failed else []
    return {"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": name, "namespace": "default", "uid": uid,
                         "labels": {**RUN_LABELS, "app.kubernetes.io/component": component}},
            "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "x" * 1000}]}}},
            "status": {"conditions": conditions, **({"failed": 1} if failed else {})}}


def test_slim_keeps_what_the_observer_reads_and_drops_the_pod_template():
    obj = job("r-r1-train", "u1", failed=True)
    obj["metadata"].update(resourceVersion="7", managedFields=[{"manager": "kubectl"}], creationTimestamp="2026-01-01T00:00:00Z")
    small = slim(obj)
    assert small == {"apiVersion": "batch/v1", "kind": "Job",
                     "metadata": {"name": "r-r1-train", "namespace": "default", "uid": "u1", "labels": obj["metadata"]["labels"],
                                  "creationTimestamp": "2026-01-01T00:00:00Z"},
                     "status": obj["status"]}
    obj["status"]["conditions"].clear()  # the index must not change with the watch's dict
    assert small["status"]["conditions"]


def test_hidden_uids_are_invisible_until_the_index_drops_them():
    old, new = job("r-r1-train", "old", failed=True), job("r-r1-train", "new")
    indexed = Children(jobs=(old, new))
    assert visible(indexed, {"old"}).jobs == (new,)
    assert still_hidden({"old", "long-gone"}, indexed) == {"old"}
    assert still_hidden({"old"}, Children(jobs=(new,))) == set()


def test_vanished_is_what_the_index_holds_and_a_later_list_does_not():
    a, b, c = job("a", "ua"), job("b", "ub"), job("c", "uc")
    assert vanished(Children(jobs=(a, b)), Children(jobs=(b, c))) == {"ua"}
    assert vanished(Children(), Children(jobs=(a,))) == set()


# --------------------------------------------------------------------------- the executor's use


class CountingApi:
    """Answers lists from ``objects`` and records every call."""

    def __init__(self, jobs=()):
        self.jobs, self.calls = list(jobs), []

    def list(self, api_version, kind, namespace, selector):
        self.calls.append(("list", kind))
        return list(self.jobs) if kind == "Job" else []

    def get(self, *a):
        self.calls.append(("get",) + a)
        return None

    def create(self, obj):
        self.calls.append(("create", obj["kind"], obj["metadata"]["name"]))
        return True

    def delete(self, api_version, kind, namespace, name):
        self.calls.append(("delete", kind, name))
        return True

    def patch(self, api_version, kind, namespace, name, body, subresource=""):
        self.calls.append(("patch", kind, name))


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def body_in(tmp_path: Path, phase: str) -> dict:
    """A run in round 1's ``phase`` (Generating or Training) whose inputs are committed."""
    from support.kubelet import commit, metrics_json, run_doc, summary_json

    doc = run_doc("r", tmp_path / "store", maxRetries=3, resources={"generator": {"shards": 1, "gpus": 0}})
    commit(doc, "round-000/eval", {"metrics.json": metrics_json(40.0)})
    if phase == "Training":
        commit(doc, "round-001/selected/shard-00000-of-00001", {"summary.json": summary_json()})
    return {**doc, "metadata": {**doc["metadata"], "uid": "run-uid", "generation": 1},
            "status": {"phase": phase, "round": 1, "bestRound": 0, "bestWeightedF1": 40.0,
                       "phaseStartedAt": "2026-01-01T00:00:00Z",
                       "rounds": [{"round": 0, "eval": {"mean": 40.0}}, {"round": 1, "phase": phase}]}}


def executor(api, clock, wall=None) -> tuple[KubeExecutor, list]:
    events: list = []
    ex = KubeExecutor(api, RunRegistry(), BuilderSettings(), lambda body, event: events.append(event),
                      clock=wall, monotonic=clock, retry_seconds=10.0, resync_seconds=300.0)
    return ex, events


class Wall:
    """Wall time plus an offset a test moves forward (past a retry back-off)."""

    def __init__(self):
        self.offset = timedelta()

    def __call__(self):
        return datetime.now(timezone.utc) + self.offset


def test_a_deleted_failure_still_indexed_is_neither_deleted_again_nor_taken_for_its_retry(tmp_path: Path):
    body, api, clock, wall = body_in(tmp_path, "Training"), CountingApi(), Clock(), Wall()
    ex, events = executor(api, clock, wall)
    failed = job("r-r1-train", "attempt-1", failed=True)
    ex.step(body, Children(jobs=(failed,)))
    # No Job/Deployment list: the index is the source (its pods are listed: they say why it failed).
    assert [c for c in api.calls if c[0] == "list"] == [("list", "Pod")]
    assert [c for c in api.calls if c[0] == "delete"] == [("delete", "Job", "r-r1-train")]
    assert [e.reason for e in events].count("ChildFailed") == 1

    # The DELETED event has not reached the index yet: the old attempt is still there.
    ex.step(body, Children(jobs=(failed,)))
    assert [c for c in api.calls if c[0] == "delete"] == [("delete", "Job", "r-r1-train")]  # not deleted again
    wall.offset += timedelta(seconds=60)  # past the back-off: the retry is created, not waited for
    ex.step(body, Children(jobs=(failed,)))
    assert ("create", "Job", "r-r1-train") in api.calls
    assert [e.reason for e in events].count("ChildFailed") == 1
    assert ex.memory("default", "r").status["retries"] == {"r-r1-train": 1}
    # Once the index has dropped it, the uid is forgotten.
    ex.step(body, Children(jobs=(job("r-r1-train", "attempt-2"),)))
    assert ex.memory("default", "r").hidden == set()


def test_a_resync_lists_and_hides_what_the_index_kept_by_mistake(tmp_path: Path):
    body, clock = body_in(tmp_path, "Training"), Clock()
    ghost = job("r-r1-train", "ghost")  # Running in the index; deleted while the watch was broken
    api = CountingApi(jobs=[])
    ex, _ = executor(api, clock)
    ex.step(body, Children(jobs=(ghost,)))
    assert not [c for c in api.calls if c[0] == "list" or c[:2] == ("create", "Job")]  # trusts the index: a Job runs
    clock.now += 301
    ex.step(body, Children(jobs=(ghost,)))
    assert ("list", "Job") in api.calls and ("list", "Deployment") in api.calls
    assert ("create", "Job", "r-r1-train") in api.calls  # the list is the truth: it is missing
    assert ex.memory("default", "r").hidden == {"ghost"}
    api.calls.clear()
    ex.step(body, Children(jobs=(ghost,)))  # the index still holds it: hidden, not adopted
    assert not [c for c in api.calls if c[0] == "list"]
    assert ("create", "Job", "r-r1-train") in api.calls


def test_without_an_index_every_pass_lists(tmp_path: Path):
    body, api, clock = body_in(tmp_path, "Training"), CountingApi(), Clock()
    ex, _ = executor(api, clock)
    ex.step(body)
    ex.step(body)
    assert [c for c in api.calls if c[0] == "list"] == [("list", "Job"), ("list", "Deployment")] * 2


def test_without_an_index_a_deleted_job_still_listed_is_hidden_too(tmp_path: Path):
    body, clock = body_in(tmp_path, "Training"), Clock()
    api = CountingApi(jobs=[job("r-r1-train", "attempt-1", failed=True)])  # terminating: still listed
    ex, events = executor(api, clock)
    ex.step(body)
    ex.step(body)
    assert [c for c in api.calls if c[0] == "delete"] == [("delete", "Job", "r-r1-train")]
    assert [e.reason for e in events].count("ChildFailed") == 1
    api.jobs = []
    ex.step(body)
    assert ex.memory("default", "r").hidden == set()


def test_the_config_map_is_built_again_only_when_the_spec_changes(tmp_path: Path, monkeypatch):
    import selfemo.operator.kube_executor as kube_executor

    built = []
    real = kube_executor.build_config_map
    monkeypatch.setattr(kube_executor, "build_config_map", lambda run: built.append(run) or real(run))
    body, api, clock = body_in(tmp_path, "Training"), CountingApi(), Clock()
    ex, _ = executor(api, clock)
    ex.step(body, Children())
    bumped = {**body, "metadata": {**body["metadata"], "resourceVersion": "99", "annotations": {"selfemo.dev/x": "y"}}}
    ex.step(bumped, Children())
    assert len(built) == 1  # status writes and kopf's annotations do not rebuild it
    changed = {**body, "spec": {**body["spec"], "maxRetries": 5}}
    ex.step(changed, Children())
    assert len(built) == 2


def test_pods_are_listed_for_generators_only_every_retry_interval(tmp_path: Path):
    body = body_in(tmp_path, "Generating")
    gen = {"apiVersion": "apps/v1", "kind": "Deployment",
           "metadata": {"name": "r-r1-gen-0", "namespace": "default", "uid": "g1",
                        "labels": {**RUN_LABELS, "app.kubernetes.io/component": "generator", "selfemo.dev/shard": "0"}},
           "status": {}}
    api, clock = CountingApi(), Clock()
    ex, _ = executor(api, clock)

    def pod_lists():
        return sum(1 for c in api.calls if c == ("list", "Pod"))

    ex.step(body, Children(deployments=(gen,)))
    ex.step(body, Children(deployments=(gen,)))
    assert pod_lists() == 0  # a crash loop takes minutes: not on every pass
    clock.now += 10
    ex.step(body, Children(deployments=(gen,)))
    ex.step(body, Children(deployments=(gen,)))
    assert pod_lists() == 1
    assert not [c for c in api.calls if c[0] == "delete"]  # the generator still runs
    deadline = {**gen, "status": {"conditions": [{"type": "Progressing", "status": "False",
                                                   "reason": "ProgressDeadlineExceeded"}]}}
    ex.step(body, Children(deployments=(deadline,)))
    assert pod_lists() == 2  # what its pod waits for goes in the failure: at once
