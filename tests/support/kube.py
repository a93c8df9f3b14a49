"""A Kubernetes API emulator on loopback for operator tests (kmock, by kopf's author).

`kmock.KubernetesEmulator` keeps objects in memory and serves list, watch,
get, create, merge/JSON patch and delete with discovery. It leaves out what
a real API server adds and the operator relies on, so :class:`Emulator`
adds it here, in the tests, never in the product:

- `metadata.uid`, `resourceVersion` (one counter, bumped on every write),
  `creationTimestamp`, `generation` (bumped when `spec` changes) and
  `generateName` (kopf posts Events with it);
- `labelSelector` on lists (equality, inequality, existence), list `kind`
  and `apiVersion`, and the list's `resourceVersion`;
- JSON-patch `test` failures as 422 (kopf's optimistic concurrency);
- deletion of an object with finalizers bumps its resourceVersion;
- `/api/v1/namespaces[/NAME]` parsed as the cluster-scoped Namespace
  resource (kmock 0.8 reads `namespaces` as the start of a namespaced path
  and fails; kopf lists namespaces to learn which watched ones exist).

Every read (GET: a get or a list; a watch is counted apart, it is one
long request) is counted in `Emulator.reads` by (resource, action, whether
the tests sent it), so a benchmark can count the operator's API reads too.
Every write (POST/PUT/PATCH/DELETE) is also logged in `Emulator.writes` as a
:class:`Write` with its wall time and whether it came from the tests' own
:class:`KubeClient` (User-Agent `selfemo-tests`), so a benchmark can count
the operator's writes and time its reactions; once handled, the entry gets
the HTTP status answered and the `Emulator.on_write` hooks run (a test can
react to a write, e.g. kill the operator right after a create succeeded).

The server runs its own event loop in a daemon thread, so sync tests and an
operator thread (kopf has its own loop) can use it together; tests talk to
it over HTTP with :class:`KubeClient`, the same way the operator does.
"""
from __future__ import annotations

import asyncio
import collections
import datetime
import itertools
import json
import secrets
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Iterator

import attrs
import jsonpatch
import jsonpointer
import kmock
import pytest
import yaml
from kmock._internal import enums, parsing

BUILTIN = {
    "v1/configmaps": "ConfigMap",
    "v1/services": "Service",
    "v1/events": "Event",
    "v1/secrets": "Secret",
    "v1/pods": "Pod",
    "apps/v1/deployments": "Deployment",
    "batch/v1/jobs": "Job",
}
VERBS = {"get", "list", "watch", "create", "update", "patch", "delete"}
TEST_USER_AGENT = "selfemo-tests"
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@attrs.frozen
class Write:
    """One write request the emulator served (logged before it is handled)."""

    time: float  # time.time()
    method: str
    resource: str  # plural, e.g. "jobs"
    namespace: str | None
    name: str | None  # for a create, the name in the body
    subresource: str | None
    labels: dict  # of the created object; empty for other writes
    phase: str | None  # status.phase in the body, if any (a run's status patch)
    by_tests: bool  # sent by KubeClient (the tests' kubectl/kubelet), not by the operator
    status: int | None = None  # the HTTP status answered; None while the request is being handled
    round: int | None = None  # status.round in the body, if any


_kmock_parse_path = parsing.parse_path


def _parse_path(path: str) -> parsing.ParsedPath:
    parts = path.strip("/").split("/")
    if parts[:3] == ["api", "v1", "namespaces"] and len(parts) <= 4:
        return parsing.ParsedPath("", "v1", "namespaces", None, parts[3] if len(parts) == 4 else None, None)
    return _kmock_parse_path(path)


parsing.parse_path = _parse_path  # rendering.Request._parse looks it up on the module at call time


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def match_labels(labels: dict[str, str], selector: str) -> bool:
    """A Kubernetes equality-based label selector: `a=b,c!=d,e,!f`."""
    for term in filter(None, (t.strip() for t in selector.split(","))):
        if "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key.strip()) == value.strip():
                return False
        elif "=" in term:
            key, value = term.split("==", 1) if "==" in term else term.split("=", 1)
            if labels.get(key.strip()) != value.strip():
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


