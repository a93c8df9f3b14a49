"""Evaluation metrics for emotion recognition: weighted-F1, accuracy, report.

ERC papers (and SELF-EMO's reported numbers) use scikit-learn's
``f1_score(average="weighted")`` over single-label predictions: per-class F1
averaged with the class support as weight. We compute it with numpy so the
operator and generator images need no scikit-learn; a property test checks it
equals scikit-learn on random cases.

Labels are integer class indices in ``[0, K)``; ``-1`` in predictions means
"unparseable / no label" and counts as wrong for every class (it is never in
the gold labels, so it only lowers recall).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

NO_LABEL = -1


def confusion_matrix(gold: Sequence[int], pred: Sequence[int], num_classes: int) -> np.ndarray:
    """(K, K+1) counts: rows gold class, columns predicted class; the last
    column counts predictions with no label (``NO_LABEL``)."""
    g = np.asarray(gold, dtype=np.int64)
    p = np.asarray(pred, dtype=np.int64)
    if g.shape != p.shape:
        raise ValueError(f"gold and pred differ in length: {g.shape} vs {p.shape}")
    if g.size and (g.min() < 0 or g.max() >= num_classes):
        raise ValueError(f"gold labels must lie in [0, {num_classes})")
    if p.size and (p.min() < NO_LABEL or p.max() >= num_classes):
        raise ValueError(f"predictions must lie in [0, {num_classes}) or be {NO_LABEL}")
    col = np.where(p == NO_LABEL, num_classes, p)
    cm = np.zeros((num_classes, num_classes + 1), dtype=np.int64)
    np.add.at(cm, (g, col), 1)
    return cm


def per_class_prf(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Precision, recall, F1 and support per class from a confusion matrix.

    Zero divisions give 0, as scikit-learn's ``zero_division=0``."""
    k = cm.shape[0]
    tp = np.diag(cm[:, :k]).astype(np.float64)
    support = cm.sum(axis=1).astype(np.float64)
    predicted = cm[:, :k].sum(axis=0).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(support > 0, tp / support, 0.0)
        denom = precision + recall
        f1 = np.where(denom > 0, 2 * precision * recall / denom, 0.0)
    return precision, recall, f1, support


def weighted_f1(gold: Sequence[int], pred: Sequence[int], num_classes: int) -> float:
    """Support-weighted mean of per-class F1 (scikit-learn ``average="weighted"``).

    Classes absent from gold have weight 0. Empty input gives 0.0."""
    _, _, f1, support = per_class_prf(confusion_matrix(gold, pred, num_classes))
    total = support.sum()
    return float((f1 * support).sum() / total) if total else 0.0


def accuracy(gold: Sequence[int], pred: Sequence[int]) -> float:
    """Fraction of exact matches; empty input gives 0.0."""
    g = np.asarray(gold)
    p = np.asarray(pred)
    if g.shape != p.shape:
        raise ValueError(f"gold and pred differ in length: {g.shape} vs {p.shape}")
    return float((g == p).mean()) if g.size else 0.0


@dataclass(frozen=True)
class ClassificationReport:
    """Everything ``eval/metrics.json`` records for one dataset."""

    labels: tuple[str, ...]
    weighted_f1: float
    accuracy: float
    per_class: dict[str, dict[str, float]]
    confusion: list[list[int]]
    unparseable: int
    n: int

    def to_dict(self) -> dict:
        return {
            "labels": list(self.labels),
            "weighted_f1": self.weighted_f1,
            "accuracy": self.accuracy,
            "per_class": self.per_class,
            "confusion": self.confusion,
            "unparseable": self.unparseable,
            "n": self.n,
        }


def classification_report(gold: Sequence[int], pred: Sequence[int], labels: Sequence[str]) -> ClassificationReport:
    """Weighted-F1, accuracy, per-class P/R/F1/support and the confusion
    matrix (last column: no label) for single-label predictions."""
    k = len(labels)
    cm = confusion_matrix(gold, pred, k)
    precision, recall, f1, support = per_class_prf(cm)
    total = support.sum()
    per_class = {
        name: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]), "support": int(support[i])}
        for i, name in enumerate(labels)
    }
    return ClassificationReport(
        labels=tuple(labels),
        weighted_f1=float((f1 * support).sum() / total) if total else 0.0,
        accuracy=float(np.trace(cm[:, :k]) / total) if total else 0.0,
        per_class=per_class,
        confusion=cm.tolist(),
        unparseable=int(cm[:, k].sum()),
        n=int(total),
    )


# A corpus whose evaluation gives one label to at least this share of its
# utterances is reported as collapsed. Why it matters: a collapsed model's
# weighted-F1 is set by which label it collapsed onto (always `neutral` scores
# 31.27 on MELD's test split, always `anger` 3.09), not by how well it tells
# emotions apart, so two such runs can differ by many points for no reason a
# user could act on. Issue 7's runs at 135M parameters all collapsed this way.
COLLAPSE_SHARE = 0.9


@dataclass(frozen=True)
class MostPredicted:
    """The label an evaluation answered most often on one dataset."""

    label: str
    count: int
    n: int

    @property
    def share(self) -> float:
        return self.count / self.n if self.n else 0.0

    @property
    def collapsed(self) -> bool:
        return self.share >= COLLAPSE_SHARE  # an empty dataset has share 0


def most_predicted(dataset_metrics: dict) -> MostPredicted:
    """From one dataset's entry of a committed ``eval/metrics.json`` (its
    ``labels`` and ``confusion``: rows gold, columns predicted, the last column
    no label): the most predicted label, how often, and out of how many
    utterances (answers with no label count in ``n``, never as a label)."""
    labels = dataset_metrics["labels"]
    cm = np.asarray(dataset_metrics["confusion"], dtype=np.int64).reshape(len(labels), len(labels) + 1)
    predicted = cm[:, : len(labels)].sum(axis=0)
    top = int(np.argmax(predicted))
    return MostPredicted(label=labels[top], count=int(predicted[top]), n=int(cm.sum()))


def batch_calibrate(scores: np.ndarray) -> np.ndarray:
    """Label scores with the evaluated set's own label prior divided out.

    ``scores`` is one row per utterance of the model's log-likelihood of each
    label as the whole answer (label-constrained decoding). Each row is
    normalised over the labels (log-softmax), and the log of each label's mean
    probability over all rows is subtracted: batch calibration (Zhou et al.,
    ICLR 2024), contextual calibration (Zhao et al., 2021) with the prior
    estimated from the unlabelled test inputs instead of a content-free one.
    Why: a small model's constrained answers are dominated by a prior that is
    the same for every utterance, so its argmax is one label for almost every
    utterance (issue 7) and weighted-F1 measures that label's frequency. After
    calibration the argmax depends only on how the scores move from one
    utterance to the next, which is what recognising emotions means; a model
    that learnt only a prior scores about what zero-shot does. No gold label
    is used.
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 2 or not s.size:
        raise ValueError(f"scores must be a non-empty (utterances, labels) matrix, got shape {s.shape}")
    log_p = s - np.logaddexp.reduce(s, axis=1, keepdims=True)
    log_prior = np.logaddexp.reduce(log_p, axis=0, keepdims=True) - np.log(len(s))
    return log_p - log_prior
