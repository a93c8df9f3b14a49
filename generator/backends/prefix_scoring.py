"""Label scoring that feeds each prompt only past what the previous one shared.

Evaluation scores every utterance of a dialogue in order, and the prompt
layout (`generator.prompts`) makes neighbouring prompts agree on their first
hundreds of tokens: the system message with the label names, then the same
context turns. Scoring them one by one from scratch spends most of its compute
on those shared tokens (a 135M model on two CPU cores does ~330 prompt tokens/s,
so a full test-split evaluation took 40+ minutes).

So :class:`PrefixScorer` keeps one KV cache and, for each prompt, crops it to
the longest token prefix the prompt shares with what is cached and feeds only
the rest. The K label continuations ride in the same forward pass as
branches of a tree-shaped attention mask: every branch sees the prompt and its
own earlier tokens, never another branch. One forward pass per prompt,
exactly the scores of scoring each prompt + label from scratch.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common prefix of two token sequences."""
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


@dataclass(frozen=True)
class Segment:
    """One forward pass: the prompt's unshared tail plus the label branches.

    ``input_ids``/``positions``: (S,) tokens and their absolute positions;
    ``allowed``: (S, past + S) bool, row i may attend to column j;
    ``readout``: per choice, the (row, token) pairs whose log-probs sum to its score.
    """

    input_ids: list[int]
    positions: list[int]
    allowed: np.ndarray
    readout: list[list[tuple[int, int]]]


def build_segment(new_ids: Sequence[int], past: int, choice_ids: Sequence[Sequence[int]]) -> Segment:
    """Lay out the prompt tail ``new_ids`` (after ``past`` cached tokens) and the choices.

    Row ``n-1`` (the prompt's last token) predicts every choice's first token;
    choice k's token j (j < len-1) sits at position ``past + n + j`` and predicts
    token j+1. A choice's last token is never fed: nothing reads its output.
    """
    n = len(new_ids)
    if n < 1:
        raise ValueError("a prompt must feed at least one token")
    ids, pos = list(new_ids), list(range(past, past + n))
    readout, offsets = [], []
    for choice in choice_ids:
        if not choice:
            raise ValueError("a choice tokenizes to nothing")
        offsets.append(len(ids))
        readout.append([(n - 1, choice[0])] + [(len(ids) + j, choice[j + 1]) for j in range(len(choice) - 1)])
        ids += list(choice[:-1])
        pos += list(range(past + n, past + n + len(choice) - 1))
    s = len(ids)
    allowed = np.zeros((s, past + s), dtype=bool)
    allowed[:, :past] = True
    allowed[:n, past : past + n] = np.tril(np.ones((n, n), dtype=bool))
    allowed[n:, past : past + n] = True
    for off, choice in zip(offsets, choice_ids):
        m = len(choice) - 1
        allowed[off : off + m, past + off : past + off + m] = np.tril(np.ones((m, m), dtype=bool))
    return Segment(ids, pos, allowed, readout)


class PrefixScorer:
    """Scores prompts (token ids) against choices with one reusable KV cache.

    Not thread-safe; one per backend. Feeding prompts in dialogue order is what
    makes it fast; any order gives the same scores.
    """

    def __init__(self, model):
        self.model = model
        self.cache = None
        self.cached: list[int] = []
        self.fed_tokens = 0  # tokens actually run through the model (for tests and logs)

    def score(self, prompt_ids: Sequence[int], choice_ids: Sequence[Sequence[int]]) -> np.ndarray:
        """Sum of token log-probs of each choice after the prompt, shape (K,)."""
        import torch
        from transformers import DynamicCache

        keep = min(common_prefix(self.cached, prompt_ids), len(prompt_ids) - 1)
        if self.cache is None:
            self.cache, keep = DynamicCache(), 0
        self._crop(keep)
        seg = build_segment(prompt_ids[keep:], keep, choice_ids)
        dtype = next(self.model.parameters()).dtype
        mask = torch.full(seg.allowed.shape, torch.finfo(dtype).min, dtype=dtype)
        mask[torch.from_numpy(seg.allowed)] = 0.0
        rows = sorted({r for pairs in seg.readout for r, _ in pairs})
        with torch.inference_mode():
            out = self.model(input_ids=torch.tensor([seg.input_ids]), position_ids=torch.tensor([seg.positions]),
                             attention_mask=mask[None, None], past_key_values=self.cache, use_cache=True,
                             logits_to_keep=torch.tensor(rows))
            logp = torch.log_softmax(out.logits[0].float(), dim=-1)
        self.fed_tokens += len(seg.input_ids)
        at = {r: i for i, r in enumerate(rows)}
        scores = np.array([sum(float(logp[at[r], t]) for r, t in pairs) for pairs in seg.readout])
        self._crop(len(prompt_ids))  # drop the label branches, keep the whole prompt
        self.cached = list(prompt_ids)
        return scores

    def _crop(self, length: int) -> None:
        extra = self.cache.get_seq_length() - length
        if extra > 0:
            self.cache.crop(-extra)
