"""The RL math: advantage estimators, KL estimators and controllers, loss aggregation, policy/value losses.

Shapes: ``bs`` = number of responses, ``L`` = response length. ``response_mask`` is a prefix mask
(1 for the response tokens up to and including EOS, then 0). Everything varying is a registry:
``ADV_ESTIMATORS``, ``KL_ESTIMATORS``, ``POLICY_LOSSES``; unknown names raise KeyError listing the choices.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Optional

import numpy as np
import torch

from verl.utils.registry import Registry
from verl.utils.torch_functional import masked_mean, masked_sum, masked_whiten

ADV_ESTIMATORS: Registry[Callable[..., tuple[torch.Tensor, torch.Tensor]]] = Registry("advantage estimator")
KL_ESTIMATORS: Registry[Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = Registry("KL estimator")
POLICY_LOSSES: Registry[Callable[..., tuple[torch.Tensor, dict[str, float]]]] = Registry("policy loss")
LOSS_AGG_MODES = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm")
GRPO_EPS = 1e-6


# ----------------------------------------------------------------------------- advantages
def _check_rewards(token_level_rewards: torch.Tensor, response_mask: torch.Tensor, index=None) -> None:
    if token_level_rewards.dim() != 2 or token_level_rewards.shape != response_mask.shape:
        raise ValueError(
            f"advantage: token_level_rewards {tuple(token_level_rewards.shape)} and response_mask "
            f"{tuple(response_mask.shape)} must both be (bs, response_length)"
        )
    if index is not None and len(index) != token_level_rewards.size(0):
        raise ValueError(f"advantage: index has {len(index)} group ids for {token_level_rewards.size(0)} responses")


def _group_statistics(scores: torch.Tensor, index: np.ndarray):
    """Per-response group size, sum, unbiased std and a flag for constant groups (all computed in fp64)."""
    if index is None:
        raise ValueError("advantage: this estimator needs `index` (one group id per response)")
    group_ids: dict[Any, int] = {}
    group_of = [group_ids.setdefault(key, len(group_ids)) for key in np.asarray(index).reshape(-1).tolist()]
    group_of = torch.tensor(group_of, dtype=torch.long, device=scores.device)
    num_groups = len(group_ids)
    scores64 = scores.double()
    counts = torch.zeros(num_groups, dtype=torch.float64, device=scores.device).index_add_(
        0, group_of, torch.ones_like(scores64)
    )
    sums = torch.zeros_like(counts).index_add_(0, group_of, scores64)
    means = sums / counts
    squares = torch.zeros_like(counts).index_add_(0, group_of, (scores64 - means[group_of]) ** 2)
    stds = torch.sqrt(squares / (counts - 1).clamp(min=1))
    highest = torch.full_like(counts, -torch.inf).scatter_reduce_(0, group_of, scores64, "amax")
    lowest = torch.full_like(counts, torch.inf).scatter_reduce_(0, group_of, scores64, "amin")
    # A constant group gets advantage exactly 0 (rounding in the mean must not be amplified by 1/eps).
    return counts[group_of], sums[group_of], stds[group_of], (highest == lowest)[group_of]


def _discounted_returns(token_level_rewards: torch.Tensor, response_mask: torch.Tensor, gamma: float) -> torch.Tensor:
    """(bs, L) G_t = sum_{k >= t} gamma^(k - t) r_k over the valid tokens; 0 at padding."""
    rewards = token_level_rewards * response_mask
    returns = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.size(1))):
        running = (rewards[:, t] + gamma * running) * response_mask[:, t]
        returns[:, t] = running
    return returns


@ADV_ESTIMATORS.register("grpo")
@torch.no_grad()
def grpo_advantage(token_level_rewards, response_mask, index=None, values=None, gamma=1.0, lam=1.0, **kwargs):
    """GRPO: A_i = (r_i - mean_g) / (std_g + 1e-6), r_i = sum of the token rewards of response i.

    std is unbiased; a group of one response uses mean 0 and std 1 (as verl); a constant group gets 0.
    Args: token_level_rewards, response_mask (bs, L); index (bs,) group ids (e.g. prompt uids).
    Returns: (advantages, returns), both (bs, L) = A_i broadcast over the response tokens * mask.
    """
    _check_rewards(token_level_rewards, response_mask, index)
    scores = masked_sum(token_level_rewards, response_mask, dim=-1)
    counts, sums, stds, constant = _group_statistics(scores, index)
    singleton = counts == 1
    means = torch.where(singleton, torch.zeros_like(sums), sums / counts)
    stds = torch.where(singleton, torch.ones_like(stds), stds)
    advantage = (scores.double() - means) / (stds + kwargs.get("eps", GRPO_EPS))
    advantage = torch.where(constant & ~singleton, torch.zeros_like(advantage), advantage)
    advantages = advantage.to(token_level_rewards.dtype).unsqueeze(-1) * response_mask
    return advantages, advantages


@ADV_ESTIMATORS.register("rloo")
@torch.no_grad()
def rloo_advantage(token_level_rewards, response_mask, index=None, values=None, gamma=1.0, lam=1.0, **kwargs):
    """RLOO: A_i = r_i - mean_{j != i in the group} r_j; a group of one (or a constant group) gets 0.

    Returns: (advantages, returns), both (bs, L), A_i broadcast over the response tokens * mask.
    """
    _check_rewards(token_level_rewards, response_mask, index)
    scores = masked_sum(token_level_rewards, response_mask, dim=-1)
    counts, sums, _, constant = _group_statistics(scores, index)
    scores64 = scores.double()
    advantage = scores64 - (sums - scores64) / (counts - 1).clamp(min=1)
    advantage = torch.where(constant | (counts == 1), torch.zeros_like(advantage), advantage)
    advantages = advantage.to(token_level_rewards.dtype).unsqueeze(-1) * response_mask
    return advantages, advantages


@ADV_ESTIMATORS.register("reinforce_plus_plus")
@torch.no_grad()
def reinforce_plus_plus_advantage(
    token_level_rewards, response_mask, index=None, values=None, gamma=1.0, lam=1.0, **kwargs
):
    """REINFORCE++: returns G_t (discounted return-to-go); advantages = G whitened over all valid tokens.

    Returns: (advantages (bs, L) masked, returns (bs, L) unwhitened).
    """
    _check_rewards(token_level_rewards, response_mask)
    returns = _discounted_returns(token_level_rewards, response_mask, gamma)
    advantages = masked_whiten(returns, response_mask) * response_mask
    return advantages, returns


@ADV_ESTIMATORS.register("remax")
@torch.no_grad()
def remax_advantage(token_level_rewards, response_mask, index=None, values=None, gamma=1.0, lam=1.0, **kwargs):
    """ReMax: A_t = G_t - b, b = kwargs["reward_baselines"] (bs,), the reward of a greedy response.

    Returns: (advantages (bs, L) masked, returns G (bs, L)).
    """
    _check_rewards(token_level_rewards, response_mask)
    baselines = kwargs.get("reward_baselines")
    if baselines is None or baselines.shape != token_level_rewards.shape[:1]:
        raise ValueError("advantage 'remax' needs reward_baselines of shape (bs,), one greedy reward per response")
    returns = _discounted_returns(token_level_rewards, response_mask, gamma)
    advantages = (returns - baselines.to(returns.dtype).unsqueeze(-1)) * response_mask
    return advantages, returns


@ADV_ESTIMATORS.register("gae")
@torch.no_grad()
def gae_advantage(token_level_rewards, response_mask, index=None, values=None, gamma=1.0, lam=1.0, **kwargs):
    """GAE: delta_t = r_t + gamma V_{t+1} - V_t (V = 0 past the last valid token), A_t = delta_t + gamma lam A_{t+1}.

    Args: values (bs, L) critic values of the response tokens (required).
    Returns: (advantages (bs, L) whitened over valid tokens and masked, returns = A + V (bs, L) masked).
    """
    _check_rewards(token_level_rewards, response_mask)
    if values is None or values.shape != token_level_rewards.shape:
        raise ValueError("advantage 'gae' needs values of shape (bs, response_length) from a critic")
    rewards = token_level_rewards * response_mask
    values = values * response_mask
    advantages = torch.zeros_like(rewards)
    next_advantage = torch.zeros_like(rewards[:, 0])
    next_value = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.size(1))):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        next_advantage = (delta + gamma * lam * next_advantage) * response_mask[:, t]
        next_value = values[:, t]
        advantages[:, t] = next_advantage
    returns = (advantages + values) * response_mask
    return masked_whiten(advantages, response_mask) * response_mask, returns


def compute_advantage(name: str, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    """``ADV_ESTIMATORS.get(name)(**kwargs)``: (advantages, returns), both (bs, L)."""
    return ADV_ESTIMATORS.get(name)(**kwargs)


# ----------------------------------------------------------------------------- KL
@KL_ESTIMATORS.register("kl", "k1")
def _kl_k1(log_probs: torch.Tensor, ref_log_probs: torch.Tensor) -> torch.Tensor:
    return log_probs - ref_log_probs


@KL_ESTIMATORS.register("abs")
def _kl_abs(log_probs: torch.Tensor, ref_log_probs: torch.Tensor) -> torch.Tensor:
    return (log_probs - ref_log_probs).abs()


@KL_ESTIMATORS.register("mse", "k2")
def _kl_k2(log_probs: torch.Tensor, ref_log_probs: torch.Tensor) -> torch.Tensor:
    return 0.5 * (log_probs - ref_log_probs).square()


@KL_ESTIMATORS.register("low_var_kl", "k3")
def _kl_k3(log_probs: torch.Tensor, ref_log_probs: torch.Tensor) -> torch.Tensor:
    """Schulman's k3 = exp(ref - logp) - (ref - logp) - 1 (log-ratio clamped to +-20, result to [-10, 10])."""
    log_ratio = torch.clamp(ref_log_probs - log_probs, min=-20.0, max=20.0)
    return torch.clamp(torch.exp(log_ratio) - log_ratio - 1.0, min=-10.0, max=10.0)


