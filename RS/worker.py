"""UnlearnWorker: the engine's FSDP actor worker with a supervised unlearning update.

It keeps everything of ``FSDPWorker`` (sharding, LoRA, AdamW + schedule, checkpoints, ``export_hf``)
and adds:

* ``init_model``: the trainable actor, plus a frozen FSDP reference when the loss needs one
  (with LoRA the reference is the actor with its adapter disabled: no second copy);
* ``compute_sequence_logps``: per-row summed log-probs of the loss tokens of one or more streams,
  under the actor or the reference (the trainer computes reference log-probs once, then calls
  ``release_reference`` to free that model for the rest of the run);
* ``update_unlearn``: one optimizer step over this rank's rows, gradient-accumulated over
  micro-batches, with global (all-rank) normalizers so the step equals the full-batch gradient.
"""

from __future__ import annotations

import contextlib
import gc
from collections import defaultdict
from typing import Any

import torch
import torch.distributed as dist

from RS.losses import Normalizer, StreamLogps, get_loss
from verl.protocol import DataProto
from verl.single_controller.base import Dispatch, register
from verl.utils import device as dev
from verl.utils.torch_functional import logprobs_from_logits
from verl.workers import fsdp_utils
from verl.workers.actor.dp_actor import DataParallelActor, clip_and_step, global_sum, predicting_positions
from verl.workers.config import WorkerConfig
from verl.workers.fsdp_worker import FSDPWorker
from verl.workers.rollout.sampling import position_ids_from_mask


def sequence_logps(module: torch.nn.Module, batch: dict[str, torch.Tensor], stream: str):
    """(logps, ntokens), each (bs,): summed log-probs of ``stream``'s loss tokens and their count.

    ``batch`` holds ``{stream}_input_ids``, ``_attention_mask`` and ``_loss_mask``, all (bs, seq_len),
    left-padded (``RS.dataset.collate``); token ``t`` is scored from the logits at ``t - 1``. The LM head
    runs only from the first column holding a loss token on (``logits_to_keep``): for prompt/response rows
    that is the response, a few tokens of a long prompt, which saves most of the (bs, seq_len, V) logits
    and their softmax.
    """
    ids = batch[f"{stream}_input_ids"]
    attention = batch[f"{stream}_attention_mask"]
    targets = batch[f"{stream}_loss_mask"][:, 1:]  # (bs, seq_len - 1): 1 where token t + 1 is scored
    scored = targets.any(0).nonzero()
    first = int(scored[0]) if len(scored) else targets.size(1) - 1
    kept = targets.size(1) - first  # predicting columns first + 1 .. seq_len - 1
    logits = module(
        input_ids=ids,
        attention_mask=attention,
        position_ids=position_ids_from_mask(attention),
        use_cache=False,
        logits_to_keep=predicting_positions(ids.shape[1], kept, ids.device),
    ).logits
    token_logps = logprobs_from_logits(logits, ids[:, first + 1 :])
    mask = targets[:, first:].to(token_logps.dtype)
    return (token_logps * mask).sum(-1), mask.sum(-1)


