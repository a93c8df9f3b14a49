"""Groups → examples → micro-batches, the spec → DeepSpeed config mapping and the rank's device (pure)."""
from __future__ import annotations

import pytest
import torch

from selfemo.spec import DeepSpeedSpec, TrainingSpec
from selfemo.trainer.batches import (build_sequence, collate, grpo_examples, lr_factors, micro_batches, plan_steps,
                                     sft_examples)
from selfemo.trainer.deepspeed_config import deepspeed_config
from selfemo.trainer.dist import train_device

EOS = 2


def tok(text: str) -> list[int]:
    """A toy tokenizer: one id per character (ord), enough to check the bookkeeping."""
    return [ord(ch) for ch in text]


def group(prompt: str, totals: list[float], comps: list[list[int]], kept=None, grpo=None) -> dict:
    g = {"prompt": prompt,
         "candidates": [{"text": "", "token_ids": c, "reward": {"total": t}} for t, c in zip(totals, comps)]}
    if kept is not None:
        g["kept"] = kept
    if grpo is not None:
        g["grpo"] = grpo
    return g


def test_build_sequence_appends_eos_and_truncates_left():
    assert build_sequence([10, 11, 12], [5, 6], EOS, 100) == ([10, 11, 12, 5, 6, EOS], 3)
    assert build_sequence([10, 11, 12], [5, EOS], EOS, 100) == ([10, 11, 12, 5, EOS], 3)
    assert build_sequence([10, 11, 12], [], EOS, 100) == ([10, 11, 12, EOS], 3)
    # 6 tokens into 4: the two oldest prompt tokens go, the completion stays whole
    assert build_sequence([10, 11, 12], [5, 6], EOS, 4) == ([12, 5, 6, EOS], 1)
    # a completion longer than the limit keeps its tail; position 0 has no predecessor
    ids, start = build_sequence([10], [1, 3, 4, 5, 6, 7], EOS, 4)
    assert ids == [5, 6, 7, EOS] and start == 1


def test_grpo_examples_advantages_and_skips():
    groups = [
        group("ab", [1.0, 0.0], [[5], [6, EOS]]),
        group("c", [0.5, 0.5], [[5], [6]]),  # std 0: skipped
        group("d", [1.0, 0.0], [[5], [6]], grpo=False),  # the flywheel said no signal
    ]
    ex, skipped = grpo_examples(groups, tok, EOS, 64, min_group_std=0.05)
    assert skipped == 2 and len(ex) == 2
    assert ex[0].ids == [97, 98, 5, EOS] and ex[0].start == 2 and ex[0].n_completion == 2
    assert ex[1].ids == [97, 98, 6, EOS]
    assert ex[0].advantage == pytest.approx(1.0, abs=1e-5) and ex[1].advantage == pytest.approx(-1.0, abs=1e-5)
    assert (ex[0].group, ex[0].candidate, ex[1].candidate) == (0, 0, 1)


def test_sft_examples_take_kept_candidates():
    groups = [group("ab", [1.4, 0.1, 1.2], [[5], [6], [7]], kept=[0, 2]), group("c", [0.1], [[5]], kept=[])]
    ex = sft_examples(groups, tok, EOS, 64)
    assert [e.ids for e in ex] == [[97, 98, 5, EOS], [97, 98, 7, EOS]]
    assert [e.reward for e in ex] == [1.4, 1.2]


def test_micro_batches_repeat_the_last_up_to_the_passes_every_rank_runs():
    """ZeRO-3's log-prob passes: a rank with 3 examples in pairs runs 2 passes of its own and
    repeats its last to match a rank with 4 passes; without `at_least` nothing is repeated."""
    assert micro_batches([5, 1, 7], 2) == [[5, 1], [7]]
    assert micro_batches([5, 1, 7], 2, at_least=4) == [[5, 1], [7], [7], [7]]
    assert micro_batches([5, 1, 7, 2], 2, at_least=1) == [[5, 1], [7, 2]]
    assert micro_batches([], 2, at_least=3) == []


