"""The operator's edges against bad input and leaked credentials, at unit speed:

- every manifest of the invalid corpus (tests/manifests/invalid/, each naming
  its offending field) given to the operator's pass ends as `Failed` /
  `ValidationFailed` naming that field, creates nothing, and never raises;
- the store credentials a user keeps in a Secret never show up in status,
  events, metrics or any child manifest: children only carry a reference.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest

from selfemo.operator.children.common import BuilderSettings
from selfemo.operator.collector import RunRegistry, RunCollector
from selfemo.operator.kube_executor import KubeExecutor

def _reaches_operator(path: Path) -> bool:
    """The API server itself refuses an object with no name; everything else reaches the operator."""
    doc = yaml.safe_load(path.read_text())
    return isinstance(doc, dict) and isinstance(doc.get("metadata"), dict) and "name" in doc["metadata"]


INVALID = [p for p in sorted((Path(__file__).parent / "manifests" / "invalid").glob("*.yaml")) if _reaches_operator(p)]
SECRET_VALUES = ("AKIAEXAMPLESECRETKEY1", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")


class RecordingApi:
    """Records every call; lists return nothing (a namespace with no children)."""

    def __init__(self):
        self.calls: list[tuple] = []

    def list(self, *a):
        self.calls.append(("list", *a))
        return []

    def get(self, *a):
        self.calls.append(("get", *a))
        return None

    def create(self, obj):
        self.calls.append(("create", obj))
        return True

    def delete(self, *a):
        self.calls.append(("delete", *a))
        return True

    def patch(self, *a, **kw):
        self.calls.append(("patch", *a, kw))


def body_of(doc: dict, uid: str = "uid-1") -> dict:
    meta = {"namespace": "default", **(doc.get("metadata") or {}), "uid": uid, "generation": 1}
    return {**doc, "metadata": meta}


def expected_path(path: Path) -> str:
    first = path.read_text().splitlines()[0]
    assert first.startswith("# expect: "), path
    return first[len("# expect: "):].strip()


def test_the_invalid_corpus_is_large_enough():
    assert len(INVALID) >= 40


@pytest.mark.parametrize("path", INVALID, ids=[p.stem for p in INVALID])
def test_invalid_manifest_fails_validation_and_creates_nothing(path: Path):
    doc = yaml.safe_load(path.read_text())
    api, events = RecordingApi(), []
    ex = KubeExecutor(api, RunRegistry(), BuilderSettings(), lambda body, event: events.append(event))
    assert ex.step(body_of(doc)) is None  # no requeue: only a spec change can help
    patches = [c for c in api.calls if c[0] == "patch"]
    assert not [c for c in api.calls if c[0] in ("create", "delete")]
    assert len(patches) == 1
    status = patches[0][5]["status"]
    assert status["phase"] == "Failed"
    want = expected_path(path)
    assert want in status["message"], (want, status["message"])
    failed = next(c for c in status["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "ValidationFailed"
    assert [e.reason for e in events] == ["ValidationFailed"]
    # a second pass on the same body changes nothing and posts nothing new
    ex.step(body_of(doc))
    assert len([c for c in api.calls if c[0] == "patch"]) == 1 and len(events) == 1


def test_credentials_never_leave_the_secret(tmp_path, monkeypatch):
    """Credentials in the operator's own environment (how it reads the store)
    must not be copied into anything it writes."""
    for k, v in zip(("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"), SECRET_VALUES):
        monkeypatch.setenv(k, v)
    doc = yaml.safe_load((Path(__file__).parents[1] / "examples" / "quickstart.yaml").read_text())
    doc["spec"]["storage"] = {"uri": f"file://{tmp_path}/runs", "credentialsSecret": "s3-credentials"}
    api, events, runs = RecordingApi(), [], RunRegistry()
    ex = KubeExecutor(api, runs, BuilderSettings(), lambda body, event: events.append(event))
    ex.step(body_of(doc))
    created = [c[1] for c in api.calls if c[0] == "create"]
    assert any(o["kind"] == "Job" for o in created)  # the baseline evaluation
    registry = CollectorRegistry()
    registry.register(RunCollector(runs))
    written = json.dumps(api.calls, default=str) + json.dumps([e.__dict__ for e in events]) + generate_latest(registry).decode()
    for value in SECRET_VALUES:
        assert value not in written
    for obj in created:
        for c in (obj.get("spec", {}).get("template", {}).get("spec", {}).get("containers") or []):
            assert {"secretRef": {"name": "s3-credentials"}} in c.get("envFrom", [])
            assert not any(e["name"].startswith("AWS_SECRET") or e["name"] == "AWS_ACCESS_KEY_ID" for e in c.get("env", []))
