"""What the store says about a run (operator/store_observer.py): committed
prefixes, eval metrics and flywheel counts, each report read once."""
from __future__ import annotations

from pathlib import Path

from selfemo.operator.store_observer import read_store_state
from selfemo.store import open_store
from support.kubelet import commit, metrics_json, summary_json


class Counting:
    """The store, counting the committed outputs opened for reading."""

    def __init__(self, store):
        self.store, self.opened = store, []

    def list(self, prefix: str = ""):
        return self.store.list(prefix)

    def open_committed(self, prefix: str):
        self.opened.append(prefix)
        return self.store.open_committed(prefix)


def test_reports_are_read_once_and_new_commits_are_picked_up(tmp_path: Path):
    store = open_store(f"file://{tmp_path}")
    commit(store, "round-000/eval", {"metrics.json": metrics_json(40.0)})
    commit(store, "round-001/selected/shard-00000-of-00002", {"summary.json": summary_json(candidates=8, kept=3)})
    counting = Counting(store)
    first = read_store_state(counting)
    assert sorted(counting.opened) == ["round-000/eval", "round-001/selected/shard-00000-of-00002"]
    assert first.eval_metrics[0]["mean"]["weighted_f1"] == 40.0

    commit(store, "round-001/selected/shard-00001-of-00002", {"summary.json": summary_json(candidates=8, kept=1)})
    commit(store, "round-001/checkpoint", {"trainer_state.json": {"round": 1}})
    counting.opened.clear()
    second = read_store_state(counting, first)
    assert counting.opened == ["round-001/selected/shard-00001-of-00002"]  # only the new report
    assert {"round-001/checkpoint", "round-000/eval"} <= second.committed
    assert second.flywheel[1]["candidates"] == 16 and second.flywheel[1]["kept"] == 4
    assert second.eval_metrics == first.eval_metrics
    # Without the previous state everything is read again, with the same result.
    assert read_store_state(store) == second


def test_an_unreadable_report_is_left_out_and_tried_again(tmp_path: Path):
    store = open_store(f"file://{tmp_path}")
    commit(store, "round-000/eval", {"not-metrics.json": {}})  # committed without its report
    counting = Counting(store)
    state = read_store_state(counting)
    assert "round-000/eval" in state.committed and state.eval_metrics == {}
    read_store_state(counting, state)
    assert counting.opened == ["round-000/eval", "round-000/eval"]
