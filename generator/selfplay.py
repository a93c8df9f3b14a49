"""Role-based self-play: the model recognises, forecasts and expresses emotions,
and every prompt becomes a scored group of G candidates (DESIGN.md, "The method").

Seeds are real positions in training dialogues; three tasks grow from them:

- recognition: context up to turn t → the emotions of turn t (gold reference);
- understanding: context before t → the emotions the next speaker (of t) shows;
- expression + self-play: from the context before t the model, as responder,
  writes the next line with an intended emotion set E (the gold label of the
  real turn, or its own forecast); the same model recognises each reply, and a
  reply's reward is the agreement of what was recognised with E. The best
  reply, if its reward reaches τ, joins the dialogue labelled E, the model
  recognises it with a full group (new recognition data on a synthetic turn),
  and the dialogue goes on for up to ``maxTurns`` turns.

The recogniser answers in free text, parsed into labels, or, with
``selfPlay.answers: labels``, with label names drawn from its own distribution
over the vocabulary (`label_answers`): the answers the constrained evaluation reads.

Everything is batched across seeds per step and deterministic under a seed.
"""
from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from selfemo.data.model import Dialogue
from selfemo.data.vocab import LabelVocab
from selfemo.generator import label_answers, prompts
from selfemo.generator.backends.base import Backend, Group, Messages, SamplingParams
from selfemo.generator.parsing import Parsed, parse_labels
from selfemo.rewards import RewardWeights, score_groups
from selfemo.spec import SelfEmoRunSpec

TASKS = ("recognition", "understanding", "expression")
MAX_REPLY_TOKENS = 48  # one short conversational line


@dataclass(frozen=True)
class Seed:
    """A real position in a training dialogue and the task to play there."""

    dataset: str
    dialogue_id: str
    turn: int
    task: str

    @property
    def id(self) -> str:
        return f"{self.dataset}/{self.dialogue_id}/{self.turn}/{self.task}"


def plan_seeds(dialogues: Mapping[str, Sequence[Dialogue]], tasks: Sequence[str], count: int, seed: int,
               balanced: bool = False) -> list[Seed]:
    """Up to ``count`` distinct seeds, a deterministic sample of every valid
    (dataset, dialogue, turn, task); understanding and expression need a turn
    before t. The order is the sample order, so shards stay balanced.

    ``balanced`` (`selfPlay.sampling: label-balanced`) deals the shuffled
    positions round-robin over (dataset, first gold label of turn t), so a
    small sample holds every label about equally often instead of mirroring
    the corpus (MELD is 47% `neutral`): a model fine-tuned on a uniform sample
    of a few hundred gold answers learns to always answer the majority label."""
    every = [
        (Seed(name, d.id, t, task), (name, d.utterances[t].labels[0] if d.utterances[t].labels else ""))
        for name in sorted(dialogues)
        for d in dialogues[name]
        for t in range(len(d.utterances))
        for task in tasks
        if task == "recognition" or t >= 1
    ]
    rng = random.Random(seed)
    rng.shuffle(every)
    if balanced:
        every = round_robin(every)
    return [s for s, _ in every[:count]]


def round_robin(keyed: Sequence[tuple[object, object]]) -> list[tuple[object, object]]:
    """``(item, key)`` pairs reordered to take one of each key in turn, keeping
    the order within a key; keys in order of first appearance."""
    queues: dict[object, list] = {}
    for pair in keyed:
        queues.setdefault(pair[1], []).append(pair)
    out, lanes = [], list(queues.values())
    for i in range(max((len(q) for q in lanes), default=0)):
        out.extend(q[i] for q in lanes if i < len(q))
    return out


def shard_of(items: Sequence, index: int, total: int) -> list:
    """The ``index``-th of ``total`` interleaved shards (0-based)."""
    if not 0 <= index < total:
        raise ValueError(f"shard index {index} outside 0..{total - 1}")
    return list(items[index::total])


def derive_seed(*parts: object) -> int:
    """A stable 31-bit seed from any parts (round, shard, chunk…)."""
    return int.from_bytes(hashlib.sha256("/".join(map(str, parts)).encode()).digest()[:4], "big") & 0x7FFFFFFF


# ------------------------------------------------------------------------ scoring


