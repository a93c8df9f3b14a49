"""docs/results.md's table, generated from the metrics.json files committed under docs/results/.

    .venv/bin/python bench/quality/results_table.py           # rewrite the table in docs/results.md
    .venv/bin/python bench/quality/results_table.py --check   # exit 1 if the page differs from the files

Why generated: the issue asks that every number be traceable to a run's
metrics.json, and a hand-copied table drifts. Each row names the file its
numbers come from (written by `selfemo report`, which copies every round's
`eval/metrics.json` to `OUT/metrics/round-RRR.json`); a condition whose
file is missing shows "not run". Rows whose run directory is gone (earlier
machines) carry their numbers as text and say so.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "docs" / "results"
PAGE = REPO / "docs" / "results.md"
CORPORA = ("meld", "iemocap", "emorynlp")

# (label, metrics file under docs/results/)
ROWS = [
    ("reference: always the train split's most frequent label", "majority-class/metrics.json"),
    ("reference: a uniformly random label (mean of 100 seeded draws; the floor for calibrated scores)",
     "uniform-random/metrics.json"),
    ("reference: MiniLM-L6 embedding of the utterance + logistic regression", "embedding-lr/utterance/metrics.json"),
    ("reference: the same with the previous turn's embedding", "embedding-lr/utterance+previous/metrics.json"),
    ("1. zero-shot SmolLM2-135M-Instruct", "zero-shot/metrics/round-000.json"),
    ("2. SFT on 240 gold recognition answers, seed 0", "sft-gold/metrics/round-001.json"),
    ("2. the same, seed 1", "sft-gold-s1/metrics/round-001.json"),
    ("2b. SFT on 240 gold answers, label-balanced prompts (`selfPlay.sampling: label-balanced`), seed 0",
     "sft-gold-balanced/metrics/round-001.json"),
    ("3. SELF-EMO, seed 0, round 1", "self-emo/metrics/round-001.json"),
    ("3. SELF-EMO, seed 0, round 2 (final)", "self-emo/metrics/round-002.json"),
    ("3. SELF-EMO, seed 1, round 1", "self-emo-s1/metrics/round-001.json"),
    ("3. SELF-EMO, seed 1, round 2 (final)", "self-emo-s1/metrics/round-002.json"),
    ("3L. SELF-EMO with label answers (`selfPlay.answers: labels`), seed 0, round 1", "self-emo-labels/metrics/round-001.json"),
    ("3L. SELF-EMO with label answers, seed 0, round 2 (final)", "self-emo-labels/metrics/round-002.json"),
    ("3L. SELF-EMO with label answers, seed 1, round 1", "self-emo-labels-s1/metrics/round-001.json"),
    ("3L. SELF-EMO with label answers, seed 1, round 2 (final)", "self-emo-labels-s1/metrics/round-002.json"),
    ("3L-dc. SELF-EMO with label answers and dual-clip PPO (`training.dualClip: 3`), seed 0, round 1",
     "self-emo-labels-dualclip/metrics/round-001.json"),
    ("3L-dc. the same, seed 0, round 2 (final)", "self-emo-labels-dualclip/metrics/round-002.json"),
    ("3L-dc. the same, seed 1, round 1", "self-emo-labels-dualclip-s1/metrics/round-001.json"),
    ("3L-dc. the same, seed 1, round 2 (final)", "self-emo-labels-dualclip-s1/metrics/round-002.json"),
    ("2-3x. SFT on 720 gold answers (three times condition 2's budget: 45 steps), seed 0", "sft-gold-3x/metrics/round-001.json"),
    ("2-3x. the same, seed 1", "sft-gold-3x-s1/metrics/round-001.json"),
    ("3L-dc-3x. 3L-dc with 96 self-play prompts per round (three times the budget), seed 0, round 1",
     "self-emo-labels-dualclip-3x/metrics/round-001.json"),
    ("3L-dc-3x. the same, seed 0, round 2 (final)", "self-emo-labels-dualclip-3x/metrics/round-002.json"),
    ("3L-dc-3x. the same, seed 1, round 1", "self-emo-labels-dualclip-3x-s1/metrics/round-001.json"),
    ("3L-dc-3x. the same, seed 1, round 2 (final)", "self-emo-labels-dualclip-3x-s1/metrics/round-002.json"),
    ("3L-dc-g8. 3L-dc with eight candidates per prompt (`selfPlay.groupSize: 8`), seed 0, round 1",
     "self-emo-labels-dualclip-g8/metrics/round-001.json"),
    ("3L-dc-g8. the same, seed 0, round 2 (final)", "self-emo-labels-dualclip-g8/metrics/round-002.json"),
    ("3L-dc-cal. 3L-dc with calibrated label sampling (`selfPlay.labelSampling: calibrated`), seed 0, round 1",
     "self-emo-labels-dualclip-cal/metrics/round-001.json"),
    ("3L-dc-cal. the same, seed 0, round 2 (final)", "self-emo-labels-dualclip-cal/metrics/round-002.json"),
    ("3L-dc-cal. the same, seed 1, round 1", "self-emo-labels-dualclip-cal-s1/metrics/round-001.json"),
    ("3L-dc-cal. the same, seed 1, round 2 (final)", "self-emo-labels-dualclip-cal-s1/metrics/round-002.json"),
    ("3L-dc-gw. 3L-dc after a gold warm-up (`flywheel.goldWarmup: 128`), seed 0, round 1: the warm-up, SFT on 128 gold answers",
     "self-emo-labels-dualclip-gw/metrics/round-001.json"),
    ("3L-dc-gw. the same, seed 0, round 2 (final): one flywheel round from the warm-up",
     "self-emo-labels-dualclip-gw/metrics/round-002.json"),
    ("3L-dc-gw. the same, seed 1, round 1 (the warm-up)", "self-emo-labels-dualclip-gw-s1/metrics/round-001.json"),
    ("3L-dc-gw. the same, seed 1, round 2 (final)", "self-emo-labels-dualclip-gw-s1/metrics/round-002.json"),
    ("3L-dc-gw-klprev. 3L-dc-gw with the warm-up as KL reference (`training.klReference: previous`), seed 0, "
     "round 2 (final; round 1 is 3L-dc-gw's, copied)", "self-emo-labels-dualclip-gw-klprev/metrics/round-002.json"),
    ("3L-dc-gw-klprev. the same, seed 1, round 2 (final)", "self-emo-labels-dualclip-gw-klprev-s1/metrics/round-002.json"),
    ("3L-dc-gw-klprev-r3. the same with a second flywheel round (`flywheel.rounds: 3`), seed 0, round 3 (final; "
     "rounds 1-2 are 3L-dc-gw-klprev's, copied)", "self-emo-labels-dualclip-gw-klprev-r3/metrics/round-003.json"),
    ("3L-dc-gw-klprev-r3. the same, seed 1, round 3 (final)", "self-emo-labels-dualclip-gw-klprev-r3-s1/metrics/round-003.json"),
    ("3L-dc-gw-klprev-lr. 3L-dc-gw-klprev with SELF-GRPO at 2e-6 (`training.grpoLearningRate`), seed 0, round 2 (final; "
     "round 1 is 3L-dc-gw's, copied)", "self-emo-labels-dualclip-gw-klprev-lr/metrics/round-002.json"),
    ("3L-dc-gw-klprev-lr. the same, seed 1, round 2 (final)", "self-emo-labels-dualclip-gw-klprev-lr-s1/metrics/round-002.json"),
    ("3L-dc-gw-klprev-lr-nosft. the same without the flywheel round's SFT on its kept answers (`training.sftWarmup: "
     "false`), seed 0, round 2 (final; round 1 copied)", "self-emo-labels-dc-gw-klprev-lr-nosft/metrics/round-002.json"),
    ("3L-dc-gw-klprev-lr-nosft. the same, seed 1, round 2 (final)",
     "self-emo-labels-dc-gw-klprev-lr-nosft-s1/metrics/round-002.json"),
    ("3L-bal. SELF-EMO with label answers, label-balanced self-play prompts, seed 0, round 1 (stopped there)",
     "self-emo-labels-balanced/metrics/round-001.json"),
    ("4. SELF-EMO with recognition only, seed 0, round 1", "recognition-only/metrics/round-001.json"),
    ("4. SELF-EMO with recognition only, seed 0, round 2 (final)", "recognition-only/metrics/round-002.json"),
    ("5. SELF-EMO without group consistency, seed 0, round 1", "no-consistency/metrics/round-001.json"),
    ("5. SELF-EMO without group consistency, seed 0, round 2 (final)", "no-consistency/metrics/round-002.json"),
    ("4L. SELF-EMO with recognition only, label answers, seed 0, round 1", "recognition-only-labels/metrics/round-001.json"),
    ("4L. the same, round 2 (final)", "recognition-only-labels/metrics/round-002.json"),
    ("5L. SELF-EMO without group consistency, label answers, seed 0, round 1", "no-consistency-labels/metrics/round-001.json"),
    ("5L. the same, round 2 (final)", "no-consistency-labels/metrics/round-002.json"),
    ("quickstart, `examples/quickstart.yaml` (40-utterance test slices), round 0", "quickstart/metrics/round-000.json"),
    ("quickstart, round 1 (label answers, `selfPlay.answers: labels`, the file since 2026-12-07)", "quickstart/metrics/round-001.json"),
    ("quickstart, round 1 with free-text answers (the file before 2026-12-07)", "quickstart-free/metrics/round-001.json"),
]
SEEDS = [
    ("2. SFT, mean of seeds", ["sft-gold/metrics/round-001.json", "sft-gold-s1/metrics/round-001.json"]),
    ("3. SELF-EMO final round, mean of seeds", ["self-emo/metrics/round-002.json", "self-emo-s1/metrics/round-002.json"]),
    ("3L. SELF-EMO with label answers, final round, mean of seeds",
     ["self-emo-labels/metrics/round-002.json", "self-emo-labels-s1/metrics/round-002.json"]),
    ("3L-dc. SELF-EMO with label answers and dual-clip PPO, final round, mean of seeds",
     ["self-emo-labels-dualclip/metrics/round-002.json", "self-emo-labels-dualclip-s1/metrics/round-002.json"]),
    ("3L-dc-cal. SELF-EMO (3L-dc) with calibrated label sampling, final round, mean of seeds",
     ["self-emo-labels-dualclip-cal/metrics/round-002.json", "self-emo-labels-dualclip-cal-s1/metrics/round-002.json"]),
    ("3L-dc-gw. SELF-EMO (3L-dc) after a gold warm-up, round 1 (the warm-up: SFT on 128 gold answers), mean of seeds",
     ["self-emo-labels-dualclip-gw/metrics/round-001.json", "self-emo-labels-dualclip-gw-s1/metrics/round-001.json"]),
    ("3L-dc-gw. the same, final round (one flywheel round after the warm-up), mean of seeds",
     ["self-emo-labels-dualclip-gw/metrics/round-002.json", "self-emo-labels-dualclip-gw-s1/metrics/round-002.json"]),
    ("3L-dc-gw-klprev. the same with the warm-up as KL reference, final round (round 2), mean of seeds",
     ["self-emo-labels-dualclip-gw-klprev/metrics/round-002.json", "self-emo-labels-dualclip-gw-klprev-s1/metrics/round-002.json"]),
    ("3L-dc-gw-klprev-r3. the same with a second flywheel round, final round (round 3), mean of seeds",
     ["self-emo-labels-dualclip-gw-klprev-r3/metrics/round-003.json",
      "self-emo-labels-dualclip-gw-klprev-r3-s1/metrics/round-003.json"]),
    ("3L-dc-gw-klprev-lr. the same with SELF-GRPO at 2e-6, final round (round 2), mean of seeds",
     ["self-emo-labels-dualclip-gw-klprev-lr/metrics/round-002.json",
      "self-emo-labels-dualclip-gw-klprev-lr-s1/metrics/round-002.json"]),
    ("3L-dc-gw-klprev-lr-nosft. the same without the round's SFT on its kept answers, final round (round 2), mean of seeds",
     ["self-emo-labels-dc-gw-klprev-lr-nosft/metrics/round-002.json",
      "self-emo-labels-dc-gw-klprev-lr-nosft-s1/metrics/round-002.json"]),
    ("2-3x. SFT at three times the budget, mean of seeds", ["sft-gold-3x/metrics/round-001.json", "sft-gold-3x-s1/metrics/round-001.json"]),
    ("3L-dc-3x. SELF-EMO (3L-dc) at three times the budget, final round, mean of seeds",
     ["self-emo-labels-dualclip-3x/metrics/round-002.json", "self-emo-labels-dualclip-3x-s1/metrics/round-002.json"]),
]
TEXT_ROWS = [
    "| 2. (earlier) SFT on 320 gold answers, 20 steps, seed 0, 2026-11-23 (unequal budget; its metrics.json "
    "was on a machine since gone) | 33.78 / 45.67 | 17.84 / 26.80 | 6.25 / 11.28 | 19.29 | — | — |",
    "| for scale: SELF-EMO paper (Qwen3-8B) | 70.3 | 64.81 | 47.61 | 60.91 | — | arXiv 2604.18003 |",
]
HEADER = ["| condition | MELD | IEMOCAP | EmoryNLP | mean W-F1 / acc | calibrated mean W-F1 | metrics.json |",
          "|---|---:|---:|---:|---:|---:|---|"]


def _load(rel: str) -> dict | None:
    path = RESULTS / rel
    return json.loads(path.read_text()) if path.exists() else None


def row(label: str, rel: str, doc: dict | None) -> str:
    """One condition: W-F1 / accuracy per corpus and the mean, the batch-calibrated
    mean W-F1 ("—" for files without label scores: the references), or "not run"."""
    if doc is None:
        return f"| {label} | not run | | | | | |"
    cells = [f"{doc['datasets'][c]['weighted_f1']:.2f} / {doc['datasets'][c]['accuracy']:.2f}" for c in CORPORA]
    cells.append(f"**{doc['mean']['weighted_f1']:.2f}** / {doc['mean']['accuracy']:.2f}")
    cal = calibrated(doc)
    cells.append("—" if cal is None else f"{cal:.2f}")
    return f"| {label} | " + " | ".join(cells) + f" | [`{rel}`](results/{rel}) |"


def calibrated(doc: dict) -> float | None:
    """The batch-calibrated mean W-F1 `selfemo report` put in the file, if any."""
    cal = doc.get("batch_calibrated")
    return None if cal is None else cal["mean"]["weighted_f1"]


def seed_spread(values: list[float]) -> str:
    """Mean ± half the range: with two seeds, the honest spread to quote."""
    if not values:  # no seed's file yet: a row planned before its runs finish
        return "not run"
    if len(values) < 2:
        return "one seed"
    half = (max(values) - min(values)) / 2
    return f"{statistics.mean(values):.2f} ± {half:.2f} (half the range of {len(values)} seeds)"


def render_table() -> str:
    lines = list(HEADER)
    lines += [row(label, rel, _load(rel)) for label, rel in ROWS]
    for label, rels in SEEDS:
        docs = [d for d in map(_load, rels) if d is not None]
        raw = seed_spread([d["mean"]["weighted_f1"] for d in docs])
        cal = seed_spread([c for c in map(calibrated, docs) if c is not None])
        lines.append(f"| {label} | | | | {raw} | {cal} | |")
    lines += TEXT_ROWS
    return "\n".join(lines)


def replace_table(page: str, table: str) -> str:
    """The page with its results table (from the header line to the next blank line) replaced."""
    start = page.index(HEADER[0])
    end = page.index("\n\n", start)
    return page[:start] + table + page[end:]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="exit 1 if docs/results.md's table differs from the files")
    args = ap.parse_args()
    page = PAGE.read_text()
    new = replace_table(page, render_table())
    if args.check:
        if new != page:
            sys.exit("docs/results.md's table differs from docs/results/*/metrics: run bench/quality/results_table.py")
        print("docs/results.md's table matches the metrics files")
        return
    PAGE.write_text(new)
    print(render_table())


if __name__ == "__main__":
    main()
