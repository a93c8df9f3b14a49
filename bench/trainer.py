"""Trainer throughput: our SELF-GRPO trainer vs TRL's GRPOTrainer, same work.

    .venv/bin/python bench/trainer.py [--groups 64] [--group-size 8] [--skip-trl]

The peer is not in the main environment; install it once with
    .venv/bin/pip install -c requirements/cpu-constraints.txt -e ".[bench]"

1. Groups: a real round-1 rollout of the built-in SmolLM2-135M-Instruct on
   MELD-train recognition prompts (our generator, transformers backend,
   temperature 1), cached in --store; the first --groups groups whose reward
   std > 0 are kept (both trainers then do exactly the same work: a group
   with no signal is skipped by ours but would still cost TRL a pass).
2. (a) ours: `selfemo.trainer.loop.train_round` in one process, bf16 weights
   with fp32 master weights, micro-batch 8 × accumulation 4 = 32 sequences
   per AdamW step, one epoch.  Timed: the old-log-prob pass from π₀ plus the
   training steps (not model loading or checkpoint saving).
3. (b) TRL: `GRPOTrainer` with a `rollout_func` that returns *the same stored
   completions* (token ids) for each prompt, and a reward function that returns
   their stored rewards, so its "generation" is a dictionary lookup and the
   timing is its optimisation: per_device_train_batch_size 8 × gradient
   accumulation 4, num_generations 8, num_iterations 1, beta 0 (no reference
   model, as ours with kl 0), epsilon 0.2, loss_type "dapo" (token mean over
   the step, as ours), constant lr, same AdamW lr / weight decay / clipping;
   the model in fp32 with `bf16=True` (autocast: TRL's mixed precision on CPU)
   where the CPU has native bf16, plain float32 otherwise.
   Timed: `trainer.train()` wall clock.
4. Peak: a torch matmul (2048², the threads the trainers use) in the dtype
   both trainers compute in (bf16 where the CPU has native bf16, else float32
   for both, as `selfemo.devices.compute_dtype` decides; `--dtype` overrides
   it for both), measured in the same run.  MFU = model FLOPs / time / peak, with model FLOPs of
   training = 6·N·T (N non-embedding parameters, T sequence tokens) +
   6·H·V·Tc (the LM head at the Tc completion tokens, the only logits the
   loss needs); ours also counts its no-grad old-log-prob pass (2·N·T + 2·H·V·Tc).
   Attention score FLOPs are left out (small at these lengths).

Prints samples/s of each, the ratio (a)/(b) and the MFU of each.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch
import yaml

sys.path.insert(0, os.path.dirname(__file__))
from flops import forward_flops, matmul_peak, model_shape  # noqa: E402  (bench/ is not a package)

REPO = Path(__file__).resolve().parents[1]
ERC = Path(os.environ.get("SELFEMO_ERC_DIR", REPO.parent / "shared" / "erc"))


def run_doc(store: Path, name: str, n_prompts: int, g: int, base: str = "smollm2-135m-instruct",
            dtype: str = "bfloat16", **training) -> dict:
    return {"apiVersion": "selfemo.dev/v1alpha1", "kind": "SelfEmoRun", "metadata": {"name": name},
            "spec": {"model": {"base": base, "dtype": dtype},
                     "datasets": {"train": [{"name": "meld", "format": "meld", "uri": str(ERC / "meld")}],
                                  "eval": [{"name": "meld", "format": "meld", "uri": str(ERC / "meld")}]},
                     "selfPlay": {"tasks": ["recognition"], "groupSize": g, "maxTurns": 0, "contextTurns": 4,
                                  "promptsPerRound": n_prompts, "maxNewTokens": 24},
                     "engine": {"backend": "transformers", "batchSize": 16},
                     "training": {"algorithm": "self-grpo", "sftWarmup": False, "kl": 0.0, "clip": 0.2,
                                  "minGroupStd": 0.0, "learningRate": 1e-6, "microBatchSize": 8,
                                  "gradientAccumulation": 4, "checkpointEvery": 0, "maxSeqLen": 1024, **training},
                     "storage": {"uri": f"file://{store}"}}}


def load(doc: dict):
    from selfemo.runfile import check_manifest

    run, problems = check_manifest(doc)
    if run is None:
        sys.exit(f"bad bench run: {problems}")
    return run


def real_groups(store: Path, n_groups: int, g: int) -> list[dict]:
    """Round-1 trajectories of a real rollout (generated once, then read from the store)."""
    from selfemo.generator.rollout import read_round_groups, rollout_shard

    run = load(run_doc(store, f"bench-rollout-{n_groups}x{g}", int(n_groups * 1.5), g))
    t0 = time.perf_counter()
    rollout_shard(run, 1, 0, 1, chunk_size=16)
    print(f"rollout ready in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    groups = [x for x in read_round_groups(run, 1, selected=False) if x["reward_std"] > 0]
    if len(groups) < n_groups:
        sys.exit(f"only {len(groups)} groups with reward signal; raise --groups' rollout size")
    return groups[:n_groups]


def ours(store: Path, groups: list[dict], g: int, model_path: str, dtype: str) -> dict:
    from selfemo.generator.rollout import encode_jsonl_gz
    from selfemo.policy import open_run_store, run_layout
    from selfemo.trainer.loop import train_round

    name = f"bench-ours-{int(time.time())}"
    run = load(run_doc(store, name, len(groups), g, base=model_path, dtype=dtype))
    with open_run_store(run).commit(f"{run_layout(run).selected(1)}/shard-00000-of-00001") as out:
        out.put_bytes("groups.jsonl.gz", encode_jsonl_gz([{**x, "grpo": True} for x in groups]))
    s = train_round(run, 1)
    from selfemo.store import open_store

    open_store(f"file://{store}").delete(f"default/{name}")  # the bench checkpoint is not kept
    seconds = s["train_seconds"] + s["logprob_seconds"]
    return {"seconds": seconds, "train_seconds": s["train_seconds"], "logprob_seconds": s["logprob_seconds"],
            "steps": s["steps"], "samples": s["samples"], "tokens": s["tokens"], "samples_per_second": s["samples"] / seconds,
            "loss_first": s["loss"]["grpo"]["first"], "loss_last": s["loss"]["grpo"]["last"]}


def trl(groups: list[dict], g: int, model_path: str, steps: int, threads: int, compute: str) -> dict:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    tok = AutoTokenizer.from_pretrained(model_path)
    by_prompt = {x["prompt"]: x for x in groups}
    rewards = {(x["prompt"], tuple(c["token_ids"])): c["reward"]["total"] for x in groups for c in x["candidates"]}
    prompt_ids = {p: tok(p, add_special_tokens=False)["input_ids"] for p in by_prompt}

    def rollout(prompts, trainer):  # the stored candidates, in order, for each copy of a prompt
        seen: dict[str, int] = {}
        out = {"prompt_ids": [], "completion_ids": [], "logprobs": []}
        for p in prompts:
            k = seen.get(p, 0)
            seen[p] = k + 1
            c = by_prompt[p]["candidates"][k % g]
            ids = list(c["token_ids"])
            if not ids or ids[-1] != tok.eos_token_id:
                ids.append(tok.eos_token_id)  # as our trainer does
            out["prompt_ids"].append(prompt_ids[p])
            out["completion_ids"].append(ids)
            out["logprobs"].append([0.0] * len(ids))
        return out

    def stored_reward(prompts, completions, completion_ids, **kw):
        return [rewards.get((p, tuple(ids[:-1] if ids and ids[-1] == tok.eos_token_id else ids)),
                            rewards.get((p, tuple(ids)), 0.0)) for p, ids in zip(prompts, completion_ids)]

    max_completion = max(len(c["token_ids"]) for x in groups for c in x["candidates"]) + 1
    cfg = GRPOConfig(output_dir=str(Path(os.environ.get("TMPDIR", "/tmp")) / "selfemo-bench-trl"),
                     per_device_train_batch_size=8, gradient_accumulation_steps=4, num_generations=g,
                     num_iterations=1, beta=0.0, epsilon=0.2, loss_type="dapo", learning_rate=1e-6,
                     weight_decay=0.0, max_grad_norm=1.0, lr_scheduler_type="constant", warmup_steps=0,
                     max_completion_length=max_completion, max_steps=steps, num_train_epochs=1, bf16=True,
                     use_cpu=True, logging_steps=1, save_strategy="no", report_to=[], seed=0,
                     dataloader_num_workers=0, shuffle_dataset=True)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    if compute != "bfloat16":
        cfg.bf16 = False  # no autocast to emulated bf16: TRL computes in float32 as ours does
    trainer = GRPOTrainer(model=model, reward_funcs=stored_reward, args=cfg, processing_class=tok,
                          train_dataset=Dataset.from_list([{"prompt": p} for p in by_prompt]), rollout_func=rollout)
    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - t0
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    samples = steps * 8 * 4
    return {"seconds": seconds, "steps": trainer.state.global_step, "samples": samples,
            "samples_per_second": samples / seconds, "loss_first": losses[0] if losses else None,
            "loss_last": losses[-1] if losses else None}


def model_flops(model_path: str, groups: list[dict], tokenizer, with_old_pass: bool) -> float:
    shape = model_shape(model_path)
    T = Tc = 0
    for x in groups:
        p = len(tokenizer(x["prompt"], add_special_tokens=False)["input_ids"])
        for c in x["candidates"]:
            n = len(c["token_ids"]) + (0 if c["token_ids"] and c["token_ids"][-1] == tokenizer.eos_token_id else 1)
            T += p + n
            Tc += n
    train = 3 * forward_flops(shape, T, Tc)  # forward + backward (2x forward)
    return train + (forward_flops(shape, T, Tc) if with_old_pass else 0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--groups", type=int, default=64)
    ap.add_argument("--group-size", type=int, default=8)
    ap.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--store", default=str(Path.home() / ".cache" / "selfemo" / "bench" / "trainer-store"))
    ap.add_argument("--skip-trl", action="store_true")
    ap.add_argument("--dtype", default="auto", choices=("auto", "bfloat16", "float32"),
                    help="what both trainers compute in; auto: bf16 where the CPU has native bf16 (AMX, AVX512-BF16), else float32")
    ap.add_argument("--model", default="", help="train this checkpoint instead (same tokenizer), e.g. the tiny test model")
    args = ap.parse_args()
    if not args.skip_trl:
        try:  # fail now, not after the rollout and our run
            import datasets  # noqa: F401
            import trl  # noqa: F401
        except ImportError as e:
            sys.exit(f"the peer is not installed ({e}); run: .venv/bin/pip install -c requirements/cpu-constraints.txt"
                     ' -e ".[bench]"   (or pass --skip-trl)')
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    torch.set_num_threads(args.threads)
    from transformers import AutoTokenizer

    from selfemo.models import DEFAULT_MODEL, pull_model

    model_path = args.model or str(pull_model(DEFAULT_MODEL))  # the rollout always uses the built-in model
    store = Path(args.store)
    store.mkdir(parents=True, exist_ok=True)
    groups = real_groups(store, args.groups, args.group_size)
    steps = args.groups * args.group_size // 32
    tok = AutoTokenizer.from_pretrained(model_path)
    from selfemo.devices import compute_dtype

    # auto: float32 on a CPU without native bf16, for ours and TRL alike
    compute = compute_dtype("bfloat16") if args.dtype == "auto" else args.dtype
    peak = matmul_peak(args.threads, getattr(torch, compute))
    a = ours(store, groups, args.group_size, model_path, compute)
    a["mfu"] = model_flops(model_path, groups, tok, True) / a["seconds"] / (peak * 1e9)
    result = {"machine": f"{platform.processor() or platform.machine()}, {args.threads} threads",
              "groups": len(groups), "group_size": args.group_size, "sequences": len(groups) * args.group_size,
              "steps": steps, "compute_dtype": compute, "peak_matmul_gflops": round(peak, 1), "ours": a}
    if not args.skip_trl:
        b = trl(groups, args.group_size, model_path, steps, args.threads, compute)
        b["mfu"] = model_flops(model_path, groups, tok, False) / b["seconds"] / (peak * 1e9)
        result["trl"] = b
        result["ratio_samples_per_second"] = a["samples_per_second"] / b["samples_per_second"]
    result["peak_matmul_gflops_after"] = round(matmul_peak(args.threads, getattr(torch, compute)), 1)
    print(json.dumps(result, indent=2))
    print(f"ours {a['samples_per_second']:.2f} samples/s (MFU {100 * a['mfu']:.1f}%)"
          + (f", TRL {result['trl']['samples_per_second']:.2f} samples/s (MFU {100 * result['trl']['mfu']:.1f}%),"
             f" ratio {result['ratio_samples_per_second']:.2f}x" if "trl" in result else ", TRL skipped"))


if __name__ == "__main__":
    main()
