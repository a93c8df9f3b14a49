"""Generation engines behind one interface, picked by name (`engine.backend`)."""
from __future__ import annotations

from selfemo.generator.backends.base import Backend, Completion, Group, Messages, SamplingParams, Throughput, render_prompt

BACKENDS = ("auto", "vllm", "transformers")


def resolve_backend_name(name: str) -> str:
    """`auto` means vLLM when it imports, else transformers."""
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
    if name == "auto":
        from selfemo.generator.backends.vllm_backend import vllm_available

        return "vllm" if vllm_available() else "transformers"
    return name


def open_backend(name: str, model_path: str, engine, *, dtype: str, seed: int = 0) -> Backend:
    """Build the engine named by the spec's ``engine`` section for ``model_path``."""
    from selfemo.devices import compute_dtype

    resolved = resolve_backend_name(name)
    dtype = compute_dtype(dtype)
    if resolved == "vllm":
        from selfemo.generator.backends.vllm_backend import VllmBackend

        return VllmBackend(
            model_path,
            dtype=dtype,
            max_model_len=engine.max_model_len,
            gpu_memory_utilization=engine.gpu_memory_utilization,
            tensor_parallel_size=engine.tensor_parallel_size,
            cpu_kv_cache_gib=engine.cpu_kv_cache_gib,
            enforce_eager=engine.enforce_eager,
            seed=seed,
        )
    from selfemo.generator.backends.hf import TransformersBackend

    return TransformersBackend(model_path, dtype=dtype, batch_size=engine.batch_size)


__all__ = ["BACKENDS", "Backend", "Completion", "Group", "Messages", "SamplingParams", "Throughput", "open_backend", "render_prompt", "resolve_backend_name"]
