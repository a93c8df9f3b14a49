"""One generator shard of one round: self-play over the shard's seeds, scored
groups to the store, the flywheel filter beside them.

Store keys (relative to the run root, see docs/trajectories.md):

    round-{r:03d}/work/shard-{i:05d}-of-{n:05d}/chunk-{c:05d}/   groups.jsonl.gz  (committed per chunk)
    round-{r:03d}/trajectories/shard-{i:05d}-of-{n:05d}/        groups.jsonl.gz, summary.json
    round-{r:03d}/selected/shard-{i:05d}-of-{n:05d}/            groups.jsonl.gz, summary.json

Each is an atomic commit (visible only with its `_SUCCESS`). A killed shard
restarts, skips the chunks already committed and regenerates only the rest;
chunk seeds derive from (run seed, round, shard, chunk), so the result is the
same groups an uninterrupted run writes, with none lost or duplicated.
"""
from __future__ import annotations

import gzip
import io
import json
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from selfemo.generator.corpora import load_ref
from selfemo.generator.flywheel import FilterConfig, FlywheelCounts, select
from selfemo.generator.gold import open_gold_play
from selfemo.generator.selfplay import SelfPlay, Seed, derive_seed, index_dialogues, plan_seeds, shard_of
from selfemo.policy import open_run_store, policy_path, run_layout
from selfemo.progress import Progress
from selfemo.spec import Sampling, SelfEmoRun, round_spec
from selfemo.telemetry import GeneratorMetrics

log = logging.getLogger(__name__)
GROUPS = "groups.jsonl.gz"
SUMMARY = "summary.json"


@dataclass(frozen=True)
class ShardKeys:
    """Where one shard's outputs live."""

    round: int
    index: int
    total: int

    @property
    def name(self) -> str:
        return f"shard-{self.index:05d}-of-{self.total:05d}"

    def chunk(self, c: int) -> str:
        return f"round-{self.round:03d}/work/{self.name}/chunk-{c:05d}"

    @property
    def work(self) -> str:
        return f"round-{self.round:03d}/work/{self.name}"

    @property
    def trajectories(self) -> str:
        return f"round-{self.round:03d}/trajectories/{self.name}"

    @property
    def selected(self) -> str:
        return f"round-{self.round:03d}/selected/{self.name}"


def parse_shard(text: str) -> tuple[int, int]:
    """`I/N` → (I, N), 0-based I."""
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard must look like I/N (e.g. 0/4), got {text!r}") from None
    if not (n >= 1 and 0 <= i < n):
        raise ValueError(f"--shard {text}: need 0 <= I < N")
    return i, n


def encode_jsonl_gz(records: Iterable[dict]) -> bytes:
    """Deterministic gzip (mtime 0) of one JSON object per line."""
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as gz:
        for r in records:
            gz.write(json.dumps(r, ensure_ascii=False, sort_keys=True).encode("utf-8") + b"\n")
    return buf.getvalue()


def decode_jsonl_gz(data: bytes) -> list[dict]:
    return [json.loads(line) for line in gzip.decompress(data).splitlines() if line.strip()]


def load_training_corpora(run: SelfEmoRun):
    """Training dialogues and vocabularies of every `datasets.train` entry."""
    dialogues, vocabs = {}, {}
    for ref in run.spec.datasets.train:
        dialogues[ref.name], vocabs[ref.name] = load_ref(ref, "train", seed=run.spec.self_play.seed,
                                                         endpoint_url=run.spec.storage.endpoint or None)
    return dialogues, vocabs


def shard_seeds(run: SelfEmoRun, round_: int, index: int, total: int, dialogues) -> list[Seed]:
    """This shard's seeds: a round-specific sample of the training positions."""
    sp = run.spec.self_play
    every = plan_seeds(dialogues, list(sp.tasks), sp.prompts_per_round, derive_seed(sp.seed, "round", round_),
                       balanced=sp.sampling == Sampling.label_balanced)
    return shard_of(every, index, total)


def rollout_shard(
    run: SelfEmoRun,
    round_: int,
    index: int,
    total: int,
    *,
    chunk_size: int = 32,
    backend=None,
    metrics: GeneratorMetrics | None = None,
    stop_after_chunks: int | None = None,
) -> dict:
    """Generate, commit and filter one shard; returns its summary.

    ``backend`` may be passed in (tests, benchmarks); otherwise it is opened
    from the spec only if there is anything left to generate. A gold shard
    (`selfPlay.source: gold`) never opens or calls one: it writes the gold
    answers of the same seeds (generator/gold.py).
    ``stop_after_chunks`` ends early after committing that many new chunks
    (to exercise resumption).
    """
    run = round_spec(run, round_)  # round 1 of a gold warm-up writes gold answers
    store = open_run_store(run)
    keys = ShardKeys(round_, index, total)
    metrics = metrics or GeneratorMetrics()
    if store.is_committed(keys.selected):
        log.info("%s: round %d already selected, nothing to do", keys.name, round_)
        return json.loads(store.open_committed(keys.selected).get_bytes(SUMMARY))

    if not store.is_committed(keys.trajectories):
        done = _generate_chunks(run, round_, keys, store, chunk_size, backend, metrics, stop_after_chunks)
        if not done:
            return {"complete": False}
    records = decode_jsonl_gz(store.open_committed(keys.trajectories).get_bytes(GROUPS))
    counts = FlywheelCounts()
    cfg = FilterConfig(run.spec.flywheel.reward_threshold, run.spec.flywheel.keep_per_prompt, max(run.spec.training.min_group_std, 1e-6))
    selected = select(records, cfg, counts)
    summary = {"complete": True, "round": round_, "shard": keys.name, **counts.to_dict(),
               "generation": json.loads(store.open_committed(keys.trajectories).get_bytes(SUMMARY))}
    metrics.kept_ratio.set(summary["kept_ratio"])
    with store.commit(keys.selected) as out:
        out.put_bytes(GROUPS, encode_jsonl_gz(selected))
        out.put_bytes(SUMMARY, json.dumps(summary, indent=2, sort_keys=True).encode())
    store.delete(keys.work)  # the chunks live on inside the committed shard
    log.info("%s: %d groups, %d candidates, kept %d (%.1f%%), %d GRPO groups, mean reward %.3f",
             keys.name, summary["groups"], summary["candidates"], summary["kept"], 100 * summary["kept_ratio"],
             summary["grpo_groups"], summary["mean_reward"] or 0.0)
    return summary


