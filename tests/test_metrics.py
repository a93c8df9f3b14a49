"""Metrics: equal to scikit-learn's on random cases, and the report's parts."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import accuracy_score, confusion_matrix as sk_confusion, f1_score

from selfemo.metrics import NO_LABEL, accuracy, classification_report, confusion_matrix, weighted_f1


@st.composite
def gold_pred(draw):
    k = draw(st.integers(2, 9))
    n = draw(st.integers(1, 200))
    gold = draw(st.lists(st.integers(0, k - 1), min_size=n, max_size=n))
    pred = draw(st.lists(st.integers(NO_LABEL, k - 1), min_size=n, max_size=n))
    return k, gold, pred


@settings(max_examples=300)
@given(gold_pred())
def test_weighted_f1_equals_sklearn(case):
    k, gold, pred = case
    ours = weighted_f1(gold, pred, k)
    theirs = f1_score(gold, pred, labels=list(range(k)), average="weighted", zero_division=0)
    assert ours == pytest.approx(theirs, abs=1e-9)
    assert accuracy(gold, pred) == pytest.approx(accuracy_score(gold, pred))


@given(gold_pred())
def test_confusion_matrix_equals_sklearn(case):
    k, gold, pred = case
    ours = confusion_matrix(gold, pred, k)
    theirs = sk_confusion(gold, pred, labels=list(range(k)) + [NO_LABEL])
    assert (ours == theirs[:k]).all()


def test_report_parts():
    rep = classification_report([0, 0, 1, 1, 2], [0, 1, 1, 1, NO_LABEL], ["joy", "anger", "fear"])
    assert rep.n == 5 and rep.unparseable == 1
    assert rep.accuracy == pytest.approx(0.6)
    assert rep.per_class["joy"] == {"precision": 1.0, "recall": 0.5, "f1": pytest.approx(2 / 3), "support": 2}
    assert rep.per_class["fear"]["f1"] == 0.0
    assert rep.weighted_f1 == pytest.approx((2 * 2 / 3 + 2 * 0.8) / 5)
    assert rep.confusion == [[1, 1, 0, 0], [0, 2, 0, 0], [0, 0, 0, 1]]
    assert rep.to_dict()["labels"] == ["joy", "anger", "fear"]


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="length"):
        weighted_f1([0, 1], [0], 2)
    with pytest.raises(ValueError, match="gold"):
        weighted_f1([0, 5], [0, 1], 2)
    with pytest.raises(ValueError, match="predictions"):
        weighted_f1([0, 1], [0, 7], 2)
    assert weighted_f1([], [], 3) == 0.0 and accuracy([], []) == 0.0


def test_most_predicted_names_the_label_and_flags_a_collapse():
    from selfemo.metrics import most_predicted

    # 10 utterances, gold 4 joy / 3 anger / 3 fear; 9 answered `joy`, 1 with no label
    rep = classification_report([0] * 4 + [1] * 3 + [2] * 3, [0] * 9 + [NO_LABEL], ["joy", "anger", "fear"]).to_dict()
    top = most_predicted(rep)
    assert (top.label, top.count, top.n) == ("joy", 9, 10)
    assert top.share == pytest.approx(0.9) and top.collapsed
    spread = most_predicted(classification_report([0, 1, 2, 2], [0, 1, 2, 2], ["joy", "anger", "fear"]).to_dict())
    assert (spread.label, spread.count, spread.collapsed) == ("fear", 2, False)


def test_batch_calibration_divides_out_the_prior_every_utterance_shares():
    """Raw argmax answers label 0 for both utterances; the second one leans to
    label 1 more than the average does, and calibration follows that lean."""
    from selfemo.metrics import batch_calibrate

    scores = np.log([[0.9, 0.1], [0.6, 0.4]]) - 5.0  # answer log-likelihoods: unnormalised over the labels
    assert np.argmax(scores, axis=1).tolist() == [0, 0]
    calibrated = batch_calibrate(scores)
    assert np.argmax(calibrated, axis=1).tolist() == [0, 1]
    assert np.exp(calibrated) == pytest.approx(np.array([[0.9, 0.1], [0.6, 0.4]]) / [0.75, 0.25])
    shifted = scores + np.array([[3.0], [-2.0]])  # a per-utterance constant changes nothing
    assert batch_calibrate(shifted) == pytest.approx(calibrated)
    for bad in (np.zeros((0, 3)), np.zeros(3)):
        with pytest.raises(ValueError, match="utterances, labels"):
            batch_calibrate(bad)
