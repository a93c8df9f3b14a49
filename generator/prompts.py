"""Prompt templates of the three SELF-EMO tasks, in one place.

Every task is a chat conversation (system + user message) rendered by the
tokenizer's chat template, so the vLLM and transformers backends see the same
tokens. The context is at least the ``context_turns`` most recent utterances
as ``Speaker: text`` lines (see :func:`context_start`); the label names are the
dataset vocabulary's canonical names, which is also what the parser maps
answers back onto.

The layout is chosen so that prompts share long token prefixes: what is the
same for a whole dataset (the role, the label names, the answer format) sits
in the system message, the dialogue comes next, and only the short question
naming the speaker comes last. Evaluation scores a dialogue's utterances in
order, so each prompt costs little more than its newest turn and question
(`backends.prefix_scoring`, vLLM's prefix cache).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from selfemo.data.vocab import LabelVocab

SYSTEM = (
    "You are an expert in the emotions people express in conversation. "
    "Answer exactly in the requested format."
)
MAX_UTTERANCE_CHARS = 400  # a pathological utterance must not crowd out the context


@dataclass(frozen=True)
class Turn:
    """One line of context: the speaker and what they said."""

    speaker: str
    text: str


def context_start(n_turns: int, context_turns: int) -> int:
    """Index of the first turn shown in a prompt that ends at turn ``n_turns - 1``.

    At least the ``context_turns`` most recent turns, the start rounded down to
    a multiple of ``ceil(context_turns / 2)``: consecutive utterances of a
    dialogue then begin their context at the same turn, so their prompts share
    every token up to the newest turn and the engines compute that prefix once.
    The price is at most ``ceil(context_turns / 2) - 1`` extra turns.
    """
    if context_turns <= 0:
        return 0
    start = max(0, n_turns - context_turns)
    return start - start % ((context_turns + 1) // 2)


def _context(turns: Sequence[Turn], context_turns: int) -> str:
    recent = list(turns)[context_start(len(turns), context_turns):]
    return "\n".join(f"{t.speaker}: {' '.join(t.text.split())[:MAX_UTTERANCE_CHARS]}" for t in recent)


def _label_list(vocab: LabelVocab) -> str:
    return ", ".join(vocab.labels)


def _messages(user: str, system: str = SYSTEM) -> list[dict[str, str]]:
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def _labelled_system(vocab: LabelVocab) -> str:
    """The system message of the label-answer tasks: role, label names, answer format."""
    return f"{SYSTEM} The emotions are: {_label_list(vocab)}. Answer with the emotion name only."


def recognition(turns: Sequence[Turn], vocab: LabelVocab, context_turns: int) -> list[dict[str, str]]:
    """ERC: which emotions does the last utterance express?"""
    last = turns[-1]
    return _messages(
        f"Conversation:\n{_context(turns, context_turns)}\n\n"
        f"Which emotion does {last.speaker} express in the last utterance?",
        _labelled_system(vocab),
    )


def understanding(turns: Sequence[Turn], next_speaker: str, vocab: LabelVocab, context_turns: int) -> list[dict[str, str]]:
    """Forecast: which emotions will the next speaker express?"""
    return _messages(
        f"Conversation:\n{_context(turns, context_turns)}\n\n"
        f"{next_speaker} speaks next. Which emotion will {next_speaker} express?",
        _labelled_system(vocab),
    )


def expression(turns: Sequence[Turn], speaker: str, intended: Sequence[str], context_turns: int) -> list[dict[str, str]]:
    """Respond as ``speaker`` expressing the intended emotions."""
    feeling = " and ".join(intended) if intended else "no particular emotion (neutral)"
    return _messages(
        f"Conversation:\n{_context(turns, context_turns)}\n\n"
        f"Write the next line of {speaker}, who feels {feeling}. "
        f"Answer with one short utterance only, without the speaker name."
    )


def clean_reply(text: str, speaker: str) -> str:
    """A generated reply as an utterance: first line, no echoed speaker name or quotes."""
    line = next((ln.strip() for ln in text.strip().splitlines() if ln.strip()), "")
    for prefix in (f"{speaker}:", f"{speaker} :"):
        if line.lower().startswith(prefix.lower()):
            line = line[len(prefix):].strip()
    return line.strip("\"“”'").strip()[:MAX_UTTERANCE_CHARS]
