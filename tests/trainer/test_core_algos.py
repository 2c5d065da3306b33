"""Oracle tests for verl.trainer.core_algos: every formula vs an independent Python-loop reference."""

import math
import statistics

import numpy as np
import pytest
import torch

from verl.trainer import core_algos
from verl.trainer.core_algos import (
    ADV_ESTIMATORS,
    KL_ESTIMATORS,
    LOSS_AGG_MODES,
    POLICY_LOSSES,
    AdaptiveKLController,
    FixedKLController,
    agg_loss,
    apply_kl_penalty,
    compute_advantage,
    compute_entropy_loss,
    compute_kl,
    compute_value_loss,
    get_kl_controller,
)

LENGTHS = [1, 7, 4, 7, 2, 5, 1, 3, 6, 7]  # single-token rows and fully valid rows
WIDTH = 7
GROUPS = np.array(["a", "b", "a", "c", "b", "a", "d", "b", "c", "e"], dtype=object)  # sizes 3, 3, 2, 1, 1


def _mask(lengths=LENGTHS, width=WIDTH):
    return torch.tensor([[1.0 if t < n else 0.0 for t in range(width)] for n in lengths])


def _valid(tensor, mask):
    """Per row, the Python list of values at valid positions."""
    return [[v for v, m in zip(vr, mr) if m] for vr, mr in zip(tensor.tolist(), mask.tolist())]


def _random_rewards(seed, mask):
    generator = torch.Generator().manual_seed(seed)
    rewards = torch.randn(mask.shape, generator=generator)
    return rewards + 100.0 * (1 - mask)  # garbage outside the mask must be ignored


def _broadcast(per_row, mask):
    return [[per_row[i] if m else 0.0 for m in mr] for i, mr in enumerate(mask.tolist())]


def _assert_close_lists(actual, expected, tol=1e-5):
    assert np.allclose(np.asarray(actual, dtype=float), np.asarray(expected, dtype=float), rtol=tol, atol=tol)


# ----------------------------------------------------------------------------- advantages
def _reference_grpo(scores, groups, eps=1e-6):
    out = []
    for i, score in enumerate(scores):
        members = [scores[j] for j in range(len(scores)) if groups[j] == groups[i]]
        if len(members) == 1:
            out.append(score / (1.0 + eps))
        else:
            out.append((score - statistics.mean(members)) / (statistics.stdev(members) + eps))
    return out


def test_grpo_matches_loop():
    mask = _mask()
    rewards = _random_rewards(0, mask)
    scores = [sum(row) for row in _valid(rewards, mask)]
    advantages, returns = compute_advantage("grpo", token_level_rewards=rewards, response_mask=mask, index=GROUPS)
    _assert_close_lists(advantages.tolist(), _broadcast(_reference_grpo(scores, list(GROUPS)), mask))
    assert torch.equal(advantages, returns)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_grpo_constant_group_is_exactly_zero_and_group_of_one(dtype):
    # In fp64, mean(0.1, 0.1, 0.1) != 0.1: the rounding error must not be blown up by 1 / (std + 1e-6).
    mask = _mask([3, 1, 2, 3], 3)
    rewards = torch.zeros(4, 3, dtype=dtype)
    rewards[0, 2] = rewards[1, 0] = rewards[2, 1] = 0.1  # equal scores on different tokens
    rewards[3, 0] = 0.7  # alone in its group
    index = np.array([7, 7, 7, 9])
    advantages, _ = ADV_ESTIMATORS.get("grpo")(rewards, mask, index)
    assert advantages.dtype == dtype and not torch.isnan(advantages).any()
    assert torch.all(advantages[:3] == 0.0)
    assert advantages[3, 0].item() == pytest.approx(0.7 / (1 + 1e-6), rel=1e-6)
    loo, _ = ADV_ESTIMATORS.get("rloo")(rewards, mask, index)
    assert torch.all(loo == 0.0)


