"""Checkpoint folders of a run: ``{run_dir}/checkpoints/global_step_N/`` plus ``tracker.json``.

A step folder is written under ``global_step_N.tmp``; the last file written into it is ``COMPLETE.json``
(the size of every other file), then the folder is renamed to ``global_step_N``. A folder is *complete*
when its marker is there and every file it lists has the listed size. A re-save of the same step moves
the old folder aside (``global_step_N.old``) before the rename and deletes it after, so one complete copy
always exists. Folders a killed save left behind are cleaned at the next start or save. ``latest()`` is
the newest complete step (a damaged newer one is skipped with a warning); ``tracker.json`` (written
atomically) names the latest and the best step; the best is marked only once its folder is complete.
Retention keeps the ``save_limit`` most recent steps and the best one.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import warnings
from pathlib import Path
from typing import Any

from verl.utils.fileio import write_json_atomic

MARKER = "COMPLETE.json"
_STEP = re.compile(r"global_step_(\d+)")


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

    def steps(self) -> list[int]:
        """Step numbers of the ``global_step_N`` folders on disk (complete or not), ascending."""
        if not self.root.is_dir():
            return []
        return sorted(int(m.group(1)) for p in self.root.iterdir() if (m := _STEP.fullmatch(p.name)) and p.is_dir())

    @staticmethod
    def is_complete(path: Path) -> bool:
        """The folder's marker exists and every file it lists is there with the listed size."""
        try:
            files = json.loads((path / MARKER).read_text())["files"]
            return all((path / name).stat().st_size == size for name, size in files.items())
        except (OSError, ValueError, KeyError, TypeError):
            return False

    def clean_stale(self) -> None:
        """Undo what a killed save left: a folder moved aside comes back if its step is gone, else it is
        deleted; a ``.tmp`` folder becomes the step if it is complete and the step is gone, else it is deleted."""
        if not self.root.is_dir():
            return
        for path in sorted(self.root.glob("global_step_*.old")) + sorted(self.root.glob("global_step_*.tmp")):
            final = path.with_suffix("")
            if not final.exists() and self.is_complete(path):
                os.replace(path, final)
            else:
                shutil.rmtree(path, ignore_errors=True)

    def begin(self, step: int) -> Path:
        """A fresh temporary folder to write step ``step`` into (stale ones of killed saves removed first)."""
        self.clean_stale()
        tmp = self.root / f"global_step_{step}.tmp"
        tmp.mkdir(parents=True)
        return tmp

    def commit(self, step: int, tmp: Path, trainer_state: dict[str, Any]) -> Path:
        write_json_atomic(tmp / "trainer_state.json", trainer_state, indent=2, default=str)
        files = {p.relative_to(tmp).as_posix(): p.stat().st_size for p in sorted(tmp.rglob("*")) if p.is_file()}
        write_json_atomic(tmp / MARKER, {"step": step, "files": files}, indent=1)  # last: marks it complete
        final = self.step_dir(step)
        aside = final.with_name(final.name + ".old")
        if final.exists():
            os.replace(final, aside)
        try:
            os.replace(tmp, final)
        except BaseException:
            if aside.exists() and not final.exists():
                os.replace(aside, final)
            raise
        shutil.rmtree(aside, ignore_errors=True)
        tracker = self.tracker()
        tracker["latest_step"] = step
        write_json_atomic(self.tracker_path, tracker, indent=2)
        self._enforce_limit()
        return final

    def mark_best(self, step: int, metrics: dict[str, float]) -> None:
        """Record ``step`` as the best; its checkpoint must already be complete."""
        if not self.is_complete(self.step_dir(step)):
            raise ValueError(f"mark_best: {self.step_dir(step)} is not a complete checkpoint; save step {step} first")
        tracker = self.tracker()
        tracker["best_step"], tracker["best_metrics"] = step, metrics
        write_json_atomic(self.tracker_path, tracker, indent=2)
        self._enforce_limit()

    def latest(self) -> Path | None:
        """The newest complete step folder; warns when that is not the step ``tracker.json`` names."""
        tracked = self.tracker().get("latest_step")
        for step in reversed(self.steps()):
            path = self.step_dir(step)
            if self.is_complete(path):
                if tracked is not None and step != tracked:
                    warnings.warn(
                        f"checkpoint: tracker.json names step {tracked} but it is missing or incomplete; "
                        f"using the newest complete step {step} ({path})",
                        stacklevel=2,
                    )
                return path
        if tracked is not None:
            warnings.warn(
                f"checkpoint: no complete checkpoint under {self.root} (tracker names {tracked})", stacklevel=2
            )
        return None

    def _enforce_limit(self) -> None:
        if self.save_limit is None or self.save_limit < 0:
            return
        tracker = self.tracker()
        keep = {tracker.get("best_step"), tracker.get("latest_step")}
        steps = self.steps()
        recent = set(steps[-self.save_limit :]) if self.save_limit > 0 else set()
        for step in steps:
            if step not in keep and step not in recent:
                shutil.rmtree(self.step_dir(step), ignore_errors=True)
