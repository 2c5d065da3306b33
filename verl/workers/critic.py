"""Data-parallel critic: a value head on the LM body, trained with the clipped value loss (GAE/PPO)."""

from __future__ import annotations

from collections import defaultdict

import torch
from torch import nn

from verl.protocol import DataProto
from verl.utils import core_algos
from verl.utils.seqlen_balancing import pad_response, trim_padding
from verl.utils.torch_functional import masked_mean
from verl.workers.actor.dp_actor import clip_and_step, global_loss_normalizer
from verl.workers.config import CriticConfig

MODEL_INPUTS = ("input_ids", "attention_mask", "position_ids", "responses")


def response_values(module: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """(bs, response_length) value of the state before each response token."""
    response_length = batch["responses"].shape[1]
    out = module(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], position_ids=batch["position_ids"]
    )
    return out.logits[:, -response_length - 1 : -1, 0].float()


class DataParallelCritic:
    def __init__(self, config: CriticConfig, module: nn.Module, optimizer, lr_scheduler, device=None):
        self.config = config
        self.module = module
        self.optimizer = optimizer
        self.lr_scheduler = lr_scheduler
        self.device = device or torch.device("cpu")

    def _micro_batches(self, data: DataProto, keys, size: int):
        """Yield (tensors with all-padding columns trimmed, original response length) per micro-batch."""
        for micro in data.select(batch_keys=[k for k in keys if k in data.batch.keys()]).split(size):
            yield trim_padding({k: v.to(self.device) for k, v in micro.batch.items()})

    @torch.no_grad()
    def compute_values(self, data: DataProto) -> torch.Tensor:
        """(bs, response_length) values, zero outside the response mask."""
        self.module.eval()
        size = self.config.micro_batch_size_per_device_for_experience
        keys = (*MODEL_INPUTS, "response_mask")
        values = [
            pad_response(response_values(self.module, batch).cpu(), response_length)
            for batch, response_length in self._micro_batches(data, keys, size)
        ]
        return torch.cat(values) * data.batch["response_mask"]

    def update_critic(self, data: DataProto) -> dict[str, list[float]]:
        """Clipped value regression on ``returns`` (needs values, returns, response_mask)."""
        cfg = self.config
        self.module.train()
        metrics: dict[str, list[float]] = defaultdict(list)
        keys = (*MODEL_INPUTS, "response_mask", "values", "returns")
        mini_size = cfg.global_batch_size_per_device if cfg.global_batch_size_per_device > 0 else len(data)
        for _ in range(cfg.ppo_epochs):
            for mini in data.split(mini_size):
                normalizer = global_loss_normalizer(cfg.loss_agg_mode, mini, cfg.max_response_length)
                vf_loss = 0.0
                for batch, _ in self._micro_batches(mini, keys, cfg.micro_batch_size_per_device_for_update):
                    mask = batch["response_mask"].float()
                    vpreds = response_values(self.module, batch)
                    loss, loss_metrics = core_algos.compute_value_loss(
                        vpreds,
                        batch["returns"],
                        batch["values"],
                        mask,
                        cfg.cliprange_value,
                        cfg.loss_agg_mode,
                        normalizer,
                    )
                    loss.backward()
                    vf_loss += loss.item()  # a share of the mini-batch's loss
                    metrics["critic/vf_clipfrac"].append(loss_metrics["vf_clipfrac"])
                    metrics["critic/vpred_mean"].append(masked_mean(vpreds.detach(), mask).item())
                metrics["critic/vf_loss"].append(vf_loss)
                grad_norm, finite = clip_and_step(self.module, self.optimizer, cfg.max_grad_norm, self.lr_scheduler)
                metrics["critic/grad_norm"].append(grad_norm)
                metrics["critic/skipped_nonfinite_steps"].append(0.0 if finite else 1.0)
        return dict(metrics)