def test_rloo_matches_loop():
    mask = _mask()
    rewards = _random_rewards(1, mask)
    scores = [sum(row) for row in _valid(rewards, mask)]
    expected = []
    for i, score in enumerate(scores):
        others = [scores[j] for j in range(len(scores)) if j != i and GROUPS[j] == GROUPS[i]]
        expected.append(score - sum(others) / len(others) if others else 0.0)
    advantages, _ = compute_advantage("rloo", token_level_rewards=rewards, response_mask=mask, index=GROUPS)
    _assert_close_lists(advantages.tolist(), _broadcast(expected, mask))


def _reference_returns(row_rewards, gamma):
    returns = []
    for t in range(len(row_rewards)):
        returns.append(sum(gamma ** (k - t) * row_rewards[k] for k in range(t, len(row_rewards))))
    return returns


def _reference_whiten(rows):
    flat = [v for row in rows for v in row]
    mean, std = statistics.mean(flat), math.sqrt(statistics.variance(flat) + 1e-8)
    return [[(v - mean) / std for v in row] for row in rows]


def _pad(rows, width=WIDTH):
    return [row + [0.0] * (width - len(row)) for row in rows]


@pytest.mark.parametrize("gamma", [1.0, 0.9])
def test_reinforce_plus_plus_matches_loop_and_whitening(gamma):
    mask = _mask()
    rewards = _random_rewards(2, mask)
    expected_returns = [_reference_returns(row, gamma) for row in _valid(rewards, mask)]
    advantages, returns = compute_advantage(
        "reinforce_plus_plus", token_level_rewards=rewards, response_mask=mask, index=GROUPS, gamma=gamma
    )
    _assert_close_lists(returns.tolist(), _pad(expected_returns))
    _assert_close_lists(advantages.tolist(), _pad(_reference_whiten(expected_returns)), tol=1e-4)


def test_remax_matches_loop_and_requires_baselines():
    mask = _mask()
    rewards = _random_rewards(3, mask)
    baselines = torch.randn(len(LENGTHS))
    expected = [
        [g - baselines[i].item() for g in _reference_returns(row, 1.0)] for i, row in enumerate(_valid(rewards, mask))
    ]
    advantages, _ = compute_advantage(
        "remax", token_level_rewards=rewards, response_mask=mask, index=GROUPS, reward_baselines=baselines
    )
    _assert_close_lists(advantages.tolist(), _pad(expected))
    with pytest.raises(ValueError, match="reward_baselines"):
        compute_advantage("remax", token_level_rewards=rewards, response_mask=mask, index=GROUPS)


@pytest.mark.parametrize("gamma,lam", [(1.0, 1.0), (0.95, 0.9)])
def test_gae_matches_loop(gamma, lam):
    mask = _mask()
    rewards = _random_rewards(4, mask)
    values = torch.randn(mask.shape, generator=torch.Generator().manual_seed(5))
    all_advantages, all_returns = [], []
    for row_r, row_v in zip(_valid(rewards, mask), _valid(values, mask)):
        n, advantages = len(row_r), [0.0] * len(row_r)
        running = 0.0
        for t in reversed(range(n)):
            next_value = row_v[t + 1] if t + 1 < n else 0.0
            running = row_r[t] + gamma * next_value - row_v[t] + gamma * lam * running
            advantages[t] = running
        all_advantages.append(advantages)
        all_returns.append([a + v for a, v in zip(advantages, row_v)])
    advantages, returns = compute_advantage(
        "gae", token_level_rewards=rewards, response_mask=mask, values=values, gamma=gamma, lam=lam
    )
    _assert_close_lists(returns.tolist(), _pad(all_returns))
    _assert_close_lists(advantages.tolist(), _pad(_reference_whiten(all_advantages)), tol=1e-4)
    with pytest.raises(ValueError, match="values"):
        compute_advantage("gae", token_level_rewards=rewards, response_mask=mask)


