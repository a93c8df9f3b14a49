"""The DeepSpeed config, as one pure function of the spec.

Why one function: the spec is the API users write; the DeepSpeed JSON is an
implementation detail.  Deriving it in one tested place keeps the two from
drifting (batch sizes that do not multiply out are DeepSpeed's most common
start-up failure) and lets docs/training.md show the mapping exactly.
"""
from __future__ import annotations

from selfemo.spec import TrainingSpec


def deepspeed_config(training: TrainingSpec, dtype: str, world_size: int) -> dict:
    """spec.training + the resolved weights dtype + the number of ranks → DeepSpeed config dict.

    - `train_batch_size` = microBatchSize × gradientAccumulation × world_size
      (DeepSpeed checks exactly this identity);
    - bf16 / fp16 from `dtype` (DeepSpeed keeps fp32 master weights and
      optimizer state, so a 1e-6 learning rate is not lost to bf16 rounding);
      float32 enables neither;
    - ZeRO stage and CPU offload of optimizer state / parameters from
      `training.deepspeed`;
    - the optimizer and scheduler are the trainer's own (torch AdamW and a
      LambdaLR), passed to `deepspeed.initialize`, so one code path serves
      one process and many ranks; hence `zero_allow_untested_optimizer`, and
      with offload `zero_force_ds_cpu_optimizer: false` (DeepSpeed's CPUAdam
      is a compiled op that may not be built).
    """
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    if dtype not in ("bfloat16", "float16", "float32"):
        raise ValueError(f"dtype must be bfloat16, float16 or float32 (resolve `auto` first), got {dtype!r}")
    ds = training.deepspeed
    zero: dict = {"stage": ds.zero_stage}
    if ds.zero_stage > 0:
        zero.update(contiguous_gradients=True, overlap_comm=False, reduce_scatter=True)
    if ds.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": False}
    if ds.offload_params:
        zero["offload_param"] = {"device": "cpu", "pin_memory": False}
    if ds.zero_stage == 3:
        zero["stage3_gather_16bit_weights_on_model_save"] = True
    config = {
        "train_micro_batch_size_per_gpu": training.micro_batch_size,
        "gradient_accumulation_steps": training.gradient_accumulation,
        "train_batch_size": training.micro_batch_size * training.gradient_accumulation * world_size,
        "gradient_clipping": training.max_grad_norm,
        "zero_optimization": zero,
        "bf16": {"enabled": dtype == "bfloat16"},
        "fp16": {"enabled": dtype == "float16", "loss_scale": 0, "initial_scale_power": 16},
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
    if ds.offload_optimizer or ds.offload_params:
        config["zero_force_ds_cpu_optimizer"] = False
    return config


def engine_facts(engine) -> dict:
    """What the running DeepSpeed engine really does, read back from it for summary.json.

    The config only asks; this is what DeepSpeed's ZeRO optimizer took from
    it (the stage, whether its optimizer state and parameters live on the
    CPU, and which optimizer steps: torch AdamW here, not DeepSpeedCPUAdam),
    so a run, and the tests, can see that offload is really on.
    """
    zero = engine.optimizer  # the ZeRO wrapper (stage 1/2 or 3) around the trainer's AdamW
    stage = int(engine.zero_optimization_stage())
    return {"zero_stage": stage,
            "offload_optimizer": bool(getattr(zero, "offload_optimizer", getattr(zero, "cpu_offload", False))),
            "offload_params": bool(getattr(zero, "offload_param", False)),
            "optimizer": type(getattr(zero, "optimizer", zero)).__name__}
