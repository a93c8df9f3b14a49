"""From stored groups to padded micro-batches (pure; no model, no store).

Why here and not in the loop: tokenisation, truncation, the completion mask
and the batching order decide *what* is learned; keeping them pure makes
them testable and makes every rank (and a resumed run) derive exactly the
same micro-batches from the same groups, seed and epoch.

Each example is prompt ids + completion ids.  The prompt is the stored
rendered chat template, tokenised without adding special tokens (the
template already carries them); the completion is the candidate's sampled
`token_ids` (+ EOS if generation stopped without one, so the policy learns
to stop).  Too long → truncated from the left (the oldest context goes).
"""
from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from selfemo.trainer.grpo import group_advantages, group_rewards


@dataclass
class Example:
    """One training sequence.  `start` is the index of the first completion
    token in `ids`; the loss covers ids[start:] (always start ≥ 1, as the
    first token has nothing to be predicted from)."""

    ids: list[int]
    start: int
    advantage: float = 0.0
    reward: float = 0.0
    group: int = -1
    candidate: int = -1
    old_logp: list[float] | None = field(default=None, repr=False)
    ref_logp: list[float] | None = field(default=None, repr=False)

    @property
    def n_completion(self) -> int:
        return len(self.ids) - self.start


class _PromptCache:
    """Tokenise each group's prompt once, however many candidates it has."""

    def __init__(self, tokenize: Callable[[str], list[int]]):
        self.tokenize, self.cache = tokenize, {}

    def __call__(self, gi: int, prompt: str) -> list[int]:
        if gi not in self.cache:
            self.cache[gi] = list(self.tokenize(prompt))
        return self.cache[gi]


def hf_tokenize(tokenizer) -> Callable[[str], list[int]]:
    """A Hugging Face tokenizer as the `tokenize` callable the builders take."""
    return lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]


def build_sequence(prompt_ids: Sequence[int], completion_ids: Sequence[int], eos_id: int | None,
                   max_seq_len: int) -> tuple[list[int], int]:
    """prompt + completion (+EOS), left-truncated to `max_seq_len` → (ids, start)."""
    comp = list(completion_ids)
    if eos_id is not None and (not comp or comp[-1] != eos_id):
        comp.append(eos_id)
    ids = list(prompt_ids) + comp
    start = len(prompt_ids)
    cut = max(0, len(ids) - max_seq_len)
    ids, start = ids[cut:], max(1, start - cut)
    return ids, start


def grpo_examples(groups: Sequence[dict], tokenize: Callable[[str], list[int]], eos_id: int | None,
                  max_seq_len: int, min_group_std: float, eps: float = 1e-6) -> tuple[list[Example], int]:
    """Every candidate of every group with signal, with its group-normalised
    advantage → (examples, skipped group count).

    Groups the generator marked `"grpo": false`, and groups whose stored
    rewards have std < `min_group_std`, are skipped."""
    prompts = _PromptCache(tokenize)
    out, skipped = [], 0
    for gi, g in enumerate(groups):
        rewards = group_rewards(g)
        adv = None if g.get("grpo") is False else group_advantages(rewards, min_group_std, eps)
        if adv is None:
            skipped += 1
            continue
        p = prompts(gi, g["prompt"])
        for ci, c in enumerate(g["candidates"]):
            ids, start = build_sequence(p, c["token_ids"], eos_id, max_seq_len)
            out.append(Example(ids, start, float(adv[ci]), rewards[ci], gi, ci))
    return out, skipped


def sft_examples(groups: Sequence[dict], tokenize: Callable[[str], list[int]], eos_id: int | None,
                 max_seq_len: int) -> list[Example]:
    """The flywheel's kept candidates (`kept` indices) as supervised examples."""
    prompts = _PromptCache(tokenize)
    out = []
    for gi, g in enumerate(groups):
        for ci in g.get("kept") or []:
            c = g["candidates"][ci]
            ids, start = build_sequence(prompts(gi, g["prompt"]), c["token_ids"], eos_id, max_seq_len)
            out.append(Example(ids, start, 0.0, float(c["reward"]["total"]), gi, ci))
    return out


