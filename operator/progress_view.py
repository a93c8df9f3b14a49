"""What `selfemo run` shows while it works: one line saying where the run is.

Round, phase, the round's committed shards, the latest evaluation's W-F1
and what each running child last printed (its own progress line: prompts or
steps done, ETA). On a terminal the line is redrawn in place every poll; in a
log (CI, `nohup`, a pipe) it is printed as a plain line every
``--progress-every`` seconds, so a stalled run is visible in either.
"""
from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass
from typing import TextIO

from selfemo.operator.observed import selected_prefix
from selfemo.status import Phase, RunStatus


@dataclass(frozen=True)
class ChildProgress:
    """A running child as the view shows it."""

    name: str
    seconds: float
    last_line: str


def progress_line(status: RunStatus, *, rounds: int, shards: int, committed: frozenset[str],
                  children: list[ChildProgress]) -> str:
    """`round 1/2 Generating | shards 1/2 committed | W-F1 12.00 (round 0) | <child> 0m31s: <its last line>`."""
    parts = [f"round {status.round}/{rounds} {status.phase.value}"]
    if status.phase == Phase.generating and status.round > 0:
        done = sum(selected_prefix(status.round, i, shards) in committed for i in range(shards))
        parts.append(f"shards {done}/{shards} committed")
    latest = latest_wf1(status)
    if latest is not None:
        r, mean = latest
        best = "" if r == status.best_round else f", best {status.best_weighted_f1:.2f} (round {status.best_round})"
        parts.append(f"W-F1 {mean:.2f} (round {r}{best})")
    parts += [f"{c.name} {_mmss(c.seconds)}: {c.last_line}" for c in children]
    return " | ".join(parts)


def latest_wf1(status: RunStatus) -> tuple[int, float] | None:
    """(round, mean eval weighted-F1) of the last evaluated round, or None before the baseline."""
    scored = [(r.round, r.eval["mean"]) for r in status.rounds if "mean" in r.eval]
    return max(scored) if scored else None


class TerminalLine:
    """The progress line kept at the bottom of a terminal, redrawn in place;
    other messages are printed above it so they scroll normally."""

    def __init__(self, stream: TextIO | None = None):
        self.stream = stream or sys.stderr
        self.current = ""

    def show(self, line: str) -> None:
        width = shutil.get_terminal_size((120, 24)).columns - 1
        self.current = line if len(line) <= width else line[: max(0, width - 1)] + "…"
        self.stream.write(f"\r{self.current}\x1b[K")
        self.stream.flush()

    def print(self, line: str) -> None:
        self.stream.write(f"\r\x1b[K{line}\n")
        if self.current:
            self.stream.write(self.current)
        self.stream.flush()

    def close(self) -> None:
        """Leave the last progress line on screen and move below it."""
        if self.current:
            self.stream.write("\n")
            self.stream.flush()
            self.current = ""


def _mmss(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 60}m{s % 60:02d}s"