def test_plan_steps_is_deterministic_balanced_and_covers_everything():
    lengths = [5, 9, 3, 7, 2, 8, 6, 4, 1, 10, 11]
    plan = plan_steps(len(lengths), micro_batch_size=2, accumulation=2, world_size=2, seed=3, epoch=0, lengths=lengths)
    assert plan == plan_steps(len(lengths), 2, 2, 2, 3, 0, lengths)
    assert plan != plan_steps(len(lengths), 2, 2, 2, 3, 1, lengths)  # a new order each epoch
    seen = [i for step in plan for rank in step for mb in rank for i in mb]
    assert set(seen) == set(range(len(lengths)))
    for step in plan:
        assert len(step) == 2 and all(len(rank) == 2 and all(rank) for rank in step)
        for rank in step:
            for mb in rank:  # a micro-batch is a length bucket: contiguous in sorted order
                assert len(mb) <= 2
    # 11 examples, 8 per step: the last window has 3 < 4 micro-batches and wraps around
    assert len(plan) == 2 and sum(len(mb) for rank in plan[1] for mb in rank) == 4
    assert plan_steps(0, 2, 2, 2, 0, 0, []) == []


def test_lr_factors_warm_up_then_scale_the_grpo_steps():
    phases = ["sft"] * 2 + ["grpo"] * 4
    assert lr_factors(phases, 0.0, 2e-5, None) == [1.0] * 6
    assert lr_factors(phases, 0.0, 2e-5, 2e-6) == pytest.approx([1.0, 1.0] + [0.1] * 4)
    # int(0.5 × 6) = 3 warm-up steps, counted over the whole plan, times the GRPO scale
    assert lr_factors(phases, 0.5, 2e-5, 2e-6) == pytest.approx([1 / 3, 2 / 3, 0.1, 0.1, 0.1, 0.1])
    assert lr_factors(["grpo"] * 2, 0.0, 1e-6, 4e-6) == pytest.approx([4.0, 4.0])  # faster is allowed too
    assert lr_factors([], 0.5, 1e-6, None) == []


def test_collate_masks_completion_tokens_and_flattens_per_token_values():
    groups = [group("ab", [1.0, 0.0], [[5, 6], [7]])]
    ex, _ = grpo_examples(groups, tok, EOS, 64, 0.05)
    ex[0].old_logp, ex[1].old_logp = [-1.0, -2.0, -3.0], [-4.0, -5.0]
    b = collate(ex, pad_id=0)
    assert b.input_ids.tolist() == [[97, 98, 5, 6, EOS], [97, 98, 7, EOS, 0]]
    assert b.attention_mask.tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]]
    assert b.loss_mask.tolist() == [[False, False, True, True, True], [False, False, True, True, False]]
    assert b.n_tokens == 5
    assert b.input_ids[b.loss_mask].tolist() == [5, 6, EOS, 7, EOS]
    assert b.advantages.tolist() == pytest.approx([1, 1, 1, -1, -1], abs=1e-5)
    assert b.old_logp.tolist() == [-1.0, -2.0, -3.0, -4.0, -5.0]
    assert b.ref_logp is None


def test_collate_puts_every_tensor_on_the_given_device():
    """`meta` stands in for a GPU: a tensor left on the CPU would show."""
    groups = [group("ab", [1.0, 0.0], [[5, 6], [7]])]
    ex, _ = grpo_examples(groups, tok, EOS, 64, 0.05)
    ex[0].old_logp = ex[0].ref_logp = [-1.0, -2.0, -3.0]
    ex[1].old_logp = ex[1].ref_logp = [-4.0, -5.0]
    b = collate(ex, pad_id=0, device=torch.device("meta"))
    tensors = {k: v for k, v in vars(b).items() if isinstance(v, torch.Tensor)}
    assert len(tensors) == 7 and {t.device.type for t in tensors.values()} == {"meta"}
    assert b.input_ids.shape == (2, 5) and b.old_logp.shape == (5,)
    assert collate(ex, pad_id=0).input_ids.device.type == "cpu"  # the default


