"""SELF-GRPO loss pieces: hand-computed values, the skip rule, and the
gradient of the whole loss against finite differences on a toy policy."""
from __future__ import annotations

import math

import pytest
import torch

from selfemo.trainer.grpo import (clipped_policy_loss, group_advantages, group_rewards, kl_estimator,
                                  self_grpo_loss, sft_loss, token_logprobs)


def test_group_advantages_hand_computed():
    adv = group_advantages([1.0, 0.0], min_group_std=0.05, eps=0.0)
    assert adv.tolist() == pytest.approx([1.0, -1.0])
    # rewards 1, 2, 3, 6: mean 3, population std sqrt((4+1+0+9)/4) = sqrt(3.5)
    adv = group_advantages(torch.tensor([1.0, 2.0, 3.0, 6.0]), 0.05, eps=1e-6)
    s = math.sqrt(3.5) + 1e-6
    assert adv.tolist() == pytest.approx([-2 / s, -1 / s, 0.0, 3 / s])
    assert float(adv.sum()) == pytest.approx(0.0, abs=1e-12)


def test_group_advantages_skip_rule():
    assert group_advantages([0.3, 0.3, 0.3], 0.0) is None  # identical rewards: no signal even with minGroupStd 0
    assert group_advantages([1.0, 1.04], 0.05) is None  # std 0.02 < 0.05
    assert group_advantages([1.0, 1.2], 0.05) is not None  # std 0.1
    assert group_advantages([1.0], 0.0) is None  # one candidate cannot be normalised
    with pytest.raises(ValueError):
        group_advantages(torch.zeros(2, 2), 0.0)


def test_group_rewards_reads_stored_totals():
    group = {"candidates": [{"reward": {"total": 1.49, "alignment": 1.0}}, {"reward": {"total": 0.2}}]}
    assert group_rewards(group) == [1.49, 0.2]


def test_token_logprobs_hand_computed():
    logits = torch.tensor([[0.0, math.log(3.0)], [0.0, 0.0]], dtype=torch.bfloat16)
    lp = token_logprobs(logits, torch.tensor([1, 0]))
    assert lp.dtype == torch.float32
    assert lp.tolist() == pytest.approx([math.log(0.75), math.log(0.5)], abs=1e-2)


def test_clipped_policy_loss_hand_computed():
    old = torch.zeros(4)
    logp = torch.log(torch.tensor([1.5, 1.5, 0.5, 1.1]))
    adv = torch.tensor([1.0, -1.0, -1.0, 2.0])
    mask = torch.tensor([1.0, 1.0, 1.0, 0.0])
    loss, frac = clipped_policy_loss(logp, old, adv, mask, clip=0.2)
    # ratio 1.5, A=+1 → clipped at 1.2; ratio 1.5, A=−1 → unclipped −1.5 wins (loss 1.5);
    # ratio 0.5, A=−1 → clipped at 0.8 (loss 0.8); last token masked out
    assert loss.tolist() == pytest.approx([-1.2, 1.5, 0.8, 0.0], abs=1e-6)
    assert float(frac) == pytest.approx(2 / 3)


def test_dual_clip_bounds_the_loss_of_negative_advantages_hand_computed():
    """With c = 3 a token with A < 0 loses at most 3·|A| and gets no gradient past it;
    positive advantages and small ratios are plain PPO-clip, and no c is plain PPO."""
    old = torch.zeros(4)
    logp = torch.log(torch.tensor([5.0, 2.0, 5.0, 0.5])).requires_grad_(True)
    adv = torch.tensor([-1.0, -1.0, 1.0, -2.0])
    mask = torch.ones(4)
    plain, plain_frac = clipped_policy_loss(logp, old, adv, mask, clip=0.2)
    assert plain.tolist() == pytest.approx([5.0, 2.0, -1.2, 1.6], abs=1e-6)
    loss, frac = clipped_policy_loss(logp, old, adv, mask, clip=0.2, dual_clip=3.0)
    # ratio 5, A=−1 → capped at 3; ratio 2, A=−1 → 2 < 3 stays; A=+1 → clipped at 1.2 as before;
    # ratio 0.5, A=−2 → clipped at 0.8 → 1.6 as before
    assert loss.tolist() == pytest.approx([3.0, 2.0, -1.2, 1.6], abs=1e-6)
    assert float(plain_frac) == pytest.approx(2 / 4) and float(frac) == pytest.approx(3 / 4)
    loss.sum().backward()
    assert logp.grad.tolist() == pytest.approx([0.0, 2.0, 0.0, 0.0], abs=1e-6)  # d(−ρA)/dlogp = −ρA where unclipped
    parts = self_grpo_loss(logp.detach(), old, None, adv, mask, clip=0.2, kl_weight=0.0, dual_clip=3.0)
    assert float(parts.loss) == pytest.approx((3.0 + 2.0 - 1.2 + 1.6) / 4, abs=1e-6)


