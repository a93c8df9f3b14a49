"""The work queue that orders reconcile passes (operator/pass_queue.py)."""
from __future__ import annotations

from selfemo.operator.pass_queue import PassQueue


def drain(q: PassQueue) -> list:
    """Take everything waiting, finishing each pass at once."""
    out = []
    while (key := q.take()) is not None:
        out.append(key)
        q.done(key)
    return out


def test_urgent_requests_go_before_background_ones_first_come_first_served():
    q = PassQueue()
    q.request("timer-a", urgent=False)
    q.request("event-b", urgent=True)
    q.request("timer-c", urgent=False)
    q.request("event-d", urgent=True)
    assert drain(q) == ["event-b", "event-d", "timer-a", "timer-c"]


def test_a_run_is_queued_once_however_often_it_is_asked_for():
    q = PassQueue()
    for _ in range(5):
        q.request("a", urgent=False)
        q.request("a", urgent=True)
    q.request("b", urgent=False)
    assert len(q) == 2
    assert drain(q) == ["a", "b"]
    assert q.take() is None


def test_a_background_run_asked_for_urgently_jumps_the_background_queue():
    q = PassQueue()
    for key in ("a", "b", "c"):
        q.request(key, urgent=False)
    q.request("c", urgent=True)
    assert drain(q) == ["c", "a", "b"]


def test_a_running_run_is_not_taken_again_but_passed_again_after_its_pass():
    q = PassQueue()
    q.request("a", urgent=True)
    assert q.take() == "a"
    q.request("a", urgent=True)  # a child changed while the pass ran
    q.request("b", urgent=False)
    assert q.take() == "b"  # not "a": its pass has not ended
    assert q.take() is None
    q.done("b")
    q.done("a")
    assert q.take() == "a"  # asked for during the pass: once more
    q.done("a")
    assert q.take() is None


def test_asked_for_during_its_pass_it_keeps_the_highest_priority_asked():
    q = PassQueue()
    q.request("a", urgent=True)
    assert q.take() == "a"
    q.request("a", urgent=True)
    q.request("a", urgent=False)
    q.request("b", urgent=False)
    q.done("a")
    assert drain(q) == ["a", "b"]  # a went back as urgent, ahead of the background b


def test_a_discarded_run_is_not_passed():
    q = PassQueue()
    q.request("gone", urgent=True)
    q.request("kept", urgent=False)
    q.discard("gone")
    assert drain(q) == ["kept"]
    # deleted while its pass ran: the pass ends and nothing follows
    q.request("gone", urgent=True)
    assert q.take() == "gone"
    q.request("gone", urgent=True)
    q.discard("gone")
    q.done("gone")
    assert q.take() is None


def test_a_discarded_run_can_be_asked_for_again_and_runs_once():
    q = PassQueue()
    q.request("a", urgent=False)
    q.discard("a")
    q.request("a", urgent=False)
    assert drain(q) == ["a"]
