"""Data-parallel actor: log-probs of responses and the PPO-style policy update on one worker.

The module is FSDP2-sharded across the worker group; every rank runs the same number of
forward/backward passes on its own chunk of the batch. Losses use a *global* normalizer (token or
sequence count of the whole mini-batch across ranks), so gradient accumulation over micro-batches
and averaging over ranks give exactly the full-batch loss's gradient.
"""

from __future__ import annotations

import math
from collections import defaultdict

import torch
import torch.distributed as dist
from torch import nn

from verl.protocol import DataProto
from verl.utils import core_algos
from verl.utils.device import get_torch_device
from verl.utils.seqlen_balancing import pad_response, restore_order, token_budget_micro_batches, trim_padding
from verl.utils.torch_functional import entropy_from_logits, logprobs_and_entropy, logprobs_from_logits, masked_mean
from verl.workers.config import ActorConfig

MODEL_INPUTS = ("input_ids", "attention_mask", "position_ids", "responses")


def predicting_positions(seq_len: int, count: int, device=None) -> torch.Tensor:
    """(count,) the positions whose logits predict the last ``count`` tokens of a ``seq_len``-long row: HF's
    ``logits_to_keep`` as indices, so the LM head runs on exactly those and its output needs no slicing
    (a sliced view would be copied by every reshape, and its gradient scattered into a larger zero tensor)."""
    return torch.arange(seq_len - count - 1, seq_len - 1, device=device)


def response_logits(module: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Logits predicting each response token: (bs, response_length, vocab) in the model's dtype, contiguous.

    Only those positions go through the LM head (``logits_to_keep``), which saves most of the vocabulary
    projection for long prompts. The temperature is applied (in fp32,
    chunk by chunk) by ``logprobs_from_logits`` / ``entropy_from_logits``: no (bs, R, V) fp32 copy.
    """
    response_length = batch["responses"].shape[1]
    out = module(
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        position_ids=batch["position_ids"],
        use_cache=False,
        logits_to_keep=predicting_positions(batch["input_ids"].shape[1], response_length, batch["input_ids"].device),
    )
    return out.logits


def _by_device(tensors: list[torch.Tensor]) -> list[list[torch.Tensor]]:
    groups: dict[torch.device, list[torch.Tensor]] = defaultdict(list)
    for tensor in tensors:
        groups[tensor.device].append(tensor)
    return list(groups.values())


def _norm(tensors: list[torch.Tensor]) -> torch.Tensor:
    """L2 norm of ``tensors`` as a scalar on this rank's device; per-tensor norms are computed where they live."""
    device = get_torch_device()
    norms = [norm.to(device) for group in _by_device(tensors) for norm in torch._foreach_norm(group)]
    return torch.linalg.vector_norm(torch.stack(norms)) if norms else torch.zeros((), device=device)


def clip_grad_norm(parameters, max_norm: float) -> float:
    """Global L2 norm of the gradients (FSDP2 shards of every rank); scale them to ``max_norm`` if above.

    Each rank takes the norm of its *local* gradient shards where they live (the host under
    ``fsdp.cpu_offload``), moves that one scalar to its own device and all-reduces its square there,
    so the collective always gets a tensor its backend serves (NCCL needs device tensors) instead of
    the per-parameter DTensor reductions of ``torch.nn.utils.clip_grad_norm_``, whose arithmetic it
    otherwise follows (on one rank the result is bit-identical). Non-DTensor gradients are replicated
    and counted once. Returns the norm before clipping (inf/nan when a gradient is).
    """
    from torch.distributed.tensor import DTensor

    params = list(parameters)
    grads = [p.grad for p in params if p.grad is not None]
    sharded = [g.to_local() for g in grads if isinstance(g, DTensor)]
    replicated = [g for g in grads if not isinstance(g, DTensor)]
    total = _norm(sharded)
    if any(isinstance(p, DTensor) for p in params) and dist.is_initialized() and dist.get_world_size() > 1:
        squared = total.pow(2)
        dist.all_reduce(squared, op=dist.ReduceOp.SUM)  # every rank holds the same parameters: all join
        total = squared.sqrt()
    if replicated:
        total = torch.linalg.vector_norm(torch.stack([total, _norm(replicated)])) if sharded else _norm(replicated)
    coef = torch.clamp(max_norm / (total + 1e-6), max=1.0)
    for group in _by_device(sharded + replicated):  # the local shards share storage with the gradients
        torch._foreach_mul_(group, coef.to(group[0].device))
    return float(total)


def clip_and_step(
    module: nn.Module, optimizer: torch.optim.Optimizer, max_grad_norm: float, scheduler=None
) -> tuple[float, bool]:
    """Clip the gradient norm; step unless it is non-finite (then skip and zero the grads)."""
    grad_norm = clip_grad_norm(module.parameters(), max_grad_norm)
    finite = math.isfinite(grad_norm)
    if finite:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    if scheduler is not None:
        scheduler.step()
    return grad_norm, finite


def _all_reduce(value: float, op) -> float:
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=get_torch_device())  # NCCL needs device tensors
    dist.all_reduce(tensor, op=op)
    return float(tensor.item())