@attrs.define(kw_only=True)
class Emulator(kmock.KubernetesEmulator):
    """kmock's emulator with the server-side fields and behaviours listed above."""

    _versions: Any = attrs.field(factory=lambda: itertools.count(1), init=False)
    last_version: int = attrs.field(default=0, init=False)
    writes: list = attrs.field(factory=list, init=False)
    reads: collections.Counter = attrs.field(factory=collections.Counter, init=False)
    """(resource plural, "get" | "list" | "watch", by_tests) → requests served."""
    _inflight: set = attrs.field(factory=set, init=False)  # kmock Requests being handled (hashed by identity)
    on_write: list = attrs.field(factory=list, init=False)
    """Callables ``f(write)`` run on the emulator's loop once a write has been
    handled (the object stored) but before the answer is sent: a test can
    SIGKILL the operator there, between the server's commit and the client
    learning of it. They must not block."""

    def _next_version(self) -> str:
        self.last_version = next(self._versions)
        return str(self.last_version)

    def _stored(self, request) -> Any:
        obj = self.objects._objects.get((request.resource, request.namespace, request.name))
        return None if obj is None or obj.deleted else obj

    def _log_write(self, request) -> int | None:
        """Append the write to ``writes``; its index there (None: not a write).
        A read is counted in ``reads`` instead."""
        method = str(getattr(request.method, "value", request.method) or "").upper()
        if request.resource is None:
            return None
        if method == "GET":
            action = "watch" if str(request.params.get("watch", "")).lower() in ("true", "1") else \
                "get" if request.name is not None else "list"
            by_tests = (request.headers or {}).get("User-Agent", "") == TEST_USER_AGENT
            self.reads[(str(request.resource.plural), action, by_tests)] += 1
            return None
        if method not in WRITE_METHODS:
            return None
        meta = request.data.get("metadata") if isinstance(request.data, dict) else None
        meta = meta if isinstance(meta, dict) else {}
        creating = request.action == enums.action.CREATE
        status = request.data.get("status") if isinstance(request.data, dict) else None
        self.writes.append(Write(
            time=time.time(), method=method, resource=str(request.resource.plural), namespace=request.namespace,
            name=request.name or meta.get("name") or meta.get("generateName"), subresource=request.subresource,
            labels=dict(meta.get("labels") or {}) if creating else {},
            phase=status.get("phase") if isinstance(status, dict) else None,
            round=status.get("round") if isinstance(status, dict) else None,
            by_tests=(request.headers or {}).get("User-Agent", "") == TEST_USER_AGENT))
        return len(self.writes) - 1

    async def _handle(self, request):
        # kmock keeps every request it ever served and, to match each new one
        # against its reactions, scans that whole history once per reaction
        # (by identity): O(history × reactions) per request. With a bounded
        # tail of 512 the emulator still spent ~90 % of a core on those scans
        # in the 50-run bench (py-spy). Keep only the requests still being
        # handled (the current one must stay until kmock has matched it, and
        # another request may be served while this one awaits); tests assert
        # on `self.writes`, never on kmock's history.
        self._inflight.add(request)
        self._forget_served()
        try:
            return await self._serve(request)
        finally:
            self._inflight.discard(request)

    def _forget_served(self) -> None:
        self._requests[:] = [r for r in self._requests if r in self._inflight]
        for payload in self._payloads:  # each reaction keeps the requests it answered, too
            if payload._requests:
                payload._requests[:] = [r for r in payload._requests if r in self._inflight]

    async def _serve(self, request):
        index = self._log_write(request)
        if index is None:
            return await self._handle_write(request)
        status = 500
        try:
            response = await self._handle_write(request)
            status = getattr(response, "status", 200)
            return response
        except kmock.KubernetesError as exc:
            status = exc.status
            raise
        finally:
            write = self.writes[index] = attrs.evolve(self.writes[index], status=status)
            for hook in list(self.on_write):
                hook(write)

    async def _handle_write(self, request):
        if request.resource is not None:
            if request.action == enums.action.CREATE and isinstance(request.data, dict):
                meta = request.data.setdefault("metadata", {})
                if not meta.get("name") and meta.get("generateName"):
                    meta["name"] = meta["generateName"] + secrets.token_hex(3)
                if request.namespace and not meta.get("namespace"):
                    meta["namespace"] = request.namespace
                meta.update(uid=str(uuid.uuid4()), resourceVersion=self._next_version(),
                            creationTimestamp=_now(), generation=1)
            elif request.action == enums.action.UPDATE and request.name is not None:
                current = self._stored(request)
                if isinstance(request.data, dict):
                    meta = request.data.get("metadata")
                    meta = request.data["metadata"] = dict(meta) if isinstance(meta, dict) else {}
                    meta["resourceVersion"] = self._next_version()
                    if current is not None and "spec" in request.data and not request.subresource \
                            and request.data["spec"] != current.get("spec"):
                        meta["generation"] = int(current.get("metadata", {}).get("generation", 1)) + 1
                elif isinstance(request.data, list):
                    request.data.append({"op": "add", "path": "/metadata/resourceVersion", "value": self._next_version()})
            elif request.action == enums.action.DELETE and request.name is not None:
                current = self._stored(request)
                meta = current.get("metadata", {}) if current is not None else {}
                if current is not None and meta.get("finalizers") and not meta.get("deletionTimestamp"):
                    async with self._lock:
                        current.patch({"metadata": {"deletionTimestamp": _now(), "resourceVersion": self._next_version()}})
                        raw = current.raw
                        await self._buses[request.resource].put({"type": "MODIFIED", "object": raw})
                    import aiohttp.web
                    return aiohttp.web.json_response(raw)
        try:
            return await super()._handle(request)
        except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as exc:
            raise kmock.KubernetesError(status=422, reason="Invalid", message=str(exc), details={}) from None

    async def _serve_list(self, request):
        doc = await super()._serve_list(request)
        selector = request.params.get("labelSelector", "")
        if selector:
            doc["items"] = [o for o in doc["items"] if match_labels((o.get("metadata") or {}).get("labels") or {}, selector)]
        info = self.resources[request.resource] if request.resource in self.resources else None
        kind = getattr(info, "kind", None) or str(request.resource.plural).capitalize()
        group = request.resource.group
        doc["apiVersion"] = f"{group}/{request.resource.version}" if group else request.resource.version
        doc["kind"] = f"{kind}List"
        doc["metadata"] = {"resourceVersion": str(self.last_version)}
        return doc


