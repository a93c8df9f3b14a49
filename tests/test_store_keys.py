"""Pure logic of the store: keys, URIs, endpoints, manifests, retry policy, layout."""
from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest
from botocore.exceptions import ClientError, ConnectionClosedError, EndpointConnectionError
from boto3.exceptions import S3UploadFailedError

from selfemo.store import InvalidKeyError, InvalidURIError, RunLayout
from selfemo.store.keys import (check_key, check_prefix, join, parse_store_uri, redact, relative,
                                resolve_endpoint, staging_prefix)
from selfemo.store.manifest import FileEntry, Manifest, entry_for_bytes, entry_for_file, new_manifest
from selfemo.store.retry import RetriesExhausted, RetryPolicy, retry_call
from selfemo.store.s3 import TRANSIENT, UNREACHABLE, classify


# -- keys -------------------------------------------------------------------

@pytest.mark.parametrize("key", ["a", "a/b.txt", "round-001/trajectories/shard-00000-of-00004.jsonl.gz",
                                 "with space/ünïcode", "..hidden", "a..b/c"])
def test_valid_keys(key):
    assert check_key(key) == key


@pytest.mark.parametrize("key, reason", [
    ("", "empty"), ("/etc/passwd", "absolute"), ("../x", "'..'"), ("a/../../x", "'..'"),
    ("a//b", "empty"), ("a/./b", "'.'"), ("a/", "empty"), ("a\\b", "backslash"), ("a\x00", "NUL"),
])
def test_invalid_keys_are_rejected_clearly(key, reason):
    with pytest.raises(InvalidKeyError, match=reason) as info:
        check_key(key, where="s3://bucket/root")
    assert str(info.value).startswith("s3://bucket/root: invalid key")
    assert isinstance(info.value, ValueError)


def test_non_string_key():
    with pytest.raises(InvalidKeyError, match="str"):
        check_key(Path("a"))  # type: ignore[arg-type]


def test_prefixes():
    assert check_prefix("a/b/") == "a/b"
    assert check_prefix("", allow_root=True) == ""
    with pytest.raises(InvalidKeyError):
        check_prefix("")
    with pytest.raises(InvalidKeyError):
        check_prefix("/", allow_root=True)


def test_join_relative_staging():
    assert join("", "a", "", "b/c") == "a/b/c"
    assert relative("a/b/c", "a") == "b/c"
    assert relative("a/b", "") == "a/b"
    assert staging_prefix("r/ckpt", "ab12") == "r/ckpt.tmp-ab12"


# -- URIs and endpoints --------------------------------------------------------

def test_parse_s3_uris():
    loc = parse_store_uri("s3://bucket/prod/runs/")
    assert (loc.scheme, loc.bucket, loc.path) == ("s3", "bucket", "prod/runs")
    assert loc.uri == "s3://bucket/prod/runs"
    assert parse_store_uri("s3://bucket").uri == "s3://bucket"
    assert loc.child("ns/run").uri == "s3://bucket/prod/runs/ns/run"
    assert parse_store_uri("s3://bucket").child("x").uri == "s3://bucket/x"


def test_parse_file_uris_and_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert parse_store_uri("runs").path == str(tmp_path / "runs")
    assert parse_store_uri(tmp_path / "a b").path == str(tmp_path / "a b")
    loc = parse_store_uri(f"file://{tmp_path}/a%20b")
    assert loc.path == str(tmp_path / "a b")
    assert parse_store_uri(loc.uri) == loc  # uri round-trips, spaces and all
    assert loc.child("x/y").path == str(tmp_path / "a b" / "x" / "y")


@pytest.mark.parametrize("uri, match", [
    ("gs://bucket/x", "unsupported scheme"), ("s3:///x", "missing bucket"),
    ("file://host/x", "file:///"), ("s3://b/x?versionId=1", "query"), ("s3://b/../x", "invalid key"),
])
def test_bad_uris(uri, match):
    with pytest.raises(InvalidURIError if "key" not in match else InvalidKeyError, match=match):
        parse_store_uri(uri)


def test_credentials_in_uri_are_refused_and_never_echoed():
    with pytest.raises(InvalidURIError, match="credential chain") as info:
        parse_store_uri("s3://AKIAEXAMPLE:topsecret@bucket/x")
    assert "topsecret" not in str(info.value) and "AKIAEXAMPLE" not in str(info.value)


def test_redact():
    assert redact("http://user:pw@host:9000/p") == "http://***@host:9000/p"
    assert redact("http://host:9000") == "http://host:9000"


def test_endpoint_resolution_order():
    env = {"AWS_ENDPOINT_URL": "http://aws-env:1", "SELFEMO_S3_ENDPOINT": "http://ours:2/"}
    assert resolve_endpoint("http://explicit:3", env) == "http://explicit:3"
    assert resolve_endpoint(None, env) == "http://ours:2"
    assert resolve_endpoint("", {"AWS_ENDPOINT_URL": "http://aws-env:1"}) == "http://aws-env:1"
    assert resolve_endpoint(None, {}) is None
    with pytest.raises(InvalidURIError, match="http"):
        resolve_endpoint("127.0.0.1:8333", {})


# -- manifest -----------------------------------------------------------------

