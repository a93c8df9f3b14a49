"""Rewards: worked examples and properties of the smoothed IoU."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from selfemo.rewards import (
    RewardWeights,
    consistency_reward,
    format_reward,
    score_groups,
    sets_to_matrix,
    smoothed_iou,
    smoothed_iou_sets,
)

LABELS = ["neutral", "joy", "sadness", "anger", "surprise", "fear", "disgust"]
label_sets = st.sets(st.sampled_from(LABELS))
alphas = st.floats(min_value=1e-3, max_value=5.0)
soft = arrays(np.float32, (7,), elements=st.floats(0.0, 1.0, width=32))


def test_worked_examples():
    assert smoothed_iou_sets({"joy"}, {"joy", "surprise"}, 0.1) == pytest.approx(1.1 / 2.1)
    assert smoothed_iou_sets(set(), set(), 0.1) == 1.0
    assert smoothed_iou_sets(set(), {"joy"}, 0.1) == pytest.approx(0.1 / 1.1)
    assert smoothed_iou_sets({"anger"}, {"joy"}, 0.1) == pytest.approx(0.1 / 2.1)


def test_alpha_must_be_positive():
    with pytest.raises(ValueError, match="alpha"):
        smoothed_iou_sets({"joy"}, {"joy"}, 0.0)
    with pytest.raises(ValueError, match="alpha"):
        smoothed_iou(np.ones(3), np.ones(3), -1.0)


@given(label_sets, label_sets, alphas)
def test_sets_and_vectors_agree(p, g, alpha):
    m = sets_to_matrix([p, g], LABELS)
    assert float(smoothed_iou(m[0], m[1], alpha)) == pytest.approx(smoothed_iou_sets(p, g, alpha), rel=1e-5)


@given(soft, soft, alphas)
def test_in_unit_interval_and_symmetric(p, g, alpha):
    s = float(smoothed_iou(p, g, alpha))
    assert 0.0 < s <= 1.0 + 1e-6
    assert s == pytest.approx(float(smoothed_iou(g, p, alpha)), rel=1e-6)


@given(soft, alphas)
def test_one_on_equality(p, alpha):
    assert float(smoothed_iou(p, p, alpha)) == pytest.approx(1.0, abs=1e-6)


@given(label_sets, label_sets, st.sampled_from(LABELS), alphas)
def test_monotone_in_overlap(p, g, extra, alpha):
    """Adding a gold label to the prediction never lowers the score;
    adding a label outside gold never raises it."""
    before = smoothed_iou_sets(p, g, alpha)
    if extra in g:
        assert smoothed_iou_sets(p | {extra}, g, alpha) >= before - 1e-12
    else:
        assert smoothed_iou_sets(p | {extra}, g, alpha) <= before + 1e-12


def test_batched_shapes_broadcast():
    preds = np.zeros((5, 4, 7), dtype=np.float32)  # N=5 prompts, G=4, K=7
    preds[..., 1] = 1
    gold = np.zeros((5, 7), dtype=np.float32)
    gold[:, 1] = 1
    r = score_groups(preds, gold, np.ones((5, 4), bool), RewardWeights(1.0, 0.5, 0.2), 0.1)
    for part in (r.alignment, r.consistency, r.format, r.total):
        assert part.shape == (5, 4)
    assert np.allclose(r.total, 1.7)


def test_consistency_rewards_the_majority():
    group = sets_to_matrix([{"joy"}, {"joy"}, {"joy"}, {"anger"}], LABELS)
    c = consistency_reward(group, 0.1)
    assert c[0] == c[1] == c[2] > c[3]


def test_total_reward_worked_example():
    r = score_groups(np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([1.0, 0.0]), np.array([True, False]), RewardWeights(), 0.1)
    assert r.alignment == pytest.approx([1.0, 0.1 / 2.1], rel=1e-5)
    assert r.consistency == pytest.approx([0.6 / 1.6, 0.6 / 1.6], rel=1e-5)
    assert r.format.tolist() == [1.0, 0.0]
    assert r.total == pytest.approx([1.0 + 0.5 * 0.375 + 0.2, 0.1 / 2.1 + 0.5 * 0.375], rel=1e-5)


def test_format_reward_and_unknown_labels():
    assert format_reward(np.array([True, False])).tolist() == [1.0, 0.0]
    assert sets_to_matrix([{"joy", "not-a-label"}], LABELS).sum() == 1
