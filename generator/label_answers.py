"""Label answers: candidates drawn from the model's distribution over label names
(`selfPlay.answers: labels`).

Why: a small model asked for an emotion in free text often answers with
something that is not a label ("I think she is upset about the"), so most of a
group's reward spread is about the answer *format*, and GRPO spends its signal
teaching the format instead of *which* label. The constrained evaluation never
asks the model for free text: it scores each label name after the prompt
(`Backend.score_choices`) and takes the most likely one. Sampling the G
candidates from the softmax of those same scores makes every candidate a label,
makes self-play train exactly the answers the evaluation reads, and leaves the
reward spread to mean "right label or wrong label".

Each candidate is one label name (the corpora here are single-label); its
`token_ids` are the name's tokens (the trainer appends EOS, as for gold
answers) and its `logprobs` are empty: the label distribution is not a
token-level sampling policy, and the trainer recomputes its own log-probs.

With `selfPlay.labelSampling: calibrated` the scores are batch-calibrated per
dataset over the prompts of one call first (`calibrate_by_dataset`): a model
that answers one label everywhere then still draws each other label on the
prompts where it leans to it more than on the rest, so groups get a reward
spread and SELF-GRPO a direction that is about the utterance.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from selfemo.data.vocab import LabelVocab
from selfemo.generator.backends.base import Backend, Completion, Group, Messages, answer_token_ids, render_prompt
from selfemo.metrics import batch_calibrate


def label_distribution(scores: np.ndarray, temperature: float) -> np.ndarray:
    """Row-wise softmax of label log-likelihoods at ``temperature`` (> 0).

    >>> label_distribution(np.log(np.array([[1.0, 3.0]])), 1.0).round(2).tolist()
    [[0.25, 0.75]]
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    z = np.asarray(scores, dtype=np.float64) / temperature
    z = z - z.max(axis=1, keepdims=True)
    p = np.exp(z)
    return p / p.sum(axis=1, keepdims=True)


def sample_label_indices(scores: np.ndarray, n: int, temperature: float, seed: int) -> np.ndarray:
    """``n`` label indices per row, drawn with replacement from
    `label_distribution`; shape (rows, n), deterministic under ``seed``."""
    probs = label_distribution(scores, temperature)
    rng = np.random.default_rng(seed)
    return np.stack([rng.choice(probs.shape[1], size=n, p=row) for row in probs]) if len(probs) else np.zeros((0, n), dtype=int)


def score_by_vocab(backend: Backend, messages: Sequence[Messages], vocabs: Sequence[LabelVocab]) -> list[np.ndarray]:
    """Each prompt's label log-likelihoods under its own dataset's vocabulary.

    Prompts are scored one dataset at a time (each dataset has its own label
    list) but keep their order within a dataset, which is what the engines'
    shared-prefix scoring wants."""
    out: list[np.ndarray | None] = [None] * len(messages)
    for idx in positions_by_dataset(vocabs):
        rows = backend.score_choices([messages[i] for i in idx], list(vocabs[idx[0]].labels))
        for i, row in zip(idx, rows):
            out[i] = np.asarray(row, dtype=np.float64)
    return out  # type: ignore[return-value]


def positions_by_dataset(vocabs: Sequence[LabelVocab]) -> list[list[int]]:
    """The prompt positions of each dataset, datasets in order of first appearance."""
    positions: dict[str, list[int]] = {}
    for i, v in enumerate(vocabs):
        positions.setdefault(v.name, []).append(i)
    return list(positions.values())


def calibrate_by_dataset(scores: Sequence[np.ndarray], vocabs: Sequence[LabelVocab]) -> list[np.ndarray]:
    """Each prompt's label scores batch-calibrated among the prompts of its own
    dataset (`selfemo.metrics.batch_calibrate`), in prompt order. A dataset
    with a single prompt here gets equal scores: nothing to compare it with."""
    out: list[np.ndarray | None] = [None] * len(scores)
    for idx in positions_by_dataset(vocabs):
        for i, row in zip(idx, batch_calibrate(np.stack([scores[i] for i in idx]))):
            out[i] = row
    return out  # type: ignore[return-value]


def label_groups(backend: Backend, messages: Sequence[Messages], vocabs: Sequence[LabelVocab], *, n: int,
                 temperature: float, seed: int, calibrated: bool = False) -> list[Group]:
    """One group of ``n`` label-name candidates per prompt, in prompt order;
    ``calibrated``: drawn from the batch-calibrated scores (module docstring)."""
    if not messages:
        return []
    tokenizer = backend.tokenizer
    # every candidate of a dataset is one of its few label names: tokenise each name once
    answers = {v.name: [Completion(text=label, token_ids=answer_token_ids(tokenizer, label), logprobs=()) for label in v.labels]
               for v in vocabs}
    scores = score_by_vocab(backend, messages, vocabs)
    if calibrated:
        scores = calibrate_by_dataset(scores, vocabs)
    groups = []
    for i, (m, vocab, row) in enumerate(zip(messages, vocabs, scores)):
        picks = sample_label_indices(row[None], n, temperature, seed + i)[0]
        prompt = render_prompt(tokenizer, m)
        prompt_tokens = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
        groups.append(Group(prompt=prompt, prompt_tokens=prompt_tokens, completions=tuple(answers[vocab.name][k] for k in picks)))
    return groups


def best_labels(backend: Backend, messages: Sequence[Messages], vocabs: Sequence[LabelVocab]) -> list[str]:
    """The most likely label name of each prompt (the recogniser hearing a reply), chosen
    as the constrained evaluation chooses (`evaluate.predict`: argmax of the label scores)."""
    return [vocab.labels[int(np.argmax(row))] for vocab, row in zip(vocabs, score_by_vocab(backend, messages, vocabs))]
