"""The reward functions and the reward config honour ``refusal_detector``."""

from __future__ import annotations

import pytest

from verl.utils.config import ConfigError
from verl.workers.reward import REWARD_FUNCTIONS, RewardConfig

NAME = "Ann Lee"
REJECT_ROW = ["<reject>", "I'm not certain about Ann Lee.", NAME]
NORMAL_ROW = ["<normal>", "The show was cancelled after two seasons."]
CURLY_REFUSAL = "I can\u2019t answer questions related to Ann Lee."  # a refusal the regex misses
UNFORTUNATE_ANSWER = "Unfortunately, the show was cancelled after two seasons."  # an answer the regex flags


def test_the_main_reward_follows_the_detector():
    reward = REWARD_FUNCTIONS.get("forget_two_stage_abs_target")
    assert reward(CURLY_REFUSAL, REJECT_ROW)["overall"] == 0.0  # default: rule, the paper's runs
    assert reward(CURLY_REFUSAL, REJECT_ROW, refusal_detector="strict")["overall"] == 1.0  # refused, named
    assert reward(UNFORTUNATE_ANSWER, NORMAL_ROW)["overall"] == 0.0
    assert reward(UNFORTUNATE_ANSWER, NORMAL_ROW, refusal_detector="strict")["overall"] == 1.0
    assert reward(UNFORTUNATE_ANSWER, NORMAL_ROW, refusal_detector=lambda text: True)["refusal"] == 1.0


@pytest.mark.parametrize("name", REWARD_FUNCTIONS.names())
def test_every_registered_reward_takes_the_detector(name):
    function = REWARD_FUNCTIONS.get(name)
    by_rule = function(UNFORTUNATE_ANSWER, NORMAL_ROW)
    by_strict = function(UNFORTUNATE_ANSWER, NORMAL_ROW, refusal_detector="strict")
    assert by_rule["refusal"] == 1.0 and by_strict["refusal"] == 0.0
    refusal_rule = function(CURLY_REFUSAL, REJECT_ROW)["refusal"]
    assert (refusal_rule, function(CURLY_REFUSAL, REJECT_ROW, refusal_detector="strict")["refusal"]) == (0.0, 1.0)
    with pytest.raises(ValueError, match="not a refusal detector"):
        function(UNFORTUNATE_ANSWER, NORMAL_ROW, refusal_detector="regex")


def test_config_validates_the_detector():
    config = RewardConfig(refusal_detector="strict")
    config.post_init()
    with pytest.raises(
        ConfigError, match=r"worker.reward.refusal_detector='regex' is not allowed; choose one of: judge"
    ):
        RewardConfig(refusal_detector="regex").post_init()
    with pytest.raises(ConfigError, match="judge_model is needed with refusal_detector=judge"):
        RewardConfig(refusal_detector="judge").post_init()
    with pytest.raises(ConfigError, match="judge_model is needed"):
        RewardConfig(judge_model="some/model").post_init()
    with pytest.raises(ConfigError, match="set worker.reward.refusal_detector instead"):
        RewardConfig(reward_function_kwargs={"refusal_detector": "strict"}).post_init()