def test_advantage_bad_inputs_and_unknown_name():
    mask = _mask()
    with pytest.raises(KeyError, match="choose one of: gae, grpo"):
        compute_advantage("grpo_typo", token_level_rewards=mask, response_mask=mask, index=GROUPS)
    with pytest.raises(ValueError, match="index has 3"):
        compute_advantage("grpo", token_level_rewards=mask, response_mask=mask, index=GROUPS[:3])
    with pytest.raises(ValueError, match="response_mask"):
        compute_advantage("rloo", token_level_rewards=mask[:, :3], response_mask=mask, index=GROUPS)
    assert {"grpo", "rloo", "reinforce_plus_plus", "remax", "gae"} <= set(ADV_ESTIMATORS.names())


# ----------------------------------------------------------------------------- KL
def test_kl_estimators_match_formulas_and_aliases():
    log_probs = torch.tensor([[-1.0, -0.2, -3.0, -0.5, -40.0]])
    ref = torch.tensor([[-1.5, -0.1, -2.0, -35.0, -0.1]])
    pairs = list(zip(log_probs[0].tolist(), ref[0].tolist()))

    def k3(lp, rp):
        log_ratio = max(-20.0, min(20.0, rp - lp))
        return max(-10.0, min(10.0, math.exp(log_ratio) - log_ratio - 1))

    formulas = {
        "kl": lambda lp, rp: lp - rp,
        "abs": lambda lp, rp: abs(lp - rp),
        "mse": lambda lp, rp: 0.5 * (lp - rp) ** 2,
        "low_var_kl": k3,
    }
    for name, formula in formulas.items():
        _assert_close_lists(compute_kl(log_probs, ref, name)[0].tolist(), [formula(lp, rp) for lp, rp in pairs])
    assert k3(-0.5, -35.0) == 10.0 and k3(-40.0, -0.1) == 10.0  # both clamps exercised
    for alias, name in {"k1": "kl", "k2": "mse", "k3": "low_var_kl"}.items():
        assert KL_ESTIMATORS.get(alias) is KL_ESTIMATORS.get(name)
    with pytest.raises(KeyError, match="low_var_kl"):
        compute_kl(log_probs, ref, "k4")


def test_full_kl_matches_torch_kl_div():
    torch.manual_seed(7)
    log_p = torch.log_softmax(torch.randn(3, 4, 9), -1)
    log_q = torch.log_softmax(torch.randn(3, 4, 9), -1)
    reference = torch.nn.functional.kl_div(log_q, log_p, log_target=True, reduction="none").sum(-1)
    torch.testing.assert_close(compute_kl(log_p, log_q, "full"), reference, rtol=1e-5, atol=1e-6)


def test_kl_controllers_by_hand():
    fixed = get_kl_controller("fixed", 0.05)
    fixed.update(current_kl=123.0, n_steps=64)
    assert isinstance(fixed, FixedKLController) and fixed.value == 0.05

    adaptive = get_kl_controller("adaptive", 0.1, kl_target=6.0, kl_horizon=10000)
    assert isinstance(adaptive, AdaptiveKLController)
    adaptive.update(current_kl=9.0, n_steps=256)  # error 0.5 -> clipped to 0.2
    expected = 0.1 * (1 + 0.2 * 256 / 10000)
    assert adaptive.value == pytest.approx(expected, rel=1e-12)
    adaptive.update(current_kl=6.6, n_steps=100)  # error 0.1, inside the clip
    expected *= 1 + 0.1 * 100 / 10000
    assert adaptive.value == pytest.approx(expected, rel=1e-12)
    adaptive.update(current_kl=0.0, n_steps=50)  # error -1 -> -0.2
    expected *= 1 - 0.2 * 50 / 10000
    assert adaptive.value == pytest.approx(expected, rel=1e-12)

    with pytest.raises(ValueError, match="fixed, adaptive"):
        get_kl_controller("linear", 0.1)
    with pytest.raises(ValueError, match="kl_target"):
        get_kl_controller("adaptive", 0.1)


