"""The kopf operator: thin handlers that decide *when* a reconcile pass runs.

What a pass does lives in :mod:`selfemo.operator.kube_executor`; here are
only the triggers and the process around them:

- `on.create` / `on.resume` / `on.update` of a `SelfEmoRun`: a pass at once
  (a new run, an operator restart, a spec change such as `suspend`);
- a change of one of its Jobs or Deployments (watched, label
  `selfemo.dev/run`): a pass of the owning run 0.3 s later;
- a pass that asks for an earlier look (`requeue_after`, e.g. a retry
  back-off ending) gets one scheduled exactly then;
- a `timer` every ``interval`` seconds (10 by default), the safety net:
  the store changes without any event, and an event can be missed;
- `on.delete`: drop the run's memory and metric series. Children are not
  deleted here: their ownerReferences make the garbage collector do it.

Triggers only ask; passes run from a work queue (`pass_queue.py`) on
``PASS_WORKERS`` threads: one pass per run at a time, at most one waiting per
run, and the timer's background passes after everything a change asked
for. The same watches feed kopf indexes of each run's Jobs and Deployments
(`child_view.py`), which a pass reads instead of listing them; kopf starts
the run handlers only once those indexes hold the initial listing.

Handlers are registered on an explicit registry (not kopf's global one) so
several operators can live in one process (tests) and nothing happens at
import time. The Kubernetes client configuration is loaded once at the edge
and shared by kopf (via the login handler) and our own API calls, so both
always talk to the same server with the same credentials.
"""
from __future__ import annotations

import asyncio
import contextvars
import copy
import hashlib
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable, Mapping

import kopf
from prometheus_client import CollectorRegistry

from selfemo.spec import API_GROUP, API_VERSION, PLURAL
from selfemo.telemetry import MetricsServer

from .child_view import Children, slim
from .children import BuilderSettings
from .collector import RunCollector, RunRegistry
from .kube_api import KubeApi
from .kube_executor import KubeExecutor
from .labels import FINALIZER, LABEL_RUN, PROGRESS_PREFIX
from .pass_queue import PassQueue
from .round import Event

log = logging.getLogger(__name__)

RESOURCE = (API_GROUP, API_VERSION, PLURAL)
CHILD_KINDS = (("batch", "v1", "jobs"), ("apps", "v1", "deployments"))
# A child's change (a Job completing, a generator's pod exiting) triggers a
# pass this many seconds later; the delay coalesces the burst of watch events
# one completion causes into one pass.
CHILD_EVENT_DELAY = 0.3
# Threads running passes. A pass mostly waits for the API server and the
# store, so a few overlap well; more would only contend for the GIL.
PASS_WORKERS = 4


def index_id(plural: str) -> str:
    """The kopf index of a child kind (also the kwarg kopf passes it as)."""
    return f"selfemo_run_{plural}"


@dataclass(frozen=True)
class OperatorConfig:
    """Process-level settings, read at the edge (``__main__``) and never below it.

    ``namespaces`` empty with ``all_namespaces`` False is a usage error; the
    CLI enforces one of the two. ``peering`` None runs standalone (see
    docs/operator.md: one replica, no peering objects needed).
    """

    builder: BuilderSettings = field(default_factory=BuilderSettings)
    namespaces: tuple[str, ...] = ()
    all_namespaces: bool = False
    metrics_port: int = 8080
    metrics_host: str = "0.0.0.0"
    interval: float = 10.0
    peering: str | None = None
    priority: int = 0

    @classmethod
    def from_env(cls, env: Mapping[str, str], **overrides: Any) -> "OperatorConfig":
        """`SELFEMO_{GENERATOR,TRAINER,EVALUATOR}_IMAGE` and `SELFEMO_METRICS_PORT`
        (children) via :class:`BuilderSettings`; `SELFEMO_OPERATOR_METRICS_PORT`
        and `SELFEMO_OPERATOR_INTERVAL` for the operator itself."""
        values: dict[str, Any] = {"builder": BuilderSettings.from_env(env)}
        if env.get("SELFEMO_OPERATOR_METRICS_PORT"):
            values["metrics_port"] = int(env["SELFEMO_OPERATOR_METRICS_PORT"])
        if env.get("SELFEMO_OPERATOR_INTERVAL"):
            values["interval"] = float(env["SELFEMO_OPERATOR_INTERVAL"])
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


