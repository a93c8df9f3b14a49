"""S3 backend specifics that need no real server: configuration, retries, error messages.

Failures are injected with botocore's own event hooks (`before-call` answers
for the server), so the code under test runs unchanged.
"""
from __future__ import annotations

import logging
import time

import pytest
from botocore.awsrequest import AWSResponse
from support.seaweedfs import free_ports, use_test_credentials

from selfemo.store import (AccessDeniedError, NotCommittedError, NotFoundError, StoreError,
                           StoreUnavailableError, open_store)


def fail_calls(store, operation: str, times: int, *, status: int = 503, code: str = "SlowDown",
               when=lambda path: True) -> list[str]:
    """Make the next `times` calls of `operation` whose URL path matches `when` fail."""
    failed: list[str] = []

    def answer(params, **_):
        if len(failed) >= times or not when(params["url_path"]):
            return None
        failed.append(params["url_path"])
        parsed = {"Error": {"Code": code, "Message": "injected"},
                  "ResponseMetadata": {"HTTPStatusCode": status}}
        return AWSResponse("http://injected", status, {}, None), parsed

    store.client.meta.events.register(f"before-call.s3.{operation}", answer)
    return failed


@pytest.fixture
def s3(moto_s3):
    return open_store(f"s3://{moto_s3}/root", retries=4, backoff=0.01, max_backoff=0.02)


def test_endpoint_from_env_implies_path_style(monkeypatch):
    use_test_credentials(monkeypatch)
    monkeypatch.setenv("SELFEMO_S3_ENDPOINT", "http://127.0.0.1:9/")
    store = open_store("s3://bucket/p")
    assert store.client.meta.endpoint_url == "http://127.0.0.1:9"
    assert store.client.meta.config.s3["addressing_style"] == "path"
    assert open_store("s3://bucket/p", endpoint_url="http://other:1").endpoint == "http://other:1"
    monkeypatch.delenv("SELFEMO_S3_ENDPOINT")
    aws = open_store("s3://bucket/p")
    assert "amazonaws.com" in aws.endpoint and not (aws.client.meta.config.s3 or {}).get("addressing_style")


def test_file_stores_ignore_s3_options(tmp_path):
    store = open_store(tmp_path, endpoint_url="http://unused:1", retries=1)
    store.put_bytes("x", b"1")
    assert store.get_bytes("x") == b"1"


def test_transient_errors_are_retried(s3, caplog):
    failed = fail_calls(s3, "PutObject", 3)
    with caplog.at_level(logging.WARNING, logger="selfemo.store"):
        s3.put_bytes("k", b"v")
    assert len(failed) == 3 and s3.get_bytes("k") == b"v"
    assert "retry 3/3" in caplog.text and "s3://selfemo-test/root/k" in caplog.text


def test_persistent_5xx_gives_up_loudly(s3):
    fail_calls(s3, "GetObject", 99, status=500, code="InternalError")
    s3.put_bytes("k", b"v")
    with pytest.raises(StoreUnavailableError, match="read failed after 4 attempts") as info:
        s3.get_bytes("k")
    assert str(info.value).startswith("s3://selfemo-test/root/k: ")


def test_client_errors_are_not_retried(s3):
    failed = fail_calls(s3, "GetObject", 99, status=403, code="AccessDenied")
    with pytest.raises(AccessDeniedError, match="credential chain"):
        s3.get_bytes("k")
    assert len(failed) == 1


def test_missing_bucket_is_named(moto_s3):
    store = open_store("s3://no-such-bucket/x", retries=1)
    with pytest.raises(NotFoundError, match="bucket 'no-such-bucket' does not exist"):
        store.put_bytes("k", b"v")


def test_publish_failure_leaves_nothing_committed(s3):
    fail_calls(s3, "CopyObject", 4, when=lambda path: path.endswith("/b"))
    with pytest.raises(StoreUnavailableError, match="copy failed"):
        with s3.commit("out") as out:
            out.put_bytes("a", b"1")
            out.put_bytes("b", b"2")
    assert not s3.is_committed("out")
    with pytest.raises(NotCommittedError):
        s3.open_committed("out")
    assert s3.staging_areas("out") == []
    assert s3.list("out") == ["out/a"]  # a half-copied output: debris without a marker
    with s3.commit("out") as out:  # the step's retry
        out.put_bytes("b", b"2")
    assert s3.list("out") == ["out/_SUCCESS", "out/b"]


def test_marker_write_failure_leaves_nothing_committed(s3):
    fail_calls(s3, "PutObject", 99, when=lambda path: path.endswith("/_SUCCESS"))
    with pytest.raises(StoreUnavailableError):
        with s3.commit("out") as out:
            out.put_bytes("a", b"1")
    assert not s3.is_committed("out") and s3.staging_areas("out") == []


def test_no_credentials_is_a_clear_error(monkeypatch):
    use_test_credentials(monkeypatch)
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    store = open_store("s3://bucket/x", endpoint_url=f"http://127.0.0.1:{free_ports(1)[0]}")
    with pytest.raises(AccessDeniedError, match="no usable AWS credentials"):
        store.get_bytes("k")


def test_dead_endpoint_fails_fast_and_names_it(monkeypatch):
    use_test_credentials(monkeypatch)
    endpoint = f"http://127.0.0.1:{free_ports(1)[0]}"  # nothing listens there
    store = open_store("s3://bucket/run", endpoint_url=endpoint, retries=3, backoff=0.05,
                       request_attempts=2, connect_timeout=1)
    started = time.monotonic()
    with pytest.raises(StoreUnavailableError) as info:
        store.exists("round-001/_SUCCESS")
    assert str(info.value).startswith(
        f"s3://bucket/run/round-001/_SUCCESS: endpoint {endpoint} unreachable after 3 attempts")
    with pytest.raises(StoreError, match="unreachable"):
        with store.commit("round-001/selected", overwrite=True) as out:
            out.put_bytes("x", b"x")
    assert time.monotonic() - started < 15