def test_apply_kl_penalty_matches_loop_and_updates_controller():
    mask = _mask()
    generator = torch.Generator().manual_seed(8)
    scores = torch.randn(mask.shape, generator=generator)
    log_probs = -torch.rand(mask.shape, generator=generator)
    ref = -torch.rand(mask.shape, generator=generator)
    controller = AdaptiveKLController(0.2, target_kl=0.01, horizon=1000)
    rewards, metrics = apply_kl_penalty(scores, log_probs, ref, mask, controller, kl_penalty="kl")

    per_row_kl = [statistics.mean(row) for row in _valid(log_probs - ref, mask)]
    expected_kl = statistics.mean(per_row_kl)
    expected_rewards = [
        [
            scores[i, t].item() - (0.2 * (log_probs[i, t] - ref[i, t]).item() if mask[i, t] else 0.0)
            for t in range(WIDTH)
        ]
        for i in range(len(LENGTHS))
    ]
    _assert_close_lists(rewards.tolist(), expected_rewards)
    assert metrics["critic/kl"] == pytest.approx(expected_kl, rel=1e-5)
    assert metrics["critic/kl_coef"] == 0.2
    error = max(-0.2, min(0.2, expected_kl / 0.01 - 1))
    assert controller.value == pytest.approx(0.2 * (1 + error * len(LENGTHS) / 1000), rel=1e-6)


# ----------------------------------------------------------------------------- loss aggregation
def _reference_agg(loss, mask, mode, normalizer=None):
    rows = _valid(loss, mask)
    if mode == "token-mean":
        numerator, count = sum(sum(r) for r in rows), sum(len(r) for r in rows)
    else:
        if mode == "seq-mean-token-mean":
            per_row = [sum(r) / len(r) if r else 0.0 for r in rows]
        elif mode == "seq-mean-token-sum":
            per_row = [sum(r) for r in rows]
        else:
            per_row = [sum(r) / loss.shape[1] for r in rows]
        numerator, count = sum(per_row), len(rows)
    return numerator / (count if normalizer is None else normalizer)


def _local_count(mask, mode):
    return core_algos.loss_normalizer(mode, mask)


@pytest.mark.parametrize("mode", LOSS_AGG_MODES)
def test_agg_loss_matches_loop_and_local_normalizer(mode):
    mask = _mask()
    loss = _random_rewards(9, mask)
    assert agg_loss(loss, mask, mode).item() == pytest.approx(_reference_agg(loss, mask, mode), rel=1e-5)
    with_normalizer = agg_loss(loss, mask, mode, normalizer=_local_count(mask, mode))
    assert with_normalizer.item() == pytest.approx(agg_loss(loss, mask, mode).item(), rel=1e-6)


@pytest.mark.parametrize("mode", LOSS_AGG_MODES)
def test_micro_batches_and_ranks_with_global_normalizer_equal_full_batch(mode):
    """The point of ``normalizer``: accumulated micro-batch gradients, averaged over ranks, equal the full batch's."""
    mask = _mask()
    loss = _random_rewards(10, mask).requires_grad_()
    full = agg_loss(loss, mask, mode)
    (full_grad,) = torch.autograd.grad(full, loss)

    world_size, global_count = 2, _local_count(mask, mode)
    rank_rows = [[[0, 1, 2], [3]], [[4, 5], [6, 7, 8, 9]]]  # uneven micro-batches on two ranks
    total, rank_grads = 0.0, []
    for micro_batches in rank_rows:
        grad = torch.zeros_like(loss)
        for rows in micro_batches:
            part = agg_loss(loss[rows], mask[rows], mode, normalizer=global_count / world_size)
            grad += torch.autograd.grad(part, loss)[0]
            total += part.item()
        rank_grads.append(grad)
    averaged = sum(rank_grads) / world_size  # what data-parallel all-reduce(mean) produces
    assert total / world_size == pytest.approx(full.item(), rel=1e-5)
    torch.testing.assert_close(averaged, full_grad, rtol=1e-5, atol=1e-7)


def test_agg_loss_rejects_bad_mode_and_normalizer():
    mask = _mask()
    with pytest.raises(ValueError, match="token-mean"):
        agg_loss(mask, mask, "token-sum")
    with pytest.raises(ValueError, match="normalizer"):
        agg_loss(mask, mask, "token-mean", normalizer=0)


