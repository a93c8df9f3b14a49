"""Where a run's artefacts live (DESIGN.md, "Store layout").

`{store}/{namespace}/{run}/round-{r:03d}/trajectories/shard-{i:05d}-of-{n:05d}.jsonl.gz`,
`selected/`, `checkpoint/`, `eval/metrics.json`.  Pure string logic, one place,
so the operator, the generator, the trainer and the evaluator cannot disagree.
Keys are relative to the run root; `open()` gives a store rooted there.
"""
from __future__ import annotations

from dataclasses import dataclass

from .errors import InvalidKeyError
from .keys import check_key, parse_store_uri


def round_prefix(r: int) -> str:
    """A round's folder, relative to the run root (for readers holding a store rooted at the run)."""
    if r < 0:
        raise ValueError(f"round must be >= 0, got {r}")
    return f"round-{r:03d}"


def eval_prefix(r: int) -> str:
    return f"{round_prefix(r)}/eval"


@dataclass(frozen=True)
class RunLayout:
    store_uri: str
    namespace: str
    run: str

    def __post_init__(self) -> None:
        for what, value in (("namespace", self.namespace), ("run", self.run)):
            if "/" in value:
                raise InvalidKeyError(self.store_uri, f"{what} {value!r} must be one path segment")
            check_key(value, where=self.store_uri)

    @property
    def uri(self) -> str:
        """The run root, e.g. `s3://bucket/prod/default/qwen3-8b-erc`."""
        return parse_store_uri(self.store_uri).child(f"{self.namespace}/{self.run}").uri

    def open(self, **options):
        """A Store rooted at the run (options as for `open_store`)."""
        from . import open_store

        return open_store(self.uri, **options)

    def round_prefix(self, r: int) -> str:
        return round_prefix(r)

    def trajectories(self, r: int) -> str:
        return f"{self.round_prefix(r)}/trajectories"

    def shard_key(self, r: int, i: int, n: int) -> str:
        if not 0 <= i < n:
            raise ValueError(f"shard index {i} not in [0, {n})")
        return f"{self.trajectories(r)}/shard-{i:05d}-of-{n:05d}.jsonl.gz"

    def selected(self, r: int) -> str:
        return f"{self.round_prefix(r)}/selected"

    def checkpoint(self, r: int) -> str:
        return f"{self.round_prefix(r)}/checkpoint"

    def no_signal(self, r: int) -> str:
        """Committed by the trainer instead of `checkpoint/` when the round's
        groups hold no learning signal: the run cannot go on from this round."""
        return f"{self.round_prefix(r)}/no-signal"

    def no_signal_reason(self, r: int) -> str:
        return f"{self.no_signal(r)}/reason.json"

    def eval_prefix(self, r: int) -> str:
        return eval_prefix(r)

    def eval_metrics(self, r: int) -> str:
        return f"{self.eval_prefix(r)}/metrics.json"
