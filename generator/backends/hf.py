"""The transformers backend: batched decoding with left padding and a KV cache.

It runs anywhere torch runs and is the reference the vLLM backend is checked
against (greedy tokens and label scores agree, see the engine tests).
Sampling is seeded per call so a shard is reproducible. Each prompt is
prefilled once and its cache shared by the group's n samples.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from selfemo.generator.backends.base import Completion, Group, Messages, SamplingParams, Throughput, render_prompt


def _torch_dtype(name: str):
    import torch

    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}.get(name, "auto")


class TransformersBackend:
    """Generation and choice scoring with a Hugging Face causal LM."""

    name = "transformers"

    def __init__(self, model_path: str, *, dtype: str = "float32", batch_size: int = 16, threads: int | None = None):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if threads:
            torch.set_num_threads(threads)
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(model_path, dtype=_torch_dtype(dtype))
        self.model.eval()
        self.batch_size = batch_size
        self.throughput = Throughput()
        self._scorer = None  # the prefix-sharing label scorer, made on first use

    # ------------------------------------------------------------------ generate

    def generate(self, prompts: Sequence[Messages], params: SamplingParams) -> list[Group]:
        out: list[Group] = []
        texts = [render_prompt(self.tokenizer, m) for m in prompts]
        # keep the number of sequences decoded together near batch_size
        step = max(1, self.batch_size // params.n)
        self.throughput.start()
        generated = 0
        for start in range(0, len(texts), step):
            chunk = texts[start : start + step]
            enc = self.tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=False)
            seed = None if params.seed is None else params.seed + start
            ids, logps = self._sample(enc, params, seed)
            for i, prompt in enumerate(chunk):
                comps = []
                for j in range(params.n):
                    row = ids[i * params.n + j]
                    n_tok = _length(row, self.tokenizer.eos_token_id, self.tokenizer.pad_token_id)
                    text = _cut_at_stop(self.tokenizer.decode(row[:n_tok], skip_special_tokens=True), params.stop)
                    comps.append(Completion(text=text, token_ids=tuple(row[:n_tok]), logprobs=tuple(logps[i * params.n + j][:n_tok])))
                    generated += n_tok
                out.append(Group(prompt=prompt, prompt_tokens=int(enc["attention_mask"][i].sum()), completions=tuple(comps)))
        self.throughput.stop(len(texts), generated)
        return out

    def _sample(self, enc, params: SamplingParams, seed: int | None) -> tuple[list[list[int]], list[list[float]]]:
        """Decode ``params.n`` samples per prompt, prefilling each prompt once.

        `generate(num_return_sequences=n)` copies every prompt n times before
        the prefill; on a CPU the prefill of a ~300-token prompt dominates a
        label answer, so we prefill once, repeat the KV cache n times and
        sample token by token. Returned log-probs are the model's raw
        (temperature 1) log-probs of the sampled tokens, as vLLM reports them.
        """
        import torch

        n, greedy = params.n, params.temperature == 0
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        mask = enc["attention_mask"]
        with torch.inference_mode():
            # logits only where they are used: the prompt's last position
            # (the vocabulary projection of every prompt position costs ~20%)
            first = self.model(input_ids=enc["input_ids"], attention_mask=mask,
                               position_ids=(mask.cumsum(1) - 1).clamp(min=0), use_cache=True, logits_to_keep=1)
            cache = first.past_key_values
            if n > 1:
                cache.batch_repeat_interleave(n)
            logits = first.logits[:, -1, :].float().repeat_interleave(n, 0)  # (B*n, V)
            mask = mask.repeat_interleave(n, 0)
            pos = mask.sum(1)  # next position of each row, (B*n,)
            done = torch.zeros(mask.shape[0], dtype=torch.bool)
            toks, lps = [], []
            for _ in range(params.max_tokens):
                raw = torch.log_softmax(logits, dim=-1)
                tok = logits.argmax(-1) if greedy else _sample_top_p(logits / params.temperature, params.top_p, gen)
                tok = torch.where(done, torch.full_like(tok, self.tokenizer.pad_token_id), tok)
                toks.append(tok)
                lps.append(raw.gather(1, tok[:, None]).squeeze(1))
                done |= tok == self.tokenizer.eos_token_id
                if bool(done.all()):
                    break
                mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
                nxt = self.model(input_ids=tok[:, None], attention_mask=mask, position_ids=pos[:, None],
                                 past_key_values=cache, use_cache=True)
                pos = pos + 1
                logits = nxt.logits[:, -1, :].float()
        ids = torch.stack(toks, 1).tolist()
        logps = torch.stack(lps, 1).tolist()
        return ids, logps

    # ------------------------------------------------------------------ score

    def score_choices(self, prompts: Sequence[Messages], choices: Sequence[str]) -> np.ndarray:
        """Sum of token log-probs of each choice after the prompt, shape (len(prompts), K).

        One forward pass per prompt that feeds only the tokens it does not
        share with the previous prompt, the K choices as branches of the same
        pass (`prefix_scoring`); call it with a dialogue's prompts in order.
        """
        from selfemo.generator.backends.prefix_scoring import PrefixScorer

        if self._scorer is None:
            self._scorer = PrefixScorer(self.model)
        choice_ids = [self.tokenizer(c, add_special_tokens=False)["input_ids"] for c in choices]
        rows = []
        for m in prompts:
            ids = self.tokenizer(render_prompt(self.tokenizer, m), add_special_tokens=False)["input_ids"]
            rows.append(self._scorer.score(ids, choice_ids))
        return np.array(rows, dtype=np.float64).reshape(len(prompts), len(choices))

    def close(self) -> None:
        self.model = self._scorer = None


def _sample_top_p(logits, top_p: float, gen):
    """One token per row from softmax(logits) restricted to the top-p mass."""
    import torch

    probs = torch.softmax(logits, dim=-1)
    if top_p < 1.0:
        sorted_p, order = probs.sort(dim=-1, descending=True)
        outside = sorted_p.cumsum(-1) - sorted_p > top_p  # keep the smallest prefix reaching top_p
        sorted_p = sorted_p.masked_fill(outside, 0.0)
        probs = torch.zeros_like(probs).scatter(1, order, sorted_p)
    return torch.multinomial(probs, 1, generator=gen).squeeze(1)


def _cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """Text up to the first stop string (the stop string itself excluded)."""
    cut = min((i for i in (text.find(s) for s in stop) if i >= 0), default=-1)
    return text if cut < 0 else text[:cut]


def _length(ids: list[int], eos: int | None, pad: int | None) -> int:
    """Tokens up to and including the first EOS; padding after it is dropped."""
    for i, t in enumerate(ids):
        if t == eos:
            return i + 1
        if t == pad and pad != eos:
            return i
    return len(ids)
