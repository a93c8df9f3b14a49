"""Does one round of SELF-GRPO raise the reward of the next round's samples?

    .venv/bin/python bench/reward_shift.py --run-config examples/quickstart.yaml --round 1

Takes a finished round r of a run (its checkpoint π_r committed) and the
prompts round r+1 would self-play on — the held-out ones: any prompt round r
already trained on is dropped — and runs the very same self-play (same
prompts, same sampling seed, same engine) twice: with the policy round r
started from (π_{r-1}, the base model for r=1) and with π_r. Prints, for each
policy, the mean total reward of every candidate, the mean alignment reward,
the fraction of answers that parse, per task, and the label distribution of
the recognition answers — a rise that comes only from answering the majority
label shows up there. Nothing is written to the run's store.
"""
from __future__ import annotations

import argparse
import collections
import os
import platform
import time


def _summarise(records: list[dict]) -> dict:
    rows = collections.defaultdict(lambda: {"candidates": 0, "total": 0.0, "alignment": 0.0, "parsed": 0})
    labels = collections.Counter()
    for r in records:
        for c in r["candidates"]:
            for key in ("all", r["task"]):
                row = rows[key]
                row["candidates"] += 1
                row["total"] += c["reward"]["total"]
                row["alignment"] += c["reward"].get("alignment", 0.0)
                row["parsed"] += bool(c["parsed"])
            if r["task"] == "recognition" and c["parsed"]:
                labels.update(c["labels"] or ["(none)"])
    out = {k: {"candidates": v["candidates"], "mean_reward": v["total"] / v["candidates"],
               "mean_alignment": v["alignment"] / v["candidates"], "parsed": v["parsed"] / v["candidates"]}
           for k, v in rows.items()}
    return {"tasks": out, "recognition_labels": dict(labels.most_common())}


def _self_play(run, model_path: str, seeds, dialogues, vocabs, seed: int) -> tuple[list[dict], float]:
    from selfemo.generator.backends import open_backend
    from selfemo.generator.selfplay import SelfPlay, index_dialogues

    backend = open_backend(run.spec.engine.backend, model_path, run.spec.engine, dtype=run.spec.model.dtype, seed=seed)
    try:
        t0 = time.perf_counter()
        records = SelfPlay(backend, run.spec, index_dialogues(dialogues), vocabs).run(seeds, seed)
        return records, time.perf_counter() - t0
    finally:
        backend.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run-config", required=True, help="the run's SelfEmoRun file")
    ap.add_argument("--round", type=int, default=1, help="the finished round r whose checkpoint π_r is compared with π_{r-1}")
    ap.add_argument("--prompts", type=int, default=None, help="at most this many held-out prompts (default: all of round r+1's)")
    ap.add_argument("--seed", type=int, default=1234, help="sampling seed, the same for both policies")
    args = ap.parse_args()

    from selfemo.generator.rollout import load_training_corpora, read_round_groups, shard_seeds
    from selfemo.policy import policy_path
    from selfemo.runfile import load_run

    run = load_run(args.run_config)
    r = args.round
    dialogues, vocabs = load_training_corpora(run)
    seen = {(g["dataset"], g["dialogue_id"], g["turn"], g["task"]) for g in read_round_groups(run, r, selected=False)}
    seeds = [s for s in shard_seeds(run, r + 1, 0, 1, dialogues) if (s.dataset, s.dialogue_id, s.turn, s.task) not in seen]
    seeds = seeds[: args.prompts] if args.prompts else seeds
    print(f"machine: {platform.machine()}, {os.cpu_count()} cpus; run {run.metadata.name}, round {r}; "
          f"{len(seeds)} held-out prompts of round {r + 1} ({len(seen)} groups round {r} trained on excluded), "
          f"G={run.spec.self_play.group_size}, backend {run.spec.engine.backend}")
    results = {}
    for name, path in ((f"pi_{r - 1} (before)", policy_path(run, r)), (f"pi_{r} (after)", policy_path(run, r + 1))):
        records, seconds = _self_play(run, path, seeds, dialogues, vocabs, args.seed)
        results[name] = _summarise(records)
        print(f"{name}: {len(records)} groups in {seconds:.0f} s")

    print(f"\n{'policy':<16} {'task':<14} {'candidates':>10} {'mean reward':>12} {'alignment':>10} {'parsed':>7}")
    for name, res in results.items():
        for task, row in sorted(res["tasks"].items()):
            print(f"{name:<16} {task:<14} {row['candidates']:>10} {row['mean_reward']:>12.3f} "
                  f"{row['mean_alignment']:>10.3f} {row['parsed']:>7.1%}")
    (b, before), (a, after) = results.items()
    delta = after["tasks"]["all"]["mean_reward"] - before["tasks"]["all"]["mean_reward"]
    print(f"\nmean reward, all candidates: {before['tasks']['all']['mean_reward']:.3f} -> "
          f"{after['tasks']['all']['mean_reward']:.3f} ({delta:+.3f})")
    for name, res in results.items():
        print(f"recognition answers of {name}: {res['recognition_labels']}")


if __name__ == "__main__":
    main()
