"""One reconcile pass of a `SelfEmoRun` on Kubernetes: observe → reconcile → apply.

The kopf handlers (`kopf_app.py`) only decide *when* a pass runs; this module
is *what* a pass does, the twin of the local executor (`local.py`) with
Jobs and Deployments instead of subprocesses:

1. parse the body into a `SelfEmoRun` (an invalid spec becomes status
   `Failed`/`ValidationFailed` naming the field, never an exception loop);
2. ensure the `{run}-config` ConfigMap the children mount;
3. observe: the run's Jobs and Deployments — from the watch-fed indexes the
   kopf app passes in (`child_view.py`), listed by label
   `selfemo.dev/run=<run>` only without them or for a periodic resync — its
   Pods when they can explain something, then the store's committed markers
   (the truth of a round; read second, see `_step`);
4. `reconcile(...)` — the pure state machine shared with `selfemo run`;
5. apply: delete (background propagation), then create (409 is success);
6. patch the status once, only if it changed; post one Event per decision
   event; update the metrics registry.

Status continuity: the status this operator last wrote is kept in memory
per run and used as the input of the next pass. The body a timer or
handler receives may predate our own last patch (the watch stream lags), and
reconciling from it would, e.g., count one child failure twice. After a
restart the memory is empty and the body's status, read fresh from the API,
is the starting point: everything `reconcile` needs is in it.
"""
from __future__ import annotations

import functools
import hashlib
import json
import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable

from selfemo.runfile import check_manifest
from selfemo.spec import API_GROUP, API_VERSION, KIND, SelfEmoRun
from selfemo.status import Condition, Phase, RunStatus

from .children import BuilderSettings, build, build_config_map
from .collector import RunRegistry
from .kube_api import KubeApi, KubeError, merge_patch
from .child_view import Children, still_hidden, uid, vanished, visible
from .kube_observer import observe_children, past_progress_deadline
from .labels import LABEL_RUN
from .observed import ChildState, Observed
from .round import FAILED, PROGRESSING, READY, SUSPENDED, Decision, Event, reconcile, rfc3339
from .store_observer import StoreState, read_store_state

log = logging.getLogger(__name__)

RUN_API_VERSION = f"{API_GROUP}/{API_VERSION}"
REASON_INVALID = "ValidationFailed"
REASON_STORE = "StoreUnavailable"
REASON_APPLY = "ApplyFailed"

EventSink = Callable[[dict, Event], None]
"""Posts one Kubernetes Event about the run body (kopf.event in the operator)."""


@dataclass
class _RunMemory:
    """What this operator remembers about one run between passes."""

    status: dict | None = None  # the status document last written (camelCase, no nulls)
    config_source: str = ""  # digest of what the ConfigMap is built from, when last ensured
    config_digest: str = ""  # of the ConfigMap data last ensured
    store_key: tuple = ()
    store: Any = None
    store_down: bool = False  # a Warning was posted for the current outage
    store_state: StoreState | None = None  # the last read (its report JSONs are not read again)
    hidden: set[str] = field(default_factory=set)  # child uids deleted but maybe still indexed
    listed_at: float | None = None  # monotonic time of the last resync list (None: never; the index is trusted)
    pods_due: float | None = None  # monotonic time the next crash-loop look at pods is due (None: no generator)
    settled: bool = False  # terminal and nothing left to delete: passes are no-ops
    forgotten: bool = False  # the run was deleted: a late pass must do nothing
    lock: threading.Lock = field(default_factory=threading.Lock)


def status_doc(status: RunStatus) -> dict:
    return status.model_dump(mode="json", by_alias=True, exclude_none=True)


def invalid_status(current: RunStatus, message: str, generation: int, now: datetime) -> RunStatus:
    """`Failed` with reason `ValidationFailed`, the spec's problems as message.
    Progress already recorded (rounds, best round) is kept for the user."""
    st = current.model_copy(deep=True)
    if st.phase != Phase.failed or st.message != message:
        st.phase_started_at = rfc3339(now)
    st.phase, st.message, st.observed_generation = Phase.failed, message, generation
    old = {c.type: c for c in st.conditions}
    wanted = [(READY, "False", message), (PROGRESSING, "False", message), (FAILED, "True", message), (SUSPENDED, "False", "")]
    st.conditions = []
    for type_, value, msg in wanted:
        before = old.get(type_)
        since = before.last_transition_time if before and before.status == value else rfc3339(now)
        st.conditions.append(Condition(type=type_, status=value, reason=REASON_INVALID, message=msg,
                                       last_transition_time=since, observed_generation=generation))
    return st


