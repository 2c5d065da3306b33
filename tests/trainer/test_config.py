"""Validation of the run config at load time: each bad key fails with a one-line error that names it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from verl.trainer.config import PPOConfig
from verl.utils.config import ConfigError, load_config


def test_full_kl_penalty_is_rejected_at_load_naming_the_key_and_the_valid_values():
    """'full' needs (bs, L, V) log-distributions; the engine keeps (bs, L) per-token log-probs only."""
    with pytest.raises(ConfigError) as error:
        load_config(PPOConfig, ["data.train_files=x.json", "algorithm.kl_penalty=full"])
    message = str(error.value)
    assert "\n" not in message
    assert "algorithm.kl_penalty='full'" in message and "low_var_kl" in message and "k1" in message


@pytest.mark.parametrize("name", ["kl", "k1", "abs", "mse", "k2", "low_var_kl", "k3"])
def test_per_token_kl_penalties_are_accepted(name):
    cfg = load_config(PPOConfig, ["data.train_files=x.json", f"algorithm.kl_penalty={name}"])
    assert cfg.worker.actor.kl_penalty == name


def test_trainer_seed_feeds_data_order_sampling_and_worker_seeds_unless_set():
    cfg = load_config(PPOConfig, ["data.train_files=x.json", "trainer.seed=7"])
    assert (cfg.data.seed, cfg.worker.rollout.seed, cfg.worker.seed) == (7, 7, 7)
    cfg = load_config(PPOConfig, ["data.train_files=x.json", "trainer.seed=7", "data.seed=3", "worker.rollout.seed=5"])
    assert (cfg.data.seed, cfg.worker.rollout.seed, cfg.worker.seed) == (3, 5, 7)


def test_reference_optimizer_offload_is_rejected():
    with pytest.raises(
        ConfigError, match=r"worker.ref.offload.offload_optimizer=true: the reference has no optimizer"
    ):
        load_config(PPOConfig, ["data.train_files=x.json", "worker.ref.offload.offload_optimizer=true"])


def test_refusal_detector_keys_of_reward_and_evaluator(shared_data):
    from verl.trainer.main import build_evaluator, build_reward_detector

    base = ["data.train_files=x.json"]
    cfg = load_config(PPOConfig, base)
    assert (cfg.worker.reward.refusal_detector, cfg.evaluator.refusal_detector) == ("rule", "strict")
    assert build_reward_detector(cfg) is None  # rule / strict: built by name in the reward manager
    with pytest.raises(ConfigError, match=r"worker.reward.refusal_detector='regex' is not allowed"):
        load_config(PPOConfig, [*base, "worker.reward.refusal_detector=regex"])
    with pytest.raises(ConfigError, match=r"evaluator.refusal_detector='regex' is not allowed"):
        load_config(PPOConfig, [*base, "evaluator.refusal_detector=regex"])
    with pytest.raises(ConfigError, match="evaluator.judge_model is needed"):
        load_config(PPOConfig, [*base, "evaluator.refusal_detector=judge"])
    cfg = load_config(PPOConfig, [*base, "evaluator.benchmark=rwku", f"evaluator.data_dir={shared_data / 'rwku'}",
                                  "evaluator.targets=1", "evaluator.refusal_detector=rule"])  # fmt: skip
    evaluator, _ = build_evaluator(cfg)
    assert evaluator.options.refusal_detector == "rule"


REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("example", ["rebo_from_rs_smollm2.yaml", "rebo_llama3.yaml"])
def test_synthesis_section_of_the_rebo_examples_loads(example):
    cfg = load_config(PPOConfig, [f"config={REPO / 'examples' / example}", "synthesis.limit=4"])
    synthesis = cfg.synthesis
    assert synthesis.generator is None and synthesis.plugin == "" and synthesis.priming == "fields"
    assert synthesis.limit == 4 and synthesis.boundary_ratio is None and synthesis.max_new_tokens >= 1
    assert load_config(PPOConfig, ["data.train_files=x.json"]).synthesis.priming == "fields"  # the default


@pytest.mark.parametrize(
    "override,message",
    [
        ("synthesis.genrator=smollm2", "unknown config key 'synthesis.genrator'"),
        ("synthesis.priming=label", "synthesis.priming='label' is not allowed; choose one of: none, first, fields"),
        ("synthesis.limit=0", "synthesis.limit must be >= 1 or null, got 0"),
        ("synthesis.boundary_ratio=-1", "synthesis.boundary_ratio must be >= 0 or null"),
        ("synthesis.max_new_tokens=0", "synthesis.max_new_tokens must be >= 1"),
        ("synthesis.temperature=0", "synthesis.temperature must be > 0"),
        ("synthesis.plugin=tests.stub", "synthesis.plugin='tests.stub' must be 'module:function'"),
        ("synthesis.do_sample=maybe", "synthesis.do_sample: expected true/false"),
    ],
)
def test_bad_synthesis_keys_fail_naming_the_key(override, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(PPOConfig, ["data.train_files=x.json", override])
