"""The ReBO / PPO run config: data, algorithm, workers, trainer. Every field is documented below it.

``python3 -m verl.trainer.main --help`` prints every key with its default and this text.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Optional

from verl.single_controller.launch import WorkerResources
from verl.utils import core_algos
from verl.utils.config import ConfigError, check_choice
from verl.utils.prompt_formats import check_prompt_format
from verl.workers.config import WorkerConfig


@dataclass
class DataConfig:
    train_files: str = ""
    """Training prompts: .json/.jsonl/.parquet file(s) (comma-separated) or an HF dataset id[@split]."""
    val_files: str = ""
    """Validation prompts scored by the reward function (empty = none)."""
    prompt_key: str = "prompt"
    """Column holding the prompt (a string or chat messages)."""
    answer_key: str = "solution"
    """Column holding the ground truth given to the reward function."""
    max_prompt_length: int = 512
    """Prompt tokens after the chat template; longer prompts follow `truncation`."""
    max_response_length: int = 256
    """New tokens generated per response."""
    truncation: str = "error"
    """Prompts over max_prompt_length: error, left (keep the end) or right (keep the start)."""
    rollout_batch_size: int = 32
    """Prompts per training step (each sampled worker.rollout.n times)."""
    val_batch_size: int = -1
    """Validation prompts per generation call; -1 = all at once."""
    max_val_samples: int = -1
    """Use only the first N validation rows (-1 = all)."""
    shuffle: bool = True
    """Shuffle the training prompts (seeded; the order is restored on resume)."""
    seed: Optional[int] = None
    """Data order seed; None = trainer.seed."""
    apply_chat_template: bool = True
    """Wrap each prompt in the tokenizer's chat template (one user turn, generation prompt added)."""
    system_prompt: Optional[str] = None
    """Optional system message before each prompt."""
    prompt_format: str = "plain"
    """plain (the prompt as is) or muse (RULE's MUSE prompts: "Completion: ..." / ICL shots + "Question: ...",
    by each row's `mode`; needs apply_chat_template=false). See verl/utils/prompt_formats.py."""
    icl_file: Optional[str] = None
    """ICL shots for prompt_format=muse qa rows (RULE: MUSE knowmem/train_qa_icl.json, its icl_type=train)."""

    def post_init(self) -> None:
        check_choice(self.truncation, ["error", "left", "right"], "data.truncation")
        check_prompt_format(self.prompt_format, self.apply_chat_template, "data")
        if self.icl_file:
            self.icl_file = _absolute(self.icl_file)
        self.train_files = ",".join(_absolute(p) for p in self.train_files.split(",") if p.strip())
        self.val_files = ",".join(_absolute(p) for p in self.val_files.split(",") if p.strip())


def _absolute(path: str) -> str:
    path = path.strip()
    return os.path.abspath(path) if os.path.exists(path) else path


@dataclass
class AlgorithmConfig:
    adv_estimator: str = "grpo"
    """Advantage estimator: grpo, rloo, reinforce_plus_plus, remax or gae (gae trains a critic)."""
    gamma: float = 1.0
    """Discount factor."""
    lam: float = 1.0
    """GAE lambda."""
    disable_kl: bool = False
    """No reference model and no KL term at all."""
    use_kl_loss: bool = True
    """KL to the reference as a loss term (RULE); False puts it in the reward instead."""
    kl_penalty: str = "low_var_kl"
    """KL estimator on per-token log-probs: kl (k1), abs, mse (k2) or low_var_kl (k3)."""
    kl_coef: float = 1e-2
    """KL coefficient (initial value for the adaptive controller)."""
    kl_type: str = "fixed"
    """KL-in-reward controller: fixed or adaptive."""
    kl_target: float = 0.1
    """Adaptive controller target KL."""
    kl_horizon: float = 10000.0
    """Adaptive controller horizon."""


@dataclass
class EvaluatorConfig:
    benchmark: str = "none"
    """Benchmark evaluated every val_freq steps besides the validation reward: none, rwku or muse."""
    data_dir: str = ""
    """Benchmark folder (RWKU: the folder holding Target/; MUSE: the books folder)."""
    targets: str = ""
    """RWKU targets: ids, ranges or names, e.g. 1 or 1-10 or Stephen King."""
    suites: list[str] = field(default_factory=lambda: ["forget", "neighbor"])
    """Suites to run (see verl.eval), e.g. forget, neighbor, mia."""
    max_probes: int = -1
    """Probes per suite (-1 = all); for quick runs."""
    best_metric: str = ""
    """Keep the best checkpoint by this metric (e.g. val/rwku/forget_all); empty = off."""
    best_mode: str = "min"
    """min or max for best_metric."""
    best_constraints: list[str] = field(default_factory=list)
    """Conditions a best checkpoint must meet, e.g. val/rwku/neighbor_all>=0.8 (absolute)."""
    refusal_detector: str = "strict"
    """Detector behind the refusal figures of the naturalness suite: strict, rule or judge (see verl.eval)."""
    judge_model: str = ""
    """HF chat model for refusal_detector=judge."""