def test_kl_estimator_hand_computed():
    logp = torch.log(torch.tensor([0.5, 0.3]))
    ref = torch.log(torch.tensor([0.25, 0.3]))
    d = math.log(0.5)
    assert kl_estimator(logp, ref).tolist() == pytest.approx([0.5 - d - 1.0, 0.0], abs=1e-6)
    assert (kl_estimator(torch.randn(100), torch.randn(100)) >= 0).all()



def test_kl_estimator_is_capped_where_the_policy_left_the_reference_far_behind():
    """A token at logp − ref = −15 would give exp(15) ≈ 3e6 (and a gradient to match);
    capped, it gives 10 and no gradient, while an ordinary token keeps its exact k3 and gradient."""
    from selfemo.trainer.grpo import KL_TOKEN_CAP

    logp = torch.tensor([-17.0, -1.2], requires_grad=True)
    ref = torch.tensor([-2.0, -1.0])
    kl = kl_estimator(logp, ref)
    assert kl[0].item() == KL_TOKEN_CAP
    d = 0.2
    assert kl[1].item() == pytest.approx(math.exp(d) - d - 1.0, abs=1e-6)
    kl.sum().backward()
    assert logp.grad[0].item() == 0.0 and logp.grad[1].item() == pytest.approx(1.0 - math.exp(d), abs=1e-6)
    assert torch.isfinite(kl_estimator(torch.tensor([-1e4]), torch.tensor([0.0]))).all()

def test_total_loss_token_mean_and_normaliser():
    logp = torch.log(torch.tensor([0.5, 0.5, 0.5]))
    old = logp.clone()
    ref = torch.log(torch.tensor([0.25, 0.5, 0.5]))
    adv = torch.tensor([1.0, 1.0, -1.0])
    mask = torch.ones(3)
    parts = self_grpo_loss(logp, old, ref, adv, mask, clip=0.2, kl_weight=0.1)
    kl0 = 0.5 - math.log(0.5) - 1.0
    expected = (-1.0 - 1.0 + 1.0 + 0.1 * kl0) / 3
    assert float(parts.loss) == pytest.approx(expected, abs=1e-6)
    assert parts.tokens == 3 and parts.kl == pytest.approx(kl0 / 3, abs=1e-6)
    # an explicit step normaliser (tokens of all micro-batches) divides the sum instead
    parts = self_grpo_loss(logp, old, ref, adv, mask, clip=0.2, kl_weight=0.1, n_tokens=6)
    assert float(parts.loss) == pytest.approx(expected / 2, abs=1e-6)
    # no reference needed when the KL weight is 0
    parts = self_grpo_loss(logp, old, None, adv, mask, clip=0.2, kl_weight=0.0)
    assert float(parts.loss) == pytest.approx(-1.0 / 3, abs=1e-6)
    s = sft_loss(logp, torch.tensor([1.0, 1.0, 0.0]))
    assert float(s.loss) == pytest.approx(-math.log(0.5), abs=1e-6)


def test_loss_gradient_matches_finite_differences():
    """d loss / d W of a toy linear policy (float64), by autograd and by central differences.

    Old log-probs come from a slightly different W so ratios are away from 1;
    points where a ratio sits exactly on a clip boundary are measure-zero.
    """
    g = torch.Generator().manual_seed(0)
    N, H, V = 12, 5, 7
    x = torch.randn(N, H, generator=g, dtype=torch.float64)
    targets = torch.randint(0, V, (N,), generator=g)
    w0 = torch.randn(H, V, generator=g, dtype=torch.float64) * 0.5
    old = token_logprobs(x @ (w0 + 0.2 * torch.randn(H, V, generator=g, dtype=torch.float64)), targets)
    ref = token_logprobs(x @ (w0 + 0.3 * torch.randn(H, V, generator=g, dtype=torch.float64)), targets)
    adv = torch.randn(N, generator=g, dtype=torch.float64)
    mask = (torch.rand(N, generator=g) > 0.2).to(torch.float64)

    def loss_of(w):
        return self_grpo_loss(token_logprobs(x @ w, targets), old, ref, adv, mask, clip=0.2, kl_weight=0.04).loss

    assert torch.autograd.gradcheck(loss_of, (w0.clone().requires_grad_(True),), eps=1e-6, atol=1e-7)
    # and explicitly, one coordinate at a time, with some tokens clipped
    w = w0.clone().requires_grad_(True)
    loss_of(w).backward()
    h = 1e-6
    numeric = torch.zeros_like(w0)
    for i in range(H):
        for j in range(V):
            e = torch.zeros_like(w0)
            e[i, j] = h
            numeric[i, j] = (loss_of(w0 + e) - loss_of(w0 - e)) / (2 * h)
    torch.testing.assert_close(w.grad, numeric, atol=1e-7, rtol=1e-5)
    _, frac = clipped_policy_loss(token_logprobs(x @ w0, targets), old, adv, mask, 0.2)
    assert 0.0 < float(frac) < 1.0  # both clipped and unclipped tokens were checked