def test_manifest_round_trip(tmp_path):
    (tmp_path / "f").write_bytes(b"hello")
    entries = {"b/x": entry_for_bytes(b"hello"), "a": entry_for_file(tmp_path / "f")}
    assert entries["a"] == entries["b/x"] == FileEntry(5, entries["a"].sha256)
    manifest = new_manifest("p", entries, datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc))
    body = json.loads(manifest.to_json())
    assert body["created"] == "2026-01-02T03:04:05.000Z"
    assert body["total_bytes"] == 10 and list(body["files"]) == ["a", "b/x"]
    assert Manifest.from_json(manifest.to_json()) == manifest
    assert manifest.names == ["a", "b/x"]


@pytest.mark.parametrize("data", [b"", b"not json", b"{}", b'{"format": "other"}', b"[]",
                                  b'{"format": "selfemo.store/manifest-v1", "files": 3}'])
def test_malformed_manifest(data):
    with pytest.raises(ValueError):
        Manifest.from_json(data)


# -- retry --------------------------------------------------------------------

def test_backoff_is_exponential_with_bounded_equal_jitter():
    policy = RetryPolicy(attempts=6, base_delay=0.5, max_delay=3.0)
    assert [policy.delay(n, 0.0) for n in range(1, 6)] == [0.25, 0.5, 1.0, 1.5, 1.5]
    assert [policy.delay(n, 1.0) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert policy.max_total_delay() == 9.5
    with pytest.raises(ValueError):
        RetryPolicy(attempts=0)


def test_retry_call_retries_only_retryable_errors():
    calls, sleeps, seen = [], [], []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError("down")
        return "ok"

    result = retry_call(flaky, policy=RetryPolicy(5, 1.0, 10.0), retryable=lambda e: True,
                        sleep=sleeps.append, rand=lambda: 0.0,
                        on_retry=lambda n, e, w: seen.append((n, w)))
    assert result == "ok" and sleeps == [0.5, 1.0] and seen == [(1, 0.5), (2, 1.0)]

    with pytest.raises(KeyError):
        retry_call(lambda: {}["x"], policy=RetryPolicy(5), retryable=lambda e: False, sleep=sleeps.append)


def test_retry_call_gives_up_after_attempts():
    calls = []

    def down():
        calls.append(1)
        raise ConnectionError("down")

    with pytest.raises(RetriesExhausted) as info:
        retry_call(down, policy=RetryPolicy(3, 0.0, 0.0), retryable=lambda e: True, sleep=lambda s: None)
    assert len(calls) == 3 and info.value.attempts == 3
    assert isinstance(info.value.last, ConnectionError)


def _client_error(status: int, code: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": "m"},
                        "ResponseMetadata": {"HTTPStatusCode": status}}, "PutObject")


def test_classify_s3_errors():
    assert classify(EndpointConnectionError(endpoint_url="http://x")) == UNREACHABLE
    assert classify(ConnectionClosedError(endpoint_url="http://x")) == TRANSIENT
    assert classify(_client_error(503, "SlowDown")) == TRANSIENT
    assert classify(_client_error(500, "InternalError")) == TRANSIENT
    assert classify(_client_error(400, "Throttling")) == TRANSIENT
    assert classify(_client_error(404, "NoSuchKey")) is None
    assert classify(_client_error(403, "AccessDenied")) is None
    assert classify(ValueError("bug")) is None
    # boto3 hides the ClientError of a failed multipart upload in the context
    try:
        try:
            raise _client_error(503, "SlowDown")
        except ClientError:
            raise S3UploadFailedError("Failed to upload")
    except S3UploadFailedError as wrapped:
        assert classify(wrapped) == TRANSIENT


# -- layout -------------------------------------------------------------------

def test_run_layout_matches_design():
    layout = RunLayout("s3://selfemo-runs/prod", "default", "qwen3-8b-erc")
    assert layout.uri == "s3://selfemo-runs/prod/default/qwen3-8b-erc"
    assert layout.round_prefix(1) == "round-001"
    assert layout.trajectories(2) == "round-002/trajectories"
    assert layout.shard_key(3, 1, 4) == "round-003/trajectories/shard-00001-of-00004.jsonl.gz"
    assert layout.selected(1) == "round-001/selected"
    assert layout.checkpoint(12) == "round-012/checkpoint"
    assert layout.eval_metrics(1) == "round-001/eval/metrics.json"
    assert layout.eval_prefix(1) == "round-001/eval"


def test_run_layout_validation(tmp_path):
    assert RunLayout(str(tmp_path), "ns", "run").uri == (tmp_path / "ns" / "run").as_uri()
    for bad in ("a/b", "..", ""):
        with pytest.raises(InvalidKeyError):
            RunLayout("s3://b", bad, "run")
    layout = RunLayout("s3://b", "ns", "run")
    with pytest.raises(ValueError):
        layout.shard_key(1, 4, 4)
    with pytest.raises(ValueError):
        layout.round_prefix(-1)


def test_run_layout_open(tmp_path):
    store = RunLayout(str(tmp_path), "ns", "run").open()
    store.put_bytes(RunLayout(str(tmp_path), "ns", "run").eval_metrics(1), b"{}")
    assert (tmp_path / "ns" / "run" / "round-001" / "eval" / "metrics.json").read_bytes() == b"{}"


def test_classify_does_not_look_through_our_own_bugs():
    try:
        try:
            raise EndpointConnectionError(endpoint_url="http://x")
        except EndpointConnectionError:
            raise TypeError("a bug while handling it")
    except TypeError as bug:
        assert classify(bug) is None
