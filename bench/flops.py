"""Model FLOPs and a matmul peak, shared by the throughput benches.

A rate alone does not say how much faster an engine *could* be; the fraction
of the machine's matmul peak it reaches does. Both benches count model FLOPs
the same way: 2·N per token through the non-embedding weights (forward only),
plus 2·H·V per token that gets logits; attention scores are left out (small at
these lengths).
"""
from __future__ import annotations

import time


def matmul_peak(threads: int, dtype, n: int = 2048, reps: int = 5) -> float:
    """Best matmul GFLOP/s of `reps` runs of an n×n product with `threads` torch threads."""
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best / 1e9


def model_shape(model_path: str) -> tuple[int, int, int]:
    """(non-embedding parameters N, hidden size H, vocabulary V) of a Llama-style model."""
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(model_path)
    H, L, I = cfg.hidden_size, cfg.num_hidden_layers, cfg.intermediate_size
    kv = cfg.num_key_value_heads * (H // cfg.num_attention_heads)
    return L * (2 * H * H + 2 * H * kv + 3 * H * I), H, cfg.vocab_size


def forward_flops(shape: tuple[int, int, int], tokens: int, logit_tokens: int) -> float:
    """Forward FLOPs of `tokens` through the weights with logits at `logit_tokens` of them."""
    n, h, v = shape
    return 2 * n * tokens + 2 * h * v * logit_tokens
