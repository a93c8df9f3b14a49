"""Prompt templates of the three SELF-EMO tasks, in one place.

Every task is a chat conversation (system + user message) rendered by the
tokenizer's chat template, so the vLLM and transformers backends see the same
tokens. The context is the most recent ``context_turns`` utterances as
``Speaker: text`` lines; the label names are the dataset vocabulary's
canonical names, which is also what the parser maps answers back onto.
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


def _context(turns: Sequence[Turn], context_turns: int) -> str:
    recent = list(turns)[-context_turns:] if context_turns > 0 else list(turns)
    return "\n".join(f"{t.speaker}: {' '.join(t.text.split())[:MAX_UTTERANCE_CHARS]}" for t in recent)


def _label_list(vocab: LabelVocab) -> str:
    return ", ".join(vocab.labels)


def _messages(user: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


def recognition(turns: Sequence[Turn], vocab: LabelVocab, context_turns: int) -> list[dict[str, str]]:
    """ERC: which emotions does the last utterance express?"""
    last = turns[-1]
    return _messages(
        f"Conversation:\n{_context(turns, context_turns)}\n\n"
        f"Which emotion does {last.speaker} express in the last utterance? "
        f"Choose from: {_label_list(vocab)}. Answer with the emotion name only."
    )


def understanding(turns: Sequence[Turn], next_speaker: str, vocab: LabelVocab, context_turns: int) -> list[dict[str, str]]:
    """Forecast: which emotions will the next speaker express?"""
    return _messages(
        f"Conversation:\n{_context(turns, context_turns)}\n\n"
        f"{next_speaker} speaks next. Which emotion will {next_speaker} express? "
        f"Choose from: {_label_list(vocab)}. Answer with the emotion name only."
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
