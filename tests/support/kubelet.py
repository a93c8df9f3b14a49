"""The world around the operator, for tests and `bench/operator.py`.

The operator creates Jobs and Deployments in the API emulator
(:mod:`support.kube`) and reads the run's store; nothing would ever run
them. Here is what plays the rest of the cluster:

- :func:`run_doc` — a `SelfEmoRun` manifest (the quickstart, renamed, with
  its store moved), what a user would `kubectl apply`;
- :func:`commit` / :func:`finish_job` — one component committing an output
  to the store, and the Job controller marking a Job Complete or Failed;
- :class:`Kubelet` — a thread that watches the emulator for the children
  the operator creates (label `selfemo.dev/run`) and completes each one
  at once, as its component would: a generator Deployment commits its
  shard's `selected/` summary and its pod exits (the Deployment's status
  loses its ready replica); the trainer Job commits `checkpoint/` and is
  marked Complete; the evaluator Job commits `eval/metrics.json` and is
  marked Complete. Each completion is recorded with its wall time.
"""
from __future__ import annotations

import json
import logging
import queue
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import yaml

from selfemo.policy import open_run_store
from selfemo.runfile import check_manifest
from selfemo.store.layout import RunLayout

from .kube import TEST_USER_AGENT, KubeClient, KubeHTTPError

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
NS = "default"
LABEL_RUN = "selfemo.dev/run"
LABEL_ROUND = "selfemo.dev/round"
LABEL_SHARD = "selfemo.dev/shard"
LABEL_COMPONENT = "app.kubernetes.io/component"


def runs_path(ns: str = NS) -> str:
    return f"/apis/selfemo.dev/v1alpha1/namespaces/{ns}/selfemoruns"


def jobs_path(ns: str = NS) -> str:
    return f"/apis/batch/v1/namespaces/{ns}/jobs"


def deployments_path(ns: str = NS) -> str:
    return f"/apis/apps/v1/namespaces/{ns}/deployments"


def run_doc(name: str, store: Path, ns: str = NS, **spec) -> dict:
    """examples/quickstart.yaml renamed, with its store in ``store`` and
    spec sections replaced (one level deep)."""
    doc = yaml.safe_load((REPO / "examples" / "quickstart.yaml").read_text())
    doc["metadata"] = {"name": name, "namespace": ns}
    doc["spec"]["storage"] = {"uri": f"file://{store}"}
    for group in ("train", "eval"):
        for ref in doc["spec"]["datasets"][group]:
            ref["uri"] = f"/data/erc/{ref['name']}"
    for key, value in spec.items():
        base = doc["spec"].get(key)
        doc["spec"][key] = {**base, **value} if isinstance(value, dict) and isinstance(base, dict) else value
    return doc


def parse_run(doc: dict):
    """The `SelfEmoRun` of a manifest or of an API object (status ignored)."""
    run, problems = check_manifest({k: doc.get(k) for k in ("apiVersion", "kind", "metadata", "spec")})
    assert run is not None, problems
    return run


def commit(doc_or_store: Any, prefix: str, files: dict[str, object]) -> None:
    """Commit ``prefix`` in the run's store the way a component does (files,
    then `_SUCCESS`). ``doc_or_store``: the run manifest or its open store."""
    store = open_run_store(parse_run(doc_or_store)) if isinstance(doc_or_store, dict) else doc_or_store
    with store.commit(prefix) as out:
        for name, content in files.items():
            out.put_bytes(name, json.dumps(content).encode())


def metrics_json(score: float, datasets: tuple[str, ...] = ("meld",)) -> dict:
    """An evaluator's metrics.json with the same score everywhere."""
    return {"datasets": {d: {"weighted_f1": score, "accuracy": score} for d in datasets},
            "mean": {"weighted_f1": score, "accuracy": score}}


def summary_json(groups: int = 2, candidates: int = 8, kept: int = 3, mean_reward: float = 0.5) -> dict:
    """A generator shard's selected/summary.json."""
    return {"groups": groups, "candidates": candidates, "kept": kept, "mean_reward": mean_reward}


