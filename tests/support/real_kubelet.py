"""A kubelet that really runs the operator's children, as local processes.

:class:`support.kubelet.Kubelet` fakes what a child would write; this one
runs the pod template's container — the real manifest, the real entrypoint,
the real store — so a test drives a whole run through the API emulator:

- It polls the emulator every ``poll`` seconds (level-triggered, like a
  controller's resync: a missed watch event cannot strand a child) for Jobs
  and Deployments labelled ``selfemo.dev/run`` and reconciles one local
  process per pod.
- **Jobs** (the Job controller's part): one pod per completion index, at
  most ``completions`` indexes (Indexed or not); a failed pod is replaced
  until ``failed > backoffLimit``. Status as the controller writes it:
  ``startTime``, ``active``/``ready``, ``succeeded``/``failed``,
  ``completedIndexes`` (Indexed), then conditions ``SuccessCriteriaMet`` +
  ``Complete``, or ``FailureTarget`` + ``Failed`` (``BackoffLimitExceeded``;
  the pod's ``state.terminated`` carries the exit code and, as
  ``terminationMessagePolicy: FallbackToLogsOnError`` does, the tail of its
  log), and ``completionTime``.
- **Deployments** (the Deployment controller's and the kubelet's part): one
  pod while ``spec.replicas`` > 0; its process is restarted in place whenever
  it exits (``restartPolicy: Always``) after the kubelet's CrashLoopBackOff
  (10 s, doubling, at most 5 min: ``restart_delay``, ``max_restart_delay``),
  ``restartCount`` and ``lastState.terminated`` on the pod; stopped (SIGTERM, then
  SIGKILL after ``grace`` seconds) when the Deployment is deleted or scaled
  to 0. Status: ``observedGeneration``, ``replicas``/``updatedReplicas``,
  ``readyReplicas``/``availableReplicas`` from the container's readiness
  probe (an ``httpGet`` on its mapped port, polled every second), and the
  ``Available``/``Progressing`` conditions the controller keeps.
- **Pods** are created in the emulator too (owned by their Job or
  Deployment, labelled from the template), with ``status.phase`` and
  ``containerStatuses[0].restartCount`` kept up to date, so `kubectl get
  pods` shows restarts; they are deleted with their owner.

How a container becomes a process (a sandbox per pod under ``root``):

- volumes are directories ``{root}/{pod}/volumes/{volume}``: ``configMap``
  and ``secret`` volumes hold their keys as files (``items`` honoured),
  ``emptyDir`` is empty; every ``volumeMounts[].mountPath`` maps to its
  volume's directory (+ ``subPath``);
- every string of ``command``/``args``/``env``/``workingDir`` that is a
  mount path or lies below one (also after ``--flag=``) is rewritten to the
  host directory; a mount at ``/tmp`` becomes ``TMPDIR``. Nothing is ever
  written to the real root paths; paths no volume covers are the host's
  (the "image" is this checkout's ``.venv``, data under its absolute path);
- ``env``: ``value``, ``valueFrom.secretKeyRef`` / ``configMapKeyRef``
  (read from the emulator, base64-decoded), ``fieldRef`` (``metadata.name``,
  ``.namespace``, ``.uid``, ``labels['k']``, ``annotations['k']`` with the
  Job's ``batch.kubernetes.io/job-completion-index``), ``envFrom``
  ``secretRef``/``configMapRef``; then ``$(VAR)`` expansion in command and
  args as Kubernetes does. The process environment starts from
  ``image_env`` only (plus ``PATH`` to this ``.venv``), never the test's
  own, so store credentials reach a child only through its Secret;
- ``command[0]`` is looked up in this interpreter's ``bin`` first
  (``python`` → ``sys.executable``); the working directory is ``workingDir``
  or the pod's sandbox;
- each declared ``containerPort`` gets a free loopback port (pods share
  this host's network); argument tokens equal to the container port (or
  ``--flag=PORT``) and probes on it are mapped to that host port.

Every process's stdout/stderr go to ``{log_dir}/{pod}.stdout|.stderr``;
:meth:`RealKubelet.dump_logs` prints their tails (call it when a test
fails). :meth:`on_line` arms a one-shot hook on a pod's stderr line (e.g.
to stop the store when a child starts using it); :meth:`inject` arms a fault
inside the next matching pod's process (`support/faults/sitecustomize.py`:
SIGKILL right after a chosen S3 write), for crashes at an exact point.
:meth:`stop` kills every process group this kubelet started.
"""
from __future__ import annotations

