"""SELF-GRPO as small pure torch functions (DESIGN.md, "The method").

Why pure functions: the loss is the part of the trainer that is easiest to
get subtly wrong (signs, clipping side, normalisation), so every piece is
testable by hand-computed values and by finite differences, independent of
models, batches and DeepSpeed.

Rewards are *not* computed here: each candidate carries the total reward the
generator scored with `selfemo.rewards` (alignment, group consistency and
format, weighted by the spec), and the trainer only normalises it per group.

Shapes: G candidates of one prompt; N completion tokens of a (micro-)batch,
flattened (only the positions the loss needs, see `trainer/loop.py`).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


def group_rewards(group: dict) -> list[float]:
    """The G stored total rewards of a group (`candidates[i].reward.total`)."""
    return [float(c["reward"]["total"]) for c in group["candidates"]]


def group_advantages(rewards: torch.Tensor | Sequence[float], min_group_std: float,
                     eps: float = 1e-6) -> torch.Tensor | None:
    """A_i = (r_i − mean_G r) / (std_G r + eps), rewards [G] → advantages [G].

    std is the population standard deviation (ddof 0, as the generator's
    `reward_std`, so the trainer and the flywheel's `grpo` flag agree).
    Returns None when std < `min_group_std` (or G < 2): such a group carries
    no signal and only adds noise, so it is skipped.
    """
    r = torch.as_tensor(rewards, dtype=torch.float64)
    if r.ndim != 1:
        raise ValueError(f"rewards must be 1-D [G], got shape {tuple(r.shape)}")
    if r.numel() < 2:
        return None
    std = r.std(unbiased=False)
    if float(std) < min_group_std or float(std) == 0.0:
        return None
    return (r - r.mean()) / (std + eps)


def token_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log π(target | context): logits [..., V], targets [...] (int) → [...].

    Computed in float32 at least (log-softmax over a 50k vocabulary in bf16
    loses the small differences the ratio is made of).
    """
    logits = logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits
    return torch.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)


def clipped_policy_loss(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor,
                        mask: torch.Tensor, clip: float, dual_clip: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Token-level PPO-clip surrogate: per-token loss [N] and clip fraction [].

    logp, old_logp, advantages, mask: [N] (advantages already broadcast from
    the sequence to its tokens; mask 1 where the token counts).
    loss_t = −min(ρ_t A_t, clip(ρ_t, 1−ε, 1+ε) A_t) with ρ_t = exp(logp − old_logp).
    With ``dual_clip`` = c (dual-clip PPO, Ye et al. 2020; verl's
    `clip_ratio_c`), a token with A_t < 0 loses at most c·|A_t|: plain PPO
    leaves that side unbounded, so a token whose ratio grew far past 1 (the
    SFT warm-up raised an answer this group got wrong) adds a loss, and a
    gradient, of ρ_t·|A_t| that can outweigh every other token of the step.
    The clip fraction is the share of masked tokens whose gradient a clip
    zeroed (either bound): a health signal for ε and lr.
    Returned unreduced so the caller chooses the normalisation.
    """
    ratio = torch.exp(logp - old_logp)
    unclipped = ratio * advantages
    clipped = torch.clamp(ratio, 1.0 - clip, 1.0 + clip) * advantages
    loss = -torch.minimum(unclipped, clipped)
    m = mask.to(loss.dtype)
    was_clipped = (clipped < unclipped).to(loss.dtype)
    if dual_clip is not None:
        bound = -dual_clip * advantages
        capped = (advantages < 0) & (loss > bound)
        loss = torch.where(capped, bound, loss)
        was_clipped = torch.maximum(was_clipped, capped.to(loss.dtype))
    frac = (was_clipped * m).sum() / m.sum().clamp_min(1.0)
    return loss * m, frac.detach()


# Cap of the per-token k3 value (and of the log-ratio inside it), as verl's
# `low_var_kl` does. Without it one token the policy has pushed far below the
# reference (logp − ref ≈ −15 after a few steps of negative advantages on a
# short label answer) makes exp(ref − logp) ~ 1e6: on 2026-12-07 a SELF-GRPO
# step logged kl 2.6e6 and grad-norm 3e7, so that the clipped gradient was that
# one token's. Capped, such a token stops adding KL gradient instead of
# drowning every other token's.
KL_TOKEN_CAP = 10.0
KL_LOG_RATIO_CAP = 20.0


def kl_estimator(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """k3 estimate of KL(π‖π_ref) per token: exp(ref − logp) − (ref − logp) − 1, [N] → [N],
    capped at `KL_TOKEN_CAP` (log-ratio clamped to ±`KL_LOG_RATIO_CAP` first, so it stays finite).

    Non-negative, unbiased for samples drawn from π, low variance (Schulman's k3);
    below the cap (k3 ≤ 10, i.e. ref − logp ≲ 2.5) it is exactly k3.
    """
    d = (ref_logp - logp).clamp(-KL_LOG_RATIO_CAP, KL_LOG_RATIO_CAP)
    return (torch.exp(d) - d - 1.0).clamp(max=KL_TOKEN_CAP)


@dataclass
class LossParts:
    """The total loss and what the trainer logs about it (detached floats)."""

    loss: torch.Tensor
    policy: float
    kl: float
    clip_fraction: float
    tokens: int


def self_grpo_loss(logp: torch.Tensor, old_logp: torch.Tensor, ref_logp: torch.Tensor | None,
                   advantages: torch.Tensor, mask: torch.Tensor, *, clip: float, kl_weight: float,
                   n_tokens: float | None = None, dual_clip: float | None = None) -> LossParts:
    """SELF-GRPO loss: token-level mean of (clipped surrogate + β·k3 KL) over completion tokens.

    All tensors [N]; `ref_logp` may be None when `kl_weight == 0`.
    `n_tokens` is the normaliser: the completion tokens of the whole
    optimizer step (all micro-batches, all ranks), so gradient accumulation
    and data parallelism give exactly the token mean of one big batch;
    default: this batch's masked tokens. `dual_clip`: see `clipped_policy_loss`.
    """
    pg, frac = clipped_policy_loss(logp, old_logp, advantages, mask, clip, dual_clip)
    m = mask.to(pg.dtype)
    denom = float(n_tokens) if n_tokens is not None else float(m.sum().clamp_min(1.0))
    total = pg.sum()
    kl_sum = torch.zeros((), dtype=pg.dtype, device=pg.device)
    if kl_weight and ref_logp is not None:
        kl_sum = (kl_estimator(logp, ref_logp) * m).sum()
        total = total + kl_weight * kl_sum
    local = float(m.sum().clamp_min(1.0))
    return LossParts(loss=total / denom, policy=float(pg.detach().sum()) / local, kl=float(kl_sum.detach()) / local,
                     clip_fraction=float(frac), tokens=int(m.sum()))


def sft_loss(logp: torch.Tensor, mask: torch.Tensor, n_tokens: float | None = None) -> LossParts:
    """Negative log-likelihood of the kept completions, token mean; logp, mask [N]."""
    m = mask.to(logp.dtype)
    denom = float(n_tokens) if n_tokens is not None else float(m.sum().clamp_min(1.0))
    nll = -(logp * m).sum()
    local = float(m.sum().clamp_min(1.0))
    return LossParts(loss=nll / denom, policy=float(nll.detach()) / local, kl=0.0, clip_fraction=0.0, tokens=int(m.sum()))