# Estimators that need the full (bs, L, V) log-distributions; the engine keeps only per-token log-probs.
FULL_DISTRIBUTION_KL = ("full",)


def per_token_kl_estimators() -> list[str]:
    """KL estimator names usable with per-token (bs, L) log-probs (all but ``FULL_DISTRIBUTION_KL``)."""
    return [name for name in KL_ESTIMATORS.names() if name not in FULL_DISTRIBUTION_KL]


@KL_ESTIMATORS.register(*FULL_DISTRIBUTION_KL)
def _kl_full(log_probs: torch.Tensor, ref_log_probs: torch.Tensor) -> torch.Tensor:
    """Exact KL(p || q) per token from full log-distributions (bs, L, V) -> (bs, L)."""
    probs = log_probs.exp()
    terms = probs * (log_probs - ref_log_probs)
    return torch.where(probs > 0, terms, torch.zeros_like(terms)).sum(-1)


def compute_kl(log_probs: torch.Tensor, ref_log_probs: torch.Tensor, kl_penalty: str) -> torch.Tensor:
    """Per-token KL estimate (bs, L) of the policy from the reference; inputs (bs, L), or (bs, L, V) for "full"."""
    if log_probs.shape != ref_log_probs.shape:
        raise ValueError(
            f"compute_kl: log_probs {tuple(log_probs.shape)} != ref_log_probs {tuple(ref_log_probs.shape)}"
        )
    return KL_ESTIMATORS.get(kl_penalty)(log_probs, ref_log_probs)


