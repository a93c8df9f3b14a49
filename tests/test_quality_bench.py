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


def test_uniform_random_reference_averages_seeded_draws_of_every_label():
    from majority_baseline import uniform_random_report

    from selfemo.data import get_vocab

    vocab = get_vocab("meld")  # 7 labels
    gold = ["neutral"] * 600 + ["joy"] * 100
    ids = [str(i) for i in range(len(gold))]
    rep = uniform_random_report(ids, gold, vocab, draws=20)
    assert rep["accuracy"] == pytest.approx(100 / 7, abs=1.0)  # a random label is right one time in seven
    assert rep == uniform_random_report(ids, gold, vocab, draws=20)  # seeded
    assert rep != uniform_random_report(ids, gold, vocab, draws=20, seed=1)


def test_results_page_table_is_the_one_generated_from_the_committed_metrics():
    """docs/results.md's numbers are traceable: the table equals what the metrics files give."""
    from results_table import PAGE, render_table, replace_table

    page = PAGE.read_text()
    assert replace_table(page, render_table()) == page, "run bench/quality/results_table.py"


def test_a_results_row_carries_the_file_numbers_or_says_not_run():
    from results_table import row, seed_spread

    doc = {"datasets": {c: {"weighted_f1": 10.0 + i, "accuracy": 20.0 + i} for i, c in enumerate(("meld", "iemocap", "emorynlp"))},
           "mean": {"weighted_f1": 11.0, "accuracy": 21.0}}
    assert row("x", "x/metrics.json", doc) == (
        "| x | 10.00 / 20.00 | 11.00 / 21.00 | 12.00 / 22.00 | **11.00** / 21.00 | — | [`x/metrics.json`](results/x/metrics.json) |")
    doc["batch_calibrated"] = {"mean": {"weighted_f1": 17.5, "accuracy": 18.0}}
    assert row("x", "x/metrics.json", doc).endswith("| **11.00** / 21.00 | 17.50 | [`x/metrics.json`](results/x/metrics.json) |")
    assert "not run" in row("x", "x/metrics.json", None)
    assert seed_spread([19.70, 22.31]) == "21.00 ± 1.30 (half the range of 2 seeds)"
    assert seed_spread([5.0]) == "one seed"
    assert seed_spread([]) == "not run"
