"""In-training evaluation for the trainer: benchmark metrics per validation step and best-checkpoint choice.

``TrainingEvaluator(benchmark, data_dir, targets, suites, options)(generator, step)`` runs
:func:`~verl.eval.suites.run_suites` on every target and returns flat float metrics named
``val/<benchmark>/<metric>`` (mean over targets, e.g. ``val/rwku/forget_all``, ``val/rwku/neighbor_all``,
``val/muse/muse_knowmem_f``); with ``per_target=True`` also ``val/<benchmark>/<target dirname>/<metric>``.
With ``out_dir`` each step's full results go to ``<out_dir>/step<k>/<target>.json``.

``BestCheckpointCriterion("val/rwku/forget_all", "min", ["val/rwku/neighbor_all>=0.8"])`` decides whether a new
validation result beats the best so far: every constraint must hold, then the metric must be strictly better.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Optional, Union

from verl.eval.suites import EvalOptions, expand_suites, run_suites


class TrainingEvaluator:
    """Callable ``(generator, step) -> dict[str, float]``; the last full results stay in ``last_results``."""

    def __init__(
        self,
        benchmark: str,
        data_dir: Union[str, Path],
        targets: Union[str, int, Sequence, None] = None,
        suites: Sequence[str] = ("forget", "neighbor"),
        options: Union[EvalOptions, Mapping[str, Any], None] = None,
        out_dir: Union[str, Path, None] = None,
        per_target: bool = False,
    ):
        self.benchmark = benchmark
        self.data_dir = Path(data_dir)
        self.suites = list(suites.split(",") if isinstance(suites, str) else suites)
        self.options = EvalOptions.from_any(options)
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.per_target = per_target
        expand_suites(benchmark, self.suites)  # fail at construction on an unknown suite
        if benchmark == "rwku":
            from verl.utils.rwku_targets import select_targets

            if targets is None:
                raise ValueError("TrainingEvaluator for rwku needs targets, e.g. '1' or '1-10'")
            self.targets = select_targets(targets, self.data_dir)
        else:
            self.targets = [None]
        self.last_results: list[dict] = []

    def __call__(self, generator, step: int) -> dict[str, float]:
        from verl.eval.report import result_name, write_json_atomic

        results = [
            run_suites(generator, self.benchmark, self.data_dir, target, self.suites, self.options)
            for target in self.targets
        ]
        self.last_results = results
        prefix = f"val/{self.benchmark}"
        flat: dict[str, float] = {}
        collected: dict[str, list[float]] = {}
        for result in results:
            for key, value in result["metrics"].items():
                if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                    collected.setdefault(key, []).append(float(value))
                    if self.per_target and result["target"]:
                        flat[f"{prefix}/{result['target']['dirname']}/{key}"] = float(value)
        for key, values in collected.items():
            flat[f"{prefix}/{key}"] = sum(values) / len(values)
        if self.out_dir is not None:
            for result in results:
                write_json_atomic(
                    self.out_dir / f"step{step}" / f"{result_name(result)}.json", {"step": step} | result
                )
        return flat


_OPERATORS = {
    ">=": operator.ge,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
    ">": operator.gt,
    "<": operator.lt,
}
_CONSTRAINT = re.compile(r"^\s*([^<>=!\s]+)\s*(>=|<=|==|!=|>|<)\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$")


class BestCheckpointCriterion:
    """Best checkpoint = strictly better ``metric`` (``mode`` "min" or "max") among results meeting every constraint.

    Constraints are strings ``"<metric><op><number>"`` with op in ``>= <= > < == !=``.
    """

    def __init__(self, metric: str, mode: str = "max", constraints: Sequence[str] = ()):
        if mode not in ("min", "max"):
            raise ValueError(f"BestCheckpointCriterion mode must be 'min' or 'max', got {mode!r}")
        if not metric:
            raise ValueError("BestCheckpointCriterion needs a metric name")
        self.metric = metric
        self.mode = mode
        self.constraints = [self._parse(c) for c in constraints]

    @staticmethod
    def _parse(text: str) -> tuple[str, str, float]:
        match = _CONSTRAINT.match(text) if isinstance(text, str) else None
        if match is None:
            raise ValueError(
                f"bad best-checkpoint constraint {text!r}: expected '<metric><op><number>' with op one of "
                f"{', '.join(_OPERATORS)}, e.g. 'val/rwku/neighbor_all>=0.8'"
            )
        return match.group(1), match.group(2), float(match.group(3))

    def _value(self, metrics: Mapping[str, float], name: str) -> float:
        if name not in metrics:
            raise ValueError(f"metric {name!r} is not among the validation metrics: {', '.join(sorted(metrics))}")
        return float(metrics[name])

    def satisfies(self, metrics: Mapping[str, float]) -> bool:
        """True when every constraint holds (a NaN value fails its constraint)."""
        return all(_OPERATORS[op](self._value(metrics, name), bound) for name, op, bound in self.constraints)

    def is_better(self, metrics: Mapping[str, float], best_metrics: Optional[Mapping[str, float]]) -> bool:
        """Does ``metrics`` beat ``best_metrics`` (None / empty = no best yet)?"""
        value = self._value(metrics, self.metric)
        if math.isnan(value) or not self.satisfies(metrics):
            return False
        if not best_metrics or self.metric not in best_metrics:
            return True
        best = float(best_metrics[self.metric])
        if math.isnan(best):
            return True
        return value < best if self.mode == "min" else value > best
