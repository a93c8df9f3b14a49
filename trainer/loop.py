"""One round of training: the round's selected groups + π_{r-1} → π_r in the store.

Order of work, and why:
1. nothing to do if `round-RRR/checkpoint/` is committed (idempotent Jobs);
2. read and check the groups (clear errors name file and record);
3. build the examples: SFT on kept candidates (`sftWarmup`, or algorithm
   `sft`), then SELF-GRPO on every group with reward signal; a round with
   neither ends with an error and no checkpoint, never a silent copy;
4. old log-probs from π_{r-1} (and reference log-probs when `kl > 0` and the
   reference is π₀ ≠ π_{r-1}) are computed once, without grad, before any
   update — the generator's sampled log-probs are not trusted (under ZeRO-3
   the model is partitioned from the load on, so these passes run through
   DeepSpeed engines: after `deepspeed.initialize`, before the resume);
5. the step plan is a pure function of (examples, seed, epoch, world size),
   so every rank, and a resumed run, walks the same micro-batches;
6. train, logging every step; commit training state every `checkpointEvery`
   steps; resume from the newest one;
7. rank 0 commits π_r (Hugging Face format) with `training/metrics.json` and
   `training/summary.json`, then removes the training states.
"""
from __future__ import annotations

import hashlib
import json
import logging
import tempfile
import time
from pathlib import Path

import torch

from selfemo.policy import open_run_store, policy_path, run_layout
from selfemo.spec import SelfEmoRun, round_spec
from selfemo.telemetry import TrainerMetrics
from selfemo.trainer import state as train_state
from selfemo.trainer.batches import (Batch, Example, collate, grpo_examples, hf_tokenize, lr_factors, micro_batches,
                                     plan_steps, sft_examples)
from selfemo.trainer.data import EXIT_BAD_INPUT, EXIT_NO_SIGNAL, TrainerError, load_groups
from selfemo.trainer.dist import (DistEnv, all_gather_objects, all_reduce_max, all_reduce_sum, barrier, dist_env,
                                  init_distributed, rank_device, set_threads, shutdown)
from selfemo.trainer.grpo import self_grpo_loss, sft_loss
from selfemo.trainer.model import (MasterWeights, add_lora, completion_logprobs, gathered_params, load_causal_lm,
                                   partition_facts, resolve_dtype, save_hf, trainable)

log = logging.getLogger(__name__)


def train_round(run: SelfEmoRun, round_: int, *, metrics: TrainerMetrics | None = None,
                stop_after_steps: int | None = None) -> dict:
    """Train round `round_` and commit its checkpoint; returns the summary.

    `stop_after_steps` (a test hook) returns after that many optimizer steps
    of this invocation, as if the Job had been killed there.
    """
    if round_ < 1:
        raise TrainerError(f"--round must be >= 1 (round 0 is the base model), got {round_}")
    run = round_spec(run, round_)  # round 1 of a gold warm-up is supervised fine-tuning
    env = dist_env()
    device = rank_device(env, run.spec.resources.trainer.gpus_per_node)
    init_distributed(env, device)
    summary = _Trainer(run, round_, env, metrics or TrainerMetrics(), device).run(stop_after_steps)
    shutdown(env)
    return summary