class FixedKLController:
    """Constant KL coefficient ``value``; ``update`` does nothing."""

    def __init__(self, kl_coef: float):
        self.value = float(kl_coef)

    def update(self, current_kl: float, n_steps: int) -> None:
        pass


class AdaptiveKLController:
    """Adaptive coefficient (Ziegler et al. 2019): e = clip(KL / target - 1, -0.2, 0.2); value *= 1 + e * n / horizon."""

    def __init__(self, init_kl_coef: float, target_kl: float, horizon: float):
        if target_kl is None or target_kl <= 0 or horizon is None or horizon <= 0:
            raise ValueError(
                f"adaptive KL controller needs kl_target > 0 and kl_horizon > 0, got {target_kl}, {horizon}"
            )
        self.value = float(init_kl_coef)
        self.target = float(target_kl)
        self.horizon = float(horizon)

    def update(self, current_kl: float, n_steps: int) -> None:
        proportional_error = float(np.clip(current_kl / self.target - 1.0, -0.2, 0.2))
        self.value *= 1.0 + proportional_error * n_steps / self.horizon


KL_CONTROLLER_TYPES = ("fixed", "adaptive")


def get_kl_controller(
    kl_type: str, kl_coef: float, kl_target: Optional[float] = None, kl_horizon: Optional[float] = None
):
    """Build the KL controller named by ``algorithm.kl_type``."""
    if kl_type == "fixed":
        return FixedKLController(kl_coef)
    if kl_type == "adaptive":
        return AdaptiveKLController(kl_coef, kl_target, kl_horizon)
    raise ValueError(f"unknown kl_type {kl_type!r}; choose one of: {', '.join(KL_CONTROLLER_TYPES)}")