def _generate_chunks(run, round_, keys: ShardKeys, store, chunk_size, backend, metrics, stop_after) -> bool:
    dialogues, vocabs = load_training_corpora(run)
    seeds = shard_seeds(run, round_, keys.index, keys.total, dialogues)
    chunks = [seeds[c : c + chunk_size] for c in range(0, len(seeds), chunk_size)]
    pending = [c for c in range(len(chunks)) if not store.is_committed(keys.chunk(c))]
    if len(pending) < len(chunks):
        log.info("%s: resuming, %d of %d chunks already committed", keys.name, len(chunks) - len(pending), len(chunks))
    gold = run.spec.self_play.source == "gold"
    if gold:
        backend = None  # a gold shard asks no model (generator/gold.py)
    owned = backend is None and bool(pending) and not gold
    t0 = time.perf_counter()

    def tokens() -> int:
        return backend.throughput.generated_tokens if backend is not None else 0

    tokens0 = 0
    try:
        if owned:
            from selfemo.generator.backends import open_backend

            backend = open_backend(run.spec.engine.backend, policy_path(run, round_), run.spec.engine,
                                   dtype=run.spec.model.dtype, seed=run.spec.self_play.seed)
        tokens0 = tokens()
        play = None
        if pending:
            play = (open_gold_play(run, index_dialogues(dialogues), vocabs) if gold
                    else SelfPlay(backend, run.spec, index_dialogues(dialogues), vocabs))
        new = 0
        done_seeds = sum(len(chunks[c]) for c in range(len(chunks)) if c not in pending)
        with Progress(f"round {round_} {keys.name}", len(seeds), unit="seeds", initial=done_seeds) as bar:
            for c in pending:
                if stop_after is not None and new >= stop_after:
                    return False
                before = tokens()
                t_chunk = time.perf_counter()
                records = play.run(chunks[c], derive_seed(run.spec.self_play.seed, round_, keys.name, c))
                with store.commit(keys.chunk(c)) as out:
                    out.put_bytes(GROUPS, encode_jsonl_gz(records))
                new += 1
                _observe(metrics, records, tokens() - before, time.perf_counter() - t_chunk)
                bar.update(len(chunks[c]))
    finally:
        if owned and backend is not None:
            backend.close()
    records = [r for c in range(len(chunks)) for r in decode_jsonl_gz(store.open_committed(keys.chunk(c)).get_bytes(GROUPS))]
    gen = {
        "seeds": len(seeds),
        "chunks": len(chunks),
        "chunks_generated_now": len(pending),
        "groups": len(records),
        "source": run.spec.self_play.source,
        "backend": "gold" if gold else getattr(backend, "name", None),
        "seconds": round(time.perf_counter() - t0, 3),
        "tokens": tokens() - tokens0,
    }
    with store.commit(keys.trajectories) as out:
        out.put_bytes(GROUPS, encode_jsonl_gz(records))
        out.put_bytes(SUMMARY, json.dumps(gen, indent=2, sort_keys=True).encode())
    return True


def _observe(metrics: GeneratorMetrics, records: Sequence[dict], tokens: int, seconds: float) -> None:
    for r in records:
        metrics.prompts.labels(task=r["task"]).inc()
        for c in r["candidates"]:
            metrics.reward.observe(c["reward"]["total"])
    metrics.tokens.inc(tokens)
    metrics.tokens_per_second.set(tokens / seconds if seconds > 0 else 0.0)
    metrics.chunks.inc()


def read_round_groups(run: SelfEmoRun, round_: int, *, selected: bool = True) -> list[dict]:
    """Every committed shard's groups of a round (what the trainer consumes)."""
    store = open_run_store(run)
    layout = run_layout(run)
    base = layout.selected(round_) if selected else layout.trajectories(round_)
    shards = sorted({k.split("/")[2] for k in store.list(base + "/") if k.endswith("/_SUCCESS")})
    out = []
    for name in shards:
        out += decode_jsonl_gz(store.open_committed(f"{base}/{name}").get_bytes(GROUPS))
    return out
