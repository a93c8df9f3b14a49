"""The operator survives being killed, notices children that cannot make
progress, and ends runs that cannot go on.

The kill test runs the real operator (`python -m selfemo.operator`) as a
subprocess against the Kubernetes API emulator, which lives in this process
and so outlives every kill, with the test kubelet completing children. The
operator is SIGKILLed at six points of a run, each triggered by a write the
emulator has just stored (before its answer reaches the client), never by a
sleep; a new operator is started each time. The run must still succeed with
no child created twice (the emulator's write log: successful POSTs per
name), no committed store output lost or rewritten, and a complete status.

The other tests: a trainer that commits `no-signal/` and exits between two
reads of one pass is not retried; a crash-looping generator (its pod's
restarts, then a progress deadline) is a counted child failure whose
message carries what the pod last said, up to `Failed` past `maxRetries`
(the real operator in a thread, `test_operator_kopf`'s fixture).
"""
from __future__ import annotations

import collections
import hashlib
import os
import signal
import subprocess
import sys
import threading
from datetime import timedelta
from pathlib import Path
from typing import Callable

import pytest

from selfemo.store.keys import STAGING_INFIX

from support.kube import KubeServer, Write, wait_for
from support.processes import stop_process
from support.kubelet import NS, Kubelet, commit, metrics_json, run_doc, runs_path, summary_json
from test_operator_kopf import DEPLOYMENTS, JOBS, RUNS, Operator, condition, operator  # noqa: F401 (a fixture)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

REPO = Path(__file__).resolve().parents[1]


class HoldingKubelet(Kubelet):
    """The instant kubelet, except that the children named in ``hold`` run
    until the test releases them (a long training Job, a slow shard)."""

    def __init__(self, kube, hold: tuple[str, ...]):
        super().__init__(kube)
        self.gates = {name: threading.Event() for name in hold}

    def complete(self, obj: dict):
        gate = self.gates.get(obj["metadata"]["name"])
        if gate is not None:
            gate.wait(120)
        return super().complete(obj)

    def release(self, name: str) -> None:
        self.gates[name].set()

    def stop(self) -> None:
        for gate in self.gates.values():
            gate.set()
        super().stop()


class OperatorProcess:
    """`python -m selfemo.operator` against the emulator, killed and restarted by the test."""

    def __init__(self, kubeconfig: Path, log_path: Path):
        self.kubeconfig, self.log_path = kubeconfig, log_path
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        with open(self.log_path, "ab") as log:
            log.write(f"\n=== start {self.starts}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "selfemo.operator", "--namespace", NS, "--kubeconfig", str(self.kubeconfig),
                 "--interval", "1", "--metrics-port", "0"],
                stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"}, cwd=REPO)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)

    def wait_killed(self, timeout: float) -> None:
        assert self.proc is not None
        self.proc.wait(timeout)
        assert self.proc.returncode == -signal.SIGKILL, f"the operator exited by itself: {self.proc.returncode}"

    def stop(self) -> None:
        stop_process(self.proc)

    def tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]


class KillSwitch:
    """SIGKILLs the operator when a handled write matches the armed predicate.

    Runs as an emulator `on_write` hook, i.e. after the write was stored and
    before the answer is sent: the operator dies between the API server's
    commit and learning about it, the worst moment for a create.
    """

    def __init__(self, server: KubeServer, operator: OperatorProcess):
        self.operator = operator
        self.armed: tuple[str, Callable[[Write], bool]] | None = None
        self.fired: list[tuple[str, Write]] = []
        self.event = threading.Event()
        server.emulator.on_write.append(self._hook)

    def arm(self, what: str, predicate: Callable[[Write], bool]) -> None:
        self.event.clear()
        self.armed = (what, predicate)

    def _hook(self, write: Write) -> None:
        armed = self.armed
        if armed is not None and armed[1](write):
            self.operator.kill()
            self.armed = None
            self.fired.append((armed[0], write))
            self.event.set()


class StoreWatcher:
    """Snapshots every committed prefix (each file's sha256, inode and mtime)
    the moment its `_SUCCESS` appears, so a later rewrite or loss shows."""

    def __init__(self, root: Path):
        self.root = root
        self.snapshots: dict[str, dict[str, tuple]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="store-watcher", daemon=True)

    def start(self) -> "StoreWatcher":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.scan()

    def _loop(self) -> None:
        while not self._stop.wait(0.05):
            self.scan()

    def scan(self) -> None:
        for marker in self.root.rglob("_SUCCESS"):
            prefix = str(marker.parent.relative_to(self.root))
            if STAGING_INFIX in marker.parent.name:
                continue  # a commit's staging directory, renamed onto its prefix in one step
            if prefix not in self.snapshots:
                self.snapshots[prefix] = self.files(prefix)

    def files(self, prefix: str) -> dict[str, tuple]:
        out = {}
        for path in sorted((self.root / prefix).rglob("*")):
            if path.is_file():
                st = path.stat()
                out[str(path.relative_to(self.root))] = (hashlib.sha256(path.read_bytes()).hexdigest(), st.st_ino,
                                                         st.st_mtime_ns)
        return out


