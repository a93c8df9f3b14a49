"""The transformers backend: batched `generate` with left padding and KV cache.

It runs anywhere torch runs and is the reference the vLLM backend is checked
against. Sampling is seeded per call so a shard is reproducible.
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

    # ------------------------------------------------------------------ generate

    def generate(self, prompts: Sequence[Messages], params: SamplingParams) -> list[Group]:
        import torch

        out: list[Group] = []
        texts = [render_prompt(self.tokenizer, m) for m in prompts]
        # keep the number of sequences per generate() call near batch_size
        step = max(1, self.batch_size // params.n)
        self.throughput.start()
        generated = 0
        for start in range(0, len(texts), step):
            chunk = texts[start : start + step]
            if params.seed is not None:
                torch.manual_seed(params.seed + start)
            enc = self.tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=False)
            greedy = params.temperature == 0
            with torch.inference_mode():
                res = self.model.generate(
                    **enc,
                    do_sample=not greedy,
                    temperature=None if greedy else params.temperature,
                    top_p=None if greedy else params.top_p,
                    top_k=None if greedy else 0,
                    max_new_tokens=params.max_tokens,
                    num_return_sequences=params.n,
                    pad_token_id=self.tokenizer.pad_token_id,
                    stop_strings=list(params.stop) or None,
                    tokenizer=self.tokenizer if params.stop else None,
                    output_scores=True,
                    return_dict_in_generate=True,
                )
                logp = self.model.compute_transition_scores(res.sequences, res.scores, normalize_logits=True)
            new = res.sequences[:, enc["input_ids"].shape[1] :]
            eos = self.tokenizer.eos_token_id
            for i, prompt in enumerate(chunk):
                comps = []
                for j in range(params.n):
                    row = i * params.n + j
                    ids = new[row].tolist()
                    n_tok = _length(ids, eos, self.tokenizer.pad_token_id)
                    comps.append(
                        Completion(
                            text=self.tokenizer.decode(ids[:n_tok], skip_special_tokens=True),
                            token_ids=tuple(ids[:n_tok]),
                            logprobs=tuple(float(x) for x in logp[row, :n_tok]),
                        )
                    )
                    generated += n_tok
                out.append(Group(prompt=prompt, prompt_tokens=int(enc["attention_mask"][i].sum()), completions=tuple(comps)))
        self.throughput.stop(len(texts), generated)
        return out

    # ------------------------------------------------------------------ score

    def score_choices(self, prompts: Sequence[Messages], choices: Sequence[str]) -> np.ndarray:
        """Sum of token log-probs of each choice after the prompt.

        The prompt is run once; its KV cache is repeated for the K choices,
        which are fed together (right-padded), so scoring K labels costs one
        prompt pass plus K short continuations.
        """
        import torch

        choice_ids = [self.tokenizer(c, add_special_tokens=False)["input_ids"] for c in choices]
        k, lmax = len(choices), max(len(c) for c in choice_ids)
        cids = torch.full((k, lmax), self.tokenizer.pad_token_id, dtype=torch.long)
        cmask = torch.zeros((k, lmax), dtype=torch.long)
        for j, ids in enumerate(choice_ids):
            cids[j, : len(ids)] = torch.tensor(ids)
            cmask[j, : len(ids)] = 1
        texts = [render_prompt(self.tokenizer, m) for m in prompts]
        scores = np.zeros((len(texts), k), dtype=np.float64)
        step = max(1, self.batch_size // k) if k < self.batch_size else 1
        for start in range(0, len(texts), step):
            chunk = texts[start : start + step]
            enc = self.tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=False)
            b = len(chunk)
            pos0 = (enc["attention_mask"].cumsum(1) - 1).clamp(min=0)  # left padding: real tokens start at 0
            with torch.inference_mode():
                first = self.model(**enc, position_ids=pos0, use_cache=True)
                # log p(first choice token | prompt) from the prompt's last position
                last = torch.log_softmax(first.logits[:, -1, :].float(), dim=-1)  # (B, V)
                total = last[:, cids[:, 0]]  # (B, K)
                if lmax > 1:
                    cache = first.past_key_values
                    cache.batch_repeat_interleave(k)
                    ids = cids.repeat(b, 1)  # (B*K, L)
                    mask = torch.cat([enc["attention_mask"].repeat_interleave(k, 0), cmask.repeat(b, 1)], dim=1)
                    pos = enc["attention_mask"].sum(1).repeat_interleave(k)[:, None] + torch.arange(lmax)[None, :]
                    nxt = self.model(input_ids=ids, attention_mask=mask, past_key_values=cache, position_ids=pos)
                    lp = torch.log_softmax(nxt.logits[:, :-1, :].float(), dim=-1)  # predicts tokens 1..L-1
                    tok = torch.gather(lp, 2, ids[:, 1:, None]).squeeze(-1) * cmask.repeat(b, 1)[:, 1:]
                    total = total + tok.sum(1).view(b, k)
            scores[start : start + b] = total.numpy()
        return scores

    def close(self) -> None:
        self.model = None


def _length(ids: list[int], eos: int | None, pad: int | None) -> int:
    """Tokens up to and including the first EOS; padding after it is dropped."""
    for i, t in enumerate(ids):
        if t == eos:
            return i + 1
        if t == pad and pad != eos:
            return i
    return len(ids)
