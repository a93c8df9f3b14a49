"""The policy as the trainer uses it: loading, completion-only log-probs,
fp32 master weights, LoRA, and saving a Hugging Face checkpoint.

Why completion-only logits: the loss needs log π at the completion tokens
only (a few per sequence for label answers), while `model(...)` projects
every position onto the whole vocabulary (49k for SmolLM2): running the
decoder and applying `lm_head` to the selected hidden states only saves most
of that matmul and its memory.

Why fp32 master weights in one process: with bf16 weights an AdamW update of
lr 1e-6 is below bf16 resolution and simply vanishes; keeping an fp32 copy
for the optimizer (what DeepSpeed's bf16 mode does on many ranks) keeps
bf16 speed for the forward/backward and exact updates.
"""
from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import torch

from selfemo.trainer.batches import Batch
from selfemo.trainer.grpo import token_logprobs

log = logging.getLogger(__name__)
DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def resolve_dtype(spec_dtype: str, model_path: str) -> str:
    """The spec's dtype, or for `auto` the checkpoint's (float32 if it names none)."""
    if spec_dtype != "auto":
        return spec_dtype
    from transformers import AutoConfig

    d = getattr(AutoConfig.from_pretrained(model_path), "dtype", None) or getattr(
        AutoConfig.from_pretrained(model_path), "torch_dtype", None)
    name = str(d).replace("torch.", "") if d is not None else "float32"
    return name if name in DTYPES else "float32"


def load_causal_lm(path: str, dtype: str, trust_remote_code: bool = False, zero3_config: dict | None = None):
    """The checkpoint at `path` in `dtype`; partitioned over the ranks as it loads when `zero3_config` is given.

    `zero3_config` is the DeepSpeed config of a ZeRO-3 run (see `zero3_init`):
    each rank then ends up holding only its partitions, never the whole model.
    """
    from transformers import AutoModelForCausalLM

    with zero3_init(zero3_config):
        model = AutoModelForCausalLM.from_pretrained(path, dtype=DTYPES[dtype], trust_remote_code=trust_remote_code)
    model.config.use_cache = False
    return model


@contextlib.contextmanager
def zero3_init(ds_config: dict | None):
    """While open, `from_pretrained` builds the model partitioned: no rank ever holds it whole.

    Why transformers' own switch (a live `HfDeepSpeedConfig`) and not our
    own `deepspeed.zero.Init` around `from_pretrained`: transformers then
    does both halves itself, constructing the model under
    `deepspeed.zero.Init` (each parameter is partitioned as its module is
    built) and loading the checkpoint into the partitioned parameters (one
    module at a time gathered, filled on rank 0 from the checkpoint, and
    re-partitioned); wrapping `from_pretrained` by hand would do
    only the first and fight its meta-device loading.

    Why only for the duration of the load: `HfDeepSpeedConfig` is a
    process-wide weak reference that other transformers code reads too
    (embedding resizing, `generate`'s rank sync); nothing else the trainer
    does needs it, and dropping it keeps later loads (and tests in the same
    process) unaffected.  A no-op unless `ds_config` is a ZeRO-3 config.
    """
    if not ds_config or ds_config.get("zero_optimization", {}).get("stage") != 3:
        yield
        return
    from transformers.integrations import HfDeepSpeedConfig
    from transformers.integrations.deepspeed import unset_hf_deepspeed_config

    keep = HfDeepSpeedConfig(ds_config)  # noqa: F841  (transformers holds only a weak reference)
    try:
        yield
    finally:
        unset_hf_deepspeed_config()


def partition_facts(module) -> dict:
    """What this rank holds of `module`'s parameters, as numbers for summary.json.

    `partitioned`: parameters ZeRO-3 owns (`ds_id`); `numel`: elements of
    the whole model; `held_numel`: elements this rank really stores (its
    own partitions, `ds_tensor`); `placeholder_numel`: elements in the
    parameters' own `data`, which ZeRO-3 empties.  Read right after loading,
    before `deepspeed.initialize` (which partitions a whole model too, so
    only a reading before it shows how the model was loaded).
    """
    params = list(module.parameters())
    ds = [p for p in params if hasattr(p, "ds_id")]
    return {"parameters": len(params), "partitioned": len(ds),
            "numel": sum(int(p.ds_numel) if hasattr(p, "ds_id") else p.numel() for p in params),
            "held_numel": sum(p.ds_tensor.numel() if hasattr(p, "ds_id") else p.numel() for p in params),
            "placeholder_numel": sum(p.numel() for p in ds)}


def add_lora(model, lora):
    """Wrap with peft LoRA adapters (only they train); `lora` is the spec's LoraSpec."""
    from peft import LoraConfig, get_peft_model

    cfg = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                     target_modules=list(lora.target_modules), task_type="CAUSAL_LM")
    return get_peft_model(model, cfg)


def unwrap(model):
    """The Hugging Face causal LM inside a DeepSpeed engine and/or a peft wrapper."""
    m = getattr(model, "module", model)
    if hasattr(m, "get_base_model"):
        m = m.get_base_model()
    return m


