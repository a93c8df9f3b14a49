"""Progress output: a live bar on a terminal, periodic plain lines otherwise."""
from __future__ import annotations

import io

from selfemo.progress import Progress


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_terminal_gets_a_bar_with_rate_and_eta():
    out = _Tty()
    with Progress("rollout", total=4, unit="seeds", stream=out) as p:
        p.update(2)
    text = out.getvalue()
    assert "\r[" in text and "2/4 seeds" in text and "ETA" in text and "seeds/s" in text
    assert text.endswith("\n")


def test_logs_get_periodic_lines_not_a_bar():
    out = io.StringIO()
    with Progress("eval meld", total=10, unit="utterances", stream=out, every=3600) as p:
        for _ in range(10):
            p.update()
    lines = out.getvalue().splitlines()
    assert len(lines) == 2, lines  # the start and the end; nothing in between within the period
    assert lines[-1].startswith("eval meld: 10/10 utterances (100.0%)")
    assert "\r" not in out.getvalue()


def test_resumed_work_counts_from_where_it_was():
    out = io.StringIO()
    with Progress("shard", total=8, stream=out, initial=6) as p:
        p.update(2)
    assert "8/8" in out.getvalue().splitlines()[-1]


def test_closing_line_is_not_repeated():
    out = io.StringIO()
    with Progress("eval", total=2, stream=out, every=0) as p:
        p.update(2)
    assert [line for line in out.getvalue().splitlines() if line.startswith("eval: 2/2")] == [out.getvalue().splitlines()[-1]]
