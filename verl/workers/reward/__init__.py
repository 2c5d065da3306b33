"""Rule rewards for RULE: refusal detectors, reward-function registry, and the manager that scores rollouts."""

from verl.workers.reward.config import RewardConfig
from verl.workers.reward.functions import REWARD_FUNCTIONS
from verl.workers.reward.manager import RewardManager
from verl.workers.reward.refusal import REFUSAL_DETECTORS, REFUSAL_PATTERN, get_detector, is_refusal

__all__ = [
    "REFUSAL_DETECTORS",
    "REFUSAL_PATTERN",
    "REWARD_FUNCTIONS",
    "RewardConfig",
    "RewardManager",
    "get_detector",
    "is_refusal",
]
