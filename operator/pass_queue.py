"""Which run's reconcile pass runs next: a work queue with one entry per run.

Passes are asked for by many triggers — a child's watch event, a retry
back-off ending, a spec change, and every run's poll timer — and run on a
few worker threads. Handing each trigger its own thread (what
`asyncio.to_thread` per trigger did) let them pile up: with 200 runs the
poll timers alone asked for 20 passes a second, a child's completion waited
behind them in one FIFO, and two triggers of one run held two threads while
one waited for the other's lock. Here, as in controller-runtime's
workqueue:

- a run is queued at most once: asking again while it is queued only
  raises its priority, so the queue never holds more entries than runs;
- a run is never passed by two workers at once: asked for while its pass
  runs, it is queued again when that pass ends (the pass may have read the
  world just before the change that asked);
- *urgent* requests (something happened: a child changed, a back-off
  ended, the spec changed) go before *background* ones (the poll timer,
  a safety net), first come first served within each.

Pure bookkeeping, no clock and no I/O; `kopf_app.OperatorApp` drives it.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Hashable

URGENT, BACKGROUND = "urgent", "background"


class PassQueue:
    def __init__(self) -> None:
        self._queues: dict[str, deque] = {URGENT: deque(), BACKGROUND: deque()}
        self._queued: dict[Hashable, str] = {}  # key → the priority it is queued under
        self._running: set[Hashable] = set()
        self._again: dict[Hashable, str] = {}  # asked for while running → priority to requeue with

    def __len__(self) -> int:
        """Runs waiting for a pass (not counting those running)."""
        return len(self._queued)

    def request(self, key: Hashable, urgent: bool) -> None:
        """Ask for a pass of ``key``."""
        priority = URGENT if urgent else BACKGROUND
        if key in self._running:
            if self._again.get(key) != URGENT:
                self._again[key] = priority
            return
        if self._queued.get(key) in (URGENT, priority):
            return  # already queued at this priority or higher
        self._queued[key] = priority
        self._queues[priority].append(key)  # a background entry left behind is skipped by take()

    def take(self) -> Hashable | None:
        """The next run to pass (now marked running), or None if none waits."""
        for priority in (URGENT, BACKGROUND):
            queue = self._queues[priority]
            while queue:
                key = queue.popleft()
                if self._queued.get(key) == priority:
                    del self._queued[key]
                    self._running.add(key)
                    return key
        return None

    def done(self, key: Hashable) -> None:
        """``key``'s pass ended: queue it again if it was asked for meanwhile."""
        self._running.discard(key)
        again = self._again.pop(key, None)
        if again is not None:
            self.request(key, again == URGENT)

    def discard(self, key: Hashable) -> None:
        """The run is gone: drop what was asked for it (a running pass ends by itself)."""
        self._queued.pop(key, None)
        self._again.pop(key, None)
