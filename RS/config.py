"""The supervised unlearning run config (RS and the offline baselines). Every field is documented below it.

``python3 -m RS.train --help`` prints every key with its default and this text.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Optional

from verl.single_controller.launch import WorkerResources
from verl.utils.config import ConfigError, check_choice
from verl.utils.prompt_formats import check_prompt_format
from verl.workers.config import FSDPConfig, ModelConfig, OptimConfig

FORMATS = ("auto", "sft", "questions", "text", "pair", "rebo")
RETAIN_FORMATS = ("auto", "sft", "text", "boundary", "rebo")


@dataclass
class DataConfig:
    train_files: str = ""
    """Training rows (comma-separated .json/.jsonl/.parquet): RS rows, a forget corpus or DPO pairs."""
    format: str = "auto"
    """auto (from the keys), sft (prompt -> response), questions (prompt -> a refusal built here), text, pair,
    rebo (the <reject> rows of RULE's ReBO file, rl_rejection_*_target.json: question -> its refusal)."""
    prompt_key: str = ""
    """Prompt / question key; empty = detect (instruction, prompt, query, question)."""
    response_key: str = ""
    """Response key of sft rows; empty = detect (output, response, answer)."""
    input_key: str = "input"
    """Alpaca 'input' appended to the prompt after a newline when not empty."""
    text_key: str = "text"
    """Text key of corpus rows (positive.json, passage.json)."""
    subject_key: str = "subject"
    """Row key holding the target name (fills {target} in refusals)."""
    chosen_index: int = 0
    """pair rows with response=[a, b]: which one is chosen (RWKU pair.json: 0 = counterfactual)."""
    retain_files: str = ""
    """Retain rows for gd / npo_gd / sft_retain / sft_retain_ul (text or sft rows), cycled alongside the forget rows."""
    retain_format: str = "auto"
    """Format of retain_files: auto, sft, text, or boundary (RULE's reject_with_fb_neighbor_target.json ->
    its neighbour and FB-neighbour questions with their answers), or rebo (the <normal> rows of a ReBO file)."""
    refusals: str = ""
    """Refusal templates (JSON list or one per line); empty = built-in list for the refusal mode."""
    refusal_mode: str = ""
    """target ({target} named in every refusal) or generic; empty = the loss's default (rt: generic)."""
    target: str = ""
    """Target name for rows without a subject."""
    max_length: int = 512
    """Tokens per sequence (RWKU cutoff_len)."""
    apply_chat_template: bool = True
    """Wrap prompts in the tokenizer's chat template (text rows never are)."""
    system_prompt: Optional[str] = None
    """Optional system message."""
    prompt_format: str = "plain"
    """plain, rwku (RWKU's FB / QA probe instruction around each question), or muse (RULE's MUSE RS prompts:
    "Completion: ..." / ICL shots + "Question: ..." by each row's `mode`; needs apply_chat_template=false).
    See verl/utils/prompt_formats.py."""
    icl_file: Optional[str] = None
    """ICL shots for prompt_format=muse qa rows (MUSE knowmem/train_qa_icl.json)."""
    response_prefix: str = ""
    """Text put before every response, e.g. "Answer: " to follow RWKU's answer cue with prompt_format=rwku."""
    train_on_prompt: bool = False
    """Also train on prompt tokens (RS: False, loss on the response only)."""
    packing: bool = False
    """Text rows: concatenate and cut into max_length blocks (LLaMA-Factory pt stage, RWKU GA/NPO)."""
    max_samples: int = -1
    """Use only the first N rows of each training file (-1 = all), as LLaMA-Factory's max_samples."""
    shuffle: bool = True
    """Shuffle rows every epoch (seeded by trainer.seed)."""

    def post_init(self) -> None:
        check_choice(self.format, FORMATS, "data.format")
        check_choice(self.retain_format, RETAIN_FORMATS, "data.retain_format")
        check_choice(self.refusal_mode, ("", "target", "generic"), "data.refusal_mode")
        check_prompt_format(self.prompt_format, self.apply_chat_template, "data")
        if self.icl_file:
            self.icl_file = _absolute(self.icl_file)
        if self.max_length < 2:
            raise ConfigError(f"data.max_length must be >= 2, got {self.max_length}")
        self.train_files = ",".join(_absolute(p) for p in self.train_files.split(",") if p.strip())
        self.retain_files = ",".join(_absolute(p) for p in self.retain_files.split(",") if p.strip())
        if self.refusals:
            self.refusals = _absolute(self.refusals)


def _absolute(path: str) -> str:
    path = path.strip()
    return os.path.abspath(path) if os.path.exists(path) else path


@dataclass
class LossConfig:
    name: str = "sft"
    """Unlearning loss (RS.losses): sft (RS), sft_retain, sft_retain_ul, rt, ga, gd, npo, npo_gd, simnpo, dpo, idkdpo."""
    params: dict = field(default_factory=dict)
    """Loss parameters, e.g. {beta: 0.2} for npo, {retain_weight: 1.0} for gd."""


@dataclass
class TrainerConfig(WorkerResources):
    """Loop and outputs; worker placement (nnodes, n_gpus_per_node, ...) from ``WorkerResources``."""

    project_name: str = "rule"
    """Project name for loggers."""
    experiment_name: str = "rs"
    """Run name; outputs go to {output_dir}/{experiment_name}."""
    output_dir: str = "log"
    """Root of run outputs."""
    logger: list[str] = field(default_factory=lambda: ["jsonl"])
    """Metric sinks: console, jsonl, tensorboard, wandb (a tqdm bar always shows the loss)."""
    epochs: int = 3
    """Passes over the training rows."""
    max_steps: int = -1
    """Stop after this many optimizer steps (-1 = all epochs)."""
    batch_size: int = 8
    """Rows per optimizer step over all workers (RS: 8)."""
    micro_batch_size_per_device: int = 8
    """Rows per forward/backward pass on one worker (gradient accumulation over them)."""
    micro_batch_size_for_logps: int = 16
    """Rows per forward pass when computing reference log-probs."""
    max_grad_norm: float = 1.0
    """Gradient-norm clip; non-finite steps are skipped."""
    save_every_epoch: bool = True
    """Export {run_dir}/epoch_{k} (plain HF folder, LoRA merged) after every epoch; else only the last."""
    progress: bool = True
    """Show a tqdm progress bar."""
    backend: str = "inprocess"
    """ray (n_workers FSDP workers) or inprocess (one worker in this process)."""
    num_threads: int = 0
    """torch threads per worker; 0 = node CPUs / workers."""
    seed: int = 42
    """Seed of the model init RNG and the data order."""
    run_dir: str = field(default="", init=False)
    """{output_dir}/{experiment_name} (derived)."""


@dataclass
class RSConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    """Model to unlearn ('smollm2', 'tiny:DIR', a folder or hub id); LoRA under model.lora (rank 0 = off)."""
    optim: OptimConfig = field(default_factory=OptimConfig)
    """AdamW and LR schedule (RS paper setting, see examples/rs_llama3.yaml: 4e-7, cosine, 20 warmup, no decay)."""
    fsdp: FSDPConfig = field(default_factory=FSDPConfig)
    """Sharding of the trained model (and of the frozen reference, when the loss needs one)."""
    data: DataConfig = field(default_factory=DataConfig)
    """Training rows."""
    loss: LossConfig = field(default_factory=LossConfig)
    """Unlearning loss."""
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    """Loop, outputs, workers."""
    strengths: dict = field(default_factory=dict)
    """Baseline YAMLs only: the runs RS.runner / data.demo make per profile ({common, sweep} overrides, see
    RS/baselines.py); checked here, not used by the training itself."""

    def world_size(self) -> int:
        return self.trainer.world_size()

    def post_init(self) -> None:
        from RS.baselines import check_strengths
        from RS.losses import get_loss

        try:
            check_strengths(self.strengths, "config")
        except ValueError as e:
            raise ConfigError(str(e)) from None
        t = self.trainer
        t.check_resources("trainer")
        for sink in t.logger:
            check_choice(sink, ["console", "jsonl", "tensorboard", "wandb"], "trainer.logger")
        try:
            get_loss(self.loss.name).bind(self.loss.params)
        except (KeyError, ValueError) as e:
            raise ConfigError(f"loss: {e.args[0]}") from None
        if not self.model.model_path:
            raise ConfigError("model.model_path is empty: give a model (smollm2, tiny:DIR, a folder or a hub id)")
        if not self.data.train_files.strip():
            raise ConfigError("data.train_files is empty: give the training rows (JSON/JSONL/parquet)")
        for key in ("epochs", "batch_size", "micro_batch_size_per_device", "micro_batch_size_for_logps"):
            if getattr(t, key) < 1:
                raise ConfigError(f"trainer.{key} must be >= 1, got {getattr(t, key)}")
        world = self.world_size()
        if t.batch_size % world:
            raise ConfigError(f"trainer.batch_size={t.batch_size} must divide by the {world} workers")
        if self.model.model_path and os.path.isdir(self.model.model_path):
            self.model.model_path = os.path.abspath(self.model.model_path)
        t.run_dir = os.path.abspath(os.path.join(t.output_dir, t.experiment_name))


def worker_config(cfg: RSConfig) -> Any:
    """The engine's ``WorkerConfig`` for an ``UnlearnWorker`` (role actor) built from the run config."""
    from verl.workers.config import WorkerConfig

    wc = WorkerConfig()
    wc.actor.model, wc.actor.optim, wc.actor.fsdp, wc.ref.fsdp = cfg.model, cfg.optim, cfg.fsdp, cfg.fsdp
    wc.actor.max_grad_norm = cfg.trainer.max_grad_norm
    wc.actor.micro_batch_size_per_device_for_update = cfg.trainer.micro_batch_size_per_device
    wc.actor.micro_batch_size_per_device_for_experience = cfg.trainer.micro_batch_size_for_logps
    wc.rollout.seed = wc.seed = cfg.trainer.seed
    wc.num_threads = cfg.trainer.num_threads
    wc.post_init()
    return wc