PRIMING_MODES = ("none", "first", "fields")  # boundary synthesis (data/generators.py) reads them from here


@dataclass
class SynthesisConfig:
    """The boundary set of a target without RULE's released files: read by the runner's ``synth`` stage
    (``python -m RS.synth``, run by ``run_rwku.sh``); ``verl.trainer.main`` ignores this section."""

    generator: Optional[str] = None
    """Model that writes the FB rewrites and neighbour questions (HF folder, hub id, 'smollm2' or 'tiny:DIR');
    null = the model before unlearning (the runner's --model, which RS starts from; not the RS checkpoint)."""
    plugin: str = ""
    """'module:function' of a factory(SynthesisConfig) -> generate_fn used instead of a model (see
    data/generators.py for the contract); empty = generate with the rollout (worker.rollout: HF or vLLM)."""
    priming: str = "fields"
    """Start the assistant turn with the field labels: none, first (the first label, e.g. 'Entity:') or fields
    (one generation per field, each primed with the lines so far and its label); small models need fields."""
    max_new_tokens: int = 96
    """New tokens per generation (per field with priming=fields)."""
    max_prompt_length: int = 1024
    """Longest templated prompt in tokens (vLLM's max_model_len = this + max_new_tokens); longer is an error."""
    do_sample: bool = False
    """Sample (temperature, top_p) instead of greedy decoding."""
    temperature: float = 0.7
    """Sampling temperature with do_sample."""
    top_p: float = 0.9
    """Nucleus sampling with do_sample."""
    boundary_ratio: Optional[float] = None
    """Boundary rows kept per forget row of the ReBO training file (a seeded sample); null = every kept one."""
    limit: Optional[int] = None
    """Only the first N forget questions of the target (null = all; --smoke uses a few)."""
    seed: int = 0
    """Seed of sampling, of the boundary sample and of the row order of the training file."""

    def post_init(self) -> None:
        check_choice(self.priming, PRIMING_MODES, "synthesis.priming")
        for key in ("max_new_tokens", "max_prompt_length"):
            if getattr(self, key) < 1:
                raise ConfigError(f"synthesis.{key} must be >= 1, got {getattr(self, key)}")
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"synthesis.limit must be >= 1 or null, got {self.limit}")
        if self.boundary_ratio is not None and self.boundary_ratio < 0:
            raise ConfigError(f"synthesis.boundary_ratio must be >= 0 or null, got {self.boundary_ratio}")
        if self.temperature <= 0 or not 0 < self.top_p <= 1:
            raise ConfigError(f"synthesis.temperature must be > 0 and top_p in (0, 1], got {self.temperature}, "
                              f"{self.top_p} (greedy: do_sample=false)")  # fmt: skip
        module, _, function = self.plugin.partition(":")
        if self.plugin and (not module.strip() or not function.strip()):
            raise ConfigError(f"synthesis.plugin={self.plugin!r} must be 'module:function' (e.g. my_pkg.gen:make)")


@dataclass
class TrainerConfig(WorkerResources):
    """Loop, logging and checkpoints; worker placement (backend, nnodes, ...) from ``WorkerResources``."""

    project_name: str = "rule"
    """Project name for loggers."""
    experiment_name: str = "rebo"
    """Run name; outputs go to {output_dir}/{experiment_name}."""
    output_dir: str = "log"
    """Root of run outputs (metrics, checkpoints, exports)."""
    logger: list[str] = field(default_factory=lambda: ["console", "jsonl"])
    """Metric sinks: console, jsonl, tensorboard, wandb."""
    total_epochs: int = 1
    """Passes over the training prompts."""
    max_steps: int = -1
    """Stop after this many steps (-1 = total_epochs)."""
    val_freq: int = -1
    """Validate every N steps (-1 = never); runs at the end too when >0."""
    val_before_train: bool = False
    """Validate once before the first step."""
    val_only: bool = False
    """Only validate, then exit."""
    val_generations_to_log: int = 5
    """Validation samples printed / logged."""
    save_freq: int = -1
    """Save a checkpoint every N steps (-1 = only at the end, -2 = never)."""
    save_limit: int = 2
    """Keep this many recent checkpoints (plus the best); -1 = all."""
    resume: bool = True
    """Resume from the latest complete checkpoint of this experiment when there is one."""
    export_hf: bool = True
    """Export the final actor as a plain HF folder ({run_dir}/final)."""
    balance_batch: bool = True
    """Reorder each rollout batch so every data-parallel rank gets a similar number of tokens."""
    critic_warmup: int = 0
    """Steps that train only the critic (GAE)."""
    seed: int = 1
    """Global seed: the data order (unless data.seed), sampling (unless worker.rollout.seed) and each worker's
    torch/numpy/random generators (seed + rank)."""
    run_dir: str = field(default="", init=False)
    """{output_dir}/{experiment_name} (derived)."""