def apply_kl_penalty(
    token_level_scores: torch.Tensor,
    log_probs: torch.Tensor,
    ref_log_probs: torch.Tensor,
    response_mask: torch.Tensor,
    kl_ctrl,
    kl_penalty: str = "kl",
) -> tuple[torch.Tensor, dict[str, float]]:
    """KL in the reward: rewards = scores - beta * KL_t (masked); then ``kl_ctrl.update(KL, bs)``.

    Args: token_level_scores, log_probs, ref_log_probs, response_mask: (bs, L).
    Returns: token_level_rewards (bs, L) and {"critic/kl": mean over responses of the per-response
    token-mean KL, "critic/kl_coef": the beta that was applied (before the update)}.
    """
    kld = compute_kl(log_probs, ref_log_probs, kl_penalty) * response_mask
    beta = kl_ctrl.value
    token_level_rewards = token_level_scores - beta * kld
    current_kl = masked_mean(kld, response_mask, dim=-1).mean().item()
    kl_ctrl.update(current_kl=current_kl, n_steps=response_mask.size(0))
    return token_level_rewards, {"critic/kl": current_kl, "critic/kl_coef": beta}


# ----------------------------------------------------------------------------- loss aggregation
def loss_normalizer(loss_agg_mode: str, loss_mask: torch.Tensor, norm_length: Optional[int] = None) -> float:
    """The denominator ``agg_loss`` uses for ``loss_mask`` (bs, L) alone; sum it over micro-batches and ranks
    for a global normalizer.

    token-mean: the token count sum(m); seq-mean-token-mean and seq-mean-token-sum: the row count bs;
    seq-mean-token-sum-norm: bs * norm_length, a constant such as the configured max response length
    (default L = loss_mask.shape[-1], which depends on padding: pass the constant when rows are trimmed).
    """
    if loss_agg_mode not in LOSS_AGG_MODES:
        raise ValueError(f"unknown loss_agg_mode {loss_agg_mode!r}; choose one of: {', '.join(LOSS_AGG_MODES)}")
    if loss_agg_mode == "token-mean":
        return float(loss_mask.sum())
    if loss_agg_mode == "seq-mean-token-sum-norm":
        length = loss_mask.size(-1) if norm_length is None else norm_length
        if length < 1:
            raise ValueError(f"loss_normalizer: norm_length must be >= 1, got {length}")
        return float(loss_mask.size(0) * length)
    return float(loss_mask.size(0))


def agg_loss(
    loss_mat: torch.Tensor, loss_mask: torch.Tensor, loss_agg_mode: str, normalizer: Optional[float] = None
) -> torch.Tensor:
    """Reduce a per-token loss (bs, L) with mask (bs, L) to a scalar.

    Local modes (``normalizer=None``):
      token-mean               sum(m*l) / sum(m)
      seq-mean-token-mean      mean_i [ sum_t(m*l)_i / sum_t(m)_i ]  (a row without tokens counts as 0)
      seq-mean-token-sum       mean_i [ sum_t(m*l)_i ]
      seq-mean-token-sum-norm  sum(m*l) / (bs * L), L = loss_mat.shape[-1]
    Global mode (``normalizer`` given): the numerator above divided by ``normalizer`` instead, where the
    numerator is sum(m*l) for token-mean and seq-mean-token-sum-norm, and the sum over rows of the per-row
    value for the other seq modes; ``normalizer`` must be ``loss_normalizer`` (token count, row count, or
    rows x a constant length) summed over ALL micro-batches of the optimizer step and all data-parallel ranks,
    times 1/world_size if the gradients are averaged over ranks. Then the accumulated gradients equal those
    of the full-batch loss exactly, whatever the micro-batch split (and, for seq-mean-token-sum-norm with a
    constant length, whatever padding each micro-batch keeps).
    """
    if loss_agg_mode not in LOSS_AGG_MODES:
        raise ValueError(f"unknown loss_agg_mode {loss_agg_mode!r}; choose one of: {', '.join(LOSS_AGG_MODES)}")
    if loss_mat.shape != loss_mask.shape:
        raise ValueError(f"agg_loss: loss_mat {tuple(loss_mat.shape)} != loss_mask {tuple(loss_mask.shape)}")
    if normalizer is not None and not normalizer > 0:
        raise ValueError(f"agg_loss: normalizer must be > 0, got {normalizer}")
    if loss_agg_mode == "token-mean" and normalizer is None:
        return masked_mean(loss_mat, loss_mask)
    if loss_agg_mode in ("token-mean", "seq-mean-token-sum-norm"):
        denominator = normalizer if normalizer is not None else max(loss_normalizer(loss_agg_mode, loss_mask), 1.0)
        return masked_sum(loss_mat, loss_mask) / denominator
    if loss_agg_mode == "seq-mean-token-mean":
        per_row = masked_mean(loss_mat, loss_mask, dim=-1)
    else:  # seq-mean-token-sum
        per_row = masked_sum(loss_mat, loss_mask, dim=-1)
    return per_row.mean() if normalizer is None else per_row.sum() / normalizer


