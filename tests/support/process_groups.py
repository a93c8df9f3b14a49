"""Is a stopped child really gone, with every process it started?"""
from __future__ import annotations

import os
import time

import psutil


def alive(pid: int) -> bool:
    """Running (a zombie waiting for a reaper that may never come counts as gone)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def group_left_alive(pgid: int, timeout: float = 5.0) -> list[int]:
    """Pids still alive in process group ``pgid`` after up to ``timeout``
    seconds (SIGKILL is delivered asynchronously); [] when the group is gone."""
    deadline = time.monotonic() + timeout
    while True:
        left = [p.pid for p in psutil.process_iter() if _in_group(p.pid, pgid) and alive(p.pid)]
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.05)


def _in_group(pid: int, pgid: int) -> bool:
    try:
        return os.getpgid(pid) == pgid
    except ProcessLookupError:
        return False
