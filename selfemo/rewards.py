"""SELF-EMO rewards: pure functions over label sets and soft label vectors.

Everything the generator scores and the trainer optimises comes from here, so
the definitions live in exactly one place (DESIGN.md, "Rewards"):

- smoothed IoU ``sIoU(p, g) = (Σ min(p_k, g_k) + α) / (Σ max(p_k, g_k) + α)``;
  α > 0 makes an empty prediction against an empty reference score 1 and keeps
  near-misses graded instead of collapsing to 0;
- alignment ``sIoU(pred, gold)``;
- group consistency ``sIoU(pred_i, vote)`` with ``vote`` the mean label vector
  of the G candidates answering the same prompt;
- format: 1 if the answer parsed into vocabulary labels, else 0;
- total ``w_align·align + w_cons·cons + w_fmt·fmt``.

Vector functions take arrays whose last axis is the K labels and broadcast
over any leading axes, so a whole round (N prompts × G candidates × K) is
scored in one call.
"""
from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

import numpy as np

DEFAULT_SMOOTHING = 0.1


def _check_alpha(alpha: float) -> None:
    if not alpha > 0:
        raise ValueError(f"smoothing alpha must be > 0, got {alpha!r}")


def smoothed_iou_sets(pred: Collection[str], gold: Collection[str], alpha: float = DEFAULT_SMOOTHING) -> float:
    """sIoU of two label sets (hard 0/1 vectors).

    >>> round(smoothed_iou_sets({"joy"}, {"joy", "surprise"}, 0.1), 4)
    0.5238
    >>> smoothed_iou_sets(set(), set(), 0.1)
    1.0
    """
    _check_alpha(alpha)
    p, g = set(pred), set(gold)
    return (len(p & g) + alpha) / (len(p | g) + alpha)


def smoothed_iou(pred: np.ndarray, gold: np.ndarray, alpha: float = DEFAULT_SMOOTHING) -> np.ndarray:
    """sIoU of soft label vectors in [0, 1]^K, batched.

    pred, gold: float arrays of shape (..., K), broadcastable to each other.
    Returns shape (...). Values lie in [α/(K+α), 1] for inputs in [0, 1].

    >>> smoothed_iou(np.array([[1., 0, 0], [0, 0, 0]]), np.array([[1., 1, 0], [0, 0, 0]]), 0.1).round(4)
    array([0.5238, 1.    ])
    """
    _check_alpha(alpha)
    p = np.asarray(pred, dtype=np.float32)
    g = np.asarray(gold, dtype=np.float32)
    inter = np.minimum(p, g).sum(axis=-1)
    union = np.maximum(p, g).sum(axis=-1)
    return (inter + alpha) / (union + alpha)


def alignment_reward(pred: np.ndarray, gold: np.ndarray, alpha: float = DEFAULT_SMOOTHING) -> np.ndarray:
    """Multi-label alignment: sIoU(pred, gold). Shapes (..., K) → (...)."""
    return smoothed_iou(pred, gold, alpha)


def group_vote(group: np.ndarray) -> np.ndarray:
    """The group's mean label vector: (..., G, K) → (..., 1, K), ready to broadcast."""
    return np.asarray(group, dtype=np.float32).mean(axis=-2, keepdims=True)


def consistency_reward(group: np.ndarray, alpha: float = DEFAULT_SMOOTHING) -> np.ndarray:
    """Group consistency: sIoU(pred_i, vote) for each of the G candidates.

    group: (..., G, K) label vectors of the candidates of one prompt.
    Returns (..., G). A candidate that agrees with the majority scores high;
    an outlier scores low, which is the signal GRPO needs when gold is absent.
    """
    return smoothed_iou(group, group_vote(group), alpha)


def format_reward(parsed_ok: np.ndarray) -> np.ndarray:
    """1.0 where the answer parsed into vocabulary labels, else 0.0. Shape preserved."""
    return np.asarray(parsed_ok, dtype=bool).astype(np.float32)


@dataclass(frozen=True)
class RewardWeights:
    """Weights of the total reward; mirrors ``spec.rewards.weights``."""

    alignment: float = 1.0
    consistency: float = 0.5
    format: float = 0.2


@dataclass(frozen=True)
class GroupRewards:
    """Every reward component for a batch of groups, each shaped (..., G)."""

    alignment: np.ndarray
    consistency: np.ndarray
    format: np.ndarray
    total: np.ndarray


def score_groups(
    preds: np.ndarray,
    gold: np.ndarray,
    parsed_ok: np.ndarray,
    weights: RewardWeights = RewardWeights(),
    alpha: float = DEFAULT_SMOOTHING,
) -> GroupRewards:
    """Score candidate groups against their references.

    preds: (..., G, K) candidate label vectors; gold: (..., K) reference label
    vector per prompt (the gold set for recognition/understanding, the intended
    set for expression); parsed_ok: (..., G) bool.
    Returns alignment, consistency, format and their weighted total, (..., G).

    Worked example (K=2, G=2, α=0.1, default weights): preds [[1,0],[0,1]],
    gold [1,0], both parsed → align [1, 0.0476]; vote [.5,.5] so cons
    (.5+.1)/(1.5+.1) = [.375, .375]; total [1.3875, 0.4351].
    """
    preds = np.asarray(preds, dtype=np.float32)
    gold = np.asarray(gold, dtype=np.float32)[..., None, :]
    align = alignment_reward(preds, gold, alpha)
    cons = consistency_reward(preds, alpha)
    fmt = format_reward(parsed_ok)
    total = weights.alignment * align + weights.consistency * cons + weights.format * fmt
    return GroupRewards(alignment=align, consistency=cons, format=fmt, total=total)


def sets_to_matrix(label_sets: Sequence[Collection[str]], labels: Sequence[str]) -> np.ndarray:
    """Encode label sets as a (N, K) 0/1 matrix in the order of ``labels``.

    Labels outside the vocabulary are ignored: the parser has already mapped
    what it could, and the format reward accounts for the rest.
    """
    index = {name: k for k, name in enumerate(labels)}
    out = np.zeros((len(label_sets), len(labels)), dtype=np.float32)
    for i, labels_i in enumerate(label_sets):
        for name in labels_i:
            k = index.get(name)
            if k is not None:
                out[i, k] = 1.0
    return out
