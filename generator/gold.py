"""Gold recognition records: the data of the supervised fine-tuning baseline
(`selfPlay.source: gold`, issue 7's condition 2).

A gold shard samples the same seeds, builds the same recognition prompts
(`selfplay.recognition_messages`) and writes the same record schema as a
self-play shard, so the flywheel filter, the shard commits, the round state
machine and the trainer's SFT path treat it like any other shard. The one
difference: no model is asked. Each prompt's group holds a single candidate,
the dataset's gold label written as the answer the model is asked to give,
scored by the same reward (every component 1), and the record carries
``"source": "gold"``. Only the tokenizer is loaded, to render the chat template
and to store the answer's token ids the trainer learns.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from selfemo.data.model import Dialogue
from selfemo.data.vocab import LabelVocab
from selfemo.generator.backends.base import Completion, Group, answer_token_ids, render_prompt
from selfemo.generator.parsing import parse_labels
from selfemo.generator.selfplay import Seed, group_record, recognition_messages
from selfemo.rewards import RewardWeights
from selfemo.spec import SelfEmoRun, SelfEmoRunSpec

# How a multi-label answer is joined: the parser splits on it, and it is the
# form the parser's own examples and the self-play rewards read ("anger, disgust").
LABEL_JOIN = ", "
# The parser's word for "no emotion" (multi-label corpora allow an empty gold set).
NO_EMOTION = "none"


def gold_answer(labels: Sequence[str], vocab: LabelVocab) -> str:
    """The answer text `parse_labels` maps back onto exactly ``labels``:
    canonical names (what evaluation scores and the prompt lists) in vocabulary
    order, joined by ``LABEL_JOIN``; ``NO_EMOTION`` for the empty set.

    >>> from selfemo.data import get_vocab
    >>> gold_answer(["surprise", "joy"], get_vocab("meld"))
    'joy, surprise'

    Raises ValueError when the vocabulary cannot say it unambiguously (a user
    label containing a separator such as "love or hate"): training on an answer
    the parser reads differently would teach the wrong label.
    """
    canonical = [vocab.canonical(label) for label in labels]
    if None in canonical:
        raise ValueError(f"{vocab.name}: gold labels {list(labels)} are not all in the vocabulary")
    ordered = tuple(label for label in vocab.labels if label in canonical)
    text = LABEL_JOIN.join(ordered) if ordered else NO_EMOTION
    parsed = parse_labels(text, vocab)
    if parsed.labels != ordered or not parsed.ok:
        raise ValueError(f"{vocab.name}: the gold answer {text!r} parses as {list(parsed.labels)}, not {list(ordered)}; "
                         "rename the labels so none contains a separator (, ; / | + & and or)")
    return text


class GoldPlay:
    """`SelfPlay`'s `run(seeds, seed)` for `selfPlay.source: gold`: one gold
    candidate per recognition seed, no backend."""

    name = "gold"

    def __init__(self, tokenizer, spec: SelfEmoRunSpec, dialogues: Mapping[tuple[str, str], Dialogue],
                 vocabs: Mapping[str, LabelVocab]):
        self.tokenizer = tokenizer
        self.tokenize: Callable[[str], list[int]] = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]
        self.render = lambda messages: render_prompt(tokenizer, messages)
        self.spec, self.dialogues, self.vocabs = spec, dialogues, vocabs
        self.weights = RewardWeights(**spec.rewards.weights.model_dump())

    def run(self, seeds: Sequence[Seed], seed: int = 0) -> list[dict]:
        """Gold group records for ``seeds``, in seed order (``seed`` is unused: nothing is sampled)."""
        return [self._record(s) for s in seeds]

    def _record(self, s: Seed) -> dict:
        if s.task != "recognition":
            raise ValueError(f"{s.id}: gold answers exist for recognition seeds only (selfPlay.tasks: [recognition])")
        dialogue, vocab = self.dialogues[(s.dataset, s.dialogue_id)], self.vocabs[s.dataset]
        gold = dialogue.utterances[s.turn].labels
        messages = recognition_messages(dialogue, s.turn, vocab, self.spec.self_play.context_turns)
        prompt = self.render(messages)
        text = gold_answer(gold, vocab)
        group = Group(prompt, len(self.tokenize(prompt)), (Completion(text, answer_token_ids(self.tokenizer, text), ()),))
        record = group_record(gid=s.id, task=s.task, seed=s, messages=messages, group=group, reference=gold,
                              reference_kind="gold", parsed=[parse_labels(text, vocab)], vocab=vocab,
                              weights=self.weights, alpha=self.spec.rewards.smoothing)
        return {**record, "source": "gold"}


def open_gold_play(run: SelfEmoRun, dialogues, vocabs) -> GoldPlay:
    """A GoldPlay with the base model's tokenizer (every round's policy keeps
    it, so no checkpoint is downloaded just to tokenise)."""
    from transformers import AutoTokenizer

    from selfemo.models import resolve_model

    model = run.spec.model
    tokenizer = AutoTokenizer.from_pretrained(resolve_model(model.base), trust_remote_code=model.trust_remote_code)
    return GoldPlay(tokenizer, run.spec, dialogues, vocabs)
