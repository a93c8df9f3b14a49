"""Which dtype to compute in, on the hardware at hand.

`model.dtype: bfloat16` is right on GPUs and on CPUs with bf16 arithmetic
(AVX512-BF16, AMX). On a CPU without it, torch emulates bf16 matmuls and they
run ~10× slower than float32 (measured on this project's 2-core CI machines:
17 vs 105 GFLOP/s for a SmolLM2-sized linear layer). The same run file must
work on both, so a CPU without bf16 support computes in float32 and says so
once; the checkpoints written stay in the spec's dtype.
"""
from __future__ import annotations

import functools
import logging
import platform

log = logging.getLogger(__name__)
_HALF = ("bfloat16", "float16")
_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU feature flags of a Linux machine (empty elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_has_fast_bf16(flags: frozenset[str] | None = None) -> bool:
    """True when the CPU does bf16 arithmetic natively (or is Apple silicon, where torch's bf16 is fast)."""
    flags = cpu_flags() if flags is None else flags
    if platform.system() == "Darwin" and platform.machine() == "arm64":
        return True
    return any(f in flags for f in _BF16_FLAGS)


def cuda_available() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:
        return False


def compute_dtype(requested: str, *, on_gpu: bool | None = None, fast_bf16: bool | None = None) -> str:
    """The dtype to load weights in for computing: ``requested``, except that
    half precision on a CPU without native support becomes float32."""
    if requested not in _HALF:
        return requested
    if on_gpu is None:
        on_gpu = cuda_available()
    if on_gpu:
        return requested
    if fast_bf16 is None:
        fast_bf16 = cpu_has_fast_bf16()
    if fast_bf16 and requested == "bfloat16":
        return requested
    _warn_once(requested)
    return "float32"


@functools.lru_cache(maxsize=None)
def _warn_once(requested: str) -> None:
    log.warning("this CPU has no native %s arithmetic (no %s): computing in float32, which is several times faster here",
                requested, "/".join(_BF16_FLAGS))
