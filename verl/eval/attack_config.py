"""Settings of the RWKU attack suite (:mod:`verl.eval.attacks`), apart so that ``EvalOptions`` can check them
without importing the suite (which registers itself in :mod:`verl.eval.suites`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Optional

ATTACKS = (
    "direct", "prefill", "prefill_answer", "multi_turn", "quant8", "quant4", "relearn", "relearn_benign", "knowledge",
)  # fmt: skip
LEVELS = ("1", "2", "3")
_NUMBERS = {"neighbor_probes": int, "quant_group_size": int, "relearn_steps": int, "relearn_batch_size": int,
            "relearn_block_tokens": int, "relearn_lr": float}  # fmt: skip


@dataclass(frozen=True)
class AttackConfig:
    """``attacks``: which to run (``direct`` always runs); ``levels``: forget probe levels split into held-out
    and seen facts; ``neighbor_probes``: neighbour probes per file (None = all); quantization group size
    (-1 = one group per row) and scheme; relearning steps, lr, batch size and block length in tokens.
    Meanings in :mod:`verl.eval.attacks`. The defaults are for the real benchmark on a GPU; the demo and CPU
    runs lower the relearning steps and the neighbour probes."""

    attacks: tuple[str, ...] = ATTACKS
    levels: tuple[str, ...] = ("1", "2")
    neighbor_probes: Optional[int] = None
    quant_group_size: int = 128
    quant_symmetric: bool = False
    relearn_steps: int = 10
    relearn_lr: float = 1e-5
    relearn_batch_size: int = 4
    relearn_block_tokens: int = 256

    def __post_init__(self) -> None:
        unknown = [a for a in self.attacks if a not in ATTACKS]
        if unknown or not self.attacks:
            raise ValueError(f"attack.attacks: unknown or none {unknown}; choose from: {', '.join(ATTACKS)}")
        if not self.levels or any(level not in LEVELS for level in self.levels):
            raise ValueError(f"attack.levels must be a non-empty subset of 1, 2, 3, got {self.levels!r}")
        minimum = {"relearn_steps": 1, "relearn_batch_size": 1, "relearn_block_tokens": 2, "neighbor_probes": 1}
        for name, low in minimum.items():
            value = getattr(self, name)
            if not (value is None and name == "neighbor_probes") and (type(value) is not int or value < low):
                raise ValueError(f"attack.{name} must be an integer >= {low}, got {value!r}")
        group = self.quant_group_size
        if type(group) is not int or (group < 1 and group != -1):
            raise ValueError(f"attack.quant_group_size must be a positive integer or -1, got {group!r}")
        if not isinstance(self.relearn_lr, (int, float)) or not self.relearn_lr > 0:
            raise ValueError(f"attack.relearn_lr must be a number > 0, got {self.relearn_lr!r}")
        if not isinstance(self.quant_symmetric, bool):
            raise ValueError(f"attack.quant_symmetric must be true or false, got {self.quant_symmetric!r}")

    @classmethod
    def from_mapping(cls, mapping: Optional[Mapping[str, Any]]) -> AttackConfig:
        """From ``EvalOptions.attack``. Unknown keys are an error; ``attacks`` / ``levels`` may be lists or
        comma-separated strings; numbers and booleans may be strings (``--attack-option relearn_lr=2e-5``)."""
        values = dict(mapping or {})
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - names
        if unknown:
            raise ValueError(f"unknown attack option(s) {sorted(unknown)}; valid: {', '.join(sorted(names))}")
        for key in ("attacks", "levels"):
            if isinstance(values.get(key), str):
                values[key] = [part.strip() for part in values[key].split(",") if part.strip()]
            if key in values:
                values[key] = tuple(str(v) for v in values[key])
        for key, kind in _NUMBERS.items():
            if isinstance(values.get(key), str):
                try:
                    values[key] = None if values[key] == "none" else kind(values[key])
                except ValueError:
                    raise ValueError(f"attack.{key} must be a {kind.__name__}, got {values[key]!r}") from None
        if isinstance(values.get("quant_symmetric"), str):
            flag = values["quant_symmetric"].lower()
            if flag not in ("true", "false", "1", "0"):
                raise ValueError(f"attack.quant_symmetric must be true or false, got {values['quant_symmetric']!r}")
            values["quant_symmetric"] = flag in ("true", "1")
        return cls(**values)
