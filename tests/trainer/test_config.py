"""Validation of the run config at load time: each bad key fails with a one-line error that names it."""

from __future__ import annotations

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
