"""Metric names and the small HTTP endpoint every component serves.

One prefix (`selfemo_`) and one place for names, so dashboards and alerts
(charts/) and code cannot disagree. The endpoint serves `/metrics`
(Prometheus text format) and `/healthz` on the port given by flag.
"""
from __future__ import annotations

import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

PREFIX = "selfemo_"


class GeneratorMetrics:
    """What a generator shard exports while it runs."""

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.prompts = Counter(f"{PREFIX}generator_prompts", "Prompt groups generated", ["task"], registry=r)
        self.tokens = Counter(f"{PREFIX}generator_tokens", "Completion tokens generated", registry=r)
        self.tokens_per_second = Gauge(f"{PREFIX}generator_tokens_per_second", "Generation throughput of the last chunk", registry=r)
        self.kept_ratio = Gauge(f"{PREFIX}generator_kept_ratio", "Fraction of candidates kept by the flywheel filter so far", registry=r)
        self.reward = Histogram(f"{PREFIX}generator_reward", "Total reward of generated candidates", registry=r,
                                buckets=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.2, 1.4, 1.7, 2.0))
        self.chunks = Counter(f"{PREFIX}generator_chunks_committed", "Chunks committed to the store", registry=r)



class TrainerMetrics:
    """What a trainer rank exports per optimizer step (values of the last step)."""

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.steps = Counter(f"{PREFIX}trainer_steps", "Optimizer steps taken", ["phase"], registry=r)
        self.total_steps = Gauge(f"{PREFIX}trainer_total_steps", "Optimizer steps planned for the round", registry=r)
        self.loss = Gauge(f"{PREFIX}trainer_loss", "Loss of the last step (token mean)", ["phase"], registry=r)
        self.reward = Gauge(f"{PREFIX}trainer_reward", "Mean stored reward of the last step's sequences", registry=r)
        self.kl = Gauge(f"{PREFIX}trainer_kl", "Mean k3 KL to the reference model per completion token", registry=r)
        self.clip_fraction = Gauge(f"{PREFIX}trainer_clip_fraction", "Fraction of completion tokens whose ratio was clipped", registry=r)
        self.grad_norm = Gauge(f"{PREFIX}trainer_grad_norm", "Global gradient norm before clipping", registry=r)
        self.learning_rate = Gauge(f"{PREFIX}trainer_learning_rate", "Learning rate of the last step", registry=r)
        self.tokens_per_second = Gauge(f"{PREFIX}trainer_tokens_per_second", "Sequence tokens per second (all ranks) of the last step", registry=r)
        self.tokens = Counter(f"{PREFIX}trainer_tokens", "Sequence tokens trained on (all ranks)", registry=r)
        self.samples = Counter(f"{PREFIX}trainer_samples", "Sequences trained on (all ranks; rate() is samples/s)", registry=r)

class _Handler(BaseHTTPRequestHandler):
    registry: CollectorRegistry
    healthy: threading.Event

    def do_GET(self) -> None:  # noqa: N802 (http.server API)
        if self.path.startswith("/metrics"):
            body, ctype, code = generate_latest(self.registry), CONTENT_TYPE_LATEST, 200
        elif self.path.startswith("/healthz"):
            ok = self.healthy.is_set()
            body, ctype, code = (b"ok\n" if ok else b"starting\n"), "text/plain", 200 if ok else 503
        else:
            body, ctype, code = b"not found\n", "text/plain", 404
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:  # scrapes every few seconds must not flood the log
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        """A client that hung up mid-answer (a readiness probe past its 1 s
        timeout on a busy node, a scraper giving up) is not an error of ours:
        without this each one printed a traceback into the child's log."""
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


class MetricsServer:
    """Serve `/metrics` and `/healthz` from a daemon thread; port 0 picks a free port."""

    def __init__(self, registry: CollectorRegistry, port: int, host: str = "0.0.0.0"):
        self.healthy = threading.Event()
        handler = type("Handler", (_Handler,), {"registry": registry, "healthy": self.healthy})
        self.server = _Server((host, port), handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, name="metrics", daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