def register_crd(emulator: Emulator, crd: dict) -> None:
    """Serve the custom resource a CRD defines (and the CRD object itself,
    which kopf watches to notice resources appearing)."""
    spec, names = crd["spec"], crd["spec"]["names"]
    for version in spec["versions"]:
        emulator.resources[f"{spec['group']}/{version['name']}/{names['plural']}"] = kmock.ResourceInfo(
            kind=names["kind"], singular=names.get("singular"), namespaced=spec["scope"] == "Namespaced",
            shortnames=set(names.get("shortNames", [])), categories=set(names.get("categories", [])),
            subresources=set(version.get("subresources", {})), verbs=VERBS,
        )
    crds = "apiextensions.k8s.io/v1/customresourcedefinitions"
    emulator.resources[crds] = kmock.ResourceInfo(kind="CustomResourceDefinition", namespaced=False, verbs=VERBS)
    emulator.objects[crds, None, crd["metadata"]["name"]] = {**crd, "metadata": {**crd["metadata"], "uid": str(uuid.uuid4())}}


class KubeServer:
    """An :class:`Emulator` served on 127.0.0.1 from a daemon thread."""

    def __init__(self, crds: list[dict] = (), namespaces: tuple[str, ...] = ("default",)):
        self.namespaces = namespaces
        self.emulator: Emulator | None = None
        self.url = ""
        self._crds = list(crds)
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="kube-emulator", daemon=True)

    def start(self) -> "KubeServer":
        self._thread.start()
        if not self._ready.wait(30) or self._error is not None:
            raise RuntimeError(f"the API emulator did not start: {self._error!r}")
        return self

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # surfaced by start()
            self._error = exc
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with Emulator() as emulator, kmock.Server(emulator) as server:
            for key, kind in BUILTIN.items():
                emulator.resources[key] = kmock.ResourceInfo(kind=kind, namespaced=True, verbs=VERBS)
            # kopf lists namespaces to learn which of the watched ones exist.
            emulator.resources["v1/namespaces"] = kmock.ResourceInfo(kind="Namespace", namespaced=False, verbs=VERBS)
            for ns in self.namespaces:
                emulator.objects["v1/namespaces", None, ns] = {
                    "apiVersion": "v1", "kind": "Namespace",
                    "metadata": {"name": ns, "uid": str(uuid.uuid4()), "resourceVersion": emulator._next_version()}}
            for crd in self._crds:
                register_crd(emulator, crd)
            self.emulator, self.url = emulator, str(server.url).rstrip("/")
            self._ready.set()
            await self._stop.wait()

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def client(self) -> "KubeClient":
        return KubeClient(self.url)

    def kubeconfig(self, path: Path) -> Path:
        """A kubeconfig pointing at this server, as `kubectl` and the operator read it."""
        doc = {
            "apiVersion": "v1", "kind": "Config", "current-context": "emulator",
            "clusters": [{"name": "emulator", "cluster": {"server": self.url}}],
            "users": [{"name": "tester", "user": {"token": "emulator-token"}}],
            "contexts": [{"name": "emulator", "context": {"cluster": "emulator", "user": "tester", "namespace": "default"}}],
        }
        path.write_text(yaml.safe_dump(doc))
        return path


