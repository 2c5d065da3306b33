"""TRL's ``GRPOTrainer`` on what one engine config describes, timed per phase (the bench's other side).

Runs inside the bench's child process: the same model, prompts in the engine's order, lr, clip ratios, KL
coefficient, sampling and batch as the engine; each phase is timed by wrapping TRL's own methods.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

GB = 1e9
TRL_REPORTED = (
    "per_device_train_batch_size gradient_accumulation_steps generation_batch_size steps_per_generation "
    "num_generations max_completion_length beta loss_type learning_rate bf16 gradient_checkpointing use_vllm"
).split()


def train_and_time(args: argparse.Namespace, overrides: list[str]) -> None:
    """Train ``args.steps`` GRPO steps with TRL on what the engine config (``args.config`` + ``overrides``)
    describes; write per-step phase timings, token counts and TRL's settings as JSON to ``args.result``."""
    import resource

    import torch
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from verl.trainer.config import PPOConfig
    from verl.utils.config import load_config
    from verl.utils.dataset import PromptDataset, PromptDatasetSpec, PromptSampler, read_rows
    from verl.utils.flops import flop_shape, forward_flops
    from verl.utils.memory_plan_report import find_model_config
    from verl.workers.fsdp_utils import load_tokenizer, resolve_model_path
    from verl.workers.reward.functions import REWARD_FUNCTIONS

    torch.set_num_threads(args.threads)
    run_dir = Path(args.result).parent
    cfg = load_config(PPOConfig, [f"config={args.config}", *overrides])
    data, actor, rollout = cfg.data, cfg.worker.actor, cfg.worker.rollout
    model_path = resolve_model_path(actor.model.model_path)
    tokenizer = load_tokenizer(actor.model.model_path)
    rows = read_rows(data.train_files)
    sampler = PromptSampler(len(rows), data.rollout_batch_size, data.shuffle, data.seed)  # the engine's order
    order = [i for _ in range(args.steps) for i in sampler.next_batch()]
    dataset = Dataset.from_list(
        [
            {"prompt": [{"role": "user", "content": rows[i][data.prompt_key]}], "solution": rows[i][data.answer_key]}
            for i in order
        ]
    )
    spec = PromptDatasetSpec(
        prompt_key=data.prompt_key,
        answer_key=data.answer_key,
        max_prompt_length=data.max_prompt_length,
        truncation=data.truncation,
        apply_chat_template=data.apply_chat_template,
        system_prompt=data.system_prompt,
    )
    engine_ids = PromptDataset(data.train_files, tokenizer, spec).prompt_ids
    expected_first_batch = {tuple(engine_ids[i]) for i in order[: data.rollout_batch_size]}

    score = REWARD_FUNCTIONS.get(cfg.worker.reward.reward_function)
    kwargs = dict(cfg.worker.reward.reward_function_kwargs or {})

    def rule_reward(completions, solution, **_):
        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        return [score(text, truth, **kwargs)["overall"] for text, truth in zip(texts, solution)]

    sequences = data.rollout_batch_size * rollout.n
    micro = actor.micro_batch_size_per_device_for_update
    micro = micro if sequences % micro == 0 else sequences
    config = GRPOConfig(
        output_dir=str(run_dir / "trl"),
        max_steps=args.steps,
        per_device_train_batch_size=micro,
        gradient_accumulation_steps=sequences // micro,  # one optimizer step = one generation batch
        num_generations=rollout.n,
        max_completion_length=data.max_response_length,
        temperature=rollout.temperature,
        top_p=rollout.top_p,
        top_k=max(rollout.top_k, 0),
        learning_rate=actor.optim.lr,
        weight_decay=actor.optim.weight_decay,
        adam_beta1=actor.optim.betas[0],
        adam_beta2=actor.optim.betas[1],
        lr_scheduler_type="constant",
        max_grad_norm=actor.max_grad_norm,
        beta=0.0 if cfg.algorithm.disable_kl else cfg.algorithm.kl_coef,  # TRL's KL is k3 = low_var_kl, a loss
        epsilon=actor.clip_ratio_low,
        epsilon_high=actor.clip_ratio_high,
        loss_type="dapo",  # token mean over the whole step's tokens, as the engine's token-mean
        bf16=False,
        fp16=False,
        gradient_checkpointing=actor.model.enable_gradient_checkpointing,
        use_vllm=False,
        report_to="none",
        save_strategy="no",
        logging_steps=1,
        shuffle_dataset=False,  # rows are already in the engine's order
        seed=cfg.trainer.seed,
        use_cpu=True,
        model_init_kwargs={"dtype": "float32", "attn_implementation": actor.model.attn_implementation},
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    phase_times: dict[str, float] = {}

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.steps: list[dict[str, float]] = []
            self.logs: list[dict] = []

        def on_step_begin(self, *_, **__):
            phase_times.clear()
            self.start, self.begin = time.perf_counter(), time.time()

        def on_step_end(self, *_, **__):
            self.steps.append({**phase_times, "step": time.perf_counter() - self.start})
            self.steps[-1].update(begin=self.begin, end=time.time())

        def on_log(self, *_, logs=None, **__):
            self.logs.append(dict(logs or {}))

    timer = StepTimer()
    trainer = GRPOTrainer(
        model=model_path,
        reward_funcs=rule_reward,
        args=config,
        train_dataset=dataset,
        processing_class=tokenizer,
        callbacks=[timer],
    )

    def timed(name, fn):
        def wrapper(*a, **kw):
            start = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                phase_times[name] = phase_times.get(name, 0.0) + time.perf_counter() - start

        return wrapper

    seen_prompts: list[set] = []
    tokenize = trainer._tokenize_prompts

    def tokenize_and_record(prompts):
        out = tokenize(prompts)
        seen_prompts.append({tuple(ids) for ids in out[0]})
        return out

    logps = trainer._get_per_token_logps_and_entropies

    def timed_logps(model, *a, **kw):
        if torch.is_grad_enabled():  # the policy forward of the update itself
            return logps(model, *a, **kw)
        return timed("ref" if model is trainer.ref_model else "old_log_prob", logps)(model, *a, **kw)

    generated: list[tuple[list[int], int]] = []  # per _generate call: (sequence lengths, response tokens)
    generate = trainer._generate

    def generate_and_count(prompts):
        out = generate(prompts)
        prompt_ids, completion_ids = out[0], out[1]
        lens = [len(p) + len(c) for p, c in zip(prompt_ids, completion_ids)]
        generated.append((lens, sum(len(c) for c in completion_ids)))
        return out

    trainer._tokenize_prompts = tokenize_and_record
    trainer._generate = timed("gen", generate_and_count)
    trainer._calculate_rewards = timed("reward", trainer._calculate_rewards)
    trainer._generate_and_score_completions = timed("gen_and_score", trainer._generate_and_score_completions)
    trainer._get_per_token_logps_and_entropies = timed_logps
    trainer.train()

    shape = flop_shape(find_model_config(actor.model.model_path))
    steps = []
    for index, raw in enumerate(timer.steps):
        phases = {k: raw.get(k, 0.0) for k in ("gen", "reward", "old_log_prob", "ref")}
        scored = raw.get("gen_and_score", 0.0)
        phases["adv"] = scored - sum(phases.values())  # decoding, advantages, bookkeeping
        if index < len(generated):  # one generation batch per optimizer step (gradient_accumulation_steps)
            phases["forward_flops"] = forward_flops(shape, *generated[index])
        phases["update_actor"] = raw["step"] - scored  # micro-batch forward/backward, clip, AdamW
        phases["other"] = 0.0
        phases.update(step=raw["step"], begin=raw["begin"], end=raw["end"])
        steps.append(phases)
    result = {
        "steps": steps,
        "response_length": [log["completions/mean_length"] for log in timer.logs if "completions/mean_length" in log],
        "prompt_ids_match_engine": bool(seen_prompts) and seen_prompts[0] == expected_first_batch,
        "self_ru_maxrss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GB,
        "model_path": model_path,
        "trl_settings": {k: getattr(config, k) for k in TRL_REPORTED},
        "trl_ref_model_loaded": trainer.ref_model is not None,
    }
    from verl.utils.fileio import write_text_atomic

    write_text_atomic(args.result, json.dumps(result, indent=2))
