"""FSDPWorker: one worker class for every role (actor, rollout, ref, critic and their combinations).

A role string picks what this process builds:

=====================  ====================================================================
``actor``              FSDP2-sharded policy + AdamW + LR schedule (``update_actor``, log-probs)
``rollout``            a full copy of the policy that generates (HF; vLLM on GPU)
``ref``                FSDP2-sharded frozen reference (``compute_ref_log_prob``)
``critic``             FSDP2-sharded value model (``compute_values``, ``update_critic``)
``actor_rollout``      actor + rollout, weights streamed from the actor when they changed
``actor_rollout_ref``  the three colocated in one process (the default "hybrid engine")
=====================  ====================================================================

The reference is the actor's class without an optimizer; with LoRA it is the actor itself with
the adapter disabled (no second copy).
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.distributed as dist

from verl.protocol import DataProto
from verl.single_controller.base import Dispatch, Worker, register
from verl.utils import device as dev
from verl.utils.lr_scheduler import build_lr_scheduler, resolve_warmup_steps
from verl.workers import fsdp_utils, hf_export, weight_sync
from verl.workers.actor.dp_actor import DataParallelActor
from verl.workers.config import WorkerConfig
from verl.workers.critic import DataParallelCritic

ROLES = ("actor", "rollout", "ref", "critic", "actor_rollout", "actor_rollout_ref")


class FSDPWorker(Worker):
    def __init__(self, config: WorkerConfig, role: str):
        super().__init__()
        if role not in ROLES:
            raise ValueError(f"unknown worker role {role!r}; choose one of: {', '.join(ROLES)}")
        self.config = config
        self.role = role
        self._is_actor = role in ("actor", "actor_rollout", "actor_rollout_ref")
        self._is_rollout = role in ("rollout", "actor_rollout", "actor_rollout_ref")
        self._is_ref = role in ("ref", "actor_rollout_ref")
        self._is_critic = role == "critic"
        if config.num_threads > 0:
            torch.set_num_threads(config.num_threads)
        dev.flush_denormals()
        fsdp_utils.init_distributed()
        self.device = dev.get_torch_device()
        self.on_gpu = dev.get_device_name() != "cpu"
        self.actor = self.ref = self.critic = self.rollout = None
        self.actor_module = None
        self._ref_is_disabled_adapter = False
        # the actor's weights version (bumped by update_actor / load_checkpoint) and the one the rollout
        # holds: generate_sequences syncs only when they differ (validation calls do not resync)
        self.weights_version = 0
        self.rollout_version = -1
        self.sync_stats: dict[str, int] = {"syncs": 0}

    # ------------------------------------------------------------------ construction
    def _build_optimizer(self, module, optim_cfg):
        params = [p for p in module.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(
            params,
            lr=optim_cfg.lr,
            betas=tuple(optim_cfg.betas),
            weight_decay=optim_cfg.weight_decay,
            fused=dev.fused_adamw(),
        )
        total = max(optim_cfg.training_steps, 1)
        warmup = resolve_warmup_steps(optim_cfg.lr_warmup_steps, optim_cfg.lr_warmup_ratio, total)
        scheduler = build_lr_scheduler(optimizer, warmup, total, optim_cfg.warmup_style, optim_cfg.min_lr_ratio)
        return optimizer, scheduler

    def _build_sharded(self, model_path: str, model_cfg, fsdp_cfg, trainable: bool, value_head: bool = False):
        mixed = self.on_gpu and fsdp_cfg.mixed_precision
        dtype = torch.float32 if (trainable or not self.on_gpu) else dev.default_dtype(model_cfg.dtype)
        # rank 0 reads the weights; the others build on the meta device and receive them by broadcast
        module = fsdp_utils.load_causal_lm(model_path, model_cfg, dtype, value_head=value_head, empty=self.rank > 0)
        if trainable and model_cfg.lora.rank > 0 and not value_head:
            module = fsdp_utils.apply_lora(module, model_cfg.lora)  # rank 0's adapter init reaches all ranks
        if trainable and model_cfg.enable_gradient_checkpointing:
            module.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if not trainable:
            module.requires_grad_(False)
        full_state = module.state_dict() if self.rank == 0 and self.world_size > 1 else {}
        module = fsdp_utils.fsdp_shard(module, fsdp_cfg, mixed_precision=mixed and trainable)
        if self.world_size > 1:
            fsdp_utils.broadcast_from_rank0(module, full_state)
        return module

    @register(dispatch_mode=Dispatch.ONE_TO_ALL)
    def init_model(self) -> None:
        cfg = self.config
        dev.seed_everything(cfg.seed + self.rank)
        self.tokenizer = fsdp_utils.load_tokenizer(cfg.actor.model.tokenizer_path or cfg.actor.model.model_path)
        if self._is_actor:
            self.actor_module = self._build_sharded(cfg.actor.model.model_path, cfg.actor.model, cfg.actor.fsdp, True)
            optimizer, scheduler = self._build_optimizer(self.actor_module, cfg.actor.optim)
            self.actor = DataParallelActor(cfg.actor, self.actor_module, optimizer, scheduler, self.device)
            if cfg.actor.offload.offload_params:
                fsdp_utils.move_module(self.actor_module, "cpu")
        if self._is_ref:
            if self._is_actor and cfg.actor.model.lora.rank > 0:
                self._ref_is_disabled_adapter = True
                self.ref = DataParallelActor(cfg.actor, self.actor_module, device=self.device)
            else:
                ref_path = cfg.ref.model_path or cfg.actor.model.model_path
                ref_module = self._build_sharded(ref_path, cfg.actor.model, cfg.ref.fsdp, trainable=False)
                self.ref = DataParallelActor(cfg.actor, ref_module, device=self.device)
                if cfg.ref.offload.offload_params:
                    fsdp_utils.move_module(ref_module, "cpu")
        if self._is_rollout:
            self._build_rollout()
        if self._is_critic:
            module = self._build_sharded(cfg.critic.model.model_path, cfg.critic.model, cfg.critic.fsdp, True, True)
            optimizer, scheduler = self._build_optimizer(module, cfg.critic.optim)
            self.critic = DataParallelCritic(cfg.critic, module, optimizer, scheduler, self.device)
            if cfg.critic.offload.offload_params:
                fsdp_utils.move_module(module, "cpu")

    def _build_rollout(self) -> None:
        cfg = self.config
        if cfg.rollout.name == "vllm":
            from verl.workers.rollout.vllm_rollout import VLLMRollout

            self.rollout = VLLMRollout(cfg.actor.model, cfg.rollout, self.tokenizer, self.rank)
            return
        from verl.workers.rollout.hf_rollout import HFRollout

        if self._shares_actor_weights():
            self.rollout = HFRollout(self.actor_module, self.tokenizer, cfg.rollout, self.rank)
            return
        dtype = dev.default_dtype(cfg.actor.model.dtype)
        model = fsdp_utils.load_causal_lm(cfg.actor.model.model_path, cfg.actor.model, dtype)
        model.config.use_cache = True
        model.requires_grad_(False)
        self.rollout = HFRollout(model.to(self.device), self.tokenizer, cfg.rollout, self.rank)

    def _shares_actor_weights(self) -> bool:
        """The HF rollout generates with the actor's own module (``worker.rollout.hf_weights=shared``)."""
        return self._is_actor and self.config.rollout.name == "hf" and self.config.rollout.hf_weights == "shared"

    # ------------------------------------------------------------------ offload (GPU; no-op on CPU)
    @contextmanager
    def _on_device(self, module, offload, optimizer=None):
        """Bring an offloaded module's parameters (and ``optimizer``'s state) to the device for one phase."""
        if offload.offload_params:
            fsdp_utils.move_module(module, self.device)
        if optimizer is not None and offload.offload_optimizer:
            fsdp_utils.move_optimizer(optimizer, self.device)
        try:
            yield
        finally:
            if offload.offload_params:
                fsdp_utils.move_module(module, "cpu")
            if optimizer is not None and offload.offload_optimizer:
                fsdp_utils.move_optimizer(optimizer, "cpu")

    def _actor_on_device(self, with_optimizer: bool = False):
        """The actor's parameters (and optimizer state) on the device for one phase (``worker.actor.offload``)."""
        optimizer = self.actor.optimizer if with_optimizer else None
        return self._on_device(self.actor_module, self.config.actor.offload, optimizer)

    # ------------------------------------------------------------------ rollout
    def _rollout_weights(self, dtype: torch.dtype | None = None):
        """The actor's full weights (LoRA merged: W + s * B @ A) as a stream of (HF name, tensor);
        collective: every rank must drain it."""
        lora = self.config.actor.model.lora.rank > 0
        return weight_sync.iter_full_weights(self.actor_module, dtype=dtype, merge_lora=lora)

    def _rollout_state_dict(self, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
        """All of ``_rollout_weights`` at once (export); the rollout sync streams instead."""
        return dict(self._rollout_weights(dtype))

    def _sync_rollout(self) -> None:
        """Stream the actor into the rollout, one full tensor at a time in the rollout's dtype: wake the
        rollout's weights only, gather + load, then (``generate_sequences``) the rest (vLLM's KV cache)."""
        self.rollout.wake_up(("weights",))
        tally = weight_sync.SyncTally()
        with self._actor_on_device():
            self.rollout.load_weights(tally.wrap(self._rollout_weights(self.rollout.dtype)))
        self.rollout_version = self.weights_version
        self.sync_stats = {"syncs": self.sync_stats["syncs"] + 1, **tally.summary()}

    @register(dispatch_mode=Dispatch.DP_COMPUTE_PROTO)
    def generate_sequences(self, prompts: DataProto) -> DataProto:
        if self.rollout is None:
            raise RuntimeError(f"worker role {self.role!r} has no rollout")
        if self._shares_actor_weights():  # the actor's weights are the rollout's: nothing to sync
            with self._actor_on_device(), fsdp_utils.gathered(self.actor_module, self.config.actor.fsdp):
                return self.rollout.generate_sequences(prompts)
        if self._is_actor and self.rollout_version != self.weights_version:
            self._sync_rollout()
        self.rollout.wake_up()
        output = self.rollout.generate_sequences(prompts)
        self.rollout.sleep()
        return output

    # ------------------------------------------------------------------ log-probs and updates
    @register(dispatch_mode=Dispatch.DP_COMPUTE_PROTO)
    def compute_log_prob(self, data: DataProto) -> DataProto:
        with self._actor_on_device():
            log_probs = self.actor.compute_log_prob(data)
        return DataProto.from_dict({"old_log_probs": log_probs}, meta_info=dict(data.meta_info))

    @register(dispatch_mode=Dispatch.DP_COMPUTE_PROTO)
    def compute_ref_log_prob(self, data: DataProto) -> DataProto:
        if self.ref is None:
            raise RuntimeError(f"worker role {self.role!r} has no reference model")
        if self._ref_is_disabled_adapter:
            with self._actor_on_device(), self.actor_module.disable_adapter():
                log_probs = self.ref.compute_log_prob(data)
        else:
            with self._on_device(self.ref.module, self.config.ref.offload):
                log_probs = self.ref.compute_log_prob(data)
        return DataProto.from_dict({"ref_log_probs": log_probs}, meta_info=dict(data.meta_info))

    @register(dispatch_mode=Dispatch.DP_COMPUTE_METRIC)
    def update_actor(self, data: DataProto) -> dict[str, list[float]]:
        self.weights_version += 1  # the weights are about to change: the next rollout resyncs
        with self._actor_on_device(with_optimizer=True):
            return self.actor.update_policy(data)

    @register(dispatch_mode=Dispatch.DP_COMPUTE_PROTO)
    def compute_values(self, data: DataProto) -> DataProto:
        with self._on_device(self.critic.module, self.config.critic.offload):
            values = self.critic.compute_values(data)
        return DataProto.from_dict({"values": values}, meta_info=dict(data.meta_info))

    @register(dispatch_mode=Dispatch.DP_COMPUTE_METRIC)
    def update_critic(self, data: DataProto) -> dict[str, list[float]]:
        with self._on_device(self.critic.module, self.config.critic.offload, self.critic.optimizer):
            return self.critic.update_critic(data)

    # ------------------------------------------------------------------ inspection (tests, benchmarks)
    @register(dispatch_mode=Dispatch.ONE_TO_ALL)
    def param_numel(self) -> tuple[int, int]:
        """(parameters held by this rank, parameters of the full actor)."""
        return fsdp_utils.local_numel(self._trainable_module())

    @register(dispatch_mode=Dispatch.ONE_TO_ALL)
    def full_state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu().clone() for k, v in fsdp_utils.full_state_dict(self._trainable_module()).items()}

    @register(dispatch_mode=Dispatch.ONE_TO_ALL)
    def rollout_state_dict(self) -> dict[str, torch.Tensor]:
        """The HF rollout's current weights (CPU copies), to check that a sync reached it."""
        if not hasattr(self.rollout, "model"):
            raise RuntimeError(f"worker role {self.role!r}: rollout_state_dict needs the HF rollout")
        return {k: v.detach().cpu().clone() for k, v in self.rollout.model.state_dict().items()}

    @register(dispatch_mode=Dispatch.ONE_TO_ALL)
    def rollout_backend(self) -> str:
        """The rollout backend: hf, or vllm/<vLLM's executor backend> (external_launcher on several ranks)."""
        return self.rollout.name if self.rollout is not None else ""

    @register(dispatch_mode=Dispatch.ONE_TO_ALL)
    def weight_sync_stats(self) -> dict[str, int]:
        """Rollout syncs so far and the last one's ``SyncTally.summary()`` (bytes handed over / alive)."""
        return dict(self.sync_stats)

    @register(dispatch_mode=Dispatch.ONE_TO_ALL)
    def peak_memory(self) -> int:
        return dev.peak_memory_bytes()

    def _trainable_module(self):
        return self.actor_module if self.actor_module is not None else self.critic.module

    # ------------------------------------------------------------------ checkpoints
    def _optimizer_and_scheduler(self):
        owner = self.actor if self.actor is not None else self.critic
        return owner.optimizer, owner.lr_scheduler

    @register(dispatch_mode=Dispatch.ONE_TO_ALL)
    def save_checkpoint(self, path: str) -> None:
        """Write this rank's shards (model, optimizer), the LR schedule and RNG states under ``path``."""
        optimizer, scheduler = self._optimizer_and_scheduler()
        state = fsdp_utils.sharded_state_dicts(self._trainable_module(), optimizer)
        state["lr_scheduler"] = scheduler.state_dict()
        state["rng"] = dev.get_rng_state()
        state["rng"]["rollout"] = self.rollout.generator.get_state() if hasattr(self.rollout, "generator") else None
        state["world_size"] = self.world_size
        Path(path).mkdir(parents=True, exist_ok=True)
        target = Path(path) / f"{self.role}_rank{self.rank}_of{self.world_size}.pt"
        tmp = target.with_suffix(".pt.tmp")
        torch.save(state, tmp)
        os.replace(tmp, target)
        dist.barrier()

    @register(dispatch_mode=Dispatch.ONE_TO_ALL)
    def load_checkpoint(self, path: str) -> None:
        target = Path(path) / f"{self.role}_rank{self.rank}_of{self.world_size}.pt"
        if not target.is_file():
            found = sorted(p.name for p in Path(path).glob(f"{self.role}_rank*.pt"))
            raise FileNotFoundError(
                f"checkpoint shard {target} not found (world size {self.world_size}); the folder holds {found}: "
                "resume with the same number of workers"
            )
        state = torch.load(target, map_location="cpu", weights_only=False)
        optimizer, scheduler = self._optimizer_and_scheduler()
        self.weights_version += 1
        fsdp_utils.load_sharded_state_dicts(self._trainable_module(), optimizer, state)
        scheduler.load_state_dict(state["lr_scheduler"])
        dev.set_rng_state(state["rng"])
        if state["rng"].get("rollout") is not None and hasattr(self.rollout, "generator"):
            self.rollout.generator.set_state(state["rng"]["rollout"])

    @register(dispatch_mode=Dispatch.ONE_TO_ALL)
    def export_hf(self, path: str) -> None:
        """Write the full actor (LoRA merged) as a plain HF folder, in the model's dtype (``model.dtype``)."""
        if self.actor_module is not None:
            dtype = dev.default_dtype(self.config.actor.model.dtype)
            with self._actor_on_device():
                state = hf_export.gather_full_state(self.actor_module, dtype)  # rank 0 only; one tensor at a time
            if self.rank == 0:
                hf_export.save_hf_folder(self.config.actor.model, state, self.tokenizer, path, dtype)
            del state
        dist.barrier()