class KubeClient:
    """Blocking JSON-over-HTTP calls to the emulator: what `kubectl` would do."""

    def __init__(self, url: str):
        self.url = url

    def request(self, method: str, path: str, body: Any = None, content_type: str = "application/json") -> dict:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": content_type, "Accept": "application/json",
                                              "User-Agent": TEST_USER_AGENT})
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            raise KubeHTTPError(exc.code, exc.read().decode("utf-8", "replace")) from None
        return json.loads(raw) if raw else {}

    def get(self, path: str) -> dict | None:
        try:
            return self.request("GET", path)
        except KubeHTTPError as exc:
            if exc.status == 404:
                return None
            raise

    def list(self, path: str, selector: str = "") -> list[dict]:
        query = f"?labelSelector={urllib.request.quote(selector)}" if selector else ""
        return self.request("GET", path + query).get("items", [])

    def create(self, path: str, obj: dict) -> dict:
        return self.request("POST", path, obj)

    def patch(self, path: str, patch: dict) -> dict:
        return self.request("PATCH", path, patch, "application/merge-patch+json")

    def delete(self, path: str) -> dict:
        return self.request("DELETE", path)


class KubeHTTPError(Exception):
    def __init__(self, status: int, body: str):
        super().__init__(f"{status}: {body[:300]}")
        self.status = status


def wait_for(predicate, timeout: float = 20.0, interval: float = 0.1, what: str = "condition"):
    """Poll ``predicate`` until it returns something truthy; fail with ``what``."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what}; last: {last!r}")


@pytest.fixture
def kube_api() -> Iterator[KubeServer]:
    """The API emulator with the SelfEmoRun CRD registered, on a free loopback port."""
    from selfemo.crd import crd

    server = KubeServer([crd()]).start()
    try:
        yield server
    finally:
        server.stop()