def successful_creates(writes: list[Write]) -> collections.Counter:
    """(resource, name) → POSTs by the operator that the API server accepted."""
    return collections.Counter((w.resource, w.name) for w in writes
                               if not w.by_tests and w.method == "POST" and w.resource != "events"
                               and w.status is not None and 200 <= w.status < 300)


def test_sigkilled_at_six_points_the_operator_still_finishes_the_run_exactly_once(tmp_path: Path):
    from selfemo.crd import crd

    name, shards, rounds = "crashy", 3, 2
    server = KubeServer([crd()]).start()
    kube = server.client()
    operator = OperatorProcess(server.kubeconfig(tmp_path / "kubeconfig"), tmp_path / "operator.log")
    kubelet = HoldingKubelet(server.client(), hold=(f"{name}-r0-eval", f"{name}-r1-gen-2", f"{name}-r1-train"))
    store = tmp_path / "store"
    watcher = StoreWatcher(store / NS / name)
    switch = KillSwitch(server, operator)

    def by_operator(method: str, resource: str, child: str = "", subresource: str | None = None):
        return lambda w: (not w.by_tests and w.method == method and w.resource == resource
                          and (not child or w.name == child) and w.subresource == subresource
                          and w.status is not None and 200 <= w.status < 300)

    def by_kubelet(resource: str, child: str):
        return lambda w: w.by_tests and w.method == "PATCH" and w.resource == resource and w.name == child \
            and w.subresource == "status"

    status_patch = by_operator("PATCH", "selfemoruns", name, "status")

    def recorded(phase: str) -> Callable[[Write], bool]:
        return lambda w: status_patch(w) and w.phase == phase

    def both(*conditions: Callable[[Write], bool]) -> Callable[[Write], bool]:
        """True at the write after which each condition has held for some write
        (the kubelet and the operator race; whichever comes second fires)."""
        return lambda w: all(any(c(x) for x in server.emulator.writes) for c in conditions)

    # (what, trigger, child the kubelet may finish once the next operator runs)
    points = [
        ("the run's ConfigMap created; no Job, no status yet",
         by_operator("POST", "configmaps", f"{name}-config"), None),
        ("the baseline eval Job created; status not written",
         by_operator("POST", "jobs", f"{name}-r0-eval"), f"{name}-r0-eval"),
        ("mid-Generating: status says Generating, shard 0 committed, shard 2 still running",
         both(recorded("Generating"), by_kubelet("deployments", f"{name}-r1-gen-0")), f"{name}-r1-gen-2"),
        ("generators deleted and the training Job created; status still Generating",
         by_operator("POST", "jobs", f"{name}-r1-train"), None),
        ("mid-Training: status says Training, the Job runs",
         recorded("Training"), f"{name}-r1-train"),
        ("round 1 evaluation committed; status not moved on",
         by_kubelet("jobs", f"{name}-r1-eval"), None),
    ]
    try:
        kubelet.start()
        watcher.start()
        operator.start()
        kube.create(runs_path(), run_doc(name, store, maxRetries=0, flywheel={"rounds": rounds},
                                         resources={"generator": {"shards": shards, "gpus": 0}}))
        for what, trigger, release in points:
            switch.arm(what, trigger)
            assert switch.event.wait(60), f"never reached: {what}\n{operator.tail()}"
            operator.wait_killed(10)
            operator.start()
            if release:
                kubelet.release(release)
        status = wait_for(lambda: (st := (kube.get(f"{runs_path()}/{name}") or {}).get("status") or {})
                          .get("phase") in ("Succeeded", "Failed") and st, timeout=60,
                          what=f"the run to end\n{operator.tail()}")
    finally:
        operator.stop()
        kubelet.stop()
        watcher.stop()
        writes = list(server.emulator.writes)
        server.stop()

    assert [w for w, _ in switch.fired] == [p[0] for p in points] and operator.starts == 7
    assert not kubelet.errors

    # The run finished, with every round on record.
    assert status["phase"] == "Succeeded", (status, operator.tail())
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("True", "RoundsCompleted")
    assert status["round"] == rounds and not status.get("retries")
    assert (status["bestRound"], status["bestWeightedF1"]) == (rounds, 40.0 + rounds)
    assert [r["round"] for r in status["rounds"]] == list(range(rounds + 1))
    for r in status["rounds"]:
        assert r["eval"]["mean"] == 40.0 + r["round"] and r["finishedAt"], r
        if r["round"]:
            assert r["checkpoint"].endswith(f"/{NS}/{name}/round-{r['round']:03d}/checkpoint"), r
            assert (r["samplesGenerated"], r["samplesKept"]) == (8 * shards, 3 * shards), r
            assert {"Generating", "Training", "Evaluating"} <= set(r["durations"]), r

    # No child (nor the ConfigMap) was ever created twice, although creates were retried.
    created = successful_creates(writes)
    children = {f"{name}-r0-eval"} | {f"{name}-r{r}-{c}" for r in range(1, rounds + 1) for c in ("train", "eval")} \
        | {f"{name}-r{r}-gen-{i}" for r in range(1, rounds + 1) for i in range(shards)}
    assert {n for (res, n) in created if res in ("jobs", "deployments")} == children
    assert {k: n for k, n in created.items() if n > 1} == {}, "created twice"
    # The restarted operators met what their predecessors had created: the
    # ConfigMap through an idempotent create (409), the Jobs through the list
    # (a child that is observed is adopted, not created again).
    conflicts = {(w.resource, w.name) for w in writes if not w.by_tests and w.method == "POST" and w.status == 409}
    assert ("configmaps", f"{name}-config") in conflicts

    # Every committed output is still there, byte for byte, never rewritten.
    expected = {"round-000/eval"} | {f"round-{r:03d}/{p}" for r in range(1, rounds + 1) for p in ("checkpoint", "eval")} \
        | {f"round-{r:03d}/selected/shard-{i:05d}-of-{shards:05d}" for r in range(1, rounds + 1) for i in range(shards)}
    assert set(watcher.snapshots) == expected
    for prefix, files in watcher.snapshots.items():
        assert watcher.files(prefix) == files, f"{prefix} changed after it was committed"


