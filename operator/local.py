"""`selfemo run RUN.yaml`: the flywheel on one machine.

The local executor is the kopf operator's twin: it observes (its own child
processes and the store's `_SUCCESS` markers), calls the same pure
`reconcile`, and applies the decision, except that a child is a subprocess
running the very command a pod would run (`operator/commands.py`). The status
is kept in the store beside the run (`status.json`), so `selfemo run` on the
same file after a crash, a Ctrl-C or a reboot picks up where it stopped:
finished steps are skipped by their markers, a half-generated shard resumes
from its last committed chunk.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from selfemo.operator.commands import component_args
from selfemo.operator.observed import ChildState, Observed
from selfemo.operator.progress_view import ChildProgress, progress_line
from selfemo.operator.round import ChildIntent, Decision, reconcile
from selfemo.operator.store_observer import read_store_state
from selfemo.status import Phase, RunStatus

log = logging.getLogger(__name__)
STATUS_KEY = "status.json"
HEADER = "=== "  # starts the line written before each attempt in a child's log
EXIT_CODES = {Phase.succeeded: 0, Phase.failed: 1, Phase.suspended: 3}


@dataclass
class LocalChild:
    """A running (or finished, not yet collected) child process."""

    intent: ChildIntent
    proc: subprocess.Popen
    log_path: Path
    started: float

    def state(self) -> ChildState:
        rc = self.proc.poll()
        if rc is None:
            state, message = "Running", ""
        elif rc == 0:
            state, message = "Succeeded", ""
        else:
            state, message = "Failed", f"exit code {rc}: {last_lines(self.log_path)}"
        return ChildState(name=self.intent.name, kind=self.intent.kind, round=self.intent.round,
                          shard=self.intent.shard, state=state, message=message)


def last_lines(path: Path, n: int = 2, width: int = 300) -> str:
    """The last non-empty lines a child printed (not our `===` start headers),
    joined: what a user needs to see first when it failed."""
    try:
        with open(path, "rb") as fh:
            fh.seek(max(0, os.path.getsize(path) - 64 * 1024))
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return "(no log)"
    lines = deque((ln.strip()[-width:] for ln in text.splitlines() if ln.strip() and not ln.startswith(HEADER)), n)
    return " | ".join(lines) or "(no output)"


class LocalExecutor:
    """Drive one run to a terminal phase with local subprocesses.

    ``max_parallel`` bounds the children alive at once: on a laptop the
    shards of a round take turns instead of fighting for the same cores.
    """

    def __init__(self, run, config_path: str | os.PathLike[str], *, logs_dir: str | os.PathLike[str] | None = None,
                 max_parallel: int = 1, python: str = sys.executable, poll_seconds: float = 1.0,
                 heartbeat_seconds: float = 30.0, echo: Callable[[str], None] | None = None,
                 show: Callable[[str], None] | None = None, env: dict[str, str] | None = None):
        from selfemo.policy import open_run_store, run_layout

        self.run = run
        self.config_path = str(Path(config_path).resolve())
        self.store = open_run_store(run)
        self.layout = run_layout(run)
        self.logs_dir = Path(logs_dir) if logs_dir else default_logs_dir(run, self.layout.uri)
        self.max_parallel = max(1, max_parallel)
        self.python = python
        self.poll_seconds = poll_seconds
        self.heartbeat_seconds = heartbeat_seconds
        self.echo = echo or (lambda line: print(line, file=sys.stderr, flush=True))
        self.show = show or self.echo  # the progress line: redrawn in place on a terminal, else logged
        self.env = env
        self.children: dict[str, LocalChild] = {}
        self.status = self.load_status()
        self.committed: frozenset[str] = frozenset()  # as last observed, for the progress line
        self.stop_requested = False
        self.shutting_down = False
        self._last_beat = 0.0

    # ------------------------------------------------------------------ state

    def load_status(self) -> RunStatus:
        """The status saved by an earlier `selfemo run` of this run, or a fresh one."""
        if not self.store.exists(STATUS_KEY):
            return RunStatus()
        try:
            return RunStatus.model_validate(json.loads(self.store.get_bytes(STATUS_KEY)))
        except Exception as exc:  # a damaged status loses nothing: the markers hold the progress
            self.echo(f"warning: {self.layout.uri}/{STATUS_KEY} is unreadable ({exc}); rebuilding it from the store")
            return RunStatus()

    def save_status(self) -> None:
        self.store.put_bytes(STATUS_KEY, self.status.model_dump_json(by_alias=True, indent=2).encode())

    def observe(self) -> Observed:
        # Children first: a child commits before it exits, so one seen exited
        # here has its output (or the trainer's no-signal marker, exit 3) in
        # the store read next, never counted as a failure to retry.
        children = {name: c.state() for name, c in self.children.items()}
        state = read_store_state(self.store)
        self.committed = state.committed
        return Observed(children=children, committed=state.committed, eval_metrics=state.eval_metrics,
                        flywheel=state.flywheel)

    # ------------------------------------------------------------------ apply

    def start(self, intent: ChildIntent) -> None:
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.logs_dir / f"{intent.name}.log"
        argv = [self.python, *component_args(intent, self.config_path)]
        # OpenMP threads that spin while waiting make torch several times slower
        # as soon as anything else runs on a laptop's few cores (measured here:
        # 0.24 vs 0.60 utterances/s scoring with 2 threads on a busy 2-core box)
        env = {"OMP_WAIT_POLICY": "PASSIVE", **os.environ, **(self.env or {}), "PYTHONUNBUFFERED": "1"}
        with open(log_path, "ab") as fh:
            fh.write(f"\n{HEADER}{datetime.now(timezone.utc).isoformat()} {' '.join(argv)}\n".encode())
            fh.flush()
            proc = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env=env, start_new_session=True)
        self.children[intent.name] = LocalChild(intent, proc, log_path, time.monotonic())
        self.echo(f"started {intent.name} (log: {log_path})")

    def stop(self, name: str) -> None:
        child = self.children.pop(name, None)
        if child is not None and child.proc.poll() is None:
            terminate(child.proc)

    def apply(self, decision: Decision) -> None:
        for name in decision.delete:
            self.stop(name)
        running = sum(1 for c in self.children.values() if c.proc.poll() is None)
        for intent in decision.create:
            if intent.name in self.children:
                continue  # started already; the state machine sees it next time
            if running >= self.max_parallel:
                break  # the rest are created again by the next reconcile
            self.start(intent)
            running += 1
        for event in decision.events:
            self.echo(f"[{event.type}] {event.reason}: {event.message}")
        self.status = decision.status
        self.save_status()

    # ------------------------------------------------------------------ loop

    def step(self) -> bool:
        """One observe → reconcile → apply pass; True when the run is terminal or suspended."""
        decision = reconcile(self.run, self.observe(), self.status, datetime.now(timezone.utc))
        self.apply(decision)
        self.heartbeat()
        phase = self.status.phase
        return phase.is_terminal() or (phase == Phase.suspended and not self.children)

    def heartbeat(self, force: bool = False) -> None:
        """Show the progress line (round, phase, shards, latest W-F1, each running child's last line)."""
        now = time.monotonic()
        if not force and now - self._last_beat < self.heartbeat_seconds:
            return
        self._last_beat = now
        alive = [ChildProgress(c.intent.name, now - c.started, last_lines(c.log_path, 1, 160))
                 for c in self.children.values() if c.proc.poll() is None]
        self.show(progress_line(self.status, rounds=self.run.spec.flywheel.rounds,
                                shards=self.run.spec.resources.generator.shards, committed=self.committed,
                                children=alive))

    def request_stop(self) -> None:
        """Stop at the next step boundary (what `selfemo run`'s SIGINT/SIGTERM handler calls).

        A KeyboardInterrupt raised mid-step could land between starting a
        child and recording it, and that child would outlive the run."""
        self.stop_requested = True

    def run_to_end(self) -> RunStatus:
        """Loop until the run ends. A requested stop or Ctrl-C stops the children,
        saves the status and raises KeyboardInterrupt; what is committed is kept."""
        try:
            while not self.stop_requested:
                if self.step():
                    return self.status
                time.sleep(self.poll_seconds)
        except KeyboardInterrupt:
            self.shutdown()
            raise
        self.shutdown()
        raise KeyboardInterrupt

    def shutdown(self) -> None:
        """Stop every child (and its process group) and save the status."""
        self.shutting_down = True
        alive = [name for name, c in self.children.items() if c.proc.poll() is None]
        if alive:
            self.echo(f"stopping {', '.join(alive)}; committed work is kept")
        for name in list(self.children):
            self.stop(name)
        self.save_status()


def terminate(proc: subprocess.Popen, grace: float = 20.0) -> None:
    """SIGTERM the child's process group (vLLM and torchrun spawn workers), then
    SIGKILL what is left of the group, even once the leader has exited: a
    worker that ignores SIGTERM must not outlive the child it belongs to."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5.0)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        pass


def default_logs_dir(run, run_uri: str) -> Path:
    """Beside the run in a local store; under ./selfemo-logs when the store is S3."""
    from urllib.parse import urlsplit

    parts = urlsplit(run_uri)
    if parts.scheme in ("", "file"):
        return Path(parts.path) / "logs"
    return Path("selfemo-logs") / run.metadata.namespace / run.metadata.name

