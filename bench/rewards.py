"""Reward throughput: score 1M candidate/gold pairs of K=7 labels.

    .venv/bin/python bench/rewards.py [--pairs 1000000]

Compares, in the same run, our batched numpy scorer (`selfemo.rewards`) with
the obvious per-pair Python loop over label sets (what a reward function in a
typical RL framework does per sample), and prints the ratio. The goal of
issue 2 is "1M pairs well under a second" for the full total reward
(alignment + group consistency + format) on groups of G=8.
"""
from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np

from selfemo.rewards import RewardWeights, score_groups, smoothed_iou, smoothed_iou_sets

K, G = 7, 8


def _best_of(fn, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=1_000_000)
    ap.add_argument("--loop-pairs", type=int, default=200_000, help="pairs for the slow Python loop (rate is extrapolated per pair)")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    n = args.pairs
    preds = (rng.random((n // G, G, K)) < 0.25).astype(np.float32)
    gold = (rng.random((n // G, K)) < 0.2).astype(np.float32)
    parsed = rng.random((n // G, G)) < 0.95
    flat_p, flat_g = preds.reshape(-1, K), np.repeat(gold, G, axis=0)

    t_siou = _best_of(lambda: smoothed_iou(flat_p, flat_g, 0.1))
    t_total = _best_of(lambda: score_groups(preds, gold, parsed, RewardWeights(), 0.1))

    labels = [f"l{k}" for k in range(K)]
    m = min(args.loop_pairs, n)
    p_sets = [{labels[k] for k in np.flatnonzero(row)} for row in flat_p[:m]]
    g_sets = [{labels[k] for k in np.flatnonzero(row)} for row in flat_g[:m]]
    t_loop = _best_of(lambda: [smoothed_iou_sets(p, g, 0.1) for p, g in zip(p_sets, g_sets)], repeat=1) * (n / m)

    print(f"machine: {platform.machine()} {os.cpu_count()} cpus, numpy {np.__version__}, python {platform.python_version()}")
    print(f"pairs: {n:,} (K={K}, G={G})")
    print(f"{'scorer':<44}{'seconds':>10}{'Mpairs/s':>12}")
    for name, t in (
        ("numpy sIoU (alignment only)", t_siou),
        ("numpy total: alignment+consistency+format", t_total),
        ("python loop over sets, sIoU only (peer)", t_loop),
    ):
        print(f"{name:<44}{t:>10.3f}{n / t / 1e6:>12.1f}")
    print(f"ratio numpy sIoU / python loop: {t_loop / t_siou:.0f}x faster")
    print(f"ratio numpy total / python loop: {t_loop / t_total:.0f}x faster")
    print(f"goal (1M pairs total reward < 1 s): {'met' if t_total * 1e6 / n < 1.0 else 'NOT met'}")


if __name__ == "__main__":
    main()