class ListingApi:
    """The few KubeApi calls a pass makes, on dicts; ``on_list_jobs`` runs
    when the operator lists the run's Jobs (the world changing just then)."""

    def __init__(self, jobs: list[dict], on_list_jobs: Callable[[], None]):
        self.jobs, self.on_list_jobs = jobs, on_list_jobs
        self.patches: list[dict] = []

    def list(self, api_version, kind, namespace, selector):
        if kind == "Job":
            self.on_list_jobs()
            return self.jobs
        return []

    def get(self, *a):
        return None

    def create(self, obj):
        return True

    def delete(self, *a):
        return True

    def patch(self, api_version, kind, namespace, name, body, subresource=None):
        self.patches.append(body)


def test_a_trainer_saying_no_signal_while_the_operator_looks_is_not_retried(tmp_path: Path):
    """The trainer commits `no-signal/` and exits 3 between two reads of one
    pass. The pass lists children before it reads the store, so it sees the
    marker of every child it sees finished: the run ends NoLearningSignal,
    with no ChildFailed and no retry counted (the other order counted one)."""
    from selfemo.operator.children import BuilderSettings
    from selfemo.operator.collector import RunRegistry
    from selfemo.operator.kube_executor import KubeExecutor
    from selfemo.operator.observed import NO_SIGNAL_FILE, no_signal_prefix

    doc = run_doc("quiet", tmp_path / "store", maxRetries=3, resources={"generator": {"shards": 1, "gpus": 0}})
    commit(doc, "round-000/eval", {"metrics.json": metrics_json(40.0)})
    commit(doc, "round-001/selected/shard-00000-of-00001", {"summary.json": summary_json(kept=0)})
    labels = {"app.kubernetes.io/component": "trainer", "selfemo.dev/run": "quiet", "selfemo.dev/round": "1"}
    job = {"metadata": {"name": "quiet-r1-train", "namespace": NS, "labels": labels},
           "status": {"conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]}}
    api = ListingApi([job], lambda: commit(doc, no_signal_prefix(1), {NO_SIGNAL_FILE: {"round": 1, "message": "no learning signal"}}))
    events = []
    executor = KubeExecutor(api, RunRegistry(), BuilderSettings(), lambda body, event: events.append(event))
    body = {**doc, "metadata": {**doc["metadata"], "uid": "u1", "generation": 1},
            "status": {"phase": "Training", "round": 1, "bestRound": 0, "bestWeightedF1": 40.0,
                       "phaseStartedAt": "2025-01-01T00:00:00Z",
                       "rounds": [{"round": 0, "eval": {"mean": 40.0}}, {"round": 1, "phase": "Training"}]}}
    assert executor.step(body) is None
    [patch] = api.patches
    assert patch["status"]["phase"] == "Succeeded" and "retries" not in patch["status"]
    assert [(e.type, e.reason) for e in events] == [("Warning", "NoLearningSignal")]


# --------------------------------------------------------------------------- crash-looping generators, kopf path

PODS = f"/api/v1/namespaces/{NS}/pods"


def crash_looping_pod(deployment: dict, suffix: str, container_status: dict) -> dict:
    """The pod the ReplicaSet controller would make for ``deployment``, with
    the status a kubelet reports for it."""
    template = deployment["spec"]["template"]
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"{deployment['metadata']['name']}-{suffix}", "namespace": NS,
                         "labels": template["metadata"]["labels"]},
            "spec": template["spec"],
            "status": {"phase": "Running", "containerStatuses": [{"name": "generator", **container_status}]}}


