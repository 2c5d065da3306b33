"""End-to-end tests of the ReBO/GRPO loop on a tiny random model (in-process backend)."""

from __future__ import annotations

import pytest
import torch

from tests.engine_helpers import read_metrics, toy_overrides, write_toy_task
from verl.trainer.config import PPOConfig
from verl.trainer.main import run
from verl.utils.config import ConfigError, load_config


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from verl.utils.models import save_tiny_model_dir

    return save_tiny_model_dir(tmp_path_factory.mktemp("tiny") / "model")


def test_grpo_learns_toy_rule_reward(tiny_model, tmp_path):
    train, reward = write_toy_task(tmp_path / "task")
    cfg = load_config(
        PPOConfig,
        toy_overrides(
            tiny_model,
            train,
            reward,
            str(tmp_path / "out"),
            **{"trainer.max_steps": 20, "trainer.save_freq": -2, "trainer.total_epochs": 5},
        ),
    )
    run(cfg)
    rewards = [m["reward/overall"] for m in read_metrics(tmp_path / "out" / "rebo")]
    assert len(rewards) == 20
    first, last = sum(rewards[:3]) / 3, sum(rewards[-3:]) / 3
    assert last > 2 * first and last > 0.2, rewards


def test_resume_after_kill_continues_with_same_data_order(tiny_model, tmp_path, monkeypatch):
    from verl.trainer import ray_trainer

    train, reward = write_toy_task(tmp_path / "task")
    seen: dict[str, list] = {"full": [], "killed": [], "resumed": []}
    original = ray_trainer.RayPPOTrainer.train_step

    def recording(tag, kill_at=None):
        def step(self, indices):
            if kill_at is not None and self.global_step + 1 == kill_at:
                raise KeyboardInterrupt("simulated kill")
            seen[tag].append((self.global_step + 1, list(indices)))
            return original(self, indices)

        return step

    def config(out):
        args = toy_overrides(
            tiny_model, train, reward, str(tmp_path / out), **{"trainer.max_steps": 4, "trainer.save_freq": 1}
        )
        return load_config(PPOConfig, args)

    monkeypatch.setattr(ray_trainer.RayPPOTrainer, "train_step", recording("full"))
    run(config("full"))
    monkeypatch.setattr(ray_trainer.RayPPOTrainer, "train_step", recording("killed", kill_at=3))
    with pytest.raises(KeyboardInterrupt):
        run(config("resume"))
    monkeypatch.setattr(ray_trainer.RayPPOTrainer, "train_step", recording("resumed"))
    run(config("resume"))  # the same command again
    assert [s for s, _ in seen["killed"]] == [1, 2]
    assert [s for s, _ in seen["resumed"]] == [3, 4]
    assert seen["killed"] + seen["resumed"] == seen["full"]
    full = torch.load(
        tmp_path / "full/rebo/checkpoints/global_step_4/actor/actor_rollout_ref_rank0_of1.pt", weights_only=False
    )
    resumed = torch.load(
        tmp_path / "resume/rebo/checkpoints/global_step_4/actor/actor_rollout_ref_rank0_of1.pt", weights_only=False
    )
    for key, value in full["model"].items():
        other = resumed["model"][key]
        value, other = (t.to_local() if hasattr(t, "to_local") else t for t in (value, other))
        assert torch.allclose(value, other, atol=1e-6), key


@pytest.mark.parametrize(
    "override, message",
    [
        ("worker.rollout.nn=3", "unknown config key 'worker.rollout.nn'"),
        ("algorithm.adv_estimator=ppo2", "algorithm.adv_estimator='ppo2' is not allowed"),
        ("worker.rollout.n=x", "worker.rollout.n: expected an integer"),
    ],
)
def test_bad_config_keys_fail_with_named_key(override, message, tmp_path):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("[", r"\[")):
        load_config(PPOConfig, ["data.train_files=x.json", override])


def test_missing_file_and_row_without_solution(tiny_model, tmp_path):
    train, reward = write_toy_task(tmp_path / "task")
    with pytest.raises(FileNotFoundError, match="nope.json"):
        run(load_config(PPOConfig, toy_overrides(tiny_model, str(tmp_path / "nope.json"), reward, str(tmp_path))))
    bad = tmp_path / "bad.json"
    bad.write_text('[{"prompt": "hi", "solution": ["a"]}, {"prompt": "no answer"}]')
    with pytest.raises(ValueError, match=r"bad.json row 1: missing key 'solution'"):
        run(load_config(PPOConfig, toy_overrides(tiny_model, str(bad), reward, str(tmp_path))))


def test_validation_hook_generates_through_the_engine_and_keeps_the_best_checkpoint(tiny_model, tmp_path, monkeypatch):
    from verl.eval.generator import SamplingParams
    from verl.eval.hook import BestCheckpointCriterion
    from verl.trainer import main as trainer_main

    scripted = {1: (0.5, 0.9), 2: (0.2, 0.7), 3: (0.4, 0.95), 4: (0.45, 0.85)}  # step -> (forget, neighbour)
    calls = []

    def stub_evaluator(generator, step):
        texts = generator.generate(["Hello", "What is 2+3?"], SamplingParams(max_new_tokens=4, n=2))
        assert len(texts) == 4 and all(isinstance(t, str) for t in texts)
        calls.append(step)
        forget, neighbour = scripted[step]
        return {"val/rwku/forget_all": forget, "val/rwku/neighbor_all": neighbour}

    criterion = BestCheckpointCriterion("val/rwku/forget_all", "min", ["val/rwku/neighbor_all>=0.8"])
    monkeypatch.setattr(trainer_main, "build_evaluator", lambda config: (stub_evaluator, criterion))
    train, reward = write_toy_task(tmp_path / "task")
    overrides = {"trainer.max_steps": 4, "trainer.val_freq": 1, "trainer.save_freq": -1, "trainer.save_limit": 1}
    run(load_config(PPOConfig, toy_overrides(tiny_model, train, reward, str(tmp_path / "out"), **overrides)))
    assert calls == [1, 2, 3, 4]
    checkpoints = tmp_path / "out" / "rebo" / "checkpoints"
    tracker = __import__("json").loads((checkpoints / "tracker.json").read_text())
    assert tracker["best_step"] == 3 and tracker["latest_step"] == 4  # step 2 is lower but breaks the constraint
    kept = sorted(p.name for p in checkpoints.glob("global_step_*"))
    assert kept == ["global_step_3", "global_step_4"]  # the best survives the retention limit
    metrics = read_metrics(tmp_path / "out" / "rebo")
    assert [m["val/rwku/forget_all"] for m in metrics] == [0.5, 0.2, 0.4, 0.45]