class _Trainer:
    def __init__(self, run: SelfEmoRun, round_: int, env: DistEnv, metrics: TrainerMetrics,
                 device: torch.device = torch.device("cpu")):
        self.run_spec, self.round, self.env, self.metrics = run, round_, env, metrics
        self.device = device  # this rank's (dist.train_device): π_{r-1}, π₀ and the batches live there
        self.t = run.spec.training
        self.store = open_run_store(run)
        layout = run_layout(run)
        self.rp, self.ckpt = layout.round_prefix(round_), layout.checkpoint(round_)
        self.engine = None

    # ------------------------------------------------------------------ set-up

    def run(self, stop_after_steps: int | None) -> dict:
        if self.store.is_committed(self.ckpt):
            log.info("%s already committed; nothing to do", self.store.uri_for(self.ckpt))
            return {"round": self.round, "skipped": True, "checkpoint": self.store.uri_for(self.ckpt)}
        groups = load_groups(self.run_spec, self.round)
        threads = set_threads(self.env)
        torch.manual_seed(self.t.seed)
        path = self._policy_path()
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        from selfemo.devices import compute_dtype

        self.dtype = resolve_dtype(self.run_spec.spec.model.dtype, path)  # of the saved checkpoint
        # float32 on a CPU without native bf16 (selfemo.devices); the device decides, not whether a GPU exists
        self.compute = compute_dtype(self.dtype, on_gpu=self.device.type == "cuda")
        self._build_examples(groups)
        self._build_plan()
        self._load_model(path)
        if self._zero3:  # partitioned weights compute only through the engine's hooks: the engine first
            self._build_optimizer()
            self._reference_logprobs()
        else:
            self._reference_logprobs()
            self._build_optimizer()
        start, history = self._resume()
        self.info.update(policy=path, dtype=self.dtype, compute_dtype=self.compute, device=str(self.batch_device),
                         threads=threads, world_size=self.env.world_size, resumed_from_step=start)
        done = self._train(start, history, stop_after_steps)
        if not done:
            return {"round": self.round, "complete": False, "step": len(history)}
        return self._finish(history)

    def _policy_path(self) -> str:
        """π_{r-1}; one download per node (local rank 0 first, the others reuse its cache)."""
        if self.env.local_rank == 0:
            path = policy_path(self.run_spec, self.round)
        barrier(self.env)
        return path if self.env.local_rank == 0 else policy_path(self.run_spec, self.round)

    def _build_examples(self, groups: list[dict]) -> None:
        t, tok, eos = self.t, hf_tokenize(self.tokenizer), self.tokenizer.eos_token_id
        self.sft = sft_examples(groups, tok, eos, t.max_seq_len) if (t.algorithm == "sft" or t.sft_warmup) else []
        self.grpo, skipped = ([], 0)
        if t.algorithm == "self-grpo":
            self.grpo, skipped = grpo_examples(groups, tok, eos, t.max_seq_len, t.min_group_std)
        self.info = {"round": self.round, "algorithm": t.algorithm, "groups": len(groups),
                     "groups_skipped": skipped, "grpo_examples": len(self.grpo), "sft_examples": len(self.sft)}
        if not self.sft and not self.grpo:
            why = (f"{skipped} of {len(groups)} groups skipped (reward std < minGroupStd {t.min_group_std})"
                   if t.algorithm == "self-grpo" else f"{len(groups)} groups")
            raise TrainerError(f"round {self.round}: no learning signal: {why} and no kept samples to fine-tune on; "
                               "no checkpoint written", EXIT_NO_SIGNAL)
        if t.algorithm == "self-grpo" and not self.grpo:
            log.warning("round %d: all %d groups skipped for SELF-GRPO; training only the SFT warm-up", self.round, len(groups))

    def _build_plan(self) -> None:
        """[(phase, per-rank micro-batches of example indices)] for every optimizer step."""
        t, e = self.t, self.env
        self.plan = []
        for phase, examples in (("sft", self.sft), ("grpo", self.grpo)):
            lengths = [len(x.ids) for x in examples]
            for epoch in range(t.epochs):
                for step in plan_steps(len(examples), t.micro_batch_size, t.gradient_accumulation, e.world_size,
                                       t.seed, epoch, lengths, [x.group for x in examples]):
                    self.plan.append((phase, step))
        self.metrics.total_steps.set(len(self.plan))
        log.info("round %d: %d SFT and %d SELF-GRPO examples, %d optimizer steps on %d rank(s)",
                 self.round, len(self.sft), len(self.grpo), len(self.plan), e.world_size)

    def _load_model(self, path: str) -> None:
        """Plain torch: fp32 masters, compute dtype for forward/backward.  DeepSpeed: its own masters.

        The model goes to this rank's device before the log-prob passes, which
        run before `deepspeed.initialize` (that would move it to the same
        device, `cuda:LOCAL_RANK`, but only then).  The fp32 copy of the
        trainable weights for the masters stays on the CPU until the masters
        (on the device) take it.

        Under ZeRO-3 the model is loaded partitioned (`model.zero3_init`):
        each rank holds its 1/world_size share from the start, never the
        whole model, and `zero.Init` has already put the shares where they
        live (this rank's device, or the CPU with `offloadParams`), so there
        is nothing to move.  What each rank holds is recorded in
        `summary.json` (`zero3_load.policy`), read before `deepspeed.initialize`."""
        spec = self.run_spec.spec
        plain = not self.env.distributed
        zero3 = self._ds_config() if self._zero3 else None
        self.model = load_causal_lm(path, "float32" if plain else self.compute, spec.model.trust_remote_code, zero3)
        if zero3 is not None:
            self.info["zero3_load"] = {"policy": all_gather_objects(partition_facts(self.model), self.env)}
        if self.t.lora.enabled:
            torch.manual_seed(self.t.seed)
            self.model = add_lora(self.model, self.t.lora)
        self.fp32_init = {n: p.detach().clone() for n, p in trainable(self.model)} if plain and self.compute != "float32" else None
        if zero3 is None:
            self.model.to(device=self.device, dtype=getattr(torch, self.compute))
        self.model.train()

    @property
    def batch_device(self) -> torch.device:
        """Where batches go: the DeepSpeed engine's device once it placed the model, else this rank's."""
        return self.engine.device if self.engine is not None else self.device

    def _collate(self, examples: list[Example]) -> Batch:
        return collate(examples, self.pad, self.batch_device)

    def _my_indices(self, phase: str) -> list[int]:
        return sorted({i for ph, step in self.plan if ph == phase for mb in step[self.env.rank] for i in mb})

    def _fill_logprobs(self, model, examples: list[Example], indices: list[int], attr: str) -> None:
        """Set `attr` of examples[indices] to their completion log-probs under `model`, without grad.

        Under ZeRO-3 every rank runs as many passes as the rank with the most
        (`batches.micro_batches`); ranks differ because each passes only the
        distinct examples of its own micro-batches (the plan's wrap-around
        repeats some).
        """
        was_training = model.training
        model.eval()
        order = sorted(indices, key=lambda i: len(examples[i].ids))
        own = -(-len(order) // self.t.micro_batch_size)
        passes = int(all_reduce_max(own, self.env, self.batch_device)) if self._zero3 else own
        with torch.no_grad():
            for n, mb in enumerate(micro_batches(order, self.t.micro_batch_size, passes)):
                chunk = [examples[i] for i in mb]
                lp = completion_logprobs(model, self._collate(chunk)).tolist()
                if n >= own:  # a repeat, only to take part in the other ranks' gathers
                    continue
                at = 0
                for ex in chunk:
                    setattr(ex, attr, lp[at:at + ex.n_completion])
                    at += ex.n_completion
        model.train(was_training)

    def _reference_logprobs(self) -> None:
        """Old log-probs from π_{r-1}; reference log-probs from π₀ only when it differs and kl > 0."""
        mine = self._my_indices("grpo")
        if not mine:
            return
        t0 = time.perf_counter()
        self._fill_logprobs(self.engine or self.model, self.grpo, mine, "old_logp")  # an engine exists here only under ZeRO-3
        if self.t.kl > 0:
            if self.t.kl_reference == "base" and self.round > 1:
                ref = self._reference_model()
                self._fill_logprobs(ref, self.grpo, mine, "ref_logp")
                if hasattr(ref, "destroy"):  # π₀'s ZeRO-3 engine: remove its hooks before it goes
                    ref.destroy()
                del ref
                if self.device.type == "cuda":  # give π₀'s memory back before training allocates
                    torch.cuda.empty_cache()
            else:  # the reference is π_{r-1} itself
                for i in mine:
                    self.grpo[i].ref_logp = self.grpo[i].old_logp
        self.info["logprob_seconds"] = round(time.perf_counter() - t0, 3)
        log.info("old/reference log-probs of %d sequences in %.1f s", len(mine), self.info["logprob_seconds"])

    def _reference_model(self):
        """π₀ for the reference pass: whole on this rank's device, or under ZeRO-3 partitioned from the load.

        Under ZeRO-3 π₀ is loaded like the policy (each rank holds its share;
        `zero3_load.reference` in summary.json) and wrapped in a DeepSpeed
        engine of its own with no optimizer (DeepSpeed's ZeRO-3 inference
        mode), because a partitioned model computes only through the
        parameter-fetching hooks `deepspeed.initialize` installs, and the
        policy's engine runs only the policy.  The alternatives hold π₀ whole
        on every rank, the thing avoided: `GatheredParameters` over the whole
        model, or loading it unpartitioned.  It lives for this one pass;
        frozen, so the engine keeps no gradients for it.
        """
        from selfemo.models import resolve_model

        spec = self.run_spec.spec
        path = resolve_model(spec.model.base)
        if not self._zero3:
            return load_causal_lm(path, self.compute, spec.model.trust_remote_code).to(self.device)
        import deepspeed

        config = self._ds_config()
        ref = load_causal_lm(path, self.compute, spec.model.trust_remote_code, config)
        self.info["zero3_load"]["reference"] = all_gather_objects(partition_facts(ref), self.env)
        ref.requires_grad_(False)
        engine, *_ = deepspeed.initialize(model=ref, config=config)
        return engine

    def _ds_config(self) -> dict:
        from selfemo.trainer.deepspeed_config import deepspeed_config

        return deepspeed_config(self.t, self.compute, self.env.world_size)

    def _lr_lambda(self):
        t = self.t
        factors = lr_factors([phase for phase, _ in self.plan], t.warmup_ratio, t.learning_rate, t.grpo_learning_rate)
        # LambdaLR asks for the factor one step past the last when it steps after the final update
        return lambda s: factors[min(s, len(factors) - 1)] if factors else 1.0

    def _build_optimizer(self) -> None:
        t = self.t
        if not self.env.distributed:
            self.opt = MasterWeights(trainable(self.model), t.learning_rate, t.weight_decay)
            if self.fp32_init is not None:
                self.opt.load_state_dict({"masters": self.fp32_init, "optimizer": self.opt.optimizer.state_dict()})
                self.fp32_init = None
            self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt.optimizer, self._lr_lambda())
            return
        import deepspeed

        from selfemo.trainer.deepspeed_config import engine_facts

        params = [p for _, p in trainable(self.model)]
        opt = torch.optim.AdamW(params, lr=t.learning_rate, weight_decay=t.weight_decay)
        lam = self._lr_lambda()
        self.engine, self.opt, _, self.sched = deepspeed.initialize(
            model=self.model, optimizer=opt, model_parameters=params,
            lr_scheduler=lambda o: torch.optim.lr_scheduler.LambdaLR(o, lam),
            config=self._ds_config())
        self.info["deepspeed"] = engine_facts(self.engine)

    def _resume(self) -> tuple[int, list[dict]]:
        steps = train_state.committed_steps(self.store, self.rp)
        if not steps:
            return 0, []
        step = steps[-1]
        if self.engine is not None:
            client = train_state.load_deepspeed(self.engine, self.store, self.rp, step)
            history = client["history"]
        else:
            st = train_state.load_plain(self.store, self.rp, step)
            self.opt.load_state_dict(st["optimizer"])
            self.sched.load_state_dict(st["scheduler"])
            history = st["history"]
        log.info("resuming round %d at step %d of %d", self.round, step, len(self.plan))
        return step, history[:step]

    # ------------------------------------------------------------------ training

    def _train(self, start: int, history: list[dict], stop_after: int | None) -> bool:
        ran = 0
        self.train_seconds = 0.0
        for idx in range(start, len(self.plan)):
            history.append(self._step(idx))
            ran += 1
            s = idx + 1
            if self.t.checkpoint_every and s % self.t.checkpoint_every == 0 and s < len(self.plan):
                self._save_state(s, history)
            if stop_after is not None and ran >= stop_after and s < len(self.plan):
                log.info("stopping after %d steps (--stop-after-steps)", ran)
                self.history = history
                return False
        self.history = history
        return True

    def _step(self, idx: int) -> dict:
        phase, per_rank = self.plan[idx]
        examples = self.sft if phase == "sft" else self.grpo
        batches = [self._collate([examples[i] for i in mb]) for mb in per_rank[self.env.rank]]
        n_global = all_reduce_sum([sum(b.n_tokens for b in batches)], self.env, self.batch_device)[0]
        lr = float(self.engine.get_lr()[0] if self.engine is not None else self.sched.get_last_lr()[0])
        t0 = time.perf_counter()
        acc = [0.0] * 6  # loss, kl·tokens, clip·tokens, reward sum, sequences, sequence tokens
        for b in batches:
            logp = completion_logprobs(self.engine or self.model, b)
            ones = torch.ones_like(logp)
            if phase == "sft":
                parts = sft_loss(logp, ones, n_tokens=n_global)
            else:
                parts = self_grpo_loss(logp, b.old_logp, b.ref_logp if self.t.kl > 0 else None, b.advantages, ones,
                                       clip=self.t.clip, kl_weight=self.t.kl, n_tokens=n_global,
                                       dual_clip=self.t.dual_clip)
            if self.engine is not None:  # DeepSpeed averages over ranks: undo it, the normaliser is global
                self.engine.backward(parts.loss * self.env.world_size, scale_wrt_gas=False)
                self.engine.step()
            else:
                parts.loss.backward()
            acc = [a + v for a, v in zip(acc, (float(parts.loss.detach()), parts.kl * parts.tokens,
                                                parts.clip_fraction * parts.tokens, float(b.rewards.sum()),
                                                len(b.rewards), int(b.attention_mask.sum())))]
        if self.engine is not None:
            norm = float(self.engine.get_global_grad_norm() or 0.0)
        else:
            norm = self.opt.step(self.t.max_grad_norm)
            self.sched.step()
        seconds = time.perf_counter() - t0
        g = all_reduce_sum(acc + [seconds], self.env, self.batch_device)
        seconds = g[6] / self.env.world_size
        rec = {"step": idx + 1, "phase": phase, "loss": g[0], "kl": g[1] / max(n_global, 1),
               "clip_fraction": g[2] / max(n_global, 1), "reward": g[3] / max(g[4], 1), "grad_norm": norm,
               "lr": lr, "samples": int(g[4]), "tokens": int(g[5]), "completion_tokens": int(n_global),
               "seconds": round(seconds, 4), "tokens_per_second": g[5] / seconds if seconds > 0 else 0.0}
        self.train_seconds += seconds
        self._observe(rec)
        return rec

    def _observe(self, rec: dict) -> None:
        m = self.metrics
        m.steps.labels(phase=rec["phase"]).inc()
        m.loss.labels(phase=rec["phase"]).set(rec["loss"])
        m.reward.set(rec["reward"])
        m.kl.set(rec["kl"])
        m.clip_fraction.set(rec["clip_fraction"])
        m.grad_norm.set(rec["grad_norm"])
        m.learning_rate.set(rec["lr"])
        m.tokens_per_second.set(rec["tokens_per_second"])
        m.tokens.inc(rec["tokens"])
        m.samples.inc(rec["samples"])
        if self.env.is_main:
            log.info("step %d/%d %s loss %.4f reward %.3f kl %.4f clip %.3f grad-norm %.3f lr %.2e %.0f tok/s",
                     rec["step"], len(self.plan), rec["phase"], rec["loss"], rec["reward"], rec["kl"],
                     rec["clip_fraction"], rec["grad_norm"], rec["lr"], rec["tokens_per_second"])

    def _save_state(self, step: int, history: list[dict]) -> None:
        if self.engine is not None:
            train_state.save_deepspeed(self.engine, self.store, self.rp, step, {"history": history}, self.env)
        else:
            train_state.save_plain(self.store, self.rp, step, {"optimizer": self.opt.state_dict(),
                                                                "scheduler": self.sched.state_dict(),
                                                                "history": history})

    # ------------------------------------------------------------------ the result

    @property
    def _zero3(self) -> bool:
        """DeepSpeed ZeRO-3: the weights are partitioned from the load on, before the engine exists."""
        return self.env.distributed and self.t.deepspeed.zero_stage == 3

    def _param_hash(self) -> str:
        """sha256 of the full parameters (gathered under ZeRO-3: a rank's own tensors are empty there)."""
        h = hashlib.sha256()
        module = getattr(self.engine, "module", None) or self.model
        for name, p in gathered_params(module, self._zero3):
            h.update(name.encode())
            h.update(p.detach().float().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()

    def _finish(self, history: list[dict]) -> dict:
        hashes = [self._param_hash()]
        state_dict = None
        if self.engine is not None:
            hashes = all_gather_objects(hashes[0], self.env)
            if self._zero3:  # the module's own tensors are empty shards: gather the full weights on rank 0
                state_dict = self.engine._zero3_consolidated_16bit_state_dict()
        samples = sum(r["samples"] for r in history)
        tokens = sum(r["tokens"] for r in history)
        phases = {ph: [r["loss"] for r in history if r["phase"] == ph] for ph in ("sft", "grpo")}
        summary = {**self.info, "steps": len(history), "samples": samples, "tokens": tokens,
                   "train_seconds": round(self.train_seconds, 3),
                   "samples_per_second": samples / self.train_seconds if self.train_seconds else None,
                   "tokens_per_second": tokens / self.train_seconds if self.train_seconds else None,
                   "loss": {ph: {"first": v[0], "last": v[-1]} for ph, v in phases.items() if v},
                   "grpo_mean_reward": (sum(e.reward for e in self.grpo) / len(self.grpo)) if self.grpo else None,
                   "rank_param_sha256": hashes, "checkpoint": self.store.uri_for(self.ckpt)}
        if self.env.is_main:
            with tempfile.TemporaryDirectory(prefix="selfemo-ckpt-") as tmp:
                out_dir = Path(tmp)
                save_hf(self.engine or self.model, self.tokenizer, out_dir, self.dtype, state_dict)
                (out_dir / "training").mkdir()
                (out_dir / "training" / "metrics.json").write_text(json.dumps({"steps": history}, indent=1))
                (out_dir / "training" / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True))
                with self.store.commit(self.ckpt) as out:
                    out.upload_dir(out_dir)
            self.store.delete(train_state.state_root(self.rp))
            log.info("round %d: π_%d committed to %s (%d steps, %.2f samples/s)", self.round, self.round,
                     summary["checkpoint"], len(history), summary["samples_per_second"] or 0.0)
        barrier(self.env)
        return summary


__all__ = ["train_round", "TrainerError", "EXIT_BAD_INPUT", "EXIT_NO_SIGNAL"]
