"""The S3 backend against a real SeaweedFS: multipart, credentials, and crashes.

The crash tests kill `weed mini` (SIGKILL) from a botocore `before-send` hook,
i.e. exactly when a chosen request is about to leave, and restart it on the
same ports and data directory from a thread.  Whatever happens, a committed
prefix must read back completely and an uncommitted one must not be readable;
an observer thread checks that *while* the commit and the outage are going on.
"""
from __future__ import annotations

import hashlib
import os
import threading
import time
import uuid

import pytest

from selfemo.store import (AccessDeniedError, NotCommittedError, StoreError, StoreUnavailableError,
                           open_store)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

MiB = 1 << 20


def s3_store(server, **options):
    root = f"it/{uuid.uuid4().hex[:12]}"
    return open_store(f"s3://{server.bucket}/{root}", endpoint_url=server.endpoint, **options)


def test_multipart_upload_download_and_copy_keep_the_bytes(seaweedfs_s3, tmp_path):
    store = s3_store(seaweedfs_s3, multipart_threshold=MiB, multipart_chunksize=MiB)
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(11 * MiB + 123))
    store.put_file("raw/big.bin", big)
    head = store.client.head_object(Bucket=seaweedfs_s3.bucket, Key=store.location.path + "/raw/big.bin")
    assert head["ETag"].strip('"').endswith("-3")  # 3 parts: s3transfer raises 1 MiB chunks to 5 MiB
    assert store.get_file("raw/big.bin", tmp_path / "back.bin").read_bytes() == big.read_bytes()

    with store.commit("ckpt") as out:  # staged by multipart upload, published by multipart copy
        out.put_file("model.safetensors", big)
    got = store.open_committed("ckpt").get_file("model.safetensors", tmp_path / "ckpt.bin")
    assert hashlib.sha256(got.read_bytes()).hexdigest() == \
        store.read_manifest("ckpt").files["model.safetensors"].sha256