def parse_priority(text: str, pod_id: str) -> int:
    """`--priority`: an integer, or `auto` for one derived from the pod's name.

    kopf peering pauses every replica that sees a live peer of higher
    priority, and *all* of them when the highest is shared. Replicas of one
    Deployment share their arguments, so `auto` gives each pod its own stable
    priority in 1..1_000_000 (from a digest of its name): the highest acts, the
    others stand by and take over when its keep-alive expires.
    """
    if text != "auto":
        try:
            return int(text)
        except ValueError:
            raise ValueError(f"--priority must be an integer or 'auto', got {text!r}") from None
    if not pod_id:
        raise ValueError("--priority auto needs the pod's name in $POD_ID (or a hostname)")
    return 1 + int(hashlib.sha256(pod_id.encode()).hexdigest(), 16) % 1_000_000


def load_kube_configuration(kubeconfig: str | None = None):
    """In-cluster service account first, then ``kubeconfig`` (or $KUBECONFIG,
    ~/.kube/config). Returns a fresh ``kubernetes.client.Configuration``
    without touching the library's global default."""
    import kubernetes

    cfg = kubernetes.client.Configuration()
    try:
        if kubeconfig:
            raise kubernetes.config.ConfigException("a kubeconfig was given")
        kubernetes.config.load_incluster_config(client_configuration=cfg)
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
    return cfg


def connection_info(cfg) -> kopf.ConnectionInfo:
    """kopf's credentials from a kubernetes client configuration (what
    ``kopf.login_via_client`` does, but for our configuration object rather
    than the library's global one). Called again by kopf on a 401, and
    ``get_api_key_with_prefix`` refreshes a rotated service-account token."""
    header = cfg.get_api_key_with_prefix("BearerToken") or cfg.get_api_key_with_prefix("authorization")
    parts = header.split(" ", 1) if header else []
    scheme, token = (None, None) if not parts else (None, parts[0]) if len(parts) == 1 else (parts[0], parts[1])
    return kopf.ConnectionInfo(
        server=cfg.host, ca_path=cfg.ssl_ca_cert, insecure=not cfg.verify_ssl,
        username=cfg.username or None, password=cfg.password or None, scheme=scheme, token=token,
        certificate_path=cfg.cert_file, private_key_path=cfg.key_file,
    )


def _post_event(body: dict, event: Event) -> None:
    kopf.event(body, type=event.type, reason=event.reason, message=event.message)