def _failed_validation(status: RunStatus) -> bool:
    return status.phase == Phase.failed and any(c.type == FAILED and c.reason == REASON_INVALID for c in status.conditions)


class KubeExecutor:
    """Runs reconcile passes for any number of runs (one at a time per run).

    ``clock`` is injectable so tests can jump over retry back-offs;
    ``open_store`` maps a run to its artefact store (``open_run_store`` with
    the store's short retries: a pass reports an outage and moves on, it
    never waits one out as the children do). ``retry_seconds`` is also how
    often a run with generators has its pods looked at (crash loops take
    minutes to count), ``resync_seconds`` how often children handed in from
    the watch indexes are checked against a real list.
    """

    def __init__(self, api: KubeApi, runs: RunRegistry, settings: BuilderSettings, post_event: EventSink, *,
                 clock: Callable[[], datetime] | None = None, open_store: Callable[[SelfEmoRun], Any] | None = None,
                 retry_seconds: float = 10.0, resync_seconds: float = 300.0,
                 monotonic: Callable[[], float] = time.monotonic):
        from selfemo.policy import open_run_store

        self.api = api
        self.runs = runs
        self.settings = settings
        self.post_event = post_event
        self.clock = clock or (lambda: datetime.now(timezone.utc))
        self.open_store = open_store or functools.partial(open_run_store, outage_seconds=0)
        self.retry_seconds = retry_seconds
        self.resync_seconds = resync_seconds
        self.monotonic = monotonic
        self._memory: dict[tuple[str, str], _RunMemory] = {}
        self._memory_lock = threading.Lock()
        self._gone: set[str] = set()  # uids of deleted runs (a few bytes each)
        self._no_pods: set[str] = set()  # namespaces where listing pods is forbidden (warned once)

    def memory(self, namespace: str, name: str) -> _RunMemory:
        with self._memory_lock:
            return self._memory.setdefault((namespace, name), _RunMemory())

    def forget(self, namespace: str, name: str, uid: str = "") -> None:
        """The run is gone: drop its memory and its metric series, after any
        pass in flight has ended (so it cannot bring the series back); a pass
        started later from an old body of the same object (``uid``) does nothing."""
        with self._memory_lock:
            if uid:
                self._gone.add(uid)
            mem = self._memory.get((namespace, name))
        if mem is not None:
            with mem.lock:
                with self._memory_lock:
                    if self._memory.get((namespace, name)) is mem:
                        del self._memory[(namespace, name)]
                mem.forgotten = True
        self.runs.remove(namespace, name)

    # ------------------------------------------------------------------ the pass

    def step(self, body: dict, indexed: Children | None = None) -> float | None:
        """One pass over ``body`` (the SelfEmoRun as the API returned it);
        returns seconds until a pass is needed even if nothing changes.

        ``indexed``: the run's children from the watch indexes, read before
        this call (None: list them through the API)."""
        meta = body.get("metadata") or {}
        namespace, name = meta.get("namespace") or "default", meta["name"]
        if meta.get("deletionTimestamp") or meta.get("uid") in self._gone:
            return None  # being deleted: children go with it (ownerReferences); start nothing new
        mem = self.memory(namespace, name)
        with mem.lock:
            if mem.forgotten:
                return None
            return self._step(body, namespace, name, mem, indexed)

    def _step(self, body: dict, namespace: str, name: str, mem: _RunMemory, indexed: Children | None) -> float | None:
        now = self.clock()
        current = RunStatus.model_validate(mem.status if mem.status is not None else body.get("status") or {})
        if mem.status is None:
            mem.status = status_doc(current) if body.get("status") else {}
        manifest = {k: body.get(k) for k in ("apiVersion", "kind", "metadata", "spec")}
        run, problems = check_manifest(manifest)
        if run is None:
            message = "invalid spec: " + "; ".join(str(p) for p in problems)
            status = invalid_status(current, message, int((body.get("metadata") or {}).get("generation") or 0), now)
            events = [] if status.message == current.message and status.phase == current.phase else [
                Event("Warning", REASON_INVALID, message)]
            self._record(body, namespace, name, mem, None, status, events)
            return None
        if _failed_validation(current):
            current = RunStatus()  # the spec was fixed: start the run afresh
            mem.settled = False
        if mem.settled and current.phase.is_terminal():
            # Nothing can change a finished run: no API calls on every tick.
            self.runs.update(namespace, name, run.spec, current)
            return None

        self.ensure_config(run, mem, _config_source(manifest))
        # Children before the store: a child commits its output before it
        # exits, so a child seen finished here has its commit visible in the
        # store read below (the other order can see "exited without its
        # output" and count a failure, e.g. retry a trainer that said no-signal).
        children = self.children(namespace, name, mem, indexed)
        pods = self.list_pods(namespace, f"{LABEL_RUN}={name}") if self._pods_matter(children, mem) else []
        try:
            store_state = read_store_state(self.store_for(run, mem), mem.store_state)
        except Exception as exc:  # the store is the truth: without it, decide nothing
            self.runs.reconcile_error(namespace, name)
            log.warning("%s/%s: store unreachable: %s", namespace, name, exc)
            if not mem.store_down:
                mem.store_down = True
                self.post_event(body, Event("Warning", REASON_STORE, f"cannot read {run.spec.storage.uri}: {exc}; retrying"))
            mem.store, mem.store_state = None, None  # reconnect next time (credentials or endpoint may have been fixed)
            return self.retry_seconds
        mem.store_down, mem.store_state = False, store_state
        observed = Observed(children=observe_children(name, children.jobs, children.deployments, pods),
                            committed=store_state.committed,
                            eval_metrics=store_state.eval_metrics, flywheel=store_state.flywheel)
        decision = reconcile(run, observed, current, now)
        failures = self.apply(run, observed.children, decision, mem,
                              {o["metadata"]["name"]: uid(o) for o in children.all() if o.get("metadata")})
        events = list(decision.events)
        for what in failures:
            self.runs.reconcile_error(namespace, name)
            events.append(Event("Warning", REASON_APPLY, what))
        self._record(body, namespace, name, mem, run, decision.status, events)
        mem.settled = decision.status.phase.is_terminal() and not decision.delete and not failures
        if failures:
            return self.retry_seconds
        return decision.requeue_after

    def _record(self, body: dict, namespace: str, name: str, mem: _RunMemory, run: SelfEmoRun | None,
                status: RunStatus, events: list[Event]) -> None:
        """Patch the status once if it changed, then post events and update metrics."""
        new = status_doc(status)
        patch = merge_patch(mem.status or {}, new)
        if patch is not None:
            self.api.patch(RUN_API_VERSION, KIND, namespace, name, {"status": patch}, subresource="status")
            mem.status = new
        for event in events:
            self.post_event(body, event)
        self.runs.update(namespace, name, run.spec if run is not None else None, status)

    # ------------------------------------------------------------------ observe helpers

    def children(self, namespace: str, name: str, mem: _RunMemory, indexed: Children | None) -> Children:
        """The run's Jobs and Deployments without what this operator deleted:
        from ``indexed``, or from a list through the API when there is no
        index or a resync is due (which also hides what the index kept by
        mistake)."""
        now = self.monotonic()
        if indexed is not None and mem.listed_at is None:
            mem.listed_at = now  # kopf filled the indexes before the first pass: trust them until a resync
        seen = indexed
        if indexed is None or now - mem.listed_at >= self.resync_seconds:
            selector = f"{LABEL_RUN}={name}"
            seen = Children(tuple(self.api.list("batch/v1", "Job", namespace, selector)),
                            tuple(self.api.list("apps/v1", "Deployment", namespace, selector)))
            mem.listed_at = now
            if indexed is not None:
                mem.hidden |= vanished(indexed, seen)
        # Forget a hidden uid once nothing shows it any more (the index, else the list).
        mem.hidden = still_hidden(mem.hidden, indexed if indexed is not None else seen)
        return visible(seen, mem.hidden)

    def _pods_matter(self, children: Children, mem: _RunMemory) -> bool:
        """Pods explain a failed Job or a generator past its progress deadline
        (every pass that sees one), and show a crash-looping generator
        (looked for every ``retry_seconds`` while generators run: five
        restarts take minutes, and a look per event-triggered pass would be a
        list call on most passes)."""
        if any(map(_job_failed, children.jobs)) or any(map(past_progress_deadline, children.deployments)):
            return True
        if not children.deployments:
            mem.pods_due = None
            return False
        now = self.monotonic()
        if mem.pods_due is None:
            mem.pods_due = now + self.retry_seconds
        if now < mem.pods_due:
            return False
        mem.pods_due = now + self.retry_seconds
        return True

    def list_pods(self, namespace: str, selector: str) -> list[dict]:
        """The run's pods: how crash-looping generators are seen, and what a
        failed Job's pod said. Without `pods` list permission (403) the
        operator still works, on the progress deadline alone (said once)."""
        try:
            return self.api.list("v1", "Pod", namespace, selector)
        except KubeError as exc:
            if exc.status != 403:
                raise
            if namespace not in self._no_pods:
                self._no_pods.add(namespace)
                log.warning("%s: cannot list pods (%s): crash-looping generators are only seen once their "
                            "progressDeadlineSeconds passes, and failures lack their pod's last exit", namespace, exc)
            return []

    def store_for(self, run: SelfEmoRun, mem: _RunMemory):
        key = (run.spec.storage.uri, run.spec.storage.endpoint)
        if mem.store is None or mem.store_key != key:
            mem.store, mem.store_key = self.open_store(run), key
        return mem.store

    def ensure_config(self, run: SelfEmoRun, mem: _RunMemory, source: str = "") -> None:
        """Create `{run}-config`, or bring its data up to date after a spec change.
        Skipped while the spec is unchanged since the last pass: ``source``
        (what the ConfigMap is built from) is compared before building it, as
        rendering its YAML was a third of a pass's CPU."""
        if source and source == mem.config_source:
            return
        cm = build_config_map(run)
        digest = hashlib.sha256(json.dumps(cm["data"], sort_keys=True).encode()).hexdigest()
        if digest == mem.config_digest:
            return
        if not self.api.create(cm):
            meta = cm["metadata"]
            existing = self.api.get("v1", "ConfigMap", meta["namespace"], meta["name"]) or {}
            if existing.get("data") != cm["data"]:
                self.api.patch("v1", "ConfigMap", meta["namespace"], meta["name"], {"data": cm["data"]})
        mem.config_digest, mem.config_source = digest, source

    # ------------------------------------------------------------------ apply

    def apply(self, run: SelfEmoRun, children: dict[str, ChildState], decision: Decision, mem: _RunMemory,
              uids: dict[str, str]) -> list[str]:
        """Delete, then create; returns what failed (the next pass retries it).
        A deleted child's uid is hidden from later passes (see `child_view`)."""
        namespace = run.metadata.namespace
        failures: list[str] = []
        for name in decision.delete:
            child = children.get(name)
            try:
                if child is not None and child.kind == "generator":
                    self.api.delete("apps/v1", "Deployment", namespace, name)
                else:
                    self.api.delete("batch/v1", "Job", namespace, name)
                if uids.get(name):
                    mem.hidden.add(uids[name])
                if child is not None and child.kind == "trainer" and run.spec.resources.trainer.nodes > 1:
                    # its headless Service (same name); already gone is fine
                    self.api.delete("v1", "Service", namespace, name)
            except Exception as exc:
                failures.append(f"cannot delete {name}: {exc}")
        for intent in decision.create:
            for obj in build(run, intent, self.settings):
                try:
                    self.api.create(obj)
                except Exception as exc:
                    failures.append(f"cannot create {obj['kind']} {obj['metadata']['name']}: {exc}")
                    break  # the Job needs its Service first; try both again next pass
        return failures


def _config_source(manifest: dict) -> str:
    """A digest of what `{run}-config` is built from (spec, name, namespace,
    labels, uid), ignoring what changes on every write (resourceVersion,
    kopf's annotations, status)."""
    meta = manifest.get("metadata") or {}
    source = {"spec": manifest.get("spec"), **{k: meta.get(k) for k in ("name", "namespace", "labels", "uid")}}
    return hashlib.sha256(json.dumps(source, sort_keys=True, default=str).encode()).hexdigest()


def _job_failed(job: dict) -> bool:
    """A Job with a failed pod or a Failed condition (its pods explain why)."""
    status = job.get("status") or {}
    return bool(status.get("failed")) or any(
        c.get("type") == "Failed" and c.get("status") == "True" for c in status.get("conditions") or [])