def test_a_crash_looping_generator_is_retried_then_fails_the_run_with_its_last_error(operator: Operator, tmp_path: Path):
    kube, name = operator.kube, "loopy"
    doc = run_doc(name, tmp_path / "store", maxRetries=1, resources={"generator": {"shards": 1, "gpus": 0}})
    kube.create(RUNS, doc)
    wait_for(lambda: kube.get(f"{JOBS}/{name}-r0-eval"), what="the baseline eval Job")
    commit(doc, "round-000/eval", {"metrics.json": metrics_json(40.0)})
    operator.kubelet_finish(f"{name}-r0-eval", ok=True)
    first = wait_for(lambda: kube.get(f"{DEPLOYMENTS}/{name}-r1-gen-0"), what="the generator Deployment")
    assert first["spec"]["progressDeadlineSeconds"] == 1800
    assert first["spec"]["template"]["spec"]["containers"][0]["terminationMessagePolicy"] == "FallbackToLogsOnError"

    # Its pod crash-loops after readiness (the progress deadline no longer looks): restarts count.
    oom = {"reason": "OOMKilled", "exitCode": 137, "message": "chunk 4/9\ntorch.OutOfMemoryError: CUDA out of memory\n"}
    kube.create(PODS, crash_looping_pod(first, "7f9c-a1", {
        "restartCount": 5, "state": {"waiting": {"reason": "CrashLoopBackOff"}}, "lastState": {"terminated": oom}}))
    wait_for(lambda: operator.status(name).get("retries", {}).get(f"{name}-r1-gen-0") == 1, what="the crash loop counted")
    wait_for(lambda: kube.get(f"{DEPLOYMENTS}/{name}-r1-gen-0") is None, what="the crash-looping Deployment deleted")
    # kopf posts Events from a queue, after the status patch: wait for it.
    [warning] = wait_for(lambda: [e for e in operator.events(name) if e["reason"] == "ChildFailed"], what="the Warning")
    assert warning["type"] == "Warning" and "restarted 5 times" in warning["message"]
    assert "OOMKilled, exit code 137: chunk 4/9 | torch.OutOfMemoryError: CUDA out of memory" in warning["message"]
    assert "retry 1/1" in warning["message"]
    kube.delete(f"{PODS}/{name}-r1-gen-0-7f9c-a1")  # the garbage collector's part

    # After the back-off the shard gets a new Deployment; it never becomes ready.
    operator.clock.offset += timedelta(seconds=60)
    second = wait_for(lambda: (d := kube.get(f"{DEPLOYMENTS}/{name}-r1-gen-0")) and d["metadata"]["uid"] != first["metadata"]["uid"] and d,
                      what="the generator recreated")
    kube.create(PODS, crash_looping_pod(second, "8e1d-b2", {
        "restartCount": 0, "state": {"waiting": {"reason": "ImagePullBackOff", "message": 'Back-off pulling image "gen:9"'}}}))
    kube.patch(f"{DEPLOYMENTS}/{name}-r1-gen-0/status", {"status": {"conditions": [
        {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
         "message": f'ReplicaSet "{name}-r1-gen-0-8e1d" has timed out progressing.'}]}})

    # Past maxRetries: Failed, naming the child and what its pod last said.
    status = operator.wait_phase(name, "Failed")
    failed = condition(status, "Failed")
    assert (failed["status"], failed["reason"]) == ("True", "ChildFailed")
    for text in (f"generator {name}-r1-gen-0 failed 2 time(s)", "ProgressDeadlineExceeded",
                 f'pod {name}-r1-gen-0-8e1d-b2: ImagePullBackOff: Back-off pulling image "gen:9"'):
        assert text in status["message"] and text in failed["message"], (text, status["message"])
    assert f'selfemo_child_failures_total{{kind="generator",namespace="{NS}",run="{name}"}} 2.0' in operator.metrics()
    kube.delete(f"{RUNS}/{name}")
    wait_for(lambda: operator.run(name) is None, what="the run deleted")
