"""The data flywheel's filter: which generated candidates become training data.

Pure functions over trajectory records (see docs/trajectories.md):
- a candidate is *kept* (SFT data) when its total reward ≥ τ; at most k per
  prompt, best first, identical texts counted once;
- a group carries GRPO signal when its rewards are not all equal (std ≥
  ``min_std``); groups with no signal are dropped from GRPO, since their
  advantages are all zero and they only add noise to the normaliser;
- prompts that repeat (the same rendered prompt) are kept once.
Everything is counted, per task and per label, for the shard summary.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class FilterConfig:
    threshold: float
    keep_per_prompt: int
    min_std: float = 1e-6


@dataclass
class FlywheelCounts:
    """What a shard generated and kept; summed across shards by the operator."""

    groups: int = 0
    candidates: int = 0
    parsed: int = 0
    kept: int = 0
    grpo_groups: int = 0
    duplicate_prompts: int = 0
    reward_sum: float = 0.0
    per_task: dict[str, Counter] = field(default_factory=dict)
    kept_labels: Counter = field(default_factory=Counter)

    def add(self, other: "FlywheelCounts") -> None:
        for name in ("groups", "candidates", "parsed", "kept", "grpo_groups", "duplicate_prompts", "reward_sum"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for task, c in other.per_task.items():
            self.per_task.setdefault(task, Counter()).update(c)
        self.kept_labels.update(other.kept_labels)

    def to_dict(self) -> dict:
        return {
            "groups": self.groups,
            "candidates": self.candidates,
            "parsed": self.parsed,
            "kept": self.kept,
            "kept_ratio": self.kept / self.candidates if self.candidates else 0.0,
            "grpo_groups": self.grpo_groups,
            "duplicate_prompts": self.duplicate_prompts,
            "mean_reward": self.reward_sum / self.candidates if self.candidates else None,
            "per_task": {t: dict(c) for t, c in sorted(self.per_task.items())},
            "kept_labels": dict(sorted(self.kept_labels.items())),
        }

    @classmethod
    def from_dict(cls, d: dict) -> "FlywheelCounts":
        c = cls(groups=d["groups"], candidates=d["candidates"], parsed=d["parsed"], kept=d["kept"],
                grpo_groups=d["grpo_groups"], duplicate_prompts=d["duplicate_prompts"])
        c.reward_sum = (d["mean_reward"] or 0.0) * d["candidates"]
        c.per_task = {t: Counter(v) for t, v in d["per_task"].items()}
        c.kept_labels = Counter(d["kept_labels"])
        return c


def kept_indices(record: dict, cfg: FilterConfig) -> list[int]:
    """Indices of the candidates to keep: reward ≥ τ, best first, distinct texts, at most k."""
    order = sorted(range(len(record["candidates"])), key=lambda i: -record["candidates"][i]["reward"]["total"])
    seen, keep = set(), []
    for i in order:
        c = record["candidates"][i]
        text = " ".join(c["text"].split())
        if c["reward"]["total"] < cfg.threshold or text in seen or not text:
            continue
        seen.add(text)
        keep.append(i)
        if len(keep) == cfg.keep_per_prompt:
            break
    return sorted(keep)


def select(records: Iterable[dict], cfg: FilterConfig, counts: FlywheelCounts | None = None) -> list[dict]:
    """Selected records: each input group that has kept candidates or GRPO
    signal, with ``kept`` (indices) and ``grpo`` (bool) added."""
    counts = counts if counts is not None else FlywheelCounts()
    seen_prompts: set[str] = set()
    out = []
    for rec in records:
        task = counts.per_task.setdefault(rec["task"], Counter())
        counts.groups += 1
        task["groups"] += 1
        n = len(rec["candidates"])
        counts.candidates += n
        task["candidates"] += n
        parsed = sum(c["parsed"] for c in rec["candidates"])
        counts.parsed += parsed
        task["parsed"] += parsed
        counts.reward_sum += sum(c["reward"]["total"] for c in rec["candidates"])
        if rec["prompt"] in seen_prompts:
            counts.duplicate_prompts += 1
            continue
        seen_prompts.add(rec["prompt"])
        keep = kept_indices(rec, cfg)
        grpo = rec["reward_std"] >= cfg.min_std
        if not keep and not grpo:
            continue
        counts.kept += len(keep)
        task["kept"] += len(keep)
        counts.grpo_groups += grpo
        task["grpo_groups"] += grpo
        for i in keep:
            counts.kept_labels.update(rec["candidates"][i]["labels"] if rec["task"] != "expression" else rec["reference"])
        out.append({**rec, "kept": keep, "grpo": bool(grpo)})
    return out
