"""`selfemo selfcheck`: prove on this machine that the reward and metric code
computes what DESIGN.md says, on worked examples and random invariants, before
any GPU hour is spent on it. Exits non-zero on the first wrong number.
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from selfemo.metrics import classification_report, weighted_f1
from selfemo.rewards import RewardWeights, score_groups, smoothed_iou, smoothed_iou_sets


def _close(name: str, got: float, want: float, tol: float = 1e-4) -> tuple[str, bool]:
    ok = abs(got - want) <= tol
    return f"{name}: got {got:.4f}, expected {want:.4f}", ok


def checks(seed: int = 0) -> list[tuple[str, bool]]:
    """Every self-check as (description, passed)."""
    out = [
        _close("sIoU({joy}, {joy, surprise}), α=0.1", smoothed_iou_sets({"joy"}, {"joy", "surprise"}, 0.1), 1.1 / 2.1),
        _close("sIoU(∅, ∅) = 1", smoothed_iou_sets(set(), set(), 0.1), 1.0),
        _close("sIoU({anger}, {joy}), α=0.1", smoothed_iou_sets({"anger"}, {"joy"}, 0.1), 0.1 / 2.1),
    ]
    # vote = [.5, .5]; sIoU([1, 0], vote) = (.5 + .1) / (1.5 + .1) = .375
    r = score_groups(np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([1.0, 0.0]), np.array([True, True]), RewardWeights())
    out.append(_close("total reward, worked example (candidate 1)", float(r.total[0]), 1.0 + 0.5 * (0.6 / 1.6) + 0.2))
    # weighted-F1 by hand: gold [0,0,1,1,2], pred [0,1,1,1,-1]
    # class 0: P=1, R=.5, F1=.6667 (support 2); class 1: P=.6667, R=1, F1=.8 (2); class 2: F1=0 (1)
    out.append(_close("weighted-F1, worked example", weighted_f1([0, 0, 1, 1, 2], [0, 1, 1, 1, -1], 3), (2 * 2 / 3 + 2 * 0.8) / 5))
    rep = classification_report([0, 0, 1, 1, 2], [0, 1, 1, 1, -1], ["a", "b", "c"])
    out.append((f"report: accuracy {rep.accuracy:.2f}, unparseable {rep.unparseable}", rep.accuracy == 0.6 and rep.unparseable == 1))
    rng = np.random.default_rng(seed)
    p, g = rng.random((10000, 7)), rng.random((10000, 7))
    s = smoothed_iou(p, g, 0.1)
    out.append(("sIoU of 10k random soft vectors lies in (0, 1]", bool((s > 0).all() and (s <= 1 + 1e-6).all())))
    out.append(("sIoU is symmetric", bool(np.allclose(s, smoothed_iou(g, p, 0.1)))))
    out.append(("sIoU(x, x) = 1", bool(np.allclose(smoothed_iou(p, p, 0.1), 1.0))))
    return out


def _run(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    results = checks(args.seed)
    for text, ok in results:
        print(f"  {'ok  ' if ok else 'FAIL'} {text}")
    failed = sum(not ok for _, ok in results)
    print(f"selfcheck: {len(results) - failed} passed, {failed} failed in {time.perf_counter() - t0:.2f}s")
    return 1 if failed else 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("selfcheck", help="check the reward and metric implementations on worked examples")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_run)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(_run(argparse.Namespace(seed=0)))