import base64
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from .kube import KubeClient, KubeHTTPError

log = logging.getLogger(__name__)

LABEL_RUN = "selfemo.dev/run"
INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"
BIN = Path(sys.executable).parent
FAULTS = Path(__file__).resolve().parent / "faults"  # sitecustomize.py for RealKubelet.inject


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def expand_vars(text: str, env: dict[str, str]) -> str:
    """Kubernetes `$(VAR)` expansion: defined names are replaced, `$$(` is a
    literal `$(`, undefined references stay as written."""
    return re.sub(r"\$\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)",
                  lambda m: m.group(0)[1:] if m.group(0).startswith("$$") else env.get(m.group(2), m.group(0)), text)


def rewrite_paths(text: str, mounts: list[tuple[str, Path]]) -> str:
    """``text`` with a mount path (or a path below one, also as `--flag=PATH`)
    replaced by its host directory; ``mounts`` longest mount path first."""
    head, sep, tail = text.partition("=") if text.startswith("-") else ("", "", text)
    for mount, host in mounts:
        base = mount.rstrip("/")
        if tail in (mount, base) or tail.startswith(base + "/"):
            rest = tail[len(base):].lstrip("/")
            return f"{head}{sep}{Path(host) / rest if rest else host}"
    return text


def map_port(token: str, ports: dict[int, int]) -> str:
    """An argument naming a container port (`9400`, `--metrics-port=9400`) → the host port."""
    head, sep, tail = token.rpartition("=") if token.startswith("-") else ("", "", token)
    if tail.isdigit() and int(tail) in ports:
        return f"{head}{sep}{ports[int(tail)]}"
    return token


@dataclass
class PodRun:
    """One pod: its sandbox, its current process and its history."""

    name: str
    owner_kind: str  # Job | Deployment
    owner: str
    owner_uid: str
    index: int | None
    dir: Path
    container: str = ""
    image: str = ""
    last_exit: dict | None = None  # the container's last `terminated` state
    argv: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    ports: dict[int, int] = field(default_factory=dict)  # container port -> host port
    readiness: dict | None = None
    proc: subprocess.Popen | None = None
    restarts: int = 0
    exit_codes: list[int] = field(default_factory=list)
    runs: list[tuple[float, float]] = field(default_factory=list)  # (start, end) time.time() per process
    ready: bool = False
    stop: threading.Event = field(default_factory=threading.Event)

    def log_paths(self, log_dir: Path, attempt: int) -> tuple[Path, Path]:
        stem = self.name if attempt == 0 else f"{self.name}.restart-{attempt}"
        return log_dir / f"{stem}.stdout", log_dir / f"{stem}.stderr"


@dataclass
class LineHook:
    """A one-shot reaction to a pod's stderr line (see :meth:`RealKubelet.on_line`)."""

    prefix: str
    pattern: re.Pattern
    action: Callable[["PodRun", str], None]
    fired: threading.Event = field(default_factory=threading.Event)
    pod: str = ""
    line: str = ""


class ContainerConfigError(Exception):
    """A Secret/ConfigMap the container needs is missing (CreateContainerConfigError)."""