@dataclass
class PPOConfig:
    data: DataConfig = field(default_factory=DataConfig)
    """Prompts."""
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    """RL algorithm."""
    worker: WorkerConfig = field(default_factory=WorkerConfig)
    """Workers."""
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    """Loop, logging, checkpoints."""
    evaluator: EvaluatorConfig = field(default_factory=EvaluatorConfig)
    """Benchmark evaluation during training."""
    synthesis: SynthesisConfig = field(default_factory=SynthesisConfig)
    """Boundary synthesis for targets without RULE's files (the runner's synth stage, to come; training ignores it)."""

    def world_size(self) -> int:
        return self.trainer.world_size()

    def post_init(self) -> None:
        """Fill derived fields and check cross-section constraints (runs before the sections' own)."""
        algo, actor, rollout, trainer = self.algorithm, self.worker.actor, self.worker.rollout, self.trainer
        check_choice(
            algo.adv_estimator, ["grpo", "rloo", "reinforce_plus_plus", "remax", "gae"], "algorithm.adv_estimator"
        )
        if algo.kl_penalty in core_algos.FULL_DISTRIBUTION_KL:
            raise ConfigError(
                f"algorithm.kl_penalty={algo.kl_penalty!r} needs the full vocabulary log-distributions, but the engine "
                f"keeps per-token log-probs; choose one of: {', '.join(core_algos.per_token_kl_estimators())}"
            )
        check_choice(algo.kl_penalty, core_algos.per_token_kl_estimators(), "algorithm.kl_penalty")
        check_choice(algo.kl_type, ["fixed", "adaptive"], "algorithm.kl_type")
        trainer.check_resources("trainer")
        for sink in trainer.logger:
            check_choice(sink, ["console", "jsonl", "tensorboard", "wandb"], "trainer.logger")
        check_choice(self.evaluator.benchmark, ["none", "rwku", "muse"], "evaluator.benchmark")
        check_choice(self.evaluator.refusal_detector, ["rule", "strict", "judge"], "evaluator.refusal_detector")
        if (self.evaluator.refusal_detector == "judge") != bool(self.evaluator.judge_model):
            raise ConfigError("evaluator.judge_model is needed with evaluator.refusal_detector=judge and only then")
        if not self.data.train_files and not trainer.val_only:
            raise ConfigError("data.train_files is empty: give a training file (JSON/JSONL/parquet) or HF dataset id")
        if self.data.seed is None:
            self.data.seed = trainer.seed
        self.worker.seed = trainer.seed
        actor.use_kl_loss = algo.use_kl_loss and not algo.disable_kl
        actor.kl_penalty, actor.kl_coef = algo.kl_penalty, algo.kl_coef
        rollout.prompt_length = self.data.max_prompt_length
        rollout.response_length = self.data.max_response_length
        actor.max_response_length = self.worker.critic.max_response_length = self.data.max_response_length
        if algo.adv_estimator in ("grpo", "rloo") and rollout.n < 2:
            raise ConfigError(f"algorithm.adv_estimator={algo.adv_estimator} needs worker.rollout.n >= 2")
        world = self.world_size()
        sequences = self.data.rollout_batch_size * rollout.n
        if sequences % world:
            raise ConfigError(
                f"data.rollout_batch_size x worker.rollout.n = {sequences} must divide by the {world} workers"
            )
        if self.data.rollout_batch_size % actor.global_batch_size:
            raise ConfigError(
                f"data.rollout_batch_size={self.data.rollout_batch_size} must be a multiple of "
                f"worker.actor.global_batch_size={actor.global_batch_size}"
            )
        for name, section in (("actor", actor), ("critic", self.worker.critic)):
            per_device = section.global_batch_size * rollout.n
            if per_device % world:
                raise ConfigError(f"worker.{name}.global_batch_size x rollout.n = {per_device} must divide by {world}")
            section.global_batch_size_per_device = per_device // world
        trainer.run_dir = os.path.abspath(os.path.join(trainer.output_dir, trainer.experiment_name))
