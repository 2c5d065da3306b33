"""Rejection Steering and the offline unlearning baselines: ``python3 -m RS.train config=FILE key=value ...``

Examples::

    python3 -m RS.train config=examples/rs_smollm2.yaml trainer.epochs=3
    python3 -m RS.train config=examples/baselines/npo.yaml data.train_files=../shared/data/rwku/Target/1_Stephen_King/positive.json

Outputs go to ``{trainer.output_dir}/{trainer.experiment_name}``: ``epoch_{k}/`` (plain HF folders),
``metrics.jsonl``, ``rs_config.json``, ``summary.json``. ``--help`` lists every key with its default.
``--plan [--gpu-mem-gb 80] [--model-config PATH]`` prints the memory needed per GPU and phase instead of
training (no Ray, no weights; see verl/utils/memory_plan.py).
"""

from __future__ import annotations

import os
import sys

from RS.config import RSConfig
from verl.utils.config import ConfigError, describe_config, load_config
from verl.utils.memory_plan import Pass, TrainingSetup, model_terms
from verl.utils.memory_plan_report import run_plan, split_plan_flags

OFFLINE_DEFAULTS = {
    "TOKENIZERS_PARALLELISM": "false",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_AUTH_MODE": "disabled",
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
}


def run(config: RSConfig) -> dict:
    from RS.trainer import UnlearnTrainer

    trainer = UnlearnTrainer(config)
    try:
        return trainer.fit()
    finally:
        trainer.close()


def plan_setup(config: RSConfig, gpu_bytes: float) -> TrainingSetup:
    """What ``config`` holds on each GPU, for the ``--plan`` memory estimate (no Ray, no weights)."""
    from RS.losses import get_loss

    loss, t, seq = get_loss(config.loss.name), config.trainer, config.data.max_length
    return TrainingSetup(
        n_gpus=config.world_size(),
        gpu_bytes=int(gpu_bytes),
        **model_terms(config.model, config.fsdp),
        update=Pass(t.micro_batch_size_per_device, seq, seq, streams=len(loss.streams)),
        experience=Pass(t.micro_batch_size_for_logps, seq, seq) if loss.needs_ref else None,
        reference=loss.needs_ref,
        reference_in_update=False,  # UnlearnTrainer releases it after the reference log-prob pass
        kept_logit_bytes=2 if config.fsdp.mixed_precision else 4,
        keys={
            "lora": "model.lora.rank",
            "cpu_offload": "fsdp.cpu_offload",
            "checkpointing": "model.enable_gradient_checkpointing",
            "micro_batch": "trainer.micro_batch_size_per_device/micro_batch_size_for_logps",
            "gpus": "trainer.n_gpus_per_node x trainer.nnodes",
        },
    )


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in argv):
        from RS.losses import UNLEARN_LOSSES

        print(__doc__)
        print(f"losses: {', '.join(UNLEARN_LOSSES.names())}\n")
        print("\n".join(describe_config(RSConfig)))
        return
    argv, plan = split_plan_flags(argv)
    for key, value in OFFLINE_DEFAULTS.items():
        os.environ.setdefault(key, value)
    try:
        config = load_config(RSConfig, argv)
    except ConfigError as e:
        sys.exit(f"config error: {e}")
    if plan is not None:
        run_plan(lambda gpu_bytes: plan_setup(config, gpu_bytes), config.model.model_path, plan)
    try:
        run(config)
    except (ValueError, FileNotFoundError) as e:
        sys.exit(f"error: {e}")
    except Exception as error:
        from verl.trainer.ray_trainer import worker_death

        if worker_death(error) is None:
            raise
        sys.exit(f"error: {error}")  # a Ray worker died: one line naming it, exit status 1


if __name__ == "__main__":
    main()
