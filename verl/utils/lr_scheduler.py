"""Learning-rate schedules: linear warmup, then constant, cosine or linear decay to ``min_lr_ratio``."""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def lr_multiplier(step: int, warmup_steps: int, total_steps: int, style: str, min_lr_ratio: float = 0.0) -> float:
    """The factor applied to the peak lr at optimizer step ``step`` (0-based)."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if style == "constant" or total_steps <= warmup_steps:
        return 1.0
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    if style == "cosine":
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
    if style == "linear":
        return min_lr_ratio + (1 - min_lr_ratio) * (1.0 - progress)
    raise ValueError(f"unknown warmup_style {style!r}; choose one of: constant, cosine, linear")


def build_lr_scheduler(
    optimizer: Optimizer, warmup_steps: int, total_steps: int, style: str, min_lr_ratio: float = 0.0
) -> LambdaLR:
    return LambdaLR(optimizer, lambda step: lr_multiplier(step, warmup_steps, total_steps, style, min_lr_ratio))


def resolve_warmup_steps(warmup_steps: int, warmup_ratio: float, total_steps: int) -> int:
    return warmup_steps if warmup_steps >= 0 else int(warmup_ratio * max(total_steps, 0))