# ----------------------------------------------------------------------------- policy losses
def _check_policy_inputs(old_log_probs, log_probs, advantages, response_mask, clip_ratio_low, clip_ratio_high):
    shapes = {t.shape for t in (old_log_probs, log_probs, advantages, response_mask)}
    if len(shapes) != 1:
        raise ValueError(
            "policy loss: old_log_probs, log_probs, advantages, response_mask must share one (bs, L) shape, "
            f"got {[tuple(t.shape) for t in (old_log_probs, log_probs, advantages, response_mask)]}"
        )
    if not (0 <= clip_ratio_low < 1 and clip_ratio_high >= 0):
        raise ValueError(
            f"policy loss: need 0 <= clip_ratio_low < 1 and clip_ratio_high >= 0, got {clip_ratio_low}, {clip_ratio_high}"
        )


def _clipped_surrogate(ratio, advantages, clip_ratio_low, clip_ratio_high):
    """PPO clip: max(-A r, -A clip(r, 1-low, 1+high)) per token, and where the clipped branch is the larger."""
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_ratio_low, 1.0 + clip_ratio_high)
    return torch.maximum(unclipped, clipped), clipped > unclipped


@POLICY_LOSSES.register("vanilla", "ppo")
def vanilla_policy_loss(
    old_log_probs: torch.Tensor,
    log_probs: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    clip_ratio_low: float = 0.2,
    clip_ratio_high: float = 0.3,
    clip_ratio_dual: float = 3.0,
    loss_agg_mode: str = "token-mean",
    normalizer: Optional[float] = None,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Token-level PPO clip (asymmetric "clip-higher") with dual clip for negative advantages.

    ratio = exp(clamp(logp - old, -20, 20)); l = max(-A ratio, -A clip(ratio, 1-low, 1+high));
    where A < 0 also l = min(l, -A * clip_ratio_dual). All inputs (bs, L); returns (scalar, metrics):
    pg_clipfrac_higher = fraction of valid tokens where the clip branch of the max is active (ratio > 1+high
    with A > 0, or ratio < 1-low with A < 0); pg_clipfrac_lower = fraction where the dual clip is active;
    ppo_kl = masked mean of old - logp.
    """
    _check_policy_inputs(old_log_probs, log_probs, advantages, response_mask, clip_ratio_low, clip_ratio_high)
    if clip_ratio_dual <= 1.0:
        raise ValueError(f"policy loss: clip_ratio_dual must be > 1, got {clip_ratio_dual}")
    log_ratio = log_probs - old_log_probs
    ratio = torch.exp(torch.clamp(log_ratio, min=-20.0, max=20.0))
    clipped_loss, clip_active = _clipped_surrogate(ratio, advantages, clip_ratio_low, clip_ratio_high)
    dual_bound = -advantages * clip_ratio_dual
    dual_active = (advantages < 0) & (clipped_loss > dual_bound)
    pg_losses = torch.where(dual_active, dual_bound, clipped_loss)
    pg_loss = agg_loss(pg_losses, response_mask, loss_agg_mode, normalizer)
    metrics = {
        "pg_clipfrac_higher": masked_mean(clip_active.float(), response_mask).item(),
        "pg_clipfrac_lower": masked_mean(dual_active.float(), response_mask).item(),
        "ppo_kl": masked_mean(-log_ratio.detach(), response_mask).item(),
    }
    return pg_loss, metrics


@POLICY_LOSSES.register("gspo")
def gspo_policy_loss(
    old_log_probs: torch.Tensor,
    log_probs: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    clip_ratio_low: float = 0.2,
    clip_ratio_high: float = 0.3,
    clip_ratio_dual: float = 3.0,
    loss_agg_mode: str = "token-mean",
    normalizer: Optional[float] = None,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """GSPO (Zheng et al. 2025), token form: s_i = exp(mean_t over valid tokens of (logp - old)).

    Token ratio = sg[s_i] * exp(logp - sg[logp]): its value is the sequence ratio s_i and its gradient flows
    through each token's logp (use loss_agg_mode "seq-mean-token-mean" for the paper's 1/|y_i| weighting).
    Same clip as "vanilla" (GSPO's ranges are much smaller, e.g. 3e-4 / 4e-4), no dual clip
    (``clip_ratio_dual`` is ignored). Returns (scalar, metrics) with the same keys as "vanilla".
    """
    _check_policy_inputs(old_log_probs, log_probs, advantages, response_mask, clip_ratio_low, clip_ratio_high)
    log_ratio = log_probs - old_log_probs
    seq_log_ratio = masked_mean(log_ratio, response_mask, dim=-1)
    token_log_ratio = seq_log_ratio.detach().unsqueeze(-1) + log_probs - log_probs.detach()
    ratio = torch.exp(torch.clamp(token_log_ratio, min=-20.0, max=20.0))
    pg_losses, clip_active = _clipped_surrogate(ratio, advantages, clip_ratio_low, clip_ratio_high)
    pg_loss = agg_loss(pg_losses, response_mask, loss_agg_mode, normalizer)
    metrics = {
        "pg_clipfrac_higher": masked_mean(clip_active.float(), response_mask).item(),
        "pg_clipfrac_lower": 0.0,
        "ppo_kl": masked_mean(-log_ratio.detach(), response_mask).item(),
    }
    return pg_loss, metrics


def compute_policy_loss(loss_type: str, **kwargs) -> tuple[torch.Tensor, dict[str, Any]]:
    """``POLICY_LOSSES.get(loss_type)(**kwargs)``."""
    return POLICY_LOSSES.get(loss_type)(**kwargs)


# ----------------------------------------------------------------------------- value and entropy
def compute_value_loss(
    vpreds: torch.Tensor,
    returns: torch.Tensor,
    values: torch.Tensor,
    response_mask: torch.Tensor,
    cliprange_value: float,
    loss_agg_mode: str = "token-mean",
    normalizer: Optional[float] = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Clipped value loss 0.5 * max((v - R)^2, (clip(v, V_old +- c) - R)^2); inputs (bs, L).

    Returns (scalar, {"vf_clipfrac": fraction of valid tokens where the clipped term is the larger}).
    """
    if not (vpreds.shape == returns.shape == values.shape == response_mask.shape):
        raise ValueError(
            f"value loss: vpreds {tuple(vpreds.shape)}, returns {tuple(returns.shape)}, values {tuple(values.shape)}, "
            f"response_mask {tuple(response_mask.shape)} must share one (bs, L) shape"
        )
    vpreds_clipped = torch.clamp(vpreds, values - cliprange_value, values + cliprange_value)
    unclipped = (vpreds - returns).square()
    clipped = (vpreds_clipped - returns).square()
    loss = 0.5 * agg_loss(torch.maximum(unclipped, clipped), response_mask, loss_agg_mode, normalizer)
    return loss, {"vf_clipfrac": masked_mean((clipped > unclipped).float(), response_mask).item()}


def compute_entropy_loss(
    entropy: torch.Tensor, response_mask: torch.Tensor, loss_agg_mode: str = "token-mean", normalizer=None
) -> torch.Tensor:
    """Aggregated token entropy (bs, L) -> scalar (subtract ``entropy_coeff`` times it from the loss)."""
    return agg_loss(entropy, response_mask, loss_agg_mode, normalizer)
