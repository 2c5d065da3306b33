"""Checkpoint folders of a run: ``{run_dir}/checkpoints/global_step_N/`` plus ``tracker.json``.

A step folder is written under ``global_step_N.tmp`` and renamed when complete, so a killed run
never leaves a folder that looks complete; ``tracker.json`` (written atomically) names the latest
and the best complete step. Retention keeps the ``save_limit`` most recent steps and the best one.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from verl.utils.fileio import write_json_atomic


class CheckpointManager:
    def __init__(self, run_dir: str, save_limit: int = -1):
        self.root = Path(run_dir) / "checkpoints"
        self.save_limit = save_limit
        self.tracker_path = self.root / "tracker.json"

    def tracker(self) -> dict[str, Any]:
        if not self.tracker_path.is_file():
            return {}
        with open(self.tracker_path) as f:
            return json.load(f)

    def step_dir(self, step: int) -> Path:
        return self.root / f"global_step_{step}"

    def begin(self, step: int) -> Path:
        """A fresh temporary folder to write step ``step`` into."""
        tmp = self.root / f"global_step_{step}.tmp"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        return tmp

    def commit(self, step: int, tmp: Path, trainer_state: dict[str, Any]) -> Path:
        write_json_atomic(tmp / "trainer_state.json", trainer_state, indent=2, default=str)
        final = self.step_dir(step)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        tracker = self.tracker()
        tracker["latest_step"] = step
        write_json_atomic(self.tracker_path, tracker, indent=2)
        self._enforce_limit()
        return final

    def mark_best(self, step: int, metrics: dict[str, float]) -> None:
        tracker = self.tracker()
        tracker["best_step"], tracker["best_metrics"] = step, metrics
        write_json_atomic(self.tracker_path, tracker, indent=2)

    def latest(self) -> Path | None:
        step = self.tracker().get("latest_step")
        if step is None:
            return None
        path = self.step_dir(step)
        return path if (path / "trainer_state.json").is_file() else None

    def _enforce_limit(self) -> None:
        if self.save_limit is None or self.save_limit < 0:
            return
        tracker = self.tracker()
        keep = {tracker.get("best_step"), tracker.get("latest_step")}
        steps = sorted(int(p.name.split("_")[-1]) for p in self.root.glob("global_step_*") if p.name[-1].isdigit())
        recent = set(steps[-self.save_limit :]) if self.save_limit > 0 else set()
        for step in steps:
            if step not in keep and step not in recent:
                shutil.rmtree(self.step_dir(step), ignore_errors=True)