def plan_steps(n_examples: int, micro_batch_size: int, accumulation: int, world_size: int, seed: int,
               epoch: int, lengths: Sequence[int], units: Sequence[int] | None = None) -> list[list[list[list[int]]]]:
    """Example indices for one epoch: steps → ranks → micro-batches → indices.

    The epoch order is a seeded shuffle of *units* (`units[i]` = the group of
    example i; default each example its own unit), so a GRPO group's G
    candidates stay together in one step: a step holding only a group's
    negative-advantage candidates would push them down with nothing to
    balance them, and Adam amplifies such one-sided steps.  Each optimizer step takes a window
    of micro_batch_size × accumulation × world_size examples, sorted by
    length and cut into that many micro-batches (length buckets: little
    padding), dealt round-robin to the ranks.  A short last window is filled
    by wrapping around to the epoch's start, so every rank runs the same
    number of micro-batches per step (a rank without one would deadlock the
    gradient all-reduce).  Same arguments → same plan on every rank.
    """
    if n_examples == 0:
        return []
    unit_of = list(units) if units is not None else list(range(n_examples))
    members: dict[int, list[int]] = {}
    for i, u in enumerate(unit_of):
        members.setdefault(u, []).append(i)
    keys = sorted(members)
    random.Random(f"{seed}/{epoch}").shuffle(keys)
    order = [i for k in keys for i in members[k]]
    per_step = micro_batch_size * accumulation * world_size
    n_micro = accumulation * world_size
    steps = []
    for s in range(0, n_examples, per_step):
        window = order[s:s + per_step]
        if len(window) < n_micro:  # too few to give every micro-batch one example
            window += [order[i % n_examples] for i in range(n_micro - len(window))]
        window.sort(key=lambda i: (lengths[i], i))
        size, extra = divmod(len(window), n_micro)
        micro, at = [], 0
        for k in range(n_micro):
            take = size + (1 if k < extra else 0)
            micro.append(window[at:at + take])
            at += take
        steps.append([micro[r::world_size] for r in range(world_size)])
    return steps


def lr_factors(phases: Sequence[str], warmup_ratio: float, learning_rate: float,
               grpo_learning_rate: float | None) -> list[float]:
    """Multiplier of `learning_rate` for each optimizer step of the plan (a LambdaLR's factors).

    Linear warm-up over the first `int(warmup_ratio × steps)` steps, times
    `grpo_learning_rate / learning_rate` on `grpo` steps: one optimizer and
    one schedule for the round's SFT and SELF-GRPO phases, so a resumed
    round restores both with one state, while RL can run slower than the SFT
    before it.
    """
    warm = int(warmup_ratio * len(phases))
    grpo = (grpo_learning_rate / learning_rate) if grpo_learning_rate is not None else 1.0
    return [min(1.0, (s + 1) / warm if warm > 0 else 1.0) * (grpo if phase == "grpo" else 1.0)
            for s, phase in enumerate(phases)]


@dataclass
class Batch:
    """A padded micro-batch.  input_ids, attention_mask, loss_mask: [B, T];
    loss_mask[b, t] is True where token t is a completion token (predicted
    from position t−1).  advantages: [N] and old/ref log-probs: [N], over the
    masked tokens in row-major order (the order `loss_mask[:, 1:]` selects)."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    loss_mask: torch.Tensor
    advantages: torch.Tensor
    old_logp: torch.Tensor | None
    ref_logp: torch.Tensor | None
    rewards: torch.Tensor

    @property
    def n_tokens(self) -> int:
        return int(self.loss_mask.sum())

    def to(self, device: torch.device | str) -> Batch:
        """Every tensor of the batch on `device` (where the model that reads it lives)."""
        return dataclasses.replace(self, **{f.name: getattr(self, f.name).to(device)
                                            for f in dataclasses.fields(self) if getattr(self, f.name) is not None})


def micro_batches(indices: Sequence[int], size: int, at_least: int = 0) -> list[list[int]]:
    """`indices` cut into micro-batches of `size`, the last repeated until there are `at_least`.

    Why the repeats: under ZeRO-3 every forward pass is collective (each
    layer is all-gathered from the ranks' partitions), so a rank with fewer
    micro-batches than another must run its last one again, and drop the
    result, or the other rank waits forever in a gather.
    """
    chunks = [list(indices[k:k + size]) for k in range(0, len(indices), size)]
    return chunks + [chunks[-1]] * (at_least - len(chunks)) if chunks else chunks


def collate(examples: Sequence[Example], pad_id: int, device: torch.device | str = "cpu") -> Batch:
    """Right-pad a micro-batch to its longest sequence, on `device`.

    Built on the CPU and moved with one copy per tensor: the row-by-row
    writes below would each be a host-to-GPU transfer on a GPU tensor."""
    T = max(len(e.ids) for e in examples)
    B = len(examples)
    ids = torch.full((B, T), pad_id, dtype=torch.long)
    attn = torch.zeros((B, T), dtype=torch.long)
    mask = torch.zeros((B, T), dtype=torch.bool)
    adv, old, ref = [], [], []
    for b, e in enumerate(examples):
        ids[b, :len(e.ids)] = torch.tensor(e.ids)
        attn[b, :len(e.ids)] = 1
        mask[b, e.start:len(e.ids)] = True
        adv += [e.advantage] * e.n_completion
        if e.old_logp is not None:
            old += e.old_logp
        if e.ref_logp is not None:
            ref += e.ref_logp
    n = int(mask.sum())
    return Batch(ids, attn, mask, torch.tensor(adv, dtype=torch.float32),
                 torch.tensor(old, dtype=torch.float32) if len(old) == n else None,
                 torch.tensor(ref, dtype=torch.float32) if len(ref) == n else None,
                 torch.tensor([e.reward for e in examples], dtype=torch.float32)).to(device)
