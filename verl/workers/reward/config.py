"""Config of the rule-reward manager (``worker.reward.*``)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from verl.utils.config import ConfigError, check_choice
from verl.workers.reward.refusal import REFUSAL_DETECTORS, REWARD_DEFAULT_DETECTOR

REWARD_TYPES = ("sequential", "batch")
DEFAULT_PLUGIN_FUNCTION = "main"


def split_reward_function(spec: str) -> tuple[str | None, str]:
    """``"name"`` -> (None, "name"); ``"dir/file.py:fn"`` -> ("dir/file.py", "fn"); ``"dir/file.py"`` -> (.., "main").

    A spec is a plug-in file when it ends in ``.py`` or its part before the last ``":"`` does.
    """
    head, sep, tail = spec.rpartition(":")
    if sep and head.endswith(".py"):
        if not tail:
            raise ValueError(f"reward function {spec!r} ends with ':'; write path/to/file.py:function_name")
        return head, tail
    if spec.endswith(".py"):
        return spec, DEFAULT_PLUGIN_FUNCTION
    return None, spec


@dataclass
class RewardConfig:
    reward_function: str = "forget_two_stage_abs_target"
    """A registered name (see verl.workers.reward.functions.REWARD_FUNCTIONS) or a plug-in
    ``path/to/file.py:fn`` (``path/to/file.py`` alone means ``fn = main``)."""
    reward_function_kwargs: dict = field(default_factory=dict)
    """Keyword arguments bound to the function (e.g. {"rouge_threshold": 0.5}); JSON string on the command line."""
    reward_type: str = "sequential"
    """"sequential": fn(response, ground_truth, **kwargs) -> dict per sample; "batch":
    fn(list of {response, response_length, ground_truth}, **kwargs) -> list of dicts. A plug-in file's
    module constant REWARD_TYPE overrides this."""
    skip_special_tokens: bool = True
    """Drop special tokens (eos, pad, chat markers) when decoding responses before scoring."""
    num_threads: int = 1
    """Threads scoring samples concurrently in "sequential" mode (1 = in order, no thread pool)."""
    refusal_detector: str = REWARD_DEFAULT_DETECTOR
    """Refusal detector R of the reward: rule (RULE's regex, the paper's runs), strict (the refusal must be the
    reply's stance) or judge (a chat model asked yes/no; needs judge_model). See verl/workers/reward/refusal.py."""
    judge_model: str = ""
    """Judge model (HF folder or hub id) for refusal_detector=judge; loaded once by the trainer."""

    def post_init(self) -> None:
        check_choice(self.reward_type, REWARD_TYPES, "worker.reward.reward_type")
        if not self.reward_function:
            raise ValueError("worker.reward.reward_function is empty; give a registered name or path/to/file.py:fn")
        path, function = split_reward_function(self.reward_function)
        if path is not None:  # absolute, because Ray workers may run in another working directory
            self.reward_function = f"{os.path.abspath(os.path.expanduser(path))}:{function}"
        check_choice(self.refusal_detector, REFUSAL_DETECTORS.names(), "worker.reward.refusal_detector")
        if (self.refusal_detector == "judge") != bool(self.judge_model):
            raise ConfigError(
                "worker.reward.judge_model is needed with refusal_detector=judge and only then; got "
                f"refusal_detector={self.refusal_detector!r}, judge_model={self.judge_model!r}"
            )
        if "refusal_detector" in (self.reward_function_kwargs or {}):
            raise ConfigError(
                "worker.reward.reward_function_kwargs.refusal_detector: set worker.reward.refusal_detector instead"
            )
        if self.num_threads < 1:
            raise ValueError(f"worker.reward.num_threads must be >= 1, got {self.num_threads}")
