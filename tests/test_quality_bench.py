"""The quality references in bench/quality/ score with the evaluator's own code."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench" / "quality"))


def test_majority_baseline_predicts_the_train_prior_and_scores_it_like_the_evaluator():
    from majority_baseline import majority_report

    from selfemo.data import get_vocab

    vocab = get_vocab("meld")
    train = ["neutral"] * 5 + ["joy"] * 3 + ["anger"]
    test_gold = ["neutral", "joy", "neutral", "anger"]
    label, rep = majority_report(train, ["a", "b", "c", "d"], test_gold, vocab)
    assert label == "neutral"
    # accuracy = the test share of the label; weighted-F1 = that share × F1 of the label,
    # F1 = 2·precision·recall/(p+r) with precision 2/4 and recall 1: 2/3.
    assert rep["accuracy"] == pytest.approx(50.0)
    assert rep["weighted_f1"] == pytest.approx(100 * 0.5 * (2 / 3))