def test_wrong_credentials_are_refused_without_leaking_the_secret(seaweedfs_s3, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret-value")
    store = s3_store(seaweedfs_s3, retries=2, backoff=0.01)
    with pytest.raises(AccessDeniedError, match=seaweedfs_s3.endpoint) as info:
        store.put_bytes("k", b"v")
    assert "wrong-secret-value" not in str(info.value)


class Crash:
    """Kill the server right before the first request matching `operation`/`path_suffix`,
    then (unless `restart_after` is None) restart it that many seconds later."""

    def __init__(self, server, store, operation: str, path_suffix: str = "",
                 restart_after: float | None = 0.3) -> None:
        self.server, self.restart_after, self.suffix = server, restart_after, path_suffix
        self.fired = threading.Event()
        self.restarter: threading.Thread | None = None
        self.errors: list[BaseException] = []
        store.client.meta.events.register(f"before-send.s3.{operation}", self._before_send)

    def _before_send(self, request, **_):
        if self.fired.is_set() or not request.url.split("?")[0].endswith(self.suffix):
            return
        self.fired.set()
        self.server.stop()
        if self.restart_after is not None:
            self.restarter = threading.Thread(target=self._restart, daemon=True)
            self.restarter.start()

    def _restart(self) -> None:
        time.sleep(self.restart_after)
        try:
            self.server.start()
        except BaseException as exc:  # reported by join()
            self.errors.append(exc)

    def join(self) -> None:
        if self.restarter is not None:
            self.restarter.join(60)
        assert not self.errors, self.errors


class Observer(threading.Thread):
    """Reads the prefix through the committed-only API, over and over, and records
    any moment it saw a marker without being able to read exactly the expected files."""

    def __init__(self, server, root_uri: str, prefix: str, expected: dict[str, bytes]) -> None:
        super().__init__(daemon=True)
        self.store = open_store(root_uri, endpoint_url=server.endpoint, retries=1,
                                request_attempts=1, connect_timeout=0.5, read_timeout=5)
        self.prefix, self.expected = prefix, expected
        self.stop = threading.Event()
        self.seen: set[str] = set()
        self.violations: list[str] = []

    def run(self) -> None:
        while not self.stop.wait(0.01):
            try:
                output = self.store.open_committed(self.prefix)
                got = {name: output.get_bytes(name) for name in output.names}
            except NotCommittedError:
                self.seen.add("uncommitted")
                continue
            except StoreUnavailableError:  # server down: nothing observed either way
                self.seen.add("unavailable")
                continue
            except StoreError as exc:  # a marker, but a file missing or different
                self.violations.append(f"marker present but: {exc}")
                continue
            if got != self.expected:
                self.violations.append(f"marker present but files {sorted(got)} differ")
            self.seen.add("committed")


def payload(n_small: int = 4) -> dict[str, bytes]:
    files = {f"shard-{i:05d}-of-{n_small:05d}.jsonl.gz": os.urandom(64 * 1024) for i in range(n_small)}
    files["model.safetensors"] = os.urandom(11 * MiB)  # multipart above the 1 MiB threshold
    return files


def commit_all(store, prefix: str, files: dict[str, bytes]):
    with store.commit(prefix) as out:
        for name, data in files.items():
            out.put_bytes(name, data)
    return out.manifest


def assert_consistent(store, prefix: str, files: dict[str, bytes]) -> bool:
    """is_committed agrees with what can be read; returns whether it is committed."""
    if store.is_committed(prefix):
        output = store.open_committed(prefix)
        assert {name: output.get_bytes(name) for name in output.names} == files
        return True
    with pytest.raises(NotCommittedError):
        store.open_committed(prefix)
    return False


PATIENT = dict(retries=12, backoff=0.25, max_backoff=1.0, request_attempts=2, connect_timeout=1,
               multipart_threshold=MiB, multipart_chunksize=MiB)  # ≥ 5.4 s of retrying


@pytest.mark.parametrize("operation, suffix", [
    ("UploadPart", ""),          # staging: in the middle of a multipart upload
    ("CopyObject", ""),          # publish: between server-side copies
    ("PutObject", "/_SUCCESS"),  # publish: just before the marker
], ids=["staging-multipart", "publish-copy", "marker"])
def test_commit_survives_a_server_restart(seaweedfs_s3, operation, suffix):
    store = s3_store(seaweedfs_s3, **PATIENT)
    files = payload()
    crash = Crash(seaweedfs_s3, store, operation, suffix, restart_after=0.3)
    observer = Observer(seaweedfs_s3, store.uri, "out", files)
    observer.start()
    try:
        manifest = commit_all(store, "out", files)
    finally:
        crash.join()
        observer.stop.set()
        observer.join(30)
    assert crash.fired.is_set(), "the crash hook never ran"
    assert observer.violations == []
    assert "uncommitted" in observer.seen  # it did watch while the commit was in flight
    assert manifest.names == sorted(files)
    assert assert_consistent(store, "out", files)
    assert store.staging_areas("out") == []


def test_commit_against_a_server_that_stays_down_fails_loudly_and_recovers(seaweedfs_s3):
    impatient = dict(PATIENT, retries=3, backoff=0.05)
    store = s3_store(seaweedfs_s3, **impatient)
    files = payload()
    crash = Crash(seaweedfs_s3, store, "CopyObject", restart_after=None)
    started = time.monotonic()
    with pytest.raises(StoreError, match=f"{seaweedfs_s3.endpoint} unreachable after 3 attempts"):
        commit_all(store, "out", files)
    assert time.monotonic() - started < 30
    assert crash.fired.is_set()

    seaweedfs_s3.start()  # back on the same port and data
    assert not assert_consistent(store, "out", files)
    assert store.staging_areas("out"), "staging could not be cleaned while the server was down"
    commit_all(store, "out", files)  # the step runs again
    assert assert_consistent(store, "out", files)
    store.clean_staging("out")
    assert store.staging_areas("out") == []