def completion_logprobs(model, batch: Batch) -> torch.Tensor:
    """log π(token) at every completion token of the batch, [N] (row-major order of loss_mask).

    Runs the decoder for hidden states [B, T, H], keeps the N positions that
    predict a completion token (t−1 for token t) and applies `lm_head` to
    those only: logits [N, V] instead of [B, T, V].
    """
    lm = unwrap(model)
    _zero3_begin_forward(model)
    hidden = lm.get_decoder()(input_ids=batch.input_ids, attention_mask=batch.attention_mask).last_hidden_state
    sel = batch.loss_mask[:, 1:]
    logits = lm.get_output_embeddings()(hidden[:, :-1][sel])
    return token_logprobs(logits, batch.input_ids[:, 1:][sel])


def _zero3_begin_forward(model) -> None:
    """Tell ZeRO-3 a new forward pass starts, as its own hook on the top module would.

    ZeRO-3 fetches each layer's partitioned weights in pre-forward hooks and
    resets its fetch trace in a pre-hook on the *top* module; calling the
    decoder and `lm_head` directly skips that one, so without this its trace
    never completes (no prefetching, and a module list that grows every
    step).  A no-op for anything but a ZeRO-3 engine.
    """
    optimizer = getattr(model, "optimizer", None)
    offload = getattr(optimizer, "parameter_offload", None)
    if offload is None and hasattr(optimizer, "get_param_coordinator"):
        offload = optimizer  # a ZeRO-3 engine without optimizer (π₀'s): its "optimizer" is the offload itself
    if offload is not None:
        offload.get_param_coordinator().reset_step()


def gathered_params(module, zero3: bool):
    """(name, full parameter) one at a time, in name order, on every rank.

    Under ZeRO-3 a rank's `p.data` is an empty placeholder (its shard is
    elsewhere): each parameter is all-gathered for the body of the loop and
    re-partitioned after, so at most one full tensor is held at a time.
    Every rank must iterate to the end (the gathers are collective).
    """
    for name, p in sorted(module.named_parameters()):
        if zero3:
            import deepspeed

            ctx = deepspeed.zero.GatheredParameters([p])
        else:
            ctx = contextlib.nullcontext()
        with ctx:
            yield name, p


class MasterWeights:
    """AdamW over fp32 copies of the trainable parameters of a low-precision model.

    backward fills the model's bf16 grads; `step` moves them to the fp32
    masters, clips their global norm, steps AdamW and copies the masters back.
    With an fp32 model the masters *are* the parameters (no copy).
    """

    def __init__(self, named_params: list[tuple[str, torch.nn.Parameter]], lr: float, weight_decay: float):
        self.names = [n for n, _ in named_params]
        self.params = [p for _, p in named_params]
        self.copy = any(p.dtype != torch.float32 for p in self.params)
        self.masters = ([p.detach().float().clone().requires_grad_(True) for p in self.params]
                        if self.copy else self.params)
        self.optimizer = torch.optim.AdamW(self.masters, lr=lr, weight_decay=weight_decay)

    def step(self, max_grad_norm: float) -> float:
        if self.copy:
            for m, p in zip(self.masters, self.params):
                m.grad = None if p.grad is None else p.grad.float()
        norm = torch.nn.utils.clip_grad_norm_(self.masters, max_grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        for p in self.params:
            p.grad = None
        if self.copy:
            with torch.no_grad():
                for m, p in zip(self.masters, self.params):
                    p.copy_(m)
        return float(norm)

    def state_dict(self) -> dict:
        return {"masters": {n: m.detach().clone() for n, m in zip(self.names, self.masters)},
                "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        with torch.no_grad():
            for n, m, p in zip(self.names, self.masters, self.params):
                m.copy_(state["masters"][n])
                if self.copy:
                    p.copy_(m)
        self.optimizer.load_state_dict(state["optimizer"])


def trainable(model) -> list[tuple[str, torch.nn.Parameter]]:
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def _cast_state_dict(state_dict: dict, dtype: torch.dtype) -> dict:
    """ZeRO-3's consolidated weights come in the compute dtype: cast them to the saved one, on the CPU.

    A tensor shared by several keys (tied embeddings and `lm_head`) is cast
    once and stays shared, so `save_pretrained` still saves it once.
    """
    cast: dict[int, torch.Tensor] = {}
    for v in state_dict.values():
        if id(v) not in cast:
            cast[id(v)] = v.to(device="cpu", dtype=dtype)
    return {k: cast[id(v)] for k, v in state_dict.items()}


def save_hf(model, tokenizer, out_dir: Path, dtype: str, state_dict: dict | None = None) -> None:
    """safetensors weights (LoRA merged), config, generation config and tokenizer in `out_dir`.

    Written from CPU tensors whatever device trained the model: the
    checkpoint then never depends on (or names) a GPU, and the model is moved
    once rather than tensor by tensor.  The model is not used after this."""
    m = getattr(model, "module", model)
    if hasattr(m, "merge_and_unload"):
        m = m.merge_and_unload()
    m = m.to(device="cpu", dtype=DTYPES[dtype])
    if state_dict is not None:
        state_dict = _cast_state_dict(state_dict, DTYPES[dtype])
    m.config.use_cache = True
    m.save_pretrained(out_dir, safe_serialization=True, state_dict=state_dict)
    tokenizer.save_pretrained(out_dir)
    if not (out_dir / "generation_config.json").exists():
        from transformers import GenerationConfig

        GenerationConfig.from_model_config(m.config).save_pretrained(out_dir)