# ----------------------------------------------------------------------------- policy losses
def _reference_vanilla_token(old, new, adv, low, high, dual):
    ratio = math.exp(max(-20.0, min(20.0, new - old)))
    unclipped, clipped = -adv * ratio, -adv * max(1 - low, min(1 + high, ratio))
    loss = max(unclipped, clipped)
    dual_active = adv < 0 and loss > -adv * dual
    return (min(loss, -adv * dual) if adv < 0 else loss), clipped > unclipped, dual_active


def _policy_batch(seed, spread):
    mask = _mask()
    generator = torch.Generator().manual_seed(seed)
    old = -torch.rand(mask.shape, generator=generator) * 3
    new = old + spread * torch.randn(mask.shape, generator=generator)
    advantages = torch.randn(mask.shape, generator=generator)
    return old, new, advantages, mask


@pytest.mark.parametrize("mode", LOSS_AGG_MODES)
def test_vanilla_policy_loss_matches_loop(mode):
    old, new, advantages, mask = _policy_batch(11, spread=1.0)
    loss, metrics = POLICY_LOSSES.get("vanilla")(old, new, advantages, mask, 0.2, 0.3, 3.0, loss_agg_mode=mode)
    token_losses, higher, lower, kls = torch.zeros_like(mask), [], [], []
    for i in range(mask.size(0)):
        for t in range(int(mask[i].sum())):
            value, clip_on, dual_on = _reference_vanilla_token(
                old[i, t].item(), new[i, t].item(), advantages[i, t].item(), 0.2, 0.3, 3.0
            )
            token_losses[i, t] = value
            higher.append(clip_on)
            lower.append(dual_on)
            kls.append(old[i, t].item() - new[i, t].item())
    assert any(higher) and any(lower)  # both clip branches are exercised
    assert loss.item() == pytest.approx(_reference_agg(token_losses, mask, mode), rel=1e-5)
    assert metrics["pg_clipfrac_higher"] == pytest.approx(sum(higher) / len(higher))
    assert metrics["pg_clipfrac_lower"] == pytest.approx(sum(lower) / len(lower))
    assert metrics["ppo_kl"] == pytest.approx(statistics.mean(kls), rel=1e-5)
    assert all(isinstance(v, float) for v in metrics.values())


@pytest.mark.parametrize(
    "ratio,advantage,expected,clip_on,dual_on",
    [  # by hand with low 0.2, high 0.3, dual 3.0
        (0.5, 1.0, -0.5, False, False),
        (1.1, 1.0, -1.1, False, False),
        (1.5, 1.0, -1.3, True, False),
        (5.0, 2.0, -2.6, True, False),
        (0.5, -1.0, 0.8, True, False),
        (0.9, -1.0, 0.9, False, False),
        (1.5, -1.0, 1.5, False, False),
        (5.0, -1.0, 3.0, False, True),
    ],
)
def test_vanilla_clip_branches(ratio, advantage, expected, clip_on, dual_on):
    old = torch.zeros(1, 1)
    new = torch.full((1, 1), math.log(ratio))
    loss, metrics = POLICY_LOSSES.get("ppo")(old, new, torch.full((1, 1), advantage), torch.ones(1, 1))
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert metrics["pg_clipfrac_higher"] == float(clip_on)
    assert metrics["pg_clipfrac_lower"] == float(dual_on)


def test_vanilla_gradient_inside_clip_range_is_minus_advantage_times_ratio_over_tokens():
    old, _, advantages, mask = _policy_batch(12, spread=0.0)
    new = (old + 0.1 * (2 * torch.rand(mask.shape) - 1)).requires_grad_()  # ratio in (0.905, 1.105)
    loss, metrics = POLICY_LOSSES.get("vanilla")(old, new, advantages, mask)
    (grad,) = torch.autograd.grad(loss, new)
    ratio = torch.exp(new.detach() - old)
    torch.testing.assert_close(grad, -advantages * ratio * mask / mask.sum(), rtol=1e-5, atol=1e-8)
    assert metrics["pg_clipfrac_higher"] == 0.0 and metrics["pg_clipfrac_lower"] == 0.0


