"""Run state as Prometheus metrics, computed at scrape time.

The executor keeps a :class:`RunRegistry` up to date (``update`` after each
status write, ``remove`` when a run is deleted, ``reconcile_error`` when a
reconcile raises) and :class:`RunCollector` turns its contents into series on
every scrape. Nothing is set eagerly, so there are no stale gauges to
forget: a deleted run's series vanish with its registry entry (kuberay's
`ray_job_metrics.go` does the same). All series carry ``namespace`` and
``run`` labels and the ``selfemo_`` prefix.
"""
from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from selfemo.status import Phase, RunStatus

from .observed import KINDS
from .round import parse_time

LABELS = ["namespace", "run"]
_KIND_OF = [(re.compile(r"-r\d+-gen-\d+$"), "generator"), (re.compile(r"-r\d+-train$"), "trainer"), (re.compile(r"-r\d+-eval$"), "evaluator")]


def child_kind(name: str) -> str | None:
    """The kind of a child from its deterministic name (see `round.child_name`)."""
    for pattern, kind in _KIND_OF:
        if pattern.search(name):
            return kind
    return None


@dataclass
class _Entry:
    spec: Any
    status: RunStatus
    reconcile_errors: int = 0


class RunRegistry:
    """(namespace, name) → (spec, status), shared by the executor (writer) and
    the metrics endpoint (reader, another thread), hence the lock."""

    def __init__(self) -> None:
        self._runs: dict[tuple[str, str], _Entry] = {}
        self._lock = threading.Lock()

    def update(self, namespace: str, name: str, spec: Any, status: RunStatus) -> None:
        with self._lock:
            entry = self._runs.get((namespace, name))
            if entry is None:
                self._runs[(namespace, name)] = _Entry(spec, status.model_copy(deep=True))
            else:
                entry.spec, entry.status = spec, status.model_copy(deep=True)

    def reconcile_error(self, namespace: str, name: str) -> None:
        """Count a failed reconcile (the run need not have a status yet)."""
        with self._lock:
            entry = self._runs.setdefault((namespace, name), _Entry(None, RunStatus()))
            entry.reconcile_errors += 1

    def remove(self, namespace: str, name: str) -> None:
        with self._lock:
            self._runs.pop((namespace, name), None)

    def snapshot(self) -> list[tuple[str, str, _Entry]]:
        with self._lock:
            return [(ns, n, _Entry(e.spec, e.status, e.reconcile_errors)) for (ns, n), e in sorted(self._runs.items())]


class RunCollector(Collector):
    """Yields the run series from a :class:`RunRegistry` on every scrape.

    ``clock`` gives the time used for the current phase's elapsed seconds
    (injectable for tests).
    """

    def __init__(self, runs: RunRegistry, clock: Callable[[], float] = time.time) -> None:
        self.runs = runs
        self.clock = clock

    def describe(self) -> list:
        # Series depend on the runs present; nothing to declare up front.
        return []

    def collect(self) -> Iterator:
        round_ = GaugeMetricFamily("selfemo_run_round", "Current flywheel round (0: baseline evaluation).", labels=LABELS)
        phase = GaugeMetricFamily("selfemo_run_phase", "1 for the run's current phase, 0 for the others.", labels=LABELS + ["phase"])
        f1 = GaugeMetricFamily(
            "selfemo_eval_weighted_f1", "Weighted-F1 (0-100) of the latest evaluated round, per dataset and mean.",
            labels=LABELS + ["dataset"],
        )
        samples = GaugeMetricFamily(
            "selfemo_flywheel_samples", "Candidates generated and kept in the latest generated round.", labels=LABELS + ["stage"]
        )
        reward = GaugeMetricFamily("selfemo_flywheel_mean_reward", "Mean total reward of the latest generated round.", labels=LABELS)
        durations = GaugeMetricFamily(
            "selfemo_phase_duration_seconds", "Seconds spent per phase over the run so far (the current phase included).",
            labels=LABELS + ["phase"],
        )
        best = GaugeMetricFamily("selfemo_run_best_weighted_f1", "Best mean eval weighted-F1 (0-100) so far.", labels=LABELS)
        best_round = GaugeMetricFamily("selfemo_run_best_round", "Round with the best mean eval weighted-F1 (0: the base model).", labels=LABELS)
        since_best = GaugeMetricFamily(
            "selfemo_run_rounds_since_best", "Evaluated rounds after the best one (0: the latest evaluated round is the best).", labels=LABELS
        )
        round_f1 = GaugeMetricFamily(
            "selfemo_round_weighted_f1", "Weighted-F1 (0-100) of every evaluated round, per dataset and mean.", labels=LABELS + ["round", "dataset"]
        )
        round_ec = GaugeMetricFamily(
            "selfemo_round_expression_consistency", "Expression consistency (mean sIoU, 0-1) of every evaluated round, per dataset and mean.",
            labels=LABELS + ["round", "dataset"],
        )
        failures = CounterMetricFamily("selfemo_child_failures", "Child failures counted by the operator, per kind.", labels=LABELS + ["kind"])
        errors = CounterMetricFamily("selfemo_reconcile_errors", "Reconciles that raised.", labels=LABELS)
        now = self.clock()

        for ns, name, entry in self.runs.snapshot():
            st, key = entry.status, [ns, name]
            current = Phase(st.phase)
            round_.add_metric(key, st.round)
            for p in Phase:
                phase.add_metric(key + [p.value], 1.0 if p == current else 0.0)
            evaluated = [r for r in st.rounds if r.eval]
            if evaluated:
                latest = max(evaluated, key=lambda r: r.round)
                for dataset, value in sorted(latest.eval.items()):
                    f1.add_metric(key + [dataset], value)
                best_round.add_metric(key, st.best_round)
                since_best.add_metric(key, max(0, latest.round - st.best_round))
            if st.best_weighted_f1 is not None:
                best.add_metric(key, st.best_weighted_f1)
            for r in sorted(evaluated, key=lambda r: r.round):
                for dataset, value in sorted(r.eval.items()):
                    round_f1.add_metric(key + [str(r.round), dataset], value)
                for dataset, value in sorted(r.expression_consistency.items()):
                    round_ec.add_metric(key + [str(r.round), dataset], value)
            generated = [r for r in st.rounds if r.samples_generated or r.mean_reward is not None]
            if generated:
                latest = max(generated, key=lambda r: r.round)
                samples.add_metric(key + ["generated"], latest.samples_generated)
                samples.add_metric(key + ["kept"], latest.samples_kept)
                if latest.mean_reward is not None:
                    reward.add_metric(key, latest.mean_reward)
            spent: dict[str, float] = {}
            for r in st.rounds:
                for p, seconds in r.durations.items():
                    spent[p] = spent.get(p, 0.0) + seconds
            started = parse_time(st.phase_started_at)
            if started is not None and current not in (Phase.pending,) and not current.is_terminal():
                spent[current.value] = spent.get(current.value, 0.0) + max(0.0, now - started.timestamp())
            for p, seconds in sorted(spent.items()):
                durations.add_metric(key + [p], seconds)
            by_kind = dict.fromkeys(KINDS, 0)
            for child, count in st.retries.items():
                kind = child_kind(child)
                if kind:
                    by_kind[kind] += count
            for kind, count in by_kind.items():
                failures.add_metric(key + [kind], count)
            errors.add_metric(key, entry.reconcile_errors)

        yield from (round_, phase, f1, best, best_round, since_best, round_f1, round_ec, samples, reward, durations, failures, errors)