class OperatorApp:
    """The operator process: handlers, the executor, the metrics endpoint.

    ``clock`` and ``open_store`` pass through to :class:`KubeExecutor` (tests).
    """

    def __init__(self, config: OperatorConfig, kube_config, *, clock: Callable[[], datetime] | None = None,
                 open_store: Callable | None = None):
        import kubernetes

        self.config = config
        self.kube_config = kube_config
        self.runs = RunRegistry()
        self.metrics_registry = CollectorRegistry()
        self.metrics_registry.register(RunCollector(self.runs))
        self.api = KubeApi(kubernetes.client.ApiClient(kube_config))
        self.executor = KubeExecutor(self.api, self.runs, config.builder, _post_event, clock=clock,
                                     open_store=open_store, retry_seconds=config.interval)
        self.metrics: MetricsServer | None = None
        self.queue = PassQueue()
        self._bodies: dict[tuple[str, str], dict] = {}
        self._requeues: dict[tuple[str, str], asyncio.TimerHandle] = {}
        self._pokes: dict[tuple[str, str], asyncio.TimerHandle] = {}
        self._indexes: dict[str, Mapping] = {}  # plural → kopf index: (namespace, run) → slim children
        self._wakeup: asyncio.Event | None = None
        self._workers: list[asyncio.Task] = []
        self._threads: ThreadPoolExecutor | None = None
        self._handler_context: contextvars.Context | None = None
        self.registry = self._build_registry()

    # ------------------------------------------------------------------ handlers

    def _build_registry(self) -> kopf.OperatorRegistry:
        registry = kopf.OperatorRegistry()

        @kopf.on.startup(registry=registry)
        async def configure(settings: kopf.OperatorSettings, **kwargs: Any) -> None:
            # Our own names on objects, never kopf's defaults: two operators
            # built on kopf must not read each other's progress.
            settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=PROGRESS_PREFIX)
            settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=PROGRESS_PREFIX)
            settings.persistence.finalizer = FINALIZER
            # kopf turns its own log lines at or above this level into Events;
            # per-pass "handler succeeded" INFO lines would bury the run's
            # transition Events (posted explicitly, at any level).
            settings.posting.level = logging.WARNING
            # API servers and load balancers drop idle watches silently: ask
            # the server to end each watch after 5 minutes, and give up on our
            # side shortly after if it does not, then re-list and re-watch.
            settings.watching.server_timeout = 300
            settings.watching.client_timeout = 330
            # A run deleted while its timer is mid-pass waits for the pass to
            # end (seconds: API and store calls have timeouts); kopf's default
            # re-check after 60 s would hold the deletion for a minute.
            settings.background.cancellation_polling = 2
            # kopf passes the indexes to every handler; keep them for passes
            # the queue starts outside any handler.
            self._indexes = {plural: kwargs[index_id(plural)] for _group, _version, plural in CHILD_KINDS}
            self._start_workers()
            if self.metrics is not None:
                self.metrics.healthy.set()

        @kopf.on.cleanup(registry=registry)
        async def stopping(**_: Any) -> None:
            if self.metrics is not None:
                self.metrics.healthy.clear()
            await self._stop_workers()

        @kopf.on.login(registry=registry)
        def login(**_: Any) -> kopf.ConnectionInfo:
            return connection_info(self.kube_config)

        @kopf.on.resume(*RESOURCE, id="reconcile", registry=registry)
        @kopf.on.create(*RESOURCE, id="reconcile", registry=registry)
        @kopf.on.update(*RESOURCE, id="reconcile", registry=registry)
        async def changed(body: kopf.Body, **_: Any) -> None:
            self.request(body, urgent=True)

        @kopf.timer(*RESOURCE, id="poll", interval=self.config.interval, registry=registry)
        async def poll(body: kopf.Body, **_: Any) -> None:
            self.request(body, urgent=False)

        # Children change without any event on the run itself; without these
        # watches a completion would wait for the next `poll` tick (p50 ≈ the
        # interval: 10 s measured by bench/operator.py). The same watches fill
        # the indexes a pass reads its children from.
        for group, version, plural in CHILD_KINDS:
            @kopf.index(group, version, plural, id=index_id(plural), labels={LABEL_RUN: kopf.PRESENT},
                        registry=registry)
            def index_child(namespace: str, labels: Mapping[str, str], body: kopf.Body, **_: Any) -> dict:
                return {(namespace or "default", labels[LABEL_RUN]): slim(body)}

            @kopf.on.event(group, version, plural, id=f"child-{plural}", labels={LABEL_RUN: kopf.PRESENT},
                           registry=registry)
            async def child_changed(namespace: str, labels: Mapping[str, str], **_: Any) -> None:
                self._poke((namespace or "default", labels[LABEL_RUN]))

        @kopf.on.delete(*RESOURCE, id="forget", registry=registry)
        async def deleted(namespace: str, name: str, uid: str, **_: Any) -> None:
            await self.forget(namespace, name, uid)

        return registry

    # ------------------------------------------------------------------ passes

    def request(self, body: Mapping, *, urgent: bool) -> None:
        """Ask for a pass over the run ``body`` (kept as the run's latest body).
        Called from kopf's handlers only: their context carries what
        `kopf.event` needs (kopf's settings and event queue), and passes run
        in a copy of it."""
        if self._handler_context is None:
            self._handler_context = contextvars.copy_context()
        snapshot = copy.deepcopy(dict(body))  # kopf's body is a live view
        meta = snapshot.get("metadata") or {}
        key = (meta.get("namespace") or "default", meta["name"])
        self._bodies[key] = snapshot
        self._enqueue(key, urgent)

    def _enqueue(self, key: tuple[str, str], urgent: bool) -> None:
        if key in self._bodies:
            self.queue.request(key, urgent)
            if self._wakeup is not None:
                self._wakeup.set()

    def _start_workers(self) -> None:
        self._threads = ThreadPoolExecutor(PASS_WORKERS, thread_name_prefix="selfemo-pass")
        self._wakeup = asyncio.Event()
        self._workers = [asyncio.create_task(self._work(), name=f"selfemo-pass-{i}") for i in range(PASS_WORKERS)]

    async def _stop_workers(self) -> None:
        for task in self._workers:
            task.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers = []
        if self._threads is not None:
            self._threads.shutdown(wait=False, cancel_futures=True)

    async def _work(self) -> None:
        """A worker: take the next run from the queue, pass it, repeat."""
        while True:
            key = self.queue.take()
            if key is None:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            try:
                await self._pass(key)
            finally:
                self.queue.done(key)  # queued again if asked for during the pass
                if len(self.queue):
                    self._wakeup.set()

    def indexed(self, key: tuple[str, str]) -> Children | None:
        """The run's children in the indexes now (None before kopf started).
        Read on the event loop, which is where kopf updates the indexes."""
        if not self._indexes:
            return None

        def of(plural: str) -> tuple[dict, ...]:
            store = self._indexes[plural].get(key)
            return tuple(store) if store is not None else ()

        return Children(of("jobs"), of("deployments"))

    async def _pass(self, key: tuple[str, str]) -> None:
        """One pass in a worker thread (the kubernetes and store clients block).
        A failed pass is counted and retried by the run's next timer tick."""
        body = self._bodies.get(key)
        if body is None:
            return
        try:
            context = self._handler_context.copy()  # one Context cannot be entered by two threads
            requeue = await asyncio.get_running_loop().run_in_executor(
                self._threads, context.run, self.executor.step, body, self.indexed(key))
        except Exception as exc:  # a back-off already scheduled stays
            self.runs.reconcile_error(*key)
            log.warning("%s/%s: reconcile failed: %s", key[0], key[1], exc)
            return
        self._schedule(key, requeue)

    def _schedule(self, key: tuple[str, str], delay: float | None) -> None:
        """A pass after ``delay`` seconds when that is sooner than the next tick."""
        old = self._requeues.pop(key, None)
        if old is not None:
            old.cancel()
        if delay is None or delay >= self.config.interval:
            return
        loop = asyncio.get_running_loop()
        self._requeues[key] = loop.call_later(max(delay, 0.05), self._requeued, key)

    def _poke(self, key: tuple[str, str]) -> None:
        """One of the run's children changed: a pass soon. Pokes are kept apart
        from back-off requeues, so a pass that ends while a child event is
        pending (it happened during the pass) never cancels it."""
        if key not in self._bodies or key in self._pokes:  # unknown run, or a pass already due
            return
        loop = asyncio.get_running_loop()
        self._pokes[key] = loop.call_later(CHILD_EVENT_DELAY, self._poked, key)

    def _poked(self, key: tuple[str, str]) -> None:
        self._pokes.pop(key, None)
        self._enqueue(key, urgent=True)

    def _requeued(self, key: tuple[str, str]) -> None:
        self._requeues.pop(key, None)
        self._enqueue(key, urgent=True)

    async def forget(self, namespace: str, name: str, uid: str = "") -> None:
        """The run is deleted: nothing more is asked for it, then the executor
        drops it (after a pass in flight, hence in a thread)."""
        key = (namespace, name)
        for pending in (self._requeues, self._pokes):
            handle = pending.pop(key, None)
            if handle is not None:
                handle.cancel()
        self._bodies.pop(key, None)
        self.queue.discard(key)
        await asyncio.to_thread(self.executor.forget, namespace, name, uid)

    # ------------------------------------------------------------------ process

    def run(self, *, stop_flag: threading.Event | None = None, ready_flag: threading.Event | None = None) -> None:
        """Serve `/metrics` and `/healthz`, then run kopf until stopped (SIGTERM
        or ``stop_flag``). Blocks; tests call it in a thread."""
        self.metrics = MetricsServer(self.metrics_registry, self.config.metrics_port, self.config.metrics_host)
        try:
            asyncio.run(kopf.operator(
                registry=self.registry,
                standalone=self.config.peering is None,
                peering_name=self.config.peering,
                priority=self.config.priority,
                clusterwide=self.config.all_namespaces,
                namespaces=list(self.config.namespaces),
                stop_flag=stop_flag,
                ready_flag=ready_flag,
            ))
        finally:
            self.metrics.close()
