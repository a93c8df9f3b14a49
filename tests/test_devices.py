"""The dtype a component computes in follows the hardware, not only the spec."""
import platform

from selfemo.devices import compute_dtype, cpu_has_fast_bf16


def test_half_precision_falls_back_to_float32_on_a_cpu_without_bf16():
    assert compute_dtype("bfloat16", on_gpu=False, fast_bf16=False) == "float32"
    assert compute_dtype("float16", on_gpu=False, fast_bf16=False) == "float32"


def test_bf16_kept_where_it_is_fast():
    assert compute_dtype("bfloat16", on_gpu=True) == "bfloat16"
    assert compute_dtype("bfloat16", on_gpu=False, fast_bf16=True) == "bfloat16"
    # CPUs with bf16 units still emulate fp16
    assert compute_dtype("float16", on_gpu=False, fast_bf16=True) == "float32"


def test_other_dtypes_pass_through():
    assert compute_dtype("float32", on_gpu=False, fast_bf16=False) == "float32"
    assert compute_dtype("auto", on_gpu=False, fast_bf16=False) == "auto"


def test_cpu_flags_decide():
    assert cpu_has_fast_bf16(frozenset({"avx2", "amx_bf16"}))
    assert cpu_has_fast_bf16(frozenset({"avx512_bf16"}))
    if platform.system() != "Darwin":
        assert not cpu_has_fast_bf16(frozenset({"avx2", "avx512f", "fma"}))
