"""Entry point: ``python3 -m verl.trainer.main config=examples/rebo_smollm2.yaml worker.rollout.n=8``.

``--help`` lists every config key with its default and documentation. ``--plan [--gpu-mem-gb 80]
[--model-config PATH]`` prints the memory needed per GPU and phase instead of training (no Ray, no weights;
see verl/utils/memory_plan.py).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from verl.trainer.config import PPOConfig
from verl.utils.config import ConfigError, describe_config, load_config
from verl.utils.memory_plan import Pass, TrainingSetup, model_terms
from verl.utils.memory_plan_report import run_plan, split_plan_flags

OFFLINE_DEFAULTS = {
    "TOKENIZERS_PARALLELISM": "false",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_AUTH_MODE": "disabled",
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
}


def build_worker_groups(config: PPOConfig) -> tuple[dict, Callable[[], None]]:
    """``({"actor_rollout_ref": wg, "critic": wg?}, shutdown)``, initialised; on Ray the roles share one
    process per worker (colocated), in-process one worker without Ray."""
    from verl.single_controller import ClassWithInitArgs
    from verl.single_controller.launch import launch_initialised_worker_groups
    from verl.workers.fsdp_worker import FSDPWorker

    trainer = config.trainer
    role = "actor_rollout_ref" if not config.algorithm.disable_kl else "actor_rollout"
    classes = {"actor_rollout_ref": ClassWithInitArgs(FSDPWorker, config.worker, role)}
    if config.algorithm.adv_estimator == "gae":
        classes["critic"] = ClassWithInitArgs(FSDPWorker, config.worker, "critic")
    return launch_initialised_worker_groups(classes, trainer)


def build_evaluator(config: PPOConfig):
    """The benchmark hook and best-checkpoint criterion from ``config.evaluator`` (or ``(None, None)``)."""
    ev = config.evaluator
    criterion = None
    if ev.best_metric:
        from verl.eval.hook import BestCheckpointCriterion

        criterion = BestCheckpointCriterion(ev.best_metric, ev.best_mode, ev.best_constraints)
    if ev.benchmark == "none":
        return None, criterion
    from verl.eval.hook import TrainingEvaluator

    options = {"max_probes": ev.max_probes} if ev.max_probes > 0 else {}
    options |= {"refusal_detector": ev.refusal_detector, "judge_model": ev.judge_model or None}
    return TrainingEvaluator(ev.benchmark, ev.data_dir, ev.targets, ev.suites, options), criterion


def build_reward_detector(config: PPOConfig):
    """The reward's refusal detector when it needs a model (``worker.reward.refusal_detector=judge``), else None
    (the reward manager builds ``rule`` / ``strict`` by name)."""
    reward = config.worker.reward
    if reward.refusal_detector != "judge":
        return None
    from verl.eval.judge import load_judge

    return load_judge(reward.judge_model)


def run(config: PPOConfig):
    from verl.trainer.ray_trainer import RayPPOTrainer
    from verl.utils.dataset import PromptDataset, PromptDatasetSpec
    from verl.workers import fsdp_utils
    from verl.workers.reward import RewardManager

    model_cfg = config.worker.actor.model
    tokenizer = fsdp_utils.load_tokenizer(model_cfg.tokenizer_path or model_cfg.model_path)
    spec = PromptDatasetSpec(
        prompt_key=config.data.prompt_key,
        answer_key=config.data.answer_key,
        max_prompt_length=config.data.max_prompt_length,
        truncation=config.data.truncation,
        apply_chat_template=config.data.apply_chat_template,
        system_prompt=config.data.system_prompt,
        prompt_format=config.data.prompt_format,
        icl_file=config.data.icl_file,
    )
    train = PromptDataset(config.data.train_files.split(","), tokenizer, spec) if config.data.train_files else None
    val = PromptDataset(config.data.val_files.split(","), tokenizer, spec) if config.data.val_files else None
    reward_fn = RewardManager(config.worker.reward, tokenizer, refusal_detector=build_reward_detector(config))
    if train is not None:
        steps_per_epoch = len(train) // config.data.rollout_batch_size
        total = steps_per_epoch * config.trainer.total_epochs
        if config.trainer.max_steps > 0:
            total = min(total, config.trainer.max_steps)
        updates = config.data.rollout_batch_size // config.worker.actor.global_batch_size
        config.worker.actor.optim.training_steps = total * updates * config.worker.actor.ppo_epochs
        config.worker.critic.optim.training_steps = total * updates * config.worker.critic.ppo_epochs
    if config.worker.num_threads <= 0:
        per_node = config.trainer.n_gpus_per_node or config.trainer.n_workers
        config.worker.num_threads = max(1, round(((os.cpu_count() or 2) - 0.5) / per_node))
    evaluator, criterion = build_evaluator(config)
    groups, shutdown = build_worker_groups(config)
    try:
        trainer = RayPPOTrainer(config, tokenizer, train, val, reward_fn, groups, evaluator, criterion)
        return trainer.fit()
    finally:
        shutdown()


def plan_setup(config: PPOConfig, gpu_bytes: float) -> TrainingSetup:
    """What ``config`` holds on each GPU, for the ``--plan`` memory estimate (no Ray, no weights)."""
    worker, data = config.worker, config.data
    actor, rollout = worker.actor, worker.rollout
    seq = data.max_prompt_length + data.max_response_length
    positions = data.max_response_length  # logits_to_keep in dp_actor.response_logits

    def micro(rows: int) -> Pass:
        if actor.use_dynamic_bsz:  # a token budget: rows of the longest length that fit it
            rows = max(1, actor.max_token_len_per_device // seq)
        return Pass(rows, seq, positions)

    return TrainingSetup(
        n_gpus=config.world_size(),
        gpu_bytes=int(gpu_bytes),
        **model_terms(actor.model, actor.fsdp),
        update=micro(actor.micro_batch_size_per_device_for_update),
        experience=micro(actor.micro_batch_size_per_device_for_experience),
        offload_params=actor.offload.offload_params,
        offload_optimizer=actor.offload.offload_optimizer,
        reference=not config.algorithm.disable_kl,
        rollout=rollout.name,
        hf_weights=rollout.hf_weights,
        rollout_rows=min(rollout.micro_batch_size, data.rollout_batch_size * rollout.n // config.world_size()),
        prompt_len=data.max_prompt_length,
        response_len=data.max_response_length,
        gpu_memory_utilization=rollout.gpu_memory_utilization,
        free_cache_engine=rollout.free_cache_engine,
        tensor_parallel=rollout.tensor_parallel_size,
        notes=("the critic (adv_estimator=gae) is not counted",) if config.algorithm.adv_estimator == "gae" else (),
        keys={
            "lora": "worker.actor.model.lora.rank",
            "offload": "worker.actor.offload.offload_params/offload_optimizer",
            "cpu_offload": "worker.actor.fsdp.cpu_offload",
            "checkpointing": "worker.actor.model.enable_gradient_checkpointing",
            "micro_batch": "worker.actor.micro_batch_size_per_device_for_update/_for_experience",
            "gpu_util": "worker.rollout.gpu_memory_utilization",
            "gpus": "trainer.n_gpus_per_node x trainer.nnodes",
        },
    )


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        print("\n".join(describe_config(PPOConfig)))
        return
    argv, plan = split_plan_flags(argv)
    for key, value in OFFLINE_DEFAULTS.items():
        os.environ.setdefault(key, value)
    try:
        config = load_config(PPOConfig, argv)
    except ConfigError as e:
        sys.exit(f"config error: {e}")
    if plan is not None:
        run_plan(lambda gpu_bytes: plan_setup(config, gpu_bytes), config.worker.actor.model.model_path, plan)
    try:
        run(config)
    except Exception as error:
        from verl.trainer.ray_trainer import worker_death

        if worker_death(error) is None:
            raise
        sys.exit(f"error: {error}")  # one line on stderr, exit status 1


if __name__ == "__main__":
    main()