def score_candidates(parsed: Sequence[Parsed], reference: Sequence[str], vocab: LabelVocab, weights: RewardWeights, alpha: float) -> list[dict]:
    """Reward components of each candidate of one group against ``reference``."""
    preds = np.stack([vocab.to_vector(p.labels) for p in parsed])
    r = score_groups(preds[None], vocab.to_vector(reference)[None], np.array([[p.ok for p in parsed]]), weights, alpha)
    return [
        {"alignment": float(r.alignment[0, i]), "consistency": float(r.consistency[0, i]), "format": float(r.format[0, i]), "total": float(r.total[0, i])}
        for i in range(len(parsed))
    ]


def group_record(
    *,
    gid: str,
    task: str,
    seed: Seed,
    messages: list[dict[str, str]],
    group: Group,
    reference: Sequence[str],
    reference_kind: str,
    parsed: Sequence[Parsed],
    vocab: LabelVocab,
    weights: RewardWeights,
    alpha: float,
    selfplay_turn: int = 0,
) -> dict:
    """One trajectory record (the schema is documented in docs/trajectories.md)."""
    rewards = score_candidates(parsed, reference, vocab, weights, alpha)
    totals = np.array([r["total"] for r in rewards])
    return {
        "id": gid,
        "task": task,
        "dataset": seed.dataset,
        "dialogue_id": seed.dialogue_id,
        "turn": seed.turn,
        "selfplay_turn": selfplay_turn,
        "synthetic": selfplay_turn > 0,
        "messages": messages,
        "prompt": group.prompt,
        "prompt_tokens": group.prompt_tokens,
        "reference": list(reference),
        "reference_kind": reference_kind,
        "candidates": [
            {
                "text": c.text,
                "labels": list(p.labels),
                "parsed": p.ok,
                "token_ids": list(c.token_ids),
                "logprobs": [round(x, 5) for x in c.logprobs],
                "reward": r,
            }
            for c, p, r in zip(group.completions, parsed, rewards)
        ],
        "reward_mean": float(totals.mean()),
        "reward_std": float(totals.std()),
    }


# ------------------------------------------------------------------------ self-play


@dataclass
class _Play:
    """A self-play dialogue in progress (expression seeds)."""

    seed: Seed
    turns: list[prompts.Turn]
    k: int = 0
    done: bool = False
    records: list[dict] = field(default_factory=list)


