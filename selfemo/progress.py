"""Progress of long work: a one-line bar with rate and ETA on a terminal,
periodic log lines otherwise (pods, CI), so users always see that a shard or
an evaluation is moving and how long it will take."""
from __future__ import annotations

import sys
import time
from typing import TextIO


def _hms(seconds: float) -> str:
    seconds = int(max(0, seconds))
    return f"{seconds // 3600:d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class Progress:
    """``with Progress("rollout", total=n) as p: p.update(k)``."""

    def __init__(self, label: str, total: int, *, unit: str = "prompts", stream: TextIO | None = None,
                 every: float = 30.0, initial: int = 0):
        self.label, self.total, self.unit = label, max(0, total), unit
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.every = every
        self.done = self.start_done = initial
        self.t0 = self.last = time.monotonic()
        self._shown = -1  # `done` at the last plain line, so the closing line is not repeated

    def __enter__(self) -> "Progress":
        self._emit(force=True)
        return self

    def __exit__(self, *exc) -> None:
        self._emit(force=True)
        if self.tty:
            self.stream.write("\n")
        self.stream.flush()

    def update(self, n: int = 1) -> None:
        self.done += n
        self._emit()

    def line(self) -> str:
        elapsed = time.monotonic() - self.t0
        rate = (self.done - self.start_done) / elapsed if elapsed > 0 else 0.0
        left = (self.total - self.done) / rate if rate > 0 else float("nan")
        pct = 100.0 * self.done / self.total if self.total else 100.0
        eta = _hms(left) if left == left else "?"
        return f"{self.label}: {self.done}/{self.total} {self.unit} ({pct:5.1f}%) {rate:.2f} {self.unit}/s, elapsed {_hms(elapsed)}, ETA {eta}"

    def _emit(self, force: bool = False) -> None:
        now = time.monotonic()
        if self.tty:
            width = 24
            filled = int(width * self.done / self.total) if self.total else width
            self.stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {self.line()}\x1b[K")
            self.stream.flush()
        elif (self.done != self._shown) if force else (now - self.last >= self.every):
            self.stream.write(self.line() + "\n")
            self.stream.flush()
            self.last, self._shown = now, self.done