def global_max(value: float) -> float:
    """Max of a float over all data-parallel ranks (identity without torch.distributed)."""
    return _all_reduce(value, dist.ReduceOp.MAX)


def global_sum(value: float) -> float:
    """Sum of a float over all data-parallel ranks (identity without torch.distributed)."""
    return _all_reduce(value, dist.ReduceOp.SUM)


def global_loss_normalizer(loss_agg_mode: str, mini: DataProto, norm_length: int) -> float:
    """``core_algos.loss_normalizer`` of this rank's mini-batch summed over ranks, divided by the world size.

    ``norm_length`` (seq-mean-token-sum-norm): the configured max response length; <= 0 falls back to the
    mini-batch's padded response width, which no micro-batch split changes.
    """
    mask = mini.batch["response_mask"]
    length = norm_length if norm_length > 0 else mask.size(-1)
    world = dist.get_world_size() if dist.is_initialized() else 1
    return max(global_sum(core_algos.loss_normalizer(loss_agg_mode, mask, length)), 1.0) / world


class DataParallelActor:
    def __init__(self, config: ActorConfig, module: nn.Module, optimizer=None, lr_scheduler=None, device=None):
        self.config = config
        self.module = module
        self.optimizer = optimizer
        self.lr_scheduler = lr_scheduler
        self.device = device or torch.device("cpu")

    def _micro_batch_indices(self, data: DataProto, size: int) -> list[list[int]]:
        """Fixed-size micro-batches, or token-budget ones (``use_dynamic_bsz``) in the same number on every rank."""
        if not self.config.use_dynamic_bsz:
            return [list(range(i, min(i + size, len(data)))) for i in range(0, len(data), size)]
        lengths = data.batch["attention_mask"].sum(-1).tolist()
        budget = self.config.max_token_len_per_device
        count = len(token_budget_micro_batches(lengths, budget))
        count = int(global_max(count))  # FSDP ranks must run the same number of passes
        return token_budget_micro_batches(lengths, budget, min_count=count)

    def _micro_batches(self, data: DataProto, keys: tuple[str, ...], size: int):
        """Yield (indices, trimmed tensors, response_length, is_dummy) per micro-batch."""
        present = [k for k in keys if k in data.batch.keys()]
        for indices in self._micro_batch_indices(data, size):
            dummy = not indices  # a rank with fewer rows still joins the collectives, with zero weight
            rows = torch.tensor(indices or [0], dtype=torch.long)
            batch = {k: data.batch[k][rows].to(self.device) for k in present}
            trimmed, response_length = trim_padding(batch)
            yield indices, trimmed, response_length, dummy

    @torch.no_grad()
    def compute_log_prob(self, data: DataProto) -> torch.Tensor:
        """(bs, response_length) log-probs of ``responses`` at ``meta_info['temperature']``."""
        self.module.eval()
        temperature = float(data.meta_info.get("temperature", 1.0))
        size = self.config.micro_batch_size_per_device_for_experience
        outputs, order = [], []
        for indices, batch, response_length, dummy in self._micro_batches(data, MODEL_INPUTS, size):
            logits = response_logits(self.module, batch)
            if not dummy:
                log_probs = logprobs_from_logits(logits, batch["responses"], temperature=temperature).cpu()
                outputs.append(pad_response(log_probs, response_length))
                order.append(indices)
        return restore_order(outputs, order) if outputs else torch.zeros(0)

    def update_policy(self, data: DataProto) -> dict[str, list[float]]:
        """PPO/GRPO update over mini-batches x ppo_epochs x micro-batches (gradient accumulation).

        ``data`` (this rank's chunk) needs responses, input_ids, attention_mask, position_ids,
        response_mask, old_log_probs, advantages (and ref_log_probs when ``use_kl_loss``).
        Returns lists of metrics: losses (pg_loss, kl_loss) and grad_norm, lr once per optimizer step (a loss
        is the sum of its micro-batch shares: the mini-batch's loss), the others once per micro-batch.
        """
        cfg = self.config
        self.module.train()
        temperature = float(data.meta_info.get("temperature", 1.0))
        keys = (*MODEL_INPUTS, "response_mask", "old_log_probs", "advantages")  # no old_log_probs = on-policy
        if cfg.use_kl_loss:
            keys = (*keys, "ref_log_probs")
        metrics: dict[str, list[float]] = defaultdict(list)
        mini_size = cfg.global_batch_size_per_device if cfg.global_batch_size_per_device > 0 else len(data)
        for _ in range(cfg.ppo_epochs):
            for mini in data.split(mini_size):
                normalizer = global_loss_normalizer(cfg.loss_agg_mode, mini, cfg.max_response_length)
                step_losses: dict[str, float] = defaultdict(float)
                for _, batch, _, dummy in self._micro_batches(mini, keys, cfg.micro_batch_size_per_device_for_update):
                    self._accumulate(
                        batch, temperature, normalizer, metrics, step_losses, weight=0.0 if dummy else 1.0
                    )
                for key, value in step_losses.items():
                    metrics[key].append(value)
                grad_norm, finite = clip_and_step(self.module, self.optimizer, cfg.max_grad_norm, self.lr_scheduler)
                metrics["actor/grad_norm"].append(grad_norm)
                metrics["actor/skipped_nonfinite_steps"].append(0.0 if finite else 1.0)
                if self.lr_scheduler is not None:
                    metrics["actor/lr"].append(self.lr_scheduler.get_last_lr()[0])
        return dict(metrics)

    def _accumulate(
        self, batch: dict, temperature: float, normalizer: float, metrics: dict, step_losses: dict, weight: float
    ) -> None:
        """Forward + backward of one micro-batch; its loss shares are added to ``step_losses``."""
        cfg = self.config
        mask = batch["response_mask"].float()
        logits = response_logits(self.module, batch)
        if cfg.entropy_coeff != 0:
            log_probs = logprobs_from_logits(logits, batch["responses"], temperature=temperature)
        else:  # the entropy is only a metric: from the log-probs' own pass over the logits
            log_probs, entropy = logprobs_and_entropy(logits, batch["responses"], temperature=temperature)
        pg_loss, pg_metrics = core_algos.compute_policy_loss(
            cfg.policy_loss,
            old_log_probs=batch["old_log_probs"] if "old_log_probs" in batch else log_probs.detach(),
            log_probs=log_probs,
            advantages=batch["advantages"],
            response_mask=mask,
            clip_ratio_low=cfg.clip_ratio_low,
            clip_ratio_high=cfg.clip_ratio_high,
            clip_ratio_dual=cfg.clip_ratio_dual,
            loss_agg_mode=cfg.loss_agg_mode,
            normalizer=normalizer,
        )
        loss = pg_loss
        if cfg.entropy_coeff != 0:
            entropy = entropy_from_logits(logits, temperature=temperature)
            entropy_loss = core_algos.compute_entropy_loss(entropy, mask, cfg.loss_agg_mode, normalizer)
            loss = loss - cfg.entropy_coeff * entropy_loss
        if cfg.use_kl_loss:
            kl = core_algos.compute_kl(log_probs, batch["ref_log_probs"], cfg.kl_penalty)
            kl_loss = core_algos.agg_loss(kl, mask, cfg.loss_agg_mode, normalizer)
            loss = loss + cfg.kl_coef * kl_loss
        (loss * weight).backward()
        if weight == 0.0:
            return
        step_losses["actor/pg_loss"] += pg_loss.item()
        if cfg.use_kl_loss:
            step_losses["actor/kl_loss"] += kl_loss.item()
        metrics["actor/entropy"].append(masked_mean(entropy, mask).item())
        for key, value in pg_metrics.items():
            metrics[f"actor/{key}"].append(float(value))