class UnlearnWorker(FSDPWorker):
    def __init__(self, config: WorkerConfig, loss_name: str, loss_params: dict[str, Any] | None = None):
        super().__init__(config, "actor")
        self.loss = get_loss(loss_name)
        self.loss_params = self.loss.bind(loss_params)
        self.ref_module = None

    @register(dispatch_mode=Dispatch.ONE_TO_ALL)
    def init_model(self) -> None:
        cfg = self.config
        model_cfg = cfg.actor.model
        torch.manual_seed(cfg.rollout.seed + self.rank)
        self.tokenizer = fsdp_utils.load_tokenizer(model_cfg.tokenizer_path or model_cfg.model_path)
        self.actor_module = self._build_sharded(model_cfg.model_path, model_cfg, cfg.actor.fsdp, trainable=True)
        optimizer, scheduler = self._build_optimizer(self.actor_module, cfg.actor.optim)
        self.actor = DataParallelActor(cfg.actor, self.actor_module, optimizer, scheduler, self.device)
        if self.loss.needs_ref:
            if model_cfg.lora.rank > 0:
                self._ref_is_disabled_adapter = True
            else:
                ref_path = cfg.ref.model_path or model_cfg.model_path
                self.ref_module = self._build_sharded(ref_path, model_cfg, cfg.ref.fsdp, trainable=False)

    def _reference(self):
        """(module, context manager) that compute reference log-probs."""
        if self._ref_is_disabled_adapter:
            return self.actor_module, self.actor_module.disable_adapter()
        if self.ref_module is None:
            raise RuntimeError("no reference model: the loss needs none, or release_reference() was called")
        return self.ref_module, contextlib.nullcontext()

    @register(dispatch_mode=Dispatch.DP_COMPUTE_PROTO)
    @torch.no_grad()
    def compute_sequence_logps(self, data: DataProto) -> DataProto:
        """``{s}_logps`` and ``{s}_ntokens`` (bs,) for each stream in ``meta_info['streams']``.

        ``meta_info['use_ref']`` = True scores with the reference model and names the outputs
        ``{s}_ref_logps`` instead of ``{s}_logps``.
        """
        use_ref = bool(data.meta_info.get("use_ref", False))
        module, context = self._reference() if use_ref else (self.actor_module, contextlib.nullcontext())
        module.eval()
        size = self.config.actor.micro_batch_size_per_device_for_experience
        out: dict[str, list[torch.Tensor]] = defaultdict(list)
        with context:
            for micro in data.split(size):
                batch = {k: v.to(self.device) for k, v in micro.batch.items()}
                for stream in data.meta_info["streams"]:
                    logps, ntokens = sequence_logps(module, batch, stream)
                    out[f"{stream}_ref_logps" if use_ref else f"{stream}_logps"].append(logps.float().cpu())
                    out[f"{stream}_ntokens"].append(ntokens.float().cpu())
        return DataProto.from_dict({k: torch.cat(v) for k, v in out.items()}, meta_info=dict(data.meta_info))

    @register(dispatch_mode=Dispatch.ONE_TO_ALL)
    def release_reference(self) -> None:
        """Free the frozen reference (its log-probs are cached by the trainer)."""
        self.ref_module = None
        gc.collect()
        dev.empty_cache()

    def _normalizer(self, data: DataProto) -> Normalizer:
        world = dist.get_world_size() if dist.is_initialized() else 1
        tokens = {
            s: max(global_sum(float(data.batch[f"{s}_loss_mask"][:, 1:].sum())), 1.0) / world
            for s in self.loss.streams
        }
        return Normalizer(tokens=tokens, sequences=max(global_sum(float(len(data))), 1.0) / world)

    @register(dispatch_mode=Dispatch.DP_COMPUTE_METRIC)
    def update_unlearn(self, data: DataProto) -> dict[str, float]:
        """One optimizer step on this rank's rows of the step's batch.

        ``data`` holds, per stream ``s`` of the loss, ``{s}_input_ids``, ``{s}_attention_mask``,
        ``{s}_loss_mask`` (bs, len_s) and, for reference streams, ``{s}_ref_logps`` (bs,).
        Returns this rank's shares (loss, loss metrics) plus grad_norm, lr and skipped; the
        driver's mean over ranks is the batch value.
        """
        self.actor_module.train()
        norm = self._normalizer(data)
        metrics: dict[str, float] = defaultdict(float)
        lr = self.actor.lr_scheduler.get_last_lr()[0]
        for micro in data.split(self.config.actor.micro_batch_size_per_device_for_update):
            batch = {k: v.to(self.device) for k, v in micro.batch.items()}
            streams = {}
            for s in self.loss.streams:
                logps, ntokens = sequence_logps(self.actor_module, batch, s)
                streams[s] = StreamLogps(logps, ntokens, batch.get(f"{s}_ref_logps"))
            loss, loss_metrics = self.loss(streams, norm, **self.loss_params)
            loss.backward()
            metrics["loss"] += float(loss.detach())
            for key, value in loss_metrics.items():
                metrics[key] += float(value)
        grad_norm, finite = clip_and_step(
            self.actor_module, self.actor.optimizer, self.config.actor.max_grad_norm, self.actor.lr_scheduler
        )
        metrics.update(grad_norm=grad_norm, lr=lr, skipped_nonfinite=0.0 if finite else 1.0)
        return dict(metrics)
