"""The handful of Kubernetes API calls the operator makes, on plain dicts.

The builders produce dicts and the observer reads dicts, so the calls go
through the kubernetes client's transport (auth, TLS, token refresh, proxy)
but not through its generated models: those re-validate every manifest
into typed objects and back, which costs time at scale and silently drops
fields the models do not know yet. One generic request function plus a
table of the five kinds the operator touches is all there is.

Creation is idempotent by name: 409 AlreadyExists is success, so an operator
restarted between "create" and "record status" adopts what it created
instead of failing or duplicating it (the names are deterministic).
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from selfemo.spec import API_GROUP, API_VERSION, PLURAL

log = logging.getLogger(__name__)

MERGE_PATCH = "application/merge-patch+json"
REQUEST_TIMEOUT = (5.0, 30.0)
"""(connect, read) seconds: a wedged API server fails one pass (retried by the
next timer tick) instead of hanging a worker thread for the default forever."""

# apiVersion/kind → collection path prefix (namespaced) and plural.
_KINDS: dict[tuple[str, str], tuple[str, str]] = {
    ("v1", "ConfigMap"): ("/api/v1", "configmaps"),
    ("v1", "Service"): ("/api/v1", "services"),
    ("v1", "Event"): ("/api/v1", "events"),
    ("v1", "Pod"): ("/api/v1", "pods"),  # list only: crash loops and failure messages
    ("apps/v1", "Deployment"): ("/apis/apps/v1", "deployments"),
    ("batch/v1", "Job"): ("/apis/batch/v1", "jobs"),
    (f"{API_GROUP}/{API_VERSION}", "SelfEmoRun"): (f"/apis/{API_GROUP}/{API_VERSION}", PLURAL),
}


class KubeError(Exception):
    """A non-2xx answer: ``status`` is the HTTP code, ``reason`` the API's
    machine-readable reason (AlreadyExists, NotFound, Conflict, …)."""

    def __init__(self, status: int, reason: str, message: str):
        super().__init__(f"{status} {reason}: {message}")
        self.status, self.reason, self.message = status, reason, message


def collection_path(api_version: str, kind: str, namespace: str) -> str:
    try:
        prefix, plural = _KINDS[(api_version, kind)]
    except KeyError:
        raise ValueError(f"the operator does not manage {api_version} {kind}") from None
    return f"{prefix}/namespaces/{namespace}/{plural}"


@dataclass
class KubeApi:
    """Dict-in, dict-out calls over a ``kubernetes.client.ApiClient``."""

    client: Any  # kubernetes.client.ApiClient

    def request(self, method: str, path: str, *, body: Any = None, query: dict[str, str] | None = None,
                content_type: str | None = None) -> dict:
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type or "application/json"
        params = self.client.param_serialize(
            method=method, resource_path=path, query_params=list((query or {}).items()),
            header_params=headers, body=body, auth_settings=["BearerToken"],
        )
        response = self.client.call_api(*params, _request_timeout=REQUEST_TIMEOUT)
        raw = response.read()
        try:
            doc = json.loads(raw) if raw else {}
        except ValueError:
            doc = {"message": raw[:200].decode("utf-8", "replace")}
        if not 200 <= response.status < 300:
            raise KubeError(response.status, str(doc.get("reason") or ""), str(doc.get("message") or ""))
        return doc

    # ------------------------------------------------------------------ verbs

    def list(self, api_version: str, kind: str, namespace: str, label_selector: str) -> list[dict]:
        doc = self.request("GET", collection_path(api_version, kind, namespace), query={"labelSelector": label_selector})
        return list(doc.get("items") or [])

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict | None:
        try:
            return self.request("GET", f"{collection_path(api_version, kind, namespace)}/{name}")
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise

    def create(self, obj: dict) -> bool:
        """Create ``obj``; False (not an error) when the name already exists."""
        meta = obj["metadata"]
        try:
            self.request("POST", collection_path(obj["apiVersion"], obj["kind"], meta["namespace"]), body=obj)
            return True
        except KubeError as exc:
            if exc.status == 409:
                return False
            raise

    def delete(self, api_version: str, kind: str, namespace: str, name: str) -> bool:
        """Delete with background propagation (a Job's pods go with it);
        False when it was already gone."""
        body = {"apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": "Background"}
        try:
            self.request("DELETE", f"{collection_path(api_version, kind, namespace)}/{name}", body=body)
            return True
        except KubeError as exc:
            if exc.status == 404:
                return False
            raise

    def patch(self, api_version: str, kind: str, namespace: str, name: str, patch: dict, *,
              subresource: str = "") -> dict:
        path = f"{collection_path(api_version, kind, namespace)}/{name}" + (f"/{subresource}" if subresource else "")
        return self.request("PATCH", path, body=patch, content_type=MERGE_PATCH)


def merge_patch(old: Any, new: Any) -> Any:
    """The RFC 7386 merge patch that turns ``old`` into ``new`` (None: no change).

    Keys gone from ``new`` become null (a merge patch only deletes what it
    names), dicts recurse, everything else (lists included) is replaced.
    """
    if not isinstance(old, dict) or not isinstance(new, dict):
        return None if old == new else new
    patch: dict[str, Any] = {}
    for key in old.keys() - new.keys():
        patch[key] = None
    for key, value in new.items():
        if key not in old:
            patch[key] = value
        elif isinstance(value, dict) and isinstance(old[key], dict):
            sub = merge_patch(old[key], value)
            if sub is not None:
                patch[key] = sub
        elif old[key] != value:
            patch[key] = value
    return patch or None
