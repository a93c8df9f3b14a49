"""Run by tests/test_generator_engines.py in its own process: vLLM spawns
workers, so it must be driven from a __main__-guarded script. Writes JSON to
the file named by its second argument (vLLM logs to stdout)."""
import json
import sys
from pathlib import Path

if __name__ == "__main__":
    from selfemo.data import get_vocab
    from selfemo.generator import prompts
    from selfemo.generator.backends.base import SamplingParams
    from selfemo.generator.backends.vllm_backend import VllmBackend

    vocab = get_vocab("meld")
    msgs = [prompts.recognition([prompts.Turn("A", "I am so happy today!"), prompts.Turn("B", f"Really? {i}")], vocab, 4) for i in range(3)]
    backend = VllmBackend(sys.argv[1], dtype="float32", max_model_len=1024, cpu_kv_cache_gib=1, enforce_eager=True, seed=0)
    try:
        a = backend.generate(msgs, SamplingParams(n=4, temperature=1.0, max_tokens=8, seed=5))
        b = backend.generate(msgs, SamplingParams(n=4, temperature=1.0, max_tokens=8, seed=5))
        greedy = backend.generate(msgs, SamplingParams(n=1, temperature=0, max_tokens=8))
        scores = backend.score_choices(msgs, list(vocab.labels))
        Path(sys.argv[2]).write_text(json.dumps({
            "groups": [[{"text": c.text, "ids": list(c.token_ids), "logprobs": list(c.logprobs)} for c in g.completions] for g in a],
            "repeat_equal": [[c.text for c in g.completions] for g in a] == [[c.text for c in g.completions] for g in b],
            "greedy_ids": [list(g.completions[0].token_ids) for g in greedy],
            "scores": scores.tolist(),
            "tokens_per_second": backend.throughput.tokens_per_second,
        }))
    finally:
        backend.close()
