"""A real Prometheus server (Debian's `prometheus` package) on loopback, and `promtool`.

`make setup` installs the package (it also ships `promtool`). The package
registers a systemd service; the tests never use it: :class:`PrometheusServer`
starts its own server on a free loopback port with a temporary storage
directory and the scrape/rule config the test writes, and stops it after.

Scrapes every second (the processes under test live for seconds, not
minutes), and evaluates rules every second too.
"""
from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Callable

import yaml

from .processes import stop_process

INSTALL_HINT = "install Debian's `prometheus` package (make setup does: apt-get install prometheus)"


def binary(name: str) -> str:
    """Path of `prometheus` or `promtool`; a missing one is a broken setup, not a skip."""
    path = shutil.which(name)
    assert path, f"`{name}` not found on PATH: {INSTALL_HINT}"
    return path


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run `promtool ARGS` and return the finished process (output as text)."""
    return subprocess.run([binary("promtool"), *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrometheusError(AssertionError):
    """The HTTP API answered with an error (the message is Prometheus' own)."""


class PrometheusServer:
    """`prometheus` scraping ``targets`` and evaluating ``rule_files``.

    ``targets``: one dict per scrape job: ``{"job": name, "address": "127.0.0.1:PORT",
    "labels": {...}, "honor_labels": bool}``. Extra labels stand for what a
    ServiceMonitor/PodMonitor's relabelling adds in a cluster.
    """

    def __init__(self, workdir: Path, targets: list[dict], rule_files: list[Path] = ()):
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(p) for p in rule_files],
            "scrape_configs": [
                {"job_name": t["job"], "honor_labels": t.get("honor_labels", False),
                 "static_configs": [{"targets": [t["address"]], "labels": t.get("labels", {})}]}
                for t in targets
            ],
        }
        self.config_path = workdir / "prometheus.yml"
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        self.log_path = workdir / "prometheus.log"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 30.0) -> "PrometheusServer":
        check = promtool("check", "config", str(self.config_path))
        assert check.returncode == 0, check.stdout + check.stderr
        self._log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            [binary("prometheus"), f"--config.file={self.config_path}", f"--storage.tsdb.path={self.workdir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--storage.tsdb.retention.time=1h", "--log.level=warn"],
            stdout=self._log, stderr=subprocess.STDOUT, cwd=self.workdir,
        )
        deadline = time.monotonic() + timeout
        while True:
            assert self.proc.poll() is None, f"prometheus exited: {self.log_path.read_text()[-3000:]}"
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as resp:
                    if resp.status == 200:
                        return self
            except (urllib.error.URLError, ConnectionError):
                pass
            assert time.monotonic() < deadline, f"prometheus not ready after {timeout}s: {self.log_path.read_text()[-3000:]}"
            time.sleep(0.2)

    def stop(self) -> None:
        stop_process(self.proc)
        if self.proc is not None:
            self._log.close()

    # ------------------------------------------------------------------ HTTP API

    def api(self, path: str, **params: Any) -> Any:
        """GET /api/v1/PATH; returns `data`, raises PrometheusError unless status is success."""
        query = urllib.parse.urlencode([(k, v) for k, vs in params.items() for v in (vs if isinstance(vs, list) else [vs])])
        try:
            with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=30) as resp:
                doc = json.loads(resp.read())
        except urllib.error.HTTPError as exc:  # 400/422 carry Prometheus' error in the body
            doc = json.loads(exc.read() or b"{}")
        if doc.get("status") != "success":
            raise PrometheusError(f"{path} {params}: {doc.get('errorType')}: {doc.get('error')}")
        return doc["data"]

    def query(self, expr: str, at: float | None = None) -> list[dict]:
        """Instant query (at ``at``, a Unix time, or now); the result vector."""
        params = {"query": expr} if at is None else {"query": expr, "time": f"{at:.3f}"}
        data = self.api("query", **params)
        return data["result"] if data["resultType"] in ("vector", "matrix") else [data["result"]]

    def wait_for(self, expr: str, ok: Callable[[list[dict]], bool] = bool, timeout: float = 60.0) -> list[dict]:
        """Query ``expr`` until ``ok(result)`` (default: non-empty); returns that result."""
        deadline = time.monotonic() + timeout
        while True:
            result = self.query(expr)
            if ok(result):
                return result
            assert time.monotonic() < deadline, f"{expr!r} did not hold within {timeout}s (last result: {result})"
            time.sleep(0.5)