class RealKubelet:
    """Runs the children of every `SelfEmoRun` in ``ns`` as local processes.

    ``root``: where pod sandboxes go; ``log_dir``: children's output
    (default ``root/logs``); ``image_env``: the environment every container
    starts from (what the image's `ENV` lines would set).
    """

    def __init__(self, kube: KubeClient, root: Path, *, ns: str = "default", log_dir: Path | None = None,
                 image_env: dict[str, str] | None = None, poll: float = 0.5, restart_delay: float = 10.0,
                 max_restart_delay: float = 300.0, grace: float = 3.0):
        self.kube, self.ns, self.root = kube, ns, Path(root)
        self.log_dir = Path(log_dir) if log_dir else self.root / "logs"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.image_env = dict(image_env or {})
        self.poll, self.grace = poll, grace
        self.restart_delay, self.max_restart_delay = restart_delay, max_restart_delay
        self.pods: dict[str, PodRun] = {}  # pod name -> run, every pod ever started
        self.errors: list[str] = []  # what the kubelet itself could not do (assert empty)
        self._workers: dict[str, threading.Thread] = {}  # owner uid -> worker
        self._owner_stop: dict[str, threading.Event] = {}  # owner uid -> stop flag
        self._hooks: list[LineHook] = []
        self._injections: list[list] = []  # [prefix, env, pods left]
        self.injected: list[str] = []  # pods that got an injection
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="real-kubelet", daemon=True)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> "RealKubelet":
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop reconciling and kill every process group this kubelet started."""
        self._stop.set()
        for ev in list(self._owner_stop.values()):
            ev.set()
        for pod in list(self.pods.values()):
            self._kill(pod, signal.SIGKILL)
        self._thread.join(10)
        for worker in list(self._workers.values()):
            worker.join(10)

    def on_line(self, prefix: str, pattern: str, action: Callable[[PodRun, str], None]) -> LineHook:
        """One-shot hook: call ``action(pod, line)`` for the first stderr line
        matching ``pattern`` of a pod named ``prefix…`` (from its reader thread,
        so before the process writes anything else)."""
        hook = LineHook(prefix, re.compile(pattern), action)
        with self._lock:
            self._hooks.append(hook)
        return hook

    def inject(self, prefix: str, env: dict[str, str], pods: int = 1) -> None:
        """Add ``env`` to the next ``pods`` pods named ``prefix…``, with
        `support/faults` (its `sitecustomize`) on their `PYTHONPATH`: a fault
        that fires inside the child at an exact point (see that module).
        Not part of any manifest: the injected pods are listed in ``injected``."""
        with self._lock:
            self._injections.append([prefix, dict(env), pods])

    def pods_of(self, owner: str) -> list[PodRun]:
        return [p for p in self.pods.values() if p.owner == owner]

    def dump_logs(self, tail: int = 40) -> str:
        """The last ``tail`` lines of every child's stderr and stdout, for a failure report."""
        out = [f"kubelet errors: {self.errors}" if self.errors else "kubelet errors: none", self.timeline()]
        for path in sorted(self.log_dir.glob("*.std*"), key=lambda p: p.stat().st_mtime):
            lines = path.read_text(errors="replace").splitlines()[-tail:]
            out.append(f"===== {path.name} (last {len(lines)} lines) =====")
            out.extend(lines)
        return "\n".join(out)

    def timeline(self) -> str:
        """One line per process run: start (s after the first), duration, exit code."""
        runs = sorted((start, end, pod.name, code) for pod in list(self.pods.values())
                      for (start, end), code in zip(pod.runs, pod.exit_codes))
        t0 = runs[0][0] if runs else 0.0
        return "\n".join(f"{start - t0:7.1f}s {end - start:6.1f}s exit {code:4d} {name}" for start, end, name, code in runs)

    # ------------------------------------------------------------------ the control loop

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._sync()
            except Exception as exc:  # the emulator is shutting down, or a transient error
                log.debug("kubelet sync: %r", exc)
            self._stop.wait(self.poll)

    def _sync(self) -> None:
        jobs = self.kube.list(f"/apis/batch/v1/namespaces/{self.ns}/jobs", LABEL_RUN)
        deployments = self.kube.list(f"/apis/apps/v1/namespaces/{self.ns}/deployments", LABEL_RUN)
        alive: set[str] = set()
        for obj, kind in [(j, "Job") for j in jobs] + [(d, "Deployment") for d in deployments]:
            meta = obj["metadata"]
            uid = meta["uid"]
            if meta.get("deletionTimestamp"):
                continue
            alive.add(uid)
            if kind == "Deployment" and int((obj.get("spec") or {}).get("replicas", 1)) < 1:
                self._stop_owner(uid)  # scaled to 0: its pod goes
                continue
            worker = self._workers.get(uid)
            if worker is not None:
                if not (self._owner_stop[uid].is_set() and not worker.is_alive()):
                    continue
                del self._workers[uid]  # scaled down before, up again now: a new pod
            if kind == "Job" and any(c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
                                     for c in (obj.get("status") or {}).get("conditions") or []):
                continue  # finished before we saw it (or by another kubelet)
            stop = self._owner_stop[uid] = threading.Event()
            target = self._run_job if kind == "Job" else self._run_deployment
            worker = threading.Thread(target=self._guard, args=(target, obj, stop), name=f"kubelet-{meta['name']}",
                                      daemon=True)
            self._workers[uid] = worker
            worker.start()
        for uid in list(self._owner_stop):
            if uid not in alive:
                self._stop_owner(uid)  # deleted: its pods go (background propagation)

    def _stop_owner(self, uid: str) -> None:
        ev = self._owner_stop.get(uid)
        if ev is not None:
            ev.set()

    def _guard(self, target: Callable, obj: dict, stop: threading.Event) -> None:
        try:
            target(obj, stop)
            if stop.is_set() and not self._stop.is_set():  # the owner went: so do its pods
                for pod in [p for p in self.pods.values() if p.owner_uid == obj["metadata"]["uid"]]:
                    self._api(self.kube.delete, f"/api/v1/namespaces/{self.ns}/pods/{pod.name}")
        except Exception as exc:
            if not self._stop.is_set():
                self.errors.append(f"{obj['metadata']['name']}: {exc!r}")
                log.warning("kubelet: %s", self.errors[-1])

    # ------------------------------------------------------------------ Jobs

    def _run_job(self, job: dict, stop: threading.Event) -> None:
        name, spec = job["metadata"]["name"], job["spec"]
        completions = int(spec.get("completions") or 1)
        backoff_limit = int(spec.get("backoffLimit", 6))
        indexed = spec.get("completionMode") == "Indexed"
        state: dict[str, Any] = {"failed": 0, "succeeded": set()}
        lock = threading.Lock()
        self._job_status(name, {"startTime": _now(), "active": completions, "ready": 0})

        def index_worker(index: int) -> None:
            attempt = 0
            while not stop.is_set():
                pod = self._new_pod(job, "Job", index if indexed or completions > 1 else None, attempt)
                code = self._run_pod(pod, stop)
                if stop.is_set():
                    return
                with lock:
                    if code == 0:
                        state["succeeded"].add(index)
                        return
                    state["failed"] += 1
                    if state["failed"] > backoff_limit:
                        return
                    self._job_status(name, {"failed": state["failed"]})
                attempt += 1

        workers = [threading.Thread(target=index_worker, args=(i,), daemon=True) for i in range(completions)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        if stop.is_set():
            return  # deleted: nobody reads its status any more
        now = _now()
        status: dict[str, Any] = {"active": 0, "ready": 0, "failed": state["failed"], "succeeded": len(state["succeeded"])}
        if indexed:
            status["completedIndexes"] = ",".join(str(i) for i in sorted(state["succeeded"]))
        if len(state["succeeded"]) == completions:
            msg = "Reached expected number of succeeded pods"
            status["completionTime"] = now
            status["conditions"] = [self._cond("SuccessCriteriaMet", "CompletionsReached", msg, now),
                                    self._cond("Complete", "CompletionsReached", msg, now)]
        else:
            msg = "Job has reached the specified backoff limit"  # the why is on the pod (termination message)
            status["conditions"] = [self._cond("FailureTarget", "BackoffLimitExceeded", msg, now),
                                    self._cond("Failed", "BackoffLimitExceeded", msg, now)]
        self._job_status(name, status)

    @staticmethod
    def _cond(type_: str, reason: str, message: str, now: str) -> dict:
        return {"type": type_, "status": "True", "reason": reason, "message": message,
                "lastProbeTime": now, "lastTransitionTime": now}

    def _job_status(self, name: str, status: dict) -> None:
        self._patch_status(f"/apis/batch/v1/namespaces/{self.ns}/jobs/{name}", status)

    def _termination_message(self, pod: PodRun) -> str:
        """What `terminationMessagePolicy: FallbackToLogsOnError` makes of a
        failed container's log: its last 80 lines, at most 2048 bytes (here
        from stderr, where the children log)."""
        _, err = pod.log_paths(self.log_dir, pod.restarts)
        if not err.exists():
            return ""
        return "\n".join(err.read_text(errors="replace").splitlines()[-80:])[-2048:]

    # ------------------------------------------------------------------ Deployments

    def _run_deployment(self, dep: dict, stop: threading.Event) -> None:
        name = dep["metadata"]["name"]
        generation = int(dep["metadata"].get("generation", 1))
        pod = self._new_pod(dep, "Deployment", None, 0)
        self._deployment_status(name, generation, ready=False)
        prober = threading.Thread(target=self._probe, args=(pod, name, generation, stop), daemon=True)
        prober.start()
        while not stop.is_set():
            code = self._run_pod(pod, stop)
            if stop.is_set():
                break
            pod.ready = False
            self._deployment_status(name, generation, ready=False)
            delay = min(self.max_restart_delay, self.restart_delay * 2 ** pod.restarts)
            self._pod_status(pod, "Running", waiting=f"back-off {delay:g}s restarting failed container={pod.container}")
            if stop.wait(delay):
                break  # deleted while backing off: no restart
            pod.restarts += 1
        prober.join(5)

    def _probe(self, pod: PodRun, name: str, generation: int, stop: threading.Event) -> None:
        """Readiness: the probe's httpGet on the mapped port, every second;
        without a probe a running process is ready."""
        while not stop.is_set():
            ready = pod.proc is not None and pod.proc.poll() is None and self._probe_ok(pod)
            if ready != pod.ready:
                pod.ready = ready
                self._deployment_status(name, generation, ready=ready)
            stop.wait(1.0)

    @staticmethod
    def _probe_ok(pod: PodRun) -> bool:
        probe = (pod.readiness or {}).get("httpGet")
        if not probe:
            return True
        port = probe.get("port")
        port = pod.ports.get(int(port), int(port)) if str(port).isdigit() else pod.ports.get(port)
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{probe.get('path', '/')}", timeout=1) as resp:
                return 200 <= resp.status < 400
        except Exception:
            return False

    def _deployment_status(self, name: str, generation: int, *, ready: bool) -> None:
        now, n = _now(), int(ready)
        rs = f"{name}-{generation:x}"  # the ReplicaSet of this generation of the template
        available = self._cond("Available", "MinimumReplicasAvailable", "Deployment has minimum availability.", now) if ready \
            else {**self._cond("Available", "MinimumReplicasUnavailable", "Deployment does not have minimum availability.", now),
                  "status": "False"}
        progressing = self._cond(
            "Progressing", "NewReplicaSetAvailable" if ready else "ReplicaSetUpdated",
            f'ReplicaSet "{rs}" has successfully progressed.' if ready else f'ReplicaSet "{rs}" is progressing.', now)
        for c in (available, progressing):
            c.pop("lastProbeTime")
            c["lastUpdateTime"] = now
        self._patch_status(f"/apis/apps/v1/namespaces/{self.ns}/deployments/{name}", {
            "observedGeneration": generation, "replicas": 1, "updatedReplicas": 1, "readyReplicas": n,
            "availableReplicas": n, "unavailableReplicas": 1 - n, "conditions": [available, progressing]})

    # ------------------------------------------------------------------ pods

    def _new_pod(self, owner: dict, kind: str, index: int | None, attempt: int) -> PodRun:
        meta = owner["metadata"]
        suffix = secrets.token_hex(3)[:5]
        name = f"{meta['name']}-{index}-{suffix}" if index is not None else f"{meta['name']}-{suffix}"
        pod = PodRun(name=name, owner_kind=kind, owner=meta["name"], owner_uid=meta["uid"], index=index,
                     dir=self.root / name)
        template = owner["spec"]["template"]
        annotations = dict((template.get("metadata") or {}).get("annotations") or {})
        if kind == "Job":
            annotations[INDEX_ANNOTATION] = str(index or 0)
        pod_meta = {"name": name, "namespace": self.ns, "labels": dict((template.get("metadata") or {}).get("labels") or {}),
                    "annotations": annotations,
                    "ownerReferences": [{"apiVersion": owner.get("apiVersion", "batch/v1" if kind == "Job" else "apps/v1"),
                                         "kind": kind, "name": meta["name"], "uid": meta["uid"], "controller": True}]}
        created = self._api(self.kube.create, f"/api/v1/namespaces/{self.ns}/pods",
                            {"apiVersion": "v1", "kind": "Pod", "metadata": pod_meta, "spec": template["spec"],
                             "status": {"phase": "Pending"}})
        pod_meta["uid"] = ((created or {}).get("metadata") or {}).get("uid", "")
        self._prepare(pod, pod_meta, template["spec"])
        with self._lock:
            self.pods[name] = pod
        return pod

    def _prepare(self, pod: PodRun, pod_meta: dict, spec: dict) -> None:
        """Sandbox, volumes, environment and argv of the pod's (first) container."""
        container = spec["containers"][0]
        pod.container, pod.image = container.get("name", ""), container.get("image", "")
        volumes: dict[str, Path] = {}
        for vol in spec.get("volumes") or []:
            host = pod.dir / "volumes" / vol["name"]
            host.mkdir(parents=True, exist_ok=True)
            if "configMap" in vol or "secret" in vol:
                src = vol.get("configMap") or vol.get("secret")
                data = self._data("configmaps" if "configMap" in vol else "secrets", src.get("name") or src.get("secretName"))
                items = src.get("items") or [{"key": k, "path": k} for k in data]
                for item in items:
                    if item["key"] not in data:
                        raise ContainerConfigError(f"{pod.name}: volume {vol['name']} has no key {item['key']!r}")
                    target = host / item["path"]
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(data[item["key"]])
            elif "emptyDir" not in vol:
                raise ContainerConfigError(f"{pod.name}: volume {vol['name']}: only configMap, secret and emptyDir are emulated")
            volumes[vol["name"]] = host
        mounts = sorted(((m["mountPath"], volumes[m["name"]] / m.get("subPath", "")) for m in container.get("volumeMounts") or []),
                        key=lambda m: -len(m[0]))
        pod.ports = {int(p["containerPort"]): _free_port() for p in container.get("ports") or []}
        named = {p["name"]: pod.ports[int(p["containerPort"])] for p in container.get("ports") or [] if p.get("name")}
        pod.ports.update(named)  # type: ignore[arg-type]  # probes may name the port
        pod.readiness = container.get("readinessProbe")

        env = {"PATH": f"{BIN}:/usr/local/bin:/usr/bin:/bin", "HOSTNAME": pod.name, **self.image_env}
        for src in container.get("envFrom") or []:
            if "secretRef" in src or "configMapRef" in src:
                ref = src.get("secretRef") or src.get("configMapRef")
                data = self._data("secrets" if "secretRef" in src else "configmaps", ref["name"], optional=ref.get("optional", False))
                env.update({src.get("prefix", "") + k: v.decode() for k, v in data.items()})
        for var in container.get("env") or []:
            if "value" in var:
                env[var["name"]] = expand_vars(str(var["value"]), env)
            elif "valueFrom" in var:
                env[var["name"]] = self._env_from(var["valueFrom"], pod_meta)
        env = {k: rewrite_paths(v, mounts) for k, v in env.items()}
        with self._lock:
            for injection in self._injections:
                if injection[2] > 0 and pod.name.startswith(injection[0]):
                    injection[2] -= 1
                    self.injected.append(pod.name)
                    env.update(injection[1], SELFEMO_FAULT_ONCE=str(pod.dir / ".fault-fired"),
                               PYTHONPATH=os.pathsep.join(filter(None, [str(FAULTS), env.get("PYTHONPATH")])))
        tmp = next((host for path, host in mounts if path == "/tmp"), None)
        if tmp is not None:
            env.setdefault("TMPDIR", str(tmp))
        argv = [expand_vars(a, env) for a in [*(container.get("command") or []), *(container.get("args") or [])]]
        if not argv:
            raise ContainerConfigError(f"{pod.name}: the container has no command (the image's entrypoint is not emulated)")
        argv = [map_port(rewrite_paths(a, mounts), pod.ports) for a in argv]
        argv[0] = sys.executable if argv[0] in ("python", "python3") else shutil.which(argv[0], path=env["PATH"]) or argv[0]
        pod.argv, pod.env = argv, env
        pod.cwd = Path(rewrite_paths(container["workingDir"], mounts)) if container.get("workingDir") else pod.dir
        pod.cwd.mkdir(parents=True, exist_ok=True)

    def _data(self, plural: str, name: str, optional: bool = False) -> dict[str, bytes]:
        obj = self._api(self.kube.get, f"/api/v1/namespaces/{self.ns}/{plural}/{name}")
        if obj is None:
            if optional:
                return {}
            raise ContainerConfigError(f"{plural[:-1]} {name!r} not found")
        if plural == "secrets":
            out = {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}
            out.update({k: v.encode() for k, v in (obj.get("stringData") or {}).items()})
            return out
        return {k: v.encode() for k, v in (obj.get("data") or {}).items()}

    def _env_from(self, source: dict, pod_meta: dict) -> str:
        for kind, plural in (("secretKeyRef", "secrets"), ("configMapKeyRef", "configmaps")):
            if kind in source:
                ref = source[kind]
                data = self._data(plural, ref["name"], optional=ref.get("optional", False))
                if ref["key"] not in data:
                    if ref.get("optional"):
                        return ""
                    raise ContainerConfigError(f"{plural[:-1]} {ref['name']!r} has no key {ref['key']!r}")
                return data[ref["key"]].decode()
        path = (source.get("fieldRef") or {}).get("fieldPath", "")
        m = re.fullmatch(r"metadata\.(labels|annotations)\['([^']+)'\]", path)
        if m:
            return str((pod_meta.get(m.group(1)) or {}).get(m.group(2), ""))
        simple = {"metadata.name": pod_meta["name"], "metadata.namespace": pod_meta["namespace"],
                  "metadata.uid": pod_meta.get("uid", ""), "spec.nodeName": "localhost",
                  "status.podIP": "127.0.0.1", "status.hostIP": "127.0.0.1"}
        if path in simple:
            return simple[path]
        raise ContainerConfigError(f"unsupported env source {source}")

    def _run_pod(self, pod: PodRun, stop: threading.Event) -> int:
        """Run the pod's process once; its exit code (negative: killed by that signal)."""
        out_path, err_path = pod.log_paths(self.log_dir, pod.restarts)
        started = time.time()
        with open(out_path, "wb") as out:
            pod.proc = subprocess.Popen(pod.argv, cwd=pod.cwd, env=pod.env, stdout=out, stderr=subprocess.PIPE,
                                        stdin=subprocess.DEVNULL, start_new_session=True)
            self._pod_status(pod, "Running")
            with open(err_path, "wb") as err:
                reader = threading.Thread(target=self._read_stderr, args=(pod, pod.proc, err), daemon=True)
                reader.start()
                watcher = threading.Thread(target=self._kill_on, args=(pod, pod.proc, stop), daemon=True)
                watcher.start()
                code = pod.proc.wait()
                reader.join(10)
        pod.exit_codes.append(code)
        pod.runs.append((started, time.time()))
        pod.last_exit = {"exitCode": 128 - code if code < 0 else code,  # killed by a signal: 128 + its number
                         "reason": "Completed" if code == 0 else "Error",
                         "startedAt": datetime.fromtimestamp(started, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                         "finishedAt": _now()}
        if code != 0:
            message = self._termination_message(pod)
            if message:
                pod.last_exit["message"] = message
        if pod.owner_kind == "Job" or stop.is_set():
            self._pod_status(pod, "Succeeded" if code == 0 else "Failed", exit_code=code)
        return code

    def _read_stderr(self, pod: PodRun, proc: subprocess.Popen, sink) -> None:
        for line in iter(proc.stderr.readline, b""):
            sink.write(line)
            sink.flush()
            text = line.decode(errors="replace")
            with self._lock:
                hits = [h for h in self._hooks if not h.fired.is_set() and pod.name.startswith(h.prefix)
                        and h.pattern.search(text)]
                for h in hits:
                    h.fired.set()
                    h.pod, h.line = pod.name, text.strip()
            for h in hits:
                log.info("kubelet: hook on %s after %r", pod.name, h.line)
                h.action(pod, h.line)

    def _kill_on(self, pod: PodRun, proc: subprocess.Popen, stop: threading.Event) -> None:
        """SIGTERM the process when its owner goes, SIGKILL after the grace period."""
        while proc.poll() is None:
            if stop.wait(0.2):
                self._kill(pod, signal.SIGTERM)
                try:
                    proc.wait(self.grace)
                except subprocess.TimeoutExpired:
                    self._kill(pod, signal.SIGKILL)
                return

    @staticmethod
    def _kill(pod: PodRun, sig: int) -> None:
        proc = pod.proc
        if proc is not None and proc.poll() is None:
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                pass

    def _pod_status(self, pod: PodRun, phase: str, *, exit_code: int | None = None, waiting: str = "") -> None:
        """The pod's phase and its container's state, restartCount and
        lastState, as the kubelet reports them."""
        status: dict[str, Any] = {"restartCount": pod.restarts, "ready": pod.ready}
        if pod.last_exit is not None:
            status["lastState"] = {"terminated": pod.last_exit}
        if exit_code is not None:
            status["state"] = {"terminated": pod.last_exit}
            status.pop("lastState", None)
        elif waiting:
            status["state"] = {"waiting": {"reason": "CrashLoopBackOff", "message": waiting}}
        else:
            status["state"] = {"running": {"startedAt": _now()}}
        self._patch_status(f"/api/v1/namespaces/{self.ns}/pods/{pod.name}", {
            "phase": phase, "podIP": "127.0.0.1", "hostIP": "127.0.0.1",
            "containerStatuses": [{"name": pod.container, "image": pod.image, **status}]})

    def _patch_status(self, path: str, status: dict) -> None:
        """Merge ``status`` into the object's status subresource (a deleted object is fine)."""
        self._api(self.kube.patch, f"{path}/status", {"status": status})

    def _api(self, call: Callable, *args) -> Any:
        """One API call; 404 (the object is gone) is None, a slow or
        unreachable API server is retried a few times (a loaded CI machine)."""
        for attempt in range(5):
            try:
                return call(*args)
            except KubeHTTPError as exc:
                if exc.status == 404:
                    return None
                raise
            except OSError:  # timeouts, refused connections (URLError is one)
                if self._stop.is_set() or attempt == 4:
                    raise
                time.sleep(1)
