"""The RL algorithms' registries (advantage estimators, policy losses, KL estimators and controllers,
loss aggregation), as users of EasyR1/verl expect them at ``verl.trainer.core_algos``.

The implementation lives in ``verl/utils/core_algos.py`` (the ground layer), because the workers below
the trainer need the losses too and no import may run upward.
"""

from verl.utils.core_algos import *  # noqa: F403
from verl.utils.core_algos import (  # noqa: F401
    ADV_ESTIMATORS,
    KL_ESTIMATORS,
    LOSS_AGG_MODES,
    POLICY_LOSSES,
    AdaptiveKLController,
    FixedKLController,
    agg_loss,
    apply_kl_penalty,
    compute_advantage,
    compute_entropy_loss,
    compute_kl,
    compute_policy_loss,
    compute_value_loss,
    get_kl_controller,
)