def test_train_device_is_the_local_rank_gpu_or_the_cpu():
    cuda = torch.device
    assert train_device(cuda_devices=8, local_rank=0, gpus_per_node=8) == cuda("cuda", 0)  # one process
    assert train_device(cuda_devices=8, local_rank=5, gpus_per_node=8) == cuda("cuda", 5)  # rank 5 of a node
    assert train_device(cuda_devices=1, local_rank=0, gpus_per_node=1) == cuda("cuda", 0)
    assert train_device(cuda_devices=0, local_rank=0, gpus_per_node=8) == cuda("cpu")  # no GPU on this machine
    assert train_device(cuda_devices=0, local_rank=1, gpus_per_node=8) == cuda("cpu")  # gloo ranks on a CPU
    assert train_device(cuda_devices=4, local_rank=1, gpus_per_node=0) == cuda("cpu")  # the spec says CPU


def test_train_device_refuses_a_local_rank_without_a_gpu():
    """Falling back to the CPU here would train a GPU Job on the CPU; a launch error is clearer."""
    with pytest.raises(ValueError, match="LOCAL_RANK 2 has no GPU: 2 CUDA device"):
        train_device(cuda_devices=2, local_rank=2, gpus_per_node=8)
    with pytest.raises(ValueError, match="LOCAL_RANK 1 has no GPU: 1 CUDA device"):
        train_device(cuda_devices=1, local_rank=1, gpus_per_node=8)  # CUDA_VISIBLE_DEVICES=<one GPU> per rank


def test_deepspeed_config_from_spec():
    t = TrainingSpec(micro_batch_size=4, gradient_accumulation=3, max_grad_norm=0.5,
                     deepspeed=DeepSpeedSpec(zero_stage=2))
    c = deepspeed_config(t, "bfloat16", world_size=2)
    assert c["train_batch_size"] == 24 and c["train_micro_batch_size_per_gpu"] == 4
    assert c["gradient_accumulation_steps"] == 3 and c["gradient_clipping"] == 0.5
    assert c["zero_optimization"]["stage"] == 2 and "offload_optimizer" not in c["zero_optimization"]
    assert c["bf16"] == {"enabled": True} and c["fp16"]["enabled"] is False
    c = deepspeed_config(TrainingSpec(deepspeed=DeepSpeedSpec(zero_stage=3, offload_optimizer=True, offload_params=True)),
                         "float32", world_size=8)
    z = c["zero_optimization"]
    assert z["stage"] == 3 and z["offload_optimizer"]["device"] == "cpu" and z["offload_param"]["device"] == "cpu"
    assert c["bf16"]["enabled"] is False and c["fp16"]["enabled"] is False
    assert c["train_batch_size"] == 8 * 8 and c["zero_force_ds_cpu_optimizer"] is False
    assert deepspeed_config(TrainingSpec(), "float16", 1)["fp16"]["enabled"] is True
    assert deepspeed_config(TrainingSpec(deepspeed=DeepSpeedSpec(zero_stage=0)), "float32", 1)["zero_optimization"] == {"stage": 0}
    with pytest.raises(ValueError):
        deepspeed_config(TrainingSpec(), "auto", 1)
    with pytest.raises(ValueError):
        deepspeed_config(TrainingSpec(), "float32", 0)


def test_plan_steps_keeps_groups_together():
    units = [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3]
    lengths = [3, 5, 4, 6] * 4
    for epoch in range(3):
        plan = plan_steps(16, 4, 2, 1, 0, epoch, lengths, units)
        for step in plan:  # 8 examples per step = exactly two whole groups
            groups = [units[i] for mb in step[0] for i in mb]
            assert all(groups.count(g) == 4 for g in set(groups)) and len(set(groups)) == 2