def test_vanilla_gradient_is_zero_where_clipped():
    old, advantage = torch.zeros(1, 2), torch.tensor([[1.0, -1.0]])
    new = torch.tensor([[math.log(1.5), math.log(5.0)]], requires_grad=True)  # upper clip / dual clip
    loss, _ = POLICY_LOSSES.get("vanilla")(old, new, advantage, torch.ones(1, 2))
    assert torch.all(torch.autograd.grad(loss, new)[0] == 0)


@pytest.mark.parametrize("mode", ["token-mean", "seq-mean-token-mean"])
def test_gspo_matches_loop_and_gradient(mode):
    old, new, advantages, mask = _policy_batch(13, spread=0.05)
    new.requires_grad_()
    loss, metrics = POLICY_LOSSES.get("gspo")(old, new, advantages, mask, 0.02, 0.03, loss_agg_mode=mode)
    token_losses, expected_grad, clipped = torch.zeros_like(mask), torch.zeros_like(mask), []
    count = mask.sum().item()
    for i in range(mask.size(0)):
        n = int(mask[i].sum())
        seq_ratio = math.exp(statistics.mean((new[i, :n] - old[i, :n]).tolist()))
        for t in range(n):
            adv = advantages[i, t].item()
            unclipped, clip_value = -adv * seq_ratio, -adv * max(0.98, min(1.03, seq_ratio))
            token_losses[i, t] = max(unclipped, clip_value)
            clipped.append(clip_value > unclipped)
            if clip_value <= unclipped:
                weight = 1 / count if mode == "token-mean" else 1 / (n * mask.size(0))
                expected_grad[i, t] = -adv * seq_ratio * weight
    assert any(clipped) and not all(clipped)
    assert loss.item() == pytest.approx(_reference_agg(token_losses, mask, mode), rel=1e-5)
    assert metrics["pg_clipfrac_higher"] == pytest.approx(sum(clipped) / len(clipped))
    torch.testing.assert_close(torch.autograd.grad(loss, new)[0], expected_grad, rtol=1e-5, atol=1e-8)


def test_policy_loss_registry_and_bad_inputs():
    assert POLICY_LOSSES.get("ppo") is POLICY_LOSSES.get("vanilla")
    with pytest.raises(KeyError, match="gspo"):
        core_algos.compute_policy_loss("cispo")
    old, new, advantages, mask = _policy_batch(14, spread=0.1)
    with pytest.raises(ValueError, match="shape"):
        POLICY_LOSSES.get("vanilla")(old, new[:, :3], advantages, mask)


# ----------------------------------------------------------------------------- value and entropy
def test_value_loss_matches_loop():
    mask = _mask()
    generator = torch.Generator().manual_seed(15)
    values, returns = torch.randn(mask.shape, generator=generator), torch.randn(mask.shape, generator=generator)
    vpreds = values + torch.randn(mask.shape, generator=generator)
    loss, metrics = compute_value_loss(vpreds, returns, values, mask, cliprange_value=0.5)
    token_losses, clipped = torch.zeros_like(mask), []
    for i in range(mask.size(0)):
        for t in range(int(mask[i].sum())):
            v, r, old = vpreds[i, t].item(), returns[i, t].item(), values[i, t].item()
            unclipped, clip_value = (v - r) ** 2, (max(old - 0.5, min(old + 0.5, v)) - r) ** 2
            token_losses[i, t] = 0.5 * max(unclipped, clip_value)
            clipped.append(clip_value > unclipped)
    assert any(clipped) and not all(clipped)
    assert loss.item() == pytest.approx(_reference_agg(token_losses, mask, "token-mean"), rel=1e-5)
    assert metrics["vf_clipfrac"] == pytest.approx(sum(clipped) / len(clipped))


def test_entropy_loss_is_aggregated_entropy():
    mask = _mask()
    entropy = torch.rand(mask.shape)
    for mode in LOSS_AGG_MODES:
        expected = _reference_agg(entropy, mask, mode)
        assert compute_entropy_loss(entropy, mask, mode).item() == pytest.approx(expected, rel=1e-5)
