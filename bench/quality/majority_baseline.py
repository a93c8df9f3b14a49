"""The floors every condition must clear: always answer the train split's most
frequent label, and answer a uniformly random label.

    .venv/bin/python bench/quality/majority_baseline.py [--out docs/results/majority-class]
                                                        [--random-out docs/results/uniform-random]

A model that learns only a corpus's label prior (as SFT on a few hundred gold
answers does here: docs/results.md) scores exactly this, so a condition is
learning the *task* only where it beats this row. Per corpus the label is the
most frequent first gold label of the FULL train split; it is scored on the
FULL test split with the evaluator's own code
(`selfemo.generator.evaluate.report_from_predictions`). Writes
`{out}/metrics.json` (the evaluator's layout) and prints a table. Seconds, no model.

The uniformly random answer (mean over RANDOM_DRAWS seeded draws) is the floor
for *batch-calibrated* scores (`selfemo.metrics.batch_calibrate`): calibration
spreads the answers over all labels, so a model that knows nothing about the
utterances scores about this there, not the majority row.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from embedding_baseline import CORPORA, rows  # noqa: E402  (same corpora, same utterance rows)


def majority_report(train_gold: list[str], test_ids: list[str], test_gold: list[str], vocab) -> tuple[str, dict]:
    """(the train split's most frequent label, the evaluator's report of always predicting it)."""
    from selfemo.generator.evaluate import report_from_predictions

    label = Counter(train_gold).most_common(1)[0][0]
    preds = [{"id": i, "gold": g, "pred": label} for i, g in zip(test_ids, test_gold)]
    return label, report_from_predictions(preds, vocab)


RANDOM_DRAWS = 100


def uniform_random_report(test_ids: list[str], test_gold: list[str], vocab, *, draws: int = RANDOM_DRAWS, seed: int = 0) -> dict:
    """The evaluator's weighted-F1 and accuracy of a uniformly random label, averaged over ``draws`` seeded draws."""
    import numpy as np

    from selfemo.generator.evaluate import report_from_predictions

    rng = np.random.default_rng(seed)
    reports = []
    for _ in range(draws):
        picks = rng.integers(len(vocab.labels), size=len(test_gold))
        reports.append(report_from_predictions([{"id": i, "gold": g, "pred": vocab.labels[k]}
                                                for i, g, k in zip(test_ids, test_gold, picks)], vocab))
    return {k: float(np.mean([r[k] for r in reports])) for k in ("weighted_f1", "accuracy")} | {"draws": draws, "seed": seed}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="selfemo-runs/quality/majority-class")
    ap.add_argument("--random-out", default="selfemo-runs/quality/uniform-random")
    ap.add_argument("--data-dir", default=os.environ.get("SELFEMO_ERC_DIR", "../shared/erc"))
    args = ap.parse_args()

    from selfemo.data import get_vocab, load_dialogues

    per, labels, rand = {}, {}, {}
    for name, fmt in CORPORA:
        path = os.path.join(args.data_dir, name)
        *_, train_gold = rows(load_dialogues(fmt, path, splits=["train"]))
        test_ids, _, _, test_gold = rows(load_dialogues(fmt, path, splits=["test"]))
        labels[name], per[name] = majority_report(train_gold, test_ids, test_gold, get_vocab(name))
        rand[name] = uniform_random_report(test_ids, test_gold, get_vocab(name))
    for name, _ in CORPORA:
        print(f"{name:<10} always {labels[name]!r:<14} W-F1 {per[name]['weighted_f1']:6.2f}  acc {per[name]['accuracy']:6.2f}")
    _write_and_print_mean(Path(args.out), per, predicted_label=labels)
    for name, _ in CORPORA:
        print(f"{name:<10} {'uniformly random':<21} W-F1 {rand[name]['weighted_f1']:6.2f}  acc {rand[name]['accuracy']:6.2f}")
    _write_and_print_mean(Path(args.random_out), rand)


def _write_and_print_mean(out: Path, per: dict, **extra) -> None:
    """`{out}/metrics.json` in the evaluator's layout (per dataset and the mean), and the mean's table line."""
    mean = {k: sum(per[n][k] for n, _ in CORPORA) / len(CORPORA) for k in ("weighted_f1", "accuracy")}
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps({"datasets": per, "mean": mean, **extra}, indent=1, sort_keys=True) + "\n")
    print(f"{'mean':<10} {'':<21} W-F1 {mean['weighted_f1']:6.2f}  acc {mean['accuracy']:6.2f}   ({out / 'metrics.json'})")


if __name__ == "__main__":
    main()
