"""Metric sinks behind one ``Tracker.log(metrics, step)``: console, JSONL, TensorBoard, wandb."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

CONSOLE_KEYS = ("reward/overall", "val/reward/overall", "actor/kl_loss", "actor/entropy", "timing/step", "loss", "lr")


def reduce_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """Lists of per-micro-batch values -> their mean; scalars stay."""
    out = {}
    for key, value in metrics.items():
        if isinstance(value, (list, tuple, np.ndarray)):
            if len(value):
                out[key] = float(np.mean(value))
        elif isinstance(value, (int, float, np.floating, np.integer)):
            out[key] = float(value)
    return out


class Tracker:
    def __init__(self, loggers: list[str], run_dir: str, project: str, experiment: str, config: dict | None = None):
        self.loggers = list(loggers)
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._jsonl = open(self.run_dir / "metrics.jsonl", "a") if "jsonl" in loggers else None
        self._tb = None
        if "tensorboard" in loggers:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(log_dir=str(self.run_dir / "tensorboard"))
        self._wandb = None
        if "wandb" in loggers:
            try:
                import wandb
            except ImportError as e:
                raise ImportError("trainer.logger has wandb but the wandb package is not installed") from e
            mode = os.environ.get("WANDB_MODE") or ("online" if os.environ.get("WANDB_API_KEY") else "offline")
            self._wandb = wandb.init(project=project, name=experiment, config=config, dir=str(self.run_dir), mode=mode)

    def log(self, metrics: dict[str, Any], step: int) -> None:
        values = reduce_metrics(metrics)
        if "console" in self.loggers:
            shown = {k: v for k, v in values.items() if k in CONSOLE_KEYS or k.startswith(("reward/", "val/"))}
            print(f"step {step}: " + "  ".join(f"{k}={v:.4g}" for k, v in sorted(shown.items())), flush=True)
        if self._jsonl is not None:
            self._jsonl.write(json.dumps({"step": step, **values}) + "\n")
            self._jsonl.flush()
        if self._tb is not None:
            for key, value in values.items():
                self._tb.add_scalar(key, value, step)
        if self._wandb is not None:
            self._wandb.log(values, step=step)

    def log_text(self, name: str, rows: list[dict], step: int) -> None:
        """Validation samples: appended to {run_dir}/{name}.jsonl."""
        with open(self.run_dir / f"{name}.jsonl", "a") as f:
            for row in rows:
                f.write(json.dumps({"step": step, **row}, default=str) + "\n")

    def finish(self) -> None:
        if self._jsonl is not None:
            self._jsonl.close()
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()