class SelfPlay:
    """Turns seeds into scored groups with one backend (one policy)."""

    def __init__(self, backend: Backend, spec: SelfEmoRunSpec, dialogues: Mapping[tuple[str, str], Dialogue], vocabs: Mapping[str, LabelVocab]):
        self.backend = backend
        self.spec = spec
        self.dialogues = dialogues
        self.vocabs = vocabs
        sp = spec.self_play
        self.weights = RewardWeights(**spec.rewards.weights.model_dump())
        self.alpha = spec.rewards.smoothing
        self.sampling = SamplingParams(n=sp.group_size, temperature=sp.temperature, top_p=sp.top_p, max_tokens=sp.max_new_tokens)
        self.threshold = spec.flywheel.reward_threshold
        self.label_answers = sp.answers == "labels"

    # ---------------------------------------------------------------- helpers

    def _dialogue(self, s: Seed) -> Dialogue:
        return self.dialogues[(s.dataset, s.dialogue_id)]

    def _turns(self, s: Seed, upto: int) -> list[prompts.Turn]:
        return real_turns(self._dialogue(s), upto)

    def _sample(self, messages: Sequence[list[dict]], params: SamplingParams, seed: int) -> list[Group]:
        if not messages:
            return []
        return self.backend.generate(messages, SamplingParams(**{**params.__dict__, "seed": seed}))

    def _answers(self, messages: Sequence[Messages], vocabs: Sequence[LabelVocab], seed: int) -> list[Group]:
        """A group of G label answers per prompt: sampled free text, or with
        `answers: labels` label names drawn from the model's label distribution."""
        if self.label_answers:
            return label_answers.label_groups(self.backend, messages, vocabs, n=self.sampling.n,
                                              temperature=self.sampling.temperature, seed=seed,
                                              calibrated=self.spec.self_play.label_sampling == "calibrated")
        return self._sample(messages, self.sampling, seed)

    def _greedy_answers(self, messages: Sequence[Messages], vocabs: Sequence[LabelVocab], seed: int) -> list[Parsed]:
        """One answer per prompt, the model's best: greedy free text, or with
        `answers: labels` the most likely label name (the constrained evaluation's choice)."""
        if not messages:
            return []
        if self.label_answers:
            texts = label_answers.best_labels(self.backend, messages, vocabs)
        else:
            greedy = SamplingParams(n=1, temperature=0, max_tokens=self.sampling.max_tokens)
            texts = [g.completions[0].text for g in self._sample(messages, greedy, seed)]
        return [parse_labels(t, v) for t, v in zip(texts, vocabs)]

    # ---------------------------------------------------------------- tasks

    def run(self, seeds: Sequence[Seed], seed: int) -> list[dict]:
        """Scored group records for ``seeds`` (in seed order, self-play turns after their seed)."""
        ctx = self.spec.self_play.context_turns
        by_task: dict[str, list[Seed]] = {t: [s for s in seeds if s.task == t] for t in TASKS}
        records: dict[str, list[dict]] = {}

        direct: list[tuple[Seed, list[dict], tuple[str, ...]]] = []
        for s in by_task["recognition"]:
            d = self._dialogue(s)
            direct.append((s, recognition_messages(d, s.turn, self.vocabs[s.dataset], ctx), d.utterances[s.turn].labels))
        for s in by_task["understanding"]:
            d = self._dialogue(s)
            direct.append((s, prompts.understanding(self._turns(s, s.turn), d.utterances[s.turn].speaker, self.vocabs[s.dataset], ctx), d.utterances[s.turn].labels))
        groups = self._answers([m for _, m, _ in direct], [self.vocabs[s.dataset] for s, _, _ in direct], derive_seed(seed, "direct"))
        for (s, messages, gold), group in zip(direct, groups):
            vocab = self.vocabs[s.dataset]
            parsed = [parse_labels(c.text, vocab) for c in group.completions]
            records[s.id] = [group_record(gid=s.id, task=s.task, seed=s, messages=messages, group=group, reference=gold,
                                          reference_kind="gold", parsed=parsed, vocab=vocab, weights=self.weights, alpha=self.alpha)]

        for play in self._self_play(by_task["expression"], seed):
            records[play.seed.id] = play.records
        return [r for s in seeds for r in records.get(s.id, [])]

    def _intended(self, plays: list[_Play], seed: int) -> list[tuple[str, ...] | None]:
        """E for each play's next turn: the real label while the real dialogue
        lasts (intent `gold`), else the model's own greedy forecast."""
        ctx = self.spec.self_play.context_turns
        out: list[tuple[str, ...] | None] = []
        ask: list[int] = []
        for i, p in enumerate(plays):
            real = p.seed.turn + p.k
            utts = self._dialogue(p.seed).utterances
            if self.spec.self_play.intent == "gold":
                out.append(utts[real].labels if real < len(utts) else None)
            else:
                out.append(None)
                ask.append(i)
        if ask:
            msgs = [prompts.understanding(plays[i].turns, self._speaker(plays[i]), self.vocabs[plays[i].seed.dataset], ctx) for i in ask]
            for i, parsed in zip(ask, self._greedy_answers(msgs, [self.vocabs[plays[i].seed.dataset] for i in ask], derive_seed(seed, "intent"))):
                out[i] = parsed.labels if parsed.ok and parsed.labels else None
        return out

    def _speaker(self, p: _Play) -> str:
        """Who speaks next: the real speaker while the dialogue lasts, then the
        two most recent speakers alternate."""
        utts = self._dialogue(p.seed).utterances
        real = p.seed.turn + p.k
        if real < len(utts):
            return utts[real].speaker
        speakers = [t.speaker for t in p.turns]
        others = [sp for sp in reversed(speakers) if sp != speakers[-1]]
        return others[0] if others else speakers[-1]

    def _self_play(self, seeds: Sequence[Seed], seed: int) -> list[_Play]:
        sp = self.spec.self_play
        ctx = sp.context_turns
        plays = [_Play(s, self._turns(s, s.turn)) for s in seeds]
        max_k = max(1, sp.max_turns)
        reply_params = SamplingParams(n=sp.group_size, temperature=sp.temperature, top_p=sp.top_p, max_tokens=max(sp.max_new_tokens, MAX_REPLY_TOKENS))
        for k in range(max_k):
            active = [p for p in plays if not p.done]
            if not active:
                break
            intents = self._intended(active, derive_seed(seed, "k", k))
            active, intents = [p for p, e in zip(active, intents) if e is not None], [e for e in intents if e is not None]
            for p in plays:
                if p not in active:
                    p.done = True
            speakers = [self._speaker(p) for p in active]
            expr_msgs = [prompts.expression(p.turns, who, e, ctx) for p, who, e in zip(active, speakers, intents)]
            replies = self._sample(expr_msgs, reply_params, derive_seed(seed, "reply", k))
            # recognise every reply once, greedily: the reply's reward is how
            # well what the model hears in it matches what it meant to say
            recog_msgs, owners = [], []
            for i, (p, who, group) in enumerate(zip(active, speakers, replies)):
                for c in group.completions:
                    recog_msgs.append(prompts.recognition(p.turns + [prompts.Turn(who, prompts.clean_reply(c.text, who))], self.vocabs[p.seed.dataset], ctx))
                    owners.append(i)
            heard = self._greedy_answers(recog_msgs, [self.vocabs[active[i].seed.dataset] for i in owners], derive_seed(seed, "hear", k))
            per_play: list[list[Parsed]] = [[] for _ in active]
            for i, parsed in zip(owners, heard):
                per_play[i].append(parsed)
            follow, follow_msgs = [], []
            for i, (p, who, e, group) in enumerate(zip(active, speakers, intents, replies)):
                vocab = self.vocabs[p.seed.dataset]
                rec = group_record(gid=f"{p.seed.id}/k{k + 1}", task="expression", seed=p.seed, messages=expr_msgs[i], group=group,
                                   reference=e, reference_kind="intended", parsed=per_play[i], vocab=vocab,
                                   weights=self.weights, alpha=self.alpha, selfplay_turn=k)
                p.records.append(rec)
                totals = [c["reward"]["total"] for c in rec["candidates"]]
                best = int(np.argmax(totals))
                if sp.max_turns == 0 or totals[best] < self.threshold:
                    p.done = True
                    continue
                p.turns.append(prompts.Turn(who, prompts.clean_reply(group.completions[best].text, who)))
                p.k += 1
                follow.append((p, e))
                follow_msgs.append(prompts.recognition(p.turns, vocab, ctx))
            # the accepted synthetic turn, labelled E, becomes recognition data
            follow_groups = self._answers(follow_msgs, [self.vocabs[p.seed.dataset] for p, _ in follow], derive_seed(seed, "follow", k))
            for (p, e), msgs, group in zip(follow, follow_msgs, follow_groups):
                vocab = self.vocabs[p.seed.dataset]
                parsed = [parse_labels(c.text, vocab) for c in group.completions]
                p.records.append(group_record(gid=f"{p.seed.id}/k{k + 1}/recognition", task="recognition", seed=p.seed, messages=msgs,
                                              group=group, reference=e, reference_kind="intended", parsed=parsed, vocab=vocab,
                                              weights=self.weights, alpha=self.alpha, selfplay_turn=k + 1))
                if p.k >= sp.max_turns:
                    p.done = True
        return plays


def real_turns(dialogue: Dialogue, upto: int) -> list[prompts.Turn]:
    """The dialogue's first ``upto`` utterances as prompt context."""
    return [prompts.Turn(u.speaker, u.text) for u in dialogue.utterances[:upto]]


def recognition_messages(dialogue: Dialogue, turn: int, vocab: LabelVocab, context_turns: int) -> list[dict[str, str]]:
    """The recognition prompt of a real turn: one function for model and gold
    shards (generator/gold.py), so the baseline trains on the very prompts self-play asks."""
    return prompts.recognition(real_turns(dialogue, turn + 1), vocab, context_turns)


def index_dialogues(dialogues: Mapping[str, Iterable[Dialogue]]) -> dict[tuple[str, str], Dialogue]:
    """(dataset, dialogue id) → dialogue, for seed lookup."""
    return {(name, d.id): d for name, ds in dialogues.items() for d in ds}