def finish_job(kube: KubeClient, job: str, ok: bool, message: str = "", ns: str = NS) -> None:
    """What the Job controller writes when the pod ends."""
    cond = {"type": "Complete", "status": "True"} if ok else \
        {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": message}
    kube.patch(f"{jobs_path(ns)}/{job}/status", {"status": {"conditions": [cond], "succeeded" if ok else "failed": 1}})


@dataclass(frozen=True)
class Completion:
    """One child the kubelet completed, and when (time.time(), after its last write)."""

    run: str
    child: str
    kind: str  # generator | trainer | evaluator
    round: int
    shard: int | None
    time: float


class Kubelet:
    """Completes every child of every run in ``ns`` as soon as it appears.

    Two watch threads (Jobs, Deployments) queue new children; one worker
    completes them in order. ``score(run, round)`` is the evaluator's W-F1
    (rising by default, so no run stops early). ``completions`` lists what
    was done; ``errors`` what could not be (a test should assert it empty).
    """

    def __init__(self, kube: KubeClient, ns: str = NS, *,
                 score: Callable[[str, int], float] = lambda run, round_: 40.0 + round_):
        self.kube, self.ns, self.score = kube, ns, score
        self.completions: list[Completion] = []
        self.errors: list[str] = []
        self._queue: queue.Queue = queue.Queue()
        self._seen: set[str] = set()  # uids queued
        self._runs: dict[str, tuple[str, Any, Any]] = {}  # run name -> (uid, SelfEmoRun, store)
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._watch, args=(jobs_path(ns),), name="kubelet-jobs", daemon=True),
            threading.Thread(target=self._watch, args=(deployments_path(ns),), name="kubelet-deployments", daemon=True),
            threading.Thread(target=self._work, name="kubelet-worker", daemon=True),
        ]

    def start(self) -> "Kubelet":
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._queue.put(None)
        self._threads[-1].join(10)

    # ------------------------------------------------------------------ watching

    def _offer(self, obj: dict) -> None:
        meta = obj.get("metadata") or {}
        labels = meta.get("labels") or {}
        if LABEL_RUN not in labels or meta.get("uid") in self._seen or meta.get("deletionTimestamp"):
            return
        conditions = (obj.get("status") or {}).get("conditions") or []
        if obj.get("kind") == "Job" and any(c.get("type") in ("Complete", "Failed") for c in conditions):
            return
        self._seen.add(meta.get("uid"))
        self._queue.put(obj)

    def _watch(self, path: str) -> None:
        """List, then watch from the list's resourceVersion; again when the stream ends."""
        while not self._stop.is_set():
            try:
                listing = self.kube.request("GET", path)
                for obj in listing.get("items", []):
                    obj.setdefault("kind", listing.get("kind", "").removesuffix("List"))
                    self._offer(obj)
                version = (listing.get("metadata") or {}).get("resourceVersion", "")
                req = urllib.request.Request(f"{self.kube.url}{path}?watch=true&resourceVersion={version}",
                                             headers={"Accept": "application/json", "User-Agent": TEST_USER_AGENT})
                with urllib.request.urlopen(req, timeout=3600) as stream:
                    for line in stream:
                        if self._stop.is_set():
                            return
                        if line.strip():
                            event = json.loads(line)
                            if event.get("type") in ("ADDED", "MODIFIED"):
                                self._offer(event.get("object") or {})
            except Exception as exc:  # the stream broke: list and watch again
                if not self._stop.is_set():
                    log.debug("kubelet watch %s: %s", path, exc)
                    time.sleep(0.2)

    # ------------------------------------------------------------------ completing

    def _run(self, name: str, uid: str):
        cached = self._runs.get(name)
        if cached is None or cached[0] != uid:
            doc = self.kube.get(f"{runs_path(self.ns)}/{name}")
            if doc is None:
                return None
            run = parse_run(doc)
            cached = self._runs[name] = (uid, run, open_run_store(run))
        return cached[1], cached[2]

    def _work(self) -> None:
        while True:
            obj = self._queue.get()
            if obj is None or self._stop.is_set():
                return
            try:
                self.complete(obj)
            except Exception as exc:
                self.errors.append(f"{(obj.get('metadata') or {}).get('name')}: {exc!r}")
                log.warning("kubelet: %s", self.errors[-1])

    def _finish(self, job: str) -> None:
        """Mark the Job Complete. The operator may already have deleted it:
        the last evaluation's commit ends the run, and a run that ends deletes
        its children that are still running."""
        try:
            finish_job(self.kube, job, ok=True, ns=self.ns)
        except KubeHTTPError as exc:
            if exc.status != 404:
                raise

    def complete(self, obj: dict) -> Completion | None:
        """Do what the child's component would, then record the completion."""
        meta = obj["metadata"]
        labels, name = meta.get("labels") or {}, meta["name"]
        owner = next((o for o in meta.get("ownerReferences") or [] if o.get("kind") == "SelfEmoRun"), {})
        found = self._run(labels[LABEL_RUN], owner.get("uid", ""))
        if found is None:
            return None  # the run is gone
        run, store = found
        kind, round_ = labels.get(LABEL_COMPONENT), int(labels[LABEL_ROUND])
        shard = int(labels[LABEL_SHARD]) if LABEL_SHARD in labels else None
        layout = RunLayout(run.spec.storage.uri, run.metadata.namespace, run.metadata.name)
        if kind == "generator":
            shards = run.spec.resources.generator.shards
            commit(store, f"{layout.selected(round_)}/shard-{shard:05d}-of-{shards:05d}", {"summary.json": summary_json()})
            # The generator exits after committing; its pod restarts, so the
            # Deployment's status loses the ready replica.
            # The operator may already have deleted the Deployment: it watches
            # the store and frees a generator as soon as its shard is committed.
            try:
                self.kube.patch(f"{deployments_path(self.ns)}/{name}/status",
                                {"status": {"replicas": 1, "readyReplicas": 0, "availableReplicas": 0, "unavailableReplicas": 1}})
            except KubeHTTPError as exc:
                if exc.status != 404:
                    raise
        elif kind == "trainer":
            commit(store, layout.checkpoint(round_), {"trainer_state.json": {"round": round_}})
            self._finish(name)
        elif kind == "evaluator":
            datasets = tuple(d.name for d in run.spec.datasets.eval)
            commit(store, layout.eval_prefix(round_), {"metrics.json": metrics_json(self.score(run.metadata.name, round_), datasets)})
            self._finish(name)
        else:
            return None
        done = Completion(run.metadata.name, name, kind, round_, shard, time.time())
        self.completions.append(done)
        return done
