"""The children's /metrics and /healthz server (selfemo.telemetry.MetricsServer)."""
from __future__ import annotations

import urllib.request

import pytest
from prometheus_client import CollectorRegistry

from selfemo.telemetry import MetricsServer


@pytest.fixture
def server():
    srv = MetricsServer(CollectorRegistry(), 0, host="127.0.0.1")
    try:
        yield srv
    finally:
        srv.close()


def test_healthz_answers_once_healthy(server):
    url = f"http://127.0.0.1:{server.port}/healthz"
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(url, timeout=5)
    assert info.value.code == 503
    server.healthy.set()
    with urllib.request.urlopen(url, timeout=5) as resp:
        assert resp.status == 200 and resp.read() == b"ok\n"


@pytest.mark.parametrize("error", [BrokenPipeError(32, "Broken pipe"), ConnectionResetError(104, "reset")])
def test_a_client_hanging_up_leaves_no_traceback_in_the_log(server, capsys, error):
    # What socketserver does when a handler raises: handle_error inside the except block.
    try:
        raise error
    except ConnectionError:
        server.server.handle_error(None, ("127.0.0.1", 1))
    assert capsys.readouterr().err == ""


def test_a_real_handler_error_is_still_reported(server, capsys):
    try:
        raise ValueError("a bug in a collector")
    except ValueError:
        server.server.handle_error(None, ("127.0.0.1", 1))
    assert "a bug in a collector" in capsys.readouterr().err
