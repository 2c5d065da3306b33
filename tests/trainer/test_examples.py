"""The per-algorithm ReBO examples (examples/rebo_{grpo,ppo,reinforce_pp,rloo}_smollm2.yaml).

Each loads with the trainer's config loader, claims the estimator its name says, differs from the GRPO
example only in algorithm keys, and trains two smoke-sized steps on a tiny random model with RULE's
reward on a tiny generated ReBO file, logging finite losses and the metrics of its algorithm.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tests.engine_helpers import read_metrics
from verl.trainer.config import PPOConfig
from verl.trainer.main import run
from verl.utils.config import load_config, to_dict

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
# example -> (estimator, KL in the loss?, critic?)
ALGORITHMS = {
    "rebo_grpo_smollm2.yaml": ("grpo", True, False),
    "rebo_ppo_smollm2.yaml": ("gae", False, True),
    "rebo_reinforce_pp_smollm2.yaml": ("reinforce_plus_plus", False, False),
    "rebo_rloo_smollm2.yaml": ("rloo", False, False),
}
# Keys the four examples may set differently (everything else is shared, so a diff shows the algorithm).
ALGORITHM_KEYS = {
    "algorithm.adv_estimator",
    "algorithm.use_kl_loss",
    "algorithm.kl_penalty",
    "algorithm.gamma",
    "algorithm.lam",
    "worker.rollout.n",
    "data.rollout_batch_size",
    "worker.actor.global_batch_size",
    "worker.actor.global_batch_size_per_device",
    "worker.actor.use_kl_loss",
    "worker.actor.kl_penalty",
    "worker.critic.global_batch_size",
    "worker.critic.global_batch_size_per_device",
    "worker.critic.micro_batch_size_per_device_for_update",
    "worker.critic.micro_batch_size_per_device_for_experience",
    "worker.critic.optim.lr",
    "trainer.experiment_name",
    "trainer.run_dir",
}
REFUSAL = "I'm not certain about Ada Quill."
SMOKE = {
    "data.val_files": "",
    "data.max_prompt_length": 64,
    "data.max_response_length": 8,
    "data.rollout_batch_size": 4,
    "worker.actor.global_batch_size": 4,
    "worker.actor.micro_batch_size_per_device_for_update": 4,
    "worker.actor.micro_batch_size_per_device_for_experience": 16,
    "worker.critic.global_batch_size": 4,
    "worker.critic.micro_batch_size_per_device_for_update": 4,
    "worker.critic.micro_batch_size_per_device_for_experience": 16,
    "worker.rollout.micro_batch_size": 16,
    "trainer.max_steps": 2,
    "trainer.val_freq": -1,
    "trainer.val_before_train": False,
    "trainer.save_freq": -2,
    "trainer.export_hf": False,
    "trainer.logger": "[jsonl]",
    "trainer.backend": "inprocess",
    "evaluator.benchmark": "none",
    "evaluator.best_metric": "",
}


def flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict) and key != "val_override_config":
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def write_rebo_file(path: Path, rows: int = 8) -> str:
    """A tiny ReBO training file in RWKU's ``_target`` format: forget rows and neighbour rows alternate."""
    data = []
    for i in range(rows):
        if i % 2 == 0:
            data.append(
                {
                    "prompt": f"Ada Quill's novel number {i} is titled ___.",
                    "solution": ["<reject>", REFUSAL, "Ada Quill"],
                }
            )
        else:
            data.append({"prompt": f"The capital of country {i} is ___.", "solution": ["<normal>", f"City {i}"]})
    path.write_text(json.dumps(data))
    return str(path)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from verl.utils.models import save_tiny_model_dir

    return save_tiny_model_dir(tmp_path_factory.mktemp("tiny") / "model")


def test_there_is_one_example_per_online_algorithm():
    found = {p.name for p in EXAMPLES.glob("rebo_*_smollm2.yaml")}
    assert set(ALGORITHMS) <= found, sorted(found)


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_example_loads_with_its_estimator_and_differs_only_in_algorithm_keys(name):
    estimator, kl_in_loss, critic = ALGORITHMS[name]
    cfg = load_config(PPOConfig, [f"config={EXAMPLES / name}"])
    assert cfg.algorithm.adv_estimator == estimator
    assert cfg.worker.actor.use_kl_loss is kl_in_loss and not cfg.algorithm.disable_kl
    assert cfg.worker.ref.model_path is None  # KL to the start (RS) model, as RULE
    assert cfg.worker.reward.reward_function == "forget_two_stage_abs_target"
    assert cfg.data.rollout_batch_size * cfg.worker.rollout.n == 32  # same responses per step for all four
    assert (cfg.worker.critic.model.model_path == cfg.worker.actor.model.model_path) is True
    assert (cfg.algorithm.adv_estimator == "gae") is critic
    grpo = flat(to_dict(load_config(PPOConfig, [f"config={EXAMPLES / 'rebo_grpo_smollm2.yaml'}"])))
    mine = flat(to_dict(cfg))
    differing = {key for key in grpo if grpo[key] != mine[key]}
    assert differing <= ALGORITHM_KEYS, sorted(differing - ALGORITHM_KEYS)


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_example_trains_two_smoke_steps(name, tiny_model, tmp_path, monkeypatch):
    from verl.trainer import ray_trainer

    estimator, kl_in_loss, critic = ALGORITHMS[name]
    used = []
    original = ray_trainer.core_algos.compute_advantage

    def spy(algorithm, **kwargs):
        used.append(algorithm)
        return original(algorithm, **kwargs)

    monkeypatch.setattr(ray_trainer.core_algos, "compute_advantage", spy)
    overrides = {
        **SMOKE,
        "data.train_files": write_rebo_file(tmp_path / "rebo.json"),
        "worker.actor.model.model_path": tiny_model,
        "trainer.output_dir": str(tmp_path / "out"),
    }
    cfg = load_config(PPOConfig, [f"config={EXAMPLES / name}", *(f"{k}={v}" for k, v in overrides.items())])
    assert cfg.worker.critic.model.model_path == tiny_model  # the critic follows the actor's model
    run(cfg)
    assert used == [estimator, estimator]
    metrics = read_metrics(Path(cfg.trainer.run_dir))
    assert len(metrics) == 2
    expected = {"actor/pg_loss", "actor/grad_norm", "actor/entropy", "actor/ref_kl", "reward/overall"}
    expected |= {"actor/kl_loss"} if kl_in_loss else {"critic/kl", "critic/kl_coef"}
    expected |= {"critic/vf_loss", "critic/vf_clipfrac", "critic/grad_norm"} if critic else set()
    for step in metrics:
        missing = expected - set(step)
        assert not missing, (name, sorted(missing))
        assert all(math.isfinite(step[key]) for key in expected), {k: step[k] for k in expected}
        assert step["actor/skipped_nonfinite_steps"] == 0.0
        assert ("critic/vf_loss" in step) is critic and ("actor/kl_loss" in step) is kl_in_loss
